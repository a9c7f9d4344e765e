//! `--http`: verify over the HTTP side's forward-auth (`GET /v1/auth` on 50 keep-alive
//! connections, one request in flight each) next to the socket protocol's `sync-50`, on one
//! daemon, with the same mix, in alternating rounds; then the same with the daemon's busy
//! polling off. The target: HTTP at least half the socket's verifies per second.

use crate::daemon::Keyd;
use crate::http_load::{self, HttpWorkload};
use crate::load::{self, Measured, Shape, Timing};
use crate::paired::{cpu_cells, or_dash, ratios_line, run_cells, run_heads, Paired};
use crate::report::Figures;
use crate::seed;
use crate::workload::Workload;
use anyhow::{Context, Result};
use serde::Serialize;
use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

/// HTTP verifies per second over the socket's `sync-50`, at least (from the issue).
pub const TARGET: f64 = 0.5;

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
    /// HTTP ops/s over socket ops/s with the default config.
    pub ratio: f64,
    pub target: f64,
    pub reached: bool,
}

/// One daemon config: both protocols' median runs.
#[derive(Debug, Clone, Serialize)]
pub struct HttpRow {
    pub busy_poll: &'static str,
    pub socket: Measured,
    pub http: Measured,
    /// HTTP ops/s over socket ops/s, of the median runs.
    pub ops_ratio: f64,
    /// Verifies per second of daemon CPU, when its CPU was read.
    pub socket_ops_per_cpu_sec: Option<f64>,
    pub http_ops_per_cpu_sec: Option<f64>,
    pub cpu_ratio: Option<f64>,
    /// Each round's HTTP ops/s over the socket run just before it, in order.
    pub round_ratios: Vec<f64>,
}

impl HttpRow {
    /// `rounds` holds each round's (HTTP, socket) runs: HTTP is the subject of every ratio.
    fn new(busy_poll: &'static str, rounds: Vec<(Measured, Measured)>) -> HttpRow {
        let paired = Paired::from_rounds(rounds);
        HttpRow {
            busy_poll,
            socket: paired.baseline,
            http: paired.subject,
            ops_ratio: paired.ops_ratio,
            socket_ops_per_cpu_sec: paired.baseline_ops_per_cpu_sec,
            http_ops_per_cpu_sec: paired.subject_ops_per_cpu_sec,
            cpu_ratio: paired.cpu_ratio,
            round_ratios: paired.round_ratios,
        }
    }
}

/// Starts a daemon listening on both, seeds `keys`, and measures `rounds` alternating
/// rounds with each busy-polling config.
pub fn run(bin: &Path, keys: usize, timing: Timing, rounds: usize) -> Result<HttpFigures> {
    let address = free_loopback_address()?;
    let listen = format!("http_listen = [\"{address}\"]\n");
    let mut keyd = Keyd::start(bin, &listen)?;
    wait_listening(address)?;
    eprintln!("http: seeding {keys} keys...");
    let seeded = seed::seed(keyd.socket(), keys, 4, false)?;
    let workload = Workload::build(&seeded.keys)?;
    let http = HttpWorkload::from_mix(&workload)?;
    let mut rows = Vec::new();
    for (busy_poll, config) in [("default", ""), ("0 (off)", "busy_poll = \"0\"\n")] {
        if !config.is_empty() {
            // The same store, so the same keys and mix.
            keyd.restart(&format!("{config}{listen}"))?;
            wait_listening(address)?;
        }
        let runs = (0..rounds.max(1))
            .map(|_| round(&keyd, address, &workload, &http, timing))
            .collect::<Result<Vec<_>>>()?;
        let row = HttpRow::new(busy_poll, runs);
        eprintln!(
            "http: busy_poll {busy_poll}: socket {:.0} ops/s, http {:.0} ops/s, ratio {:.2}",
            row.socket.ops_per_sec, row.http.ops_per_sec, row.ops_ratio
        );
        rows.push(row);
    }
    let ratio = rows.first().map_or(0.0, |r| r.ops_ratio);
    Ok(HttpFigures {
        keys,
        mix: workload.mix.describe(),
        rounds: rounds.max(1),
        warmup_secs: timing.warmup.as_secs_f64(),
        duration_secs: timing.duration.as_secs_f64(),
        rows,
        ratio,
        target: TARGET,
        reached: ratio >= TARGET,
    })
}

/// One round: the socket's `sync-50`, then HTTP, on the same daemon; HTTP's run first, as
/// the subject of the ratios.
fn round(
    keyd: &Keyd,
    address: SocketAddr,
    workload: &Workload,
    http: &HttpWorkload,
    timing: Timing,
) -> Result<(Measured, Measured)> {
    // `sync-50`, with the HTTP side's connection count, so that both always match.
    let sync_50 = Shape {
        name: "sync-50",
        connections: http_load::CONNECTIONS,
        depth: 1,
    };
    let socket = load::drive(keyd.socket(), workload, sync_50, timing, keyd.pid())?;
    let http = http_load::drive(address, http, timing, keyd.pid())?;
    Ok((http, socket))
}

/// A loopback port nothing listens on now: bound and let go, for the daemon to take.
fn free_loopback_address() -> Result<SocketAddr> {
    let probe = TcpListener::bind("127.0.0.1:0").context("cannot find a free loopback port")?;
    Ok(probe.local_addr()?)
}

/// Waits for the daemon's HTTP listener: its socket answering does not say the port is
/// bound yet.
fn wait_listening(address: SocketAddr) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(address).is_err() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the daemon does not listen on http://{address}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

impl Figures for HttpFigures {
    fn wrong_answers(&self) -> u64 {
        self.rows
            .iter()
            .map(|r| r.socket.wrong_answers + r.http.wrong_answers)
            .sum()
    }

    /// The report for people.
    fn text(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(
            t,
            "HTTP forward-auth next to the socket protocol: {} keys; each run {:.1} s after \
             {:.1} s of warm-up; rounds alternate socket and HTTP, median of {} per side",
            self.keys, self.duration_secs, self.warmup_secs, self.rounds
        );
        let _ = writeln!(t, "mix: {}", self.mix);
        let _ = writeln!(
            t,
            "socket: sync-50 (50 connections, 1 in flight each); http: GET /v1/auth on 50 \
             keep-alive TCP connections, 1 in flight each"
        );
        let _ = writeln!(
            t,
            "{:<10} {:<7} {} {:>11} {:>13}",
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
            "target: HTTP ops/s >= {:.1} x socket sync-50 (default busy_poll): {:.2}, {}",
            self.target,
            self.ratio,
            if self.reached {
                "reached"
            } else {
                "not reached"
            }
        );
        t
    }
}

/// A config's two sides and their ratios.
fn row_lines(t: &mut String, r: &HttpRow) {
    for (side, m, per_cpu) in [
        ("socket", &r.socket, r.socket_ops_per_cpu_sec),
        ("http", &r.http, r.http_ops_per_cpu_sec),
    ] {
        let (client_cores, client_us) = cpu_cells(m.client_cpu);
        let _ = writeln!(
            t,
            "{:<10} {:<7} {} {:>11} {:>13}",
            r.busy_poll,
            side,
            run_cells(m, per_cpu),
            client_cores,
            client_us,
        );
    }
    let _ = writeln!(
        t,
        "{:<10} http/socket: ops/s {:.2}, ops per CPU-second {}; each round's ops/s ratio: {}",
        "",
        r.ops_ratio,
        or_dash(r.cpu_ratio, 2),
        ratios_line(&r.round_ratios)
    );
}
