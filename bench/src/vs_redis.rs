//! `--redis`: the daemon's verify next to Redis `GET`, both driven by the same client (one
//! epoll loop, requests encoded beforehand, every answer checked, the same pacing), in the
//! same shapes, rounds alternating keyd, Redis and the echo floor; then the same with the
//! daemon's busy polling off, Redis measured again beside it.
//!
//! Both servers are started by the bench: the daemon with the given config on a fresh store,
//! seeded with `keys` keys; Redis on a Unix socket with persistence off, holding one entry per
//! key (see [`crate::redis`] for how requests and values are matched to the daemon's). Each
//! server's CPU is what all its threads ran in the measured window.

use crate::daemon::{self, Keyd, Memory};
use crate::echo::EchoServer;
use crate::load::{self, Measured, Shape, Timing};
use crate::paired::{cpu_cells, or_dash, ratios_line, run_cells, run_heads, Paired};
use crate::redis::{self, GetWorkload, RedisServer};
use crate::report::{self, Figures};
use crate::seed;
use crate::workload::Workload;
use anyhow::{Context, Result};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

/// Everything `--redis` measured.
#[derive(Debug, Clone, Serialize)]
pub struct RedisFigures {
    pub version: &'static str,
    pub cores: usize,
    pub smoke: bool,
    pub spin: bool,
    pub redis_version: String,
    pub keys: usize,
    pub mix: String,
    /// Requests of the `GET` mix (the verify mix less its unknown tokens).
    pub redis_requests: usize,
    pub value_bytes: usize,
    /// Mean request and answer sizes in bytes, framing included.
    pub keyd_request_bytes: f64,
    pub keyd_answer_bytes: f64,
    pub redis_request_bytes: f64,
    pub redis_answer_bytes: f64,
    pub rounds: usize,
    pub warmup_secs: f64,
    pub duration_secs: f64,
    /// With the daemon's default busy polling, then with `busy_poll = "0"`.
    pub configs: Vec<ConfigFigures>,
    /// Resident memory after the runs.
    pub keyd_memory: Option<Memory>,
    pub redis_memory: Option<Memory>,
}

/// One daemon config: every shape.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigFigures {
    pub busy_poll: &'static str,
    pub rows: Vec<RedisRow>,
}

/// One shape with one daemon config: each server's median run and the ratios.
#[derive(Debug, Clone, Serialize)]
pub struct RedisRow {
    pub shape: Shape,
    pub keyd: Measured,
    pub redis: Measured,
    /// The in-process echo server with the daemon's frames (default config only: it does
    /// not poll).
    pub echo: Option<Measured>,
    /// Answers per second of server CPU (utime + stime of all its threads).
    pub keyd_ops_per_cpu_sec: Option<f64>,
    pub redis_ops_per_cpu_sec: Option<f64>,
    /// keyd over Redis: ops/s, and ops per server CPU-second.
    pub ops_ratio: f64,
    pub cpu_ratio: Option<f64>,
    /// Each round's keyd ops/s over the Redis run right after it, in order.
    pub round_ratios: Vec<f64>,
}

impl RedisRow {
    /// `rounds` holds each round's (keyd, Redis) runs: keyd is the subject of every ratio.
    fn new(shape: Shape, rounds: Vec<(Measured, Measured)>, echo: Vec<Measured>) -> RedisRow {
        let paired = Paired::from_rounds(rounds);
        RedisRow {
            shape,
            keyd: paired.subject,
            redis: paired.baseline,
            echo: (!echo.is_empty()).then(|| load::median(echo)),
            keyd_ops_per_cpu_sec: paired.subject_ops_per_cpu_sec,
            redis_ops_per_cpu_sec: paired.baseline_ops_per_cpu_sec,
            ops_ratio: paired.ops_ratio,
            cpu_ratio: paired.cpu_ratio,
            round_ratios: paired.round_ratios,
        }
    }
}

/// What `--redis` is asked to do.
pub struct Plan<'a> {
    pub keyd: &'a Path,
    pub redis: &'a Path,
    pub keys: usize,
    pub shapes: &'a [Shape],
    pub timing: Timing,
    pub rounds: usize,
    pub smoke: bool,
    pub spin: bool,
}

/// The daemon configs measured, in order: as an operator runs it, then without polling.
const CONFIGS: [(&str, &str); 2] = [("default", ""), ("0 (off)", "busy_poll = \"0\"\n")];

/// Starts both servers and the echo floor, and measures every shape in alternating rounds
/// with each daemon config.
pub fn run(plan: &Plan<'_>) -> Result<RedisFigures> {
    let redis_version = redis::version(plan.redis)?;
    let mut keyd = Keyd::start(plan.keyd, CONFIGS[0].1)?;
    eprintln!("redis: seeding {} keys into keyd...", plan.keys);
    let seeded = seed::seed(keyd.socket(), plan.keys, 4, false)?;
    let workload = Arc::new(Workload::build(&seeded.keys)?);
    let get = GetWorkload::from_mix(&workload, &seeded.keys)?;
    eprintln!(
        "redis: starting redis-server {redis_version}, loading {} entries of {} bytes...",
        plan.keys, get.value_bytes
    );
    let redis = RedisServer::start(plan.redis)?;
    redis.load(&seeded.keys, &get)?;
    let scratch = tempfile::Builder::new()
        .prefix("authenta-bench-echo-")
        .tempdir()
        .context("cannot make a temporary directory")?;
    let echo = EchoServer::start(&scratch.path().join("echo.sock"), workload.clone())?;

    let rounds = plan.rounds.max(1);
    let mut configs = Vec::new();
    for (c, (busy_poll, config)) in CONFIGS.into_iter().enumerate() {
        if c > 0 {
            // The same store, so the same keys and mix.
            keyd.restart(config)?;
        }
        let mut rows = Vec::new();
        for &shape in plan.shapes {
            let mut runs = Vec::with_capacity(rounds);
            let mut echo_runs = Vec::new();
            for _ in 0..rounds {
                let k = load::drive(keyd.socket(), &workload, shape, plan.timing, keyd.pid())?;
                let r =
                    load::drive_event_loop(redis.socket(), &get, shape, plan.timing, redis.pid())?;
                runs.push((k, r));
                // The echo server does not poll: once, with the default config.
                if c == 0 {
                    echo_runs.push(load::drive(
                        echo.path(),
                        &workload,
                        shape,
                        plan.timing,
                        None,
                    )?);
                }
            }
            let row = RedisRow::new(shape, runs, echo_runs);
            eprintln!(
                "redis: busy_poll {busy_poll}, {}: keyd {:.0} ops/s, Redis {:.0} ops/s, \
                 ratio {:.2}",
                shape.name, row.keyd.ops_per_sec, row.redis.ops_per_sec, row.ops_ratio
            );
            rows.push(row);
        }
        configs.push(ConfigFigures { busy_poll, rows });
    }
    let keyd_memory = keyd.memory().ok();
    let redis_memory = redis.pid().and_then(|pid| daemon::process_memory(pid).ok());
    drop(echo);
    drop(redis);
    drop(keyd);

    let (keyd_request_bytes, keyd_answer_bytes) = workload.mean_frame_sizes();
    let (redis_request_bytes, redis_answer_bytes) = get.mean_sizes();
    Ok(RedisFigures {
        version: env!("CARGO_PKG_VERSION"),
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        smoke: plan.smoke,
        spin: plan.spin,
        redis_version,
        keys: plan.keys,
        mix: workload.mix.describe(),
        redis_requests: crate::event_loop::Protocol::len(&get),
        value_bytes: get.value_bytes,
        keyd_request_bytes,
        keyd_answer_bytes,
        redis_request_bytes,
        redis_answer_bytes,
        rounds,
        warmup_secs: plan.timing.warmup.as_secs_f64(),
        duration_secs: plan.timing.duration.as_secs_f64(),
        configs,
        keyd_memory,
        redis_memory,
    })
}

impl Figures for RedisFigures {
    fn wrong_answers(&self) -> u64 {
        self.configs
            .iter()
            .flat_map(|c| &c.rows)
            .map(|r| {
                r.keyd.wrong_answers
                    + r.redis.wrong_answers
                    + r.echo.as_ref().map_or(0, |e| e.wrong_answers)
            })
            .sum()
    }

    /// The report for people.
    fn text(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(
            t,
            "authenta-keyd verify next to Redis {} GET, both driven by authenta-bench's event \
             loop: {} keys, {} cores{}; each run {:.1} s after {:.1} s of warm-up; rounds \
             alternate keyd, Redis{}, median of {} per server",
            self.redis_version,
            self.keys,
            self.cores,
            report::conditions(self.smoke, self.spin),
            self.duration_secs,
            self.warmup_secs,
            if self
                .configs
                .iter()
                .any(|c| c.rows.iter().any(|r| r.echo.is_some()))
            {
                ", echo"
            } else {
                ""
            },
            self.rounds
        );
        let _ = writeln!(t, "keyd mix: {}", self.mix);
        let _ = writeln!(
            t,
            "Redis: {} entries (key: the key's token; value: {} bytes), GET in the mix's order \
             less its unknown tokens ({} requests)",
            self.keys, self.value_bytes, self.redis_requests
        );
        let _ = writeln!(
            t,
            "mean bytes per request / answer: keyd {:.1} / {:.1}, Redis {:.1} / {:.1}",
            self.keyd_request_bytes,
            self.keyd_answer_bytes,
            self.redis_request_bytes,
            self.redis_answer_bytes
        );
        for config in &self.configs {
            let _ = writeln!(t, "\nbusy_poll {}", config.busy_poll);
            let _ = writeln!(
                t,
                "{:<11} {:<6} {} {:>13}",
                "shape",
                "server",
                run_heads(),
                "client us/op"
            );
            for r in &config.rows {
                row_lines(&mut t, r);
            }
        }
        let _ = writeln!(t, "\nkeyd/Redis, by busy_poll:");
        let names: Vec<&str> = self.configs.iter().map(|c| c.busy_poll).collect();
        let _ = write!(t, "{:<11}", "shape");
        for name in &names {
            let _ = write!(t, " {:>16}", format!("ops/s {name}"));
        }
        for name in &names {
            let _ = write!(t, " {:>18}", format!("ops/cpu-s {name}"));
        }
        let _ = writeln!(t);
        if let Some(first) = self.configs.first() {
            for (i, row) in first.rows.iter().enumerate() {
                let _ = write!(t, "{:<11}", row.shape.name);
                let rows = || self.configs.iter().filter_map(|c| c.rows.get(i));
                for r in rows() {
                    let _ = write!(t, " {:>16.2}", r.ops_ratio);
                }
                for r in rows() {
                    let _ = write!(t, " {:>18}", or_dash(r.cpu_ratio, 2));
                }
                let _ = writeln!(t);
            }
        }
        let _ = writeln!(
            t,
            "cpu: the server's CPU seconds per second of the measured window (all its threads' \
             user + system time); ops/cpu-s: answers per second of server CPU; client: the \
             bench's load thread, on the same cores; echo: in-process, its CPU not separated"
        );
        if let (Some(k), Some(r)) = (self.keyd_memory, self.redis_memory) {
            let _ = writeln!(
                t,
                "memory after the runs: keyd {:.1} MiB resident, Redis {:.1} MiB",
                k.rss_mib, r.rss_mib
            );
        }
        t
    }
}

/// A shape's servers and its ratios.
fn row_lines(t: &mut String, r: &RedisRow) {
    let servers = [
        ("keyd", Some(&r.keyd), r.keyd_ops_per_cpu_sec),
        ("Redis", Some(&r.redis), r.redis_ops_per_cpu_sec),
        ("echo", r.echo.as_ref(), None),
    ];
    for (server, m, per_cpu) in servers {
        let Some(m) = m else { continue };
        let _ = writeln!(
            t,
            "{:<11} {:<6} {} {:>13}",
            r.shape.name,
            server,
            run_cells(m, per_cpu),
            cpu_cells(m.client_cpu).1,
        );
    }
    let _ = writeln!(
        t,
        "{:<11} keyd/Redis: ops/s {:.2}, ops per CPU-second {}; each round's ops/s: {}",
        "",
        r.ops_ratio,
        or_dash(r.cpu_ratio, 2),
        ratios_line(&r.round_ratios)
    );
}
