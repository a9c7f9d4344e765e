//! `--http`: verify over the HTTP side's forward-auth (`GET /v1/auth` on 50 keep-alive
//! connections, one request in flight each) next to the socket protocol's `sync-50`, on one
//! daemon, with the same mix, in alternating rounds; the HTTP side over loopback TCP and over
//! its Unix socket (the transport the docs recommend for nginx and Caddy), both listened on
//! by that daemon; then the same with the daemon's busy polling off. The target:
//! HTTP at least half the socket's verifies per second.

use crate::daemon::Keyd;
use crate::http_load::{self, HttpWorkload, Target};
use crate::load::{self, Measured, Shape, Timing};
use crate::paired::{cpu_cells, or_dash, ratios_line, run_cells, run_heads, Paired};
use crate::report::Figures;
use crate::seed;
use crate::workload::Workload;
use anyhow::{Context, Result};
use serde::Serialize;
use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// HTTP verifies per second over the socket's `sync-50`, at least (from the issue).
pub const TARGET: f64 = 0.5;

/// The daemon configs measured: the default busy polling, then none.
const CONFIGS: [(&str, &str); 2] = [("default", ""), ("0 (off)", "busy_poll = \"0\"\n")];

/// Everything `--http` measured.
#[derive(Debug, Clone, Serialize)]
pub struct HttpFigures {
    pub keys: usize,
    pub mix: String,
    pub rounds: usize,
    pub warmup_secs: f64,
    pub duration_secs: f64,
    /// With the daemon's default busy polling, then with `busy_poll = "0"`.
    pub rows: Vec<HttpRow>,
    /// HTTP-over-TCP ops/s over socket ops/s with the default config.
    pub ratio: f64,
    pub target: f64,
    /// `ratio` >= `target`.
    pub reached: bool,
    /// HTTP-over-the-Unix-socket ops/s over socket ops/s with the default config.
    pub unix_ratio: f64,
    /// `unix_ratio` >= `target`.
    pub unix_reached: bool,
}

/// One daemon config: the median runs of the socket and of HTTP over each transport.
#[derive(Debug, Clone, Serialize)]
pub struct HttpRow {
    pub busy_poll: &'static str,
    pub socket: Measured,
    /// HTTP over loopback TCP.
    pub http: Measured,
    /// HTTP ops/s over socket ops/s, of the median runs.
    pub ops_ratio: f64,
    /// Verifies per second of daemon CPU, when its CPU was read.
    pub socket_ops_per_cpu_sec: Option<f64>,
    pub http_ops_per_cpu_sec: Option<f64>,
    pub cpu_ratio: Option<f64>,
    /// Each round's HTTP ops/s over the socket run of that round, in order.
    pub round_ratios: Vec<f64>,
    /// HTTP over the Unix socket, and the same ratios over the socket's.
    pub http_unix: Measured,
    pub unix_ops_ratio: f64,
    pub http_unix_ops_per_cpu_sec: Option<f64>,
    pub unix_cpu_ratio: Option<f64>,
    pub unix_round_ratios: Vec<f64>,
}

/// One round's runs: the socket's `sync-50`, then HTTP over TCP, then over the Unix socket.
struct Round {
    socket: Measured,
    tcp: Measured,
    unix: Measured,
}

impl HttpRow {
    /// HTTP over each transport is the subject of its ratios; the socket, their baseline.
    fn new(busy_poll: &'static str, rounds: Vec<Round>) -> HttpRow {
        let tcp: Vec<_> = rounds
            .iter()
            .map(|r| (r.tcp.clone(), r.socket.clone()))
            .collect();
        let tcp = Paired::from_rounds(tcp);
        let unix = Paired::from_rounds(rounds.into_iter().map(|r| (r.unix, r.socket)).collect());
        HttpRow {
            busy_poll,
            socket: tcp.baseline,
            http: tcp.subject,
            ops_ratio: tcp.ops_ratio,
            socket_ops_per_cpu_sec: tcp.baseline_ops_per_cpu_sec,
            http_ops_per_cpu_sec: tcp.subject_ops_per_cpu_sec,
            cpu_ratio: tcp.cpu_ratio,
            round_ratios: tcp.round_ratios,
            http_unix: unix.subject,
            unix_ops_ratio: unix.ops_ratio,
            http_unix_ops_per_cpu_sec: unix.subject_ops_per_cpu_sec,
            unix_cpu_ratio: unix.cpu_ratio,
            unix_round_ratios: unix.round_ratios,
        }
    }
}

impl HttpFigures {
    /// The figures of `rows`, the first being the default config's.
    fn new(keys: usize, mix: String, timing: Timing, rounds: usize, rows: Vec<HttpRow>) -> Self {
        let (ratio, unix_ratio) = rows
            .first()
            .map_or((0.0, 0.0), |r| (r.ops_ratio, r.unix_ops_ratio));
        HttpFigures {
            keys,
            mix,
            rounds,
            warmup_secs: timing.warmup.as_secs_f64(),
            duration_secs: timing.duration.as_secs_f64(),
            rows,
            ratio,
            target: TARGET,
            reached: ratio >= TARGET,
            unix_ratio,
            unix_reached: unix_ratio >= TARGET,
        }
    }
}

/// Starts a daemon listening on its socket and on both HTTP transports, seeds `keys`, and
/// measures `rounds` alternating rounds with each busy-polling config.
pub fn run(bin: &Path, keys: usize, timing: Timing, rounds: usize) -> Result<HttpFigures> {
    let rounds = rounds.max(1);
    let http_side = HttpSide::new()?;
    // Declared after `http_side`, so stopped before its directory goes.
    let mut keyd = Keyd::start(bin, &http_side.config)?;
    http_side.wait_listening()?;
    eprintln!("http: seeding {keys} keys...");
    let seeded = seed::seed(keyd.socket(), keys, 4, false)?;
    let workload = Workload::build(&seeded.keys)?;
    let http = HttpWorkload::from_mix(&workload)?;
    let mut rows = Vec::new();
    for (busy_poll, config) in CONFIGS {
        if !config.is_empty() {
            // The same store, so the same keys and mix.
            keyd.restart(&format!("{config}{}", http_side.config))?;
            http_side.wait_listening()?;
        }
        let runs = (0..rounds)
            .map(|_| round(&keyd, &http_side, &workload, &http, timing))
            .collect::<Result<Vec<_>>>()?;
        let row = HttpRow::new(busy_poll, runs);
        eprintln!(
            "http: busy_poll {busy_poll}: socket {:.0} ops/s, http {:.0} ops/s ({:.2}), \
             http-unix {:.0} ops/s ({:.2})",
            row.socket.ops_per_sec,
            row.http.ops_per_sec,
            row.ops_ratio,
            row.http_unix.ops_per_sec,
            row.unix_ops_ratio
        );
        rows.push(row);
    }
    let mix = workload.mix.describe();
    Ok(HttpFigures::new(keys, mix, timing, rounds, rows))
}

/// One round: the socket's `sync-50`, then HTTP over TCP, then over the Unix socket, on the
/// same daemon.
fn round(
    keyd: &Keyd,
    http_side: &HttpSide,
    workload: &Workload,
    http: &HttpWorkload,
    timing: Timing,
) -> Result<Round> {
    // `sync-50`, with the HTTP side's connection count, so that both always match.
    let sync_50 = Shape {
        name: "sync-50",
        connections: http_load::CONNECTIONS,
        depth: 1,
    };
    let socket = load::drive(keyd.socket(), workload, sync_50, timing, keyd.pid())?;
    let [tcp, unix] = http_side.targets();
    Ok(Round {
        socket,
        tcp: http_load::drive(tcp, http, timing, keyd.pid())?,
        unix: http_load::drive(unix, http, timing, keyd.pid())?,
    })
}

/// Where the daemon's HTTP side listens: a loopback port, and a Unix socket in a directory
/// of the bench's own (the daemon's directory is made as it starts, after its config).
struct HttpSide {
    address: SocketAddr,
    unix: PathBuf,
    /// `http_listen` naming both.
    config: String,
    _dir: tempfile::TempDir,
}

impl HttpSide {
    fn new() -> Result<HttpSide> {
        let address = free_loopback_address()?;
        let dir = tempfile::Builder::new()
            .prefix("authenta-bench-http-")
            .tempdir()
            .context("cannot make a temporary directory")?;
        let unix = dir.path().join("http.sock");
        let config = format!(
            "http_listen = [\"{address}\", \"unix:{}\"]\n",
            unix.display()
        );
        Ok(HttpSide {
            address,
            unix,
            config,
            _dir: dir,
        })
    }

    /// Both transports, in the order each round runs them.
    fn targets(&self) -> [Target<'_>; 2] {
        [Target::Tcp(self.address), Target::Unix(&self.unix)]
    }

    /// Waits for the daemon's HTTP listeners: its socket answering does not say they are
    /// bound yet.
    fn wait_listening(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        for target in self.targets() {
            while !answers(target) {
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "the daemon does not listen on {target}"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        Ok(())
    }
}

/// Whether a connection to `target` is accepted.
fn answers(target: Target<'_>) -> bool {
    match target {
        Target::Tcp(address) => TcpStream::connect(address).is_ok(),
        Target::Unix(path) => UnixStream::connect(path).is_ok(),
    }
}

/// A loopback port nothing listens on now: bound and let go, for the daemon to take.
fn free_loopback_address() -> Result<SocketAddr> {
    let probe = TcpListener::bind("127.0.0.1:0").context("cannot find a free loopback port")?;
    Ok(probe.local_addr()?)
}

impl Figures for HttpFigures {
    fn wrong_answers(&self) -> u64 {
        self.rows
            .iter()
            .map(|r| r.socket.wrong_answers + r.http.wrong_answers + r.http_unix.wrong_answers)
            .sum()
    }

    /// The report for people.
    fn text(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(
            t,
            "HTTP forward-auth next to the socket protocol: {} keys; each run {:.1} s after \
             {:.1} s of warm-up; rounds alternate socket, HTTP over TCP and HTTP over the Unix \
             socket, median of {} per side",
            self.keys, self.duration_secs, self.warmup_secs, self.rounds
        );
        let _ = writeln!(t, "mix: {}", self.mix);
        let _ = writeln!(
            t,
            "socket: sync-50 (50 connections, 1 in flight each); http: GET /v1/auth on 50 \
             keep-alive TCP connections, 1 in flight each; http-unix: the same on the HTTP \
             side's Unix socket"
        );
        let _ = writeln!(
            t,
            "{:<10} {:<9} {} {:>11} {:>13}",
            "busy_poll",
            "side",
            run_heads(),
            "client cpu",
            "client us/op"
        );
        for r in &self.rows {
            row_lines(&mut t, r);
        }
        let _ = writeln!(
            t,
            "cpu: the daemon's CPU seconds per second; ops/cpu-s: verifies per second of \
             daemon CPU; client: the bench's load thread, on the same cores"
        );
        let _ = writeln!(
            t,
            "target: HTTP ops/s >= {:.1} x socket sync-50 (default busy_poll): {:.2}, {}; \
             HTTP over the Unix socket: {:.2}, {}",
            self.target,
            self.ratio,
            verdict(self.reached),
            self.unix_ratio,
            verdict(self.unix_reached)
        );
        t
    }
}

fn verdict(reached: bool) -> &'static str {
    if reached {
        "reached"
    } else {
        "not reached"
    }
}

/// A config's three sides and the ratios of each HTTP transport over the socket.
fn row_lines(t: &mut String, r: &HttpRow) {
    for (side, m, per_cpu) in [
        ("socket", &r.socket, r.socket_ops_per_cpu_sec),
        ("http", &r.http, r.http_ops_per_cpu_sec),
        ("http-unix", &r.http_unix, r.http_unix_ops_per_cpu_sec),
    ] {
        let (client_cores, client_us) = cpu_cells(m.client_cpu);
        let _ = writeln!(
            t,
            "{:<10} {:<9} {} {:>11} {:>13}",
            r.busy_poll,
            side,
            run_cells(m, per_cpu),
            client_cores,
            client_us,
        );
    }
    for (name, ops, cpu, rounds) in [
        ("http", r.ops_ratio, r.cpu_ratio, &r.round_ratios),
        (
            "http-unix",
            r.unix_ops_ratio,
            r.unix_cpu_ratio,
            &r.unix_round_ratios,
        ),
    ] {
        let _ = writeln!(
            t,
            "{:<10} {name}/socket: ops/s {ops:.2}, ops per CPU-second {}; each round's ops/s \
             ratio: {}",
            "",
            or_dash(cpu, 2),
            ratios_line(rounds)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Latency;

    fn run(ops_per_sec: f64) -> Measured {
        Measured {
            ops: 0,
            secs: 1.0,
            ops_per_sec,
            latency: Latency::default(),
            wrong_answers: 0,
            server_cpu: None,
            client_cpu: None,
        }
    }

    fn round(socket: f64, tcp: f64, unix: f64) -> Round {
        Round {
            socket: run(socket),
            tcp: run(tcp),
            unix: run(unix),
        }
    }

    #[test]
    fn each_transport_is_divided_by_its_rounds_socket_run() {
        let row = HttpRow::new(
            "default",
            vec![round(100.0, 50.0, 80.0), round(200.0, 60.0, 40.0)],
        );
        assert_eq!(row.round_ratios, [0.5, 0.3]);
        assert_eq!(row.unix_round_ratios, [0.8, 0.2]);
        assert_eq!(row.socket.ops_per_sec, 200.0);
        assert_eq!(row.http.ops_per_sec, 60.0);
        assert_eq!(row.http_unix.ops_per_sec, 80.0);
        let timing = Timing {
            warmup: Duration::ZERO,
            duration: Duration::from_secs(1),
            client: load::ClientKind::EventLoop,
        };
        let figures = HttpFigures::new(1, "mix".into(), timing, 2, vec![row]);
        assert!(figures.reached == (figures.ratio >= TARGET) && !figures.reached);
        assert_eq!(figures.unix_ratio, 0.4);
        let text = figures.text();
        assert!(text.contains("http/socket: ops/s 0.30"), "{text}");
        assert!(text.contains("http-unix/socket: ops/s 0.40"), "{text}");
        assert!(text.contains("(default busy_poll): 0.30, not reached; HTTP over the Unix"));
    }
}
