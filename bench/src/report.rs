//! What a run found: one structure, printed as a table for people or as JSON for scripts,
//! with the targets checked against it (a missed target is reported, not an error:
//! the smoke run in CI checks that the bench runs, not how fast).

use crate::compare::{self, Compare};
use crate::creates::Creates;
use crate::daemon::Memory;
use crate::flush::Flush;
use crate::http::HttpFigures;
use crate::load::{Measured, Shape};
use crate::paired::ratios_line;
use crate::poll_cost::PollCost;
use crate::scale::Scale;
use crate::workload::Mix;
use serde::Serialize;
use std::fmt::Write as _;

/// What a mode of the bench measured, as `main` prints it: for people or, with `--json`, as
/// the structure itself.
pub trait Figures: Serialize {
    /// The report for people.
    fn text(&self) -> String;

    /// Answers that were not what the mix expected, over every run: any makes the figures
    /// invalid (each is a bug, not noise).
    fn wrong_answers(&self) -> u64;
}

/// One shape against the daemon and against the echo server.
#[derive(Debug, Clone, Serialize)]
pub struct ShapeRow {
    pub shape: Shape,
    pub keyd: Measured,
    pub echo: Measured,
    /// keyd ops/s over echo ops/s.
    pub ops_ratio: f64,
    /// keyd p50 over echo p50.
    pub p50_ratio: f64,
}

impl ShapeRow {
    pub fn new(shape: Shape, keyd: Measured, echo: Measured) -> ShapeRow {
        ShapeRow {
            shape,
            ops_ratio: keyd.ops_per_sec / echo.ops_per_sec.max(1e-9),
            p50_ratio: keyd.latency.p50_us / echo.latency.p50_us.max(1e-9),
            keyd,
            echo,
        }
    }
}

/// Seeding figures.
#[derive(Debug, Clone, Serialize)]
pub struct SeedFigures {
    pub keys: usize,
    pub secs: f64,
    pub per_sec: f64,
}

/// One of the targets, and whether this run met it.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub what: String,
    pub figure: f64,
    pub target: String,
    pub holds: bool,
}

/// Everything one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub version: &'static str,
    pub cores: usize,
    pub smoke: bool,
    /// Runs per shape and server; the median one is reported.
    pub rounds: usize,
    /// Whether nice-19 threads kept every core from halting (`--spin`).
    pub spin: bool,
    pub warmup_secs: f64,
    pub duration_secs: f64,
    pub mix: Mix,
    pub mix_text: String,
    /// Mean request and answer frame sizes, length prefix included.
    pub request_bytes: f64,
    pub answer_bytes: f64,
    pub seed: SeedFigures,
    pub shapes: Vec<ShapeRow>,
    pub daemon_memory: Option<Memory>,
    pub flush: Option<Flush>,
    /// Busy polling on and off at steady request rates.
    pub poll_cost: Option<PollCost>,
    pub creates: Option<Creates>,
    pub scale: Option<Scale>,
    /// `--smoke`'s round of forward-auth over HTTP next to the socket.
    pub http: Option<HttpFigures>,
    pub checks: Vec<Check>,
    /// Answers that were not what the mix expected, over every run.
    pub wrong_answers: u64,
}

impl Report {
    /// Fills in `checks` from the figures present.
    pub fn check_targets(&mut self) {
        let mut checks = Vec::new();
        let mut check = |what: String, figure: f64, target: &str, holds: bool| {
            checks.push(Check {
                what,
                figure,
                target: target.into(),
                holds,
            })
        };
        if let Some(row) = self.shapes.iter().find(|r| r.shape.name == "sync-1") {
            check(
                "sync-1 p50, keyd over echo".into(),
                row.p50_ratio,
                "<= 1.3",
                row.p50_ratio <= 1.3,
            );
        }
        if let Some(c) = &self.creates {
            check(
                format!("durable creates/s with {} clients", c.clients),
                c.per_sec,
                ">= 2000",
                c.per_sec >= 2000.0,
            );
        }
        if let Some(f) = &self.flush {
            for row in &f.rows {
                check(
                    format!(
                        "{} verify p99 during flush, over p99 without",
                        row.shape.name
                    ),
                    row.p99_ratio,
                    "<= 2.0",
                    row.p99_ratio <= 2.0,
                );
            }
        }
        if let Some(s) = &self.scale {
            check(
                format!("start-up with {} keys from every row, s", s.keys),
                s.startup_from_rows_secs,
                "< 3",
                s.startup_from_rows_secs < 3.0,
            );
            check(
                format!(
                    "start-up with {} keys from the index snapshot (issue 21), s",
                    s.keys
                ),
                s.startup_secs,
                "< 1",
                s.startup_secs < 1.0,
            );
            let peak = s
                .memory_after_load
                .rss_mib
                .max(s.memory_after_start.rss_mib);
            check(
                format!("resident memory with {} keys, MiB", s.keys),
                peak,
                "< 300",
                peak < 300.0,
            );
            for row in &s.flush.rows {
                check(
                    format!(
                        "{} verify p99 during flush with {} keys, over p99 without",
                        row.shape.name, s.keys
                    ),
                    row.p99_ratio,
                    "<= 2.0",
                    row.p99_ratio <= 2.0,
                );
            }
            for row in &s.rows {
                check(
                    format!(
                        "{} ops/s with {} keys over {} keys",
                        row.shape.name, s.keys, s.small_keys
                    ),
                    row.throughput_ratio,
                    ">= 0.9",
                    row.throughput_ratio >= 0.9,
                );
            }
        }
        if let Some(h) = &self.http {
            check(
                "HTTP verify ops/s over socket sync-50 (the HTTP side's target)".into(),
                h.ratio,
                ">= 0.5",
                h.reached,
            );
            check(
                "HTTP verify ops/s over the Unix socket, over socket sync-50".into(),
                h.unix_ratio,
                ">= 0.5",
                h.unix_reached,
            );
        }
        self.checks = checks;
    }

    /// The report for people.
    pub fn text(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(
            t,
            "authenta-bench {}: {} cores{}; each run {:.1} s after {:.1} s of warm-up; \
             median of {} run(s) per shape and server",
            self.version,
            self.cores,
            conditions(self.smoke, self.spin),
            self.duration_secs,
            self.warmup_secs,
            self.rounds
        );
        let _ = writeln!(t, "mix: {}", self.mix_text);
        let _ = writeln!(
            t,
            "frames: request {:.0} B, answer {:.0} B (the echo server sends the same answers)",
            self.request_bytes, self.answer_bytes
        );
        let _ = writeln!(
            t,
            "seeded {} keys in {:.2} s ({:.0} creates/s, pipelined)",
            self.seed.keys, self.seed.secs, self.seed.per_sec
        );
        let _ = writeln!(
            t,
            "latency: per request, from the write of its batch to the read of its answer\n"
        );
        let _ = writeln!(
            t,
            "{:<11} {:>9} {:>12} {:>12} {:>9} {:>10} {:>10} {:>10} {:>10} {:>9} {:>9}",
            "shape",
            "conn x in",
            "keyd ops/s",
            "echo ops/s",
            "ops ratio",
            "keyd p50",
            "keyd p99",
            "echo p50",
            "echo p99",
            "p50 ratio",
            "keyd cpu"
        );
        for r in &self.shapes {
            let _ = writeln!(
                t,
                "{:<11} {:>9} {:>12.0} {:>12.0} {:>9.2} {:>10} {:>10} {:>10} {:>10} {:>9.2} {:>9}",
                r.shape.name,
                format!("{}x{}", r.shape.connections, r.shape.depth),
                r.keyd.ops_per_sec,
                r.echo.ops_per_sec,
                r.ops_ratio,
                us(r.keyd.latency.p50_us),
                us(r.keyd.latency.p99_us),
                us(r.echo.latency.p50_us),
                us(r.echo.latency.p99_us),
                r.p50_ratio,
                r.keyd
                    .server_cpu
                    .map_or("-".into(), |cpu| format!("{:.2}", cpu.cores))
            );
        }
        if self.shapes.iter().any(|r| r.keyd.server_cpu.is_some()) {
            let _ = writeln!(
                t,
                "keyd cpu: the daemon's CPU seconds per second over the measured window \
                 (1.00 is one core busy)"
            );
        }
        if let Some(m) = &self.daemon_memory {
            let _ = writeln!(
                t,
                "\ndaemon with {} keys: {:.1} MiB resident (peak {:.1} MiB)",
                self.seed.keys, m.rss_mib, m.peak_rss_mib
            );
        }
        if let Some(f) = &self.flush {
            flush_table(&mut t, f, "");
        }
        if let Some(p) = &self.poll_cost {
            poll_cost_table(&mut t, p);
        }
        if let Some(c) = &self.creates {
            let _ = writeln!(
                t,
                "\ndurable creates: {} clients, one create in flight each: {:.0} creates/s \
                 ({} in {:.1} s), p50 {}, p99 {}",
                c.clients,
                c.per_sec,
                c.creates,
                c.secs,
                us(c.latency.p50_us),
                us(c.latency.p99_us)
            );
        }
        if let Some(s) = &self.scale {
            let _ = writeln!(t, "\nscale: {} keys", s.keys);
            let _ = writeln!(
                t,
                "  seeded in {:.1} s ({:.0} creates/s); stop (with usage flush) {:.2} s",
                s.seed_secs, s.seed_per_sec, s.stop_secs
            );
            let logged = |ms: Option<u64>| ms.map_or_else(|| "?".into(), |ms| ms.to_string());
            let _ = writeln!(
                t,
                "  start-up {:.2} s to the first handshake from the index snapshot (daemon logged {} ms), {:.2} s from every row (logged {} ms)",
                s.startup_secs,
                logged(s.logged_startup_ms),
                s.startup_from_rows_secs,
                logged(s.logged_from_rows_ms),
            );
            let _ = writeln!(
                t,
                "  resident {:.0} MiB after start (peak {:.0}), {:.0} MiB after the load runs (peak {:.0})",
                s.memory_after_start.rss_mib,
                s.memory_after_start.peak_rss_mib,
                s.memory_after_load.rss_mib,
                s.memory_after_load.peak_rss_mib
            );
            if let Some(keys) = s.flushed_at_stop {
                let _ = writeln!(
                    t,
                    "  stop after the load runs {:.2} s, writing the usage of {keys} keys \
                     ({:.0} keys/s)",
                    s.stop_after_load_secs,
                    keys as f64 / s.stop_after_load_secs.max(1e-9)
                );
            }
            let _ = writeln!(t, "  mix: {}", s.mix.describe());
            let _ = writeln!(
                t,
                "  the {}-key daemon's mix in these runs (at least as long): {}",
                s.small_keys,
                s.small_mix.describe()
            );
            let _ = writeln!(
                t,
                "  {:<11} {:>13} {:>13} {:>6} {:>10} {:>10} {:>13} {:>13}",
                "shape",
                format!("{} keys", s.small_keys),
                format!("{} keys", s.keys),
                "ratio",
                "p99 small",
                "p99 large",
                "echo, small",
                "echo, large"
            );
            for r in &s.rows {
                let _ = writeln!(
                    t,
                    "  {:<11} {:>13.0} {:>13.0} {:>6.2} {:>10} {:>10} {:>13.0} {:>13.0}",
                    r.shape.name,
                    r.small.ops_per_sec,
                    r.large.ops_per_sec,
                    r.throughput_ratio,
                    us(r.small.latency.p99_us),
                    us(r.large.latency.p99_us),
                    r.echo_small.ops_per_sec,
                    r.echo_large.ops_per_sec
                );
            }
            for r in s.rows.iter().filter(|r| r.round_ratios.len() > 1) {
                let _ = writeln!(
                    t,
                    "  {}: each round's ratio, in order: {}",
                    r.shape.name,
                    ratios_line(&r.round_ratios)
                );
            }
        }
        if let Some(s) = &self.scale {
            flush_table(&mut t, &s.flush, &format!(" with {} keys", s.keys));
            if let Some(c) = &s.compare {
                compare_table(&mut t, c, s.keys);
            }
        }
        if let Some(h) = &self.http {
            let _ = write!(t, "\n{}", h.text());
        }
        if !self.checks.is_empty() {
            let _ = writeln!(t, "\ntargets (from issue 5):");
            for c in &self.checks {
                let _ = writeln!(
                    t,
                    "  [{}] {}: {:.2} (target {})",
                    if c.holds { "ok  " } else { "MISS" },
                    c.what,
                    c.figure,
                    c.target
                );
            }
        }
        if self.wrong_answers > 0 {
            let _ = writeln!(t, "\n{} WRONG ANSWERS: see stderr", self.wrong_answers);
        }
        t
    }
}

/// What set the runs apart (smoke mode, or spinners on every core), as the first line of a
/// report says it.
pub fn conditions(smoke: bool, spin: bool) -> &'static str {
    match (smoke, spin) {
        (true, _) => " (smoke mode)",
        (false, true) => " kept busy by nice-19 spinners (--spin)",
        (false, false) => "",
    }
}

/// The A/B test of `--scale-compare`.
fn compare_table(t: &mut String, c: &Compare, keys: usize) {
    let _ = writeln!(
        t,
        "\nA/B on the {keys}-key store: each round's ratio to the small daemon, the large \
         daemon restarted with each binary in turn\n  other: {}",
        c.other_binary
    );
    let rounds = |ratios: &[f64]| {
        format!(
            "{} (median {:.3})",
            ratios_line(ratios),
            compare::median(ratios)
        )
    };
    for r in &c.rows {
        let _ = writeln!(t, "  {:<11} this:  {}", r.shape.name, rounds(&r.this));
        let _ = writeln!(t, "  {:<11} other: {}", "", rounds(&r.other));
    }
}

/// The flush scenario's table.
fn flush_table(t: &mut String, f: &Flush, keys: &str) {
    let _ = writeln!(
        t,
        "\nverify{keys} while usage is flushed every {} (vs. no flush in the run):",
        f.interval
    );
    let _ = writeln!(
        t,
        "{:<11} {:>12} {:>12} {:>10} {:>10} {:>9}",
        "shape", "ops/s no fl", "ops/s flush", "p99 no fl", "p99 flush", "p99 ratio"
    );
    for r in &f.rows {
        let _ = writeln!(
            t,
            "{:<11} {:>12.0} {:>12.0} {:>10} {:>10} {:>9.2}",
            r.shape.name,
            r.without.ops_per_sec,
            r.with.ops_per_sec,
            us(r.without.latency.p99_us),
            us(r.with.latency.p99_us),
            r.p99_ratio
        );
    }
}

fn poll_cost_table(t: &mut String, p: &PollCost) {
    let _ = writeln!(
        t,
        "\nbusy polling at steady rates: one connection, a verify every 1/rate s for {:.1} s; \
         the daemon's CPU (cores) and the round trip, with the default busy_poll and with \
         busy_poll = \"0\":",
        p.secs_per_run
    );
    let _ = writeln!(
        t,
        "{:>7} {:>11} {:>9} {:>9} {:>10} {:>10} {:>10} {:>10}",
        "rate/s", "achieved/s", "cpu poll", "cpu off", "p50 poll", "p50 off", "p99 poll", "p99 off"
    );
    for r in &p.rows {
        let _ = writeln!(
            t,
            "{:>7} {:>11.0} {:>9.2} {:>9.2} {:>10} {:>10} {:>10} {:>10}",
            r.rate,
            r.polling.per_sec,
            r.polling.cpu_cores,
            r.off.cpu_cores,
            us(r.polling.latency.p50_us),
            us(r.off.latency.p50_us),
            us(r.polling.latency.p99_us),
            us(r.off.latency.p99_us)
        );
    }
}

/// Microseconds, shown as µs below 10 ms and as ms above.
fn us(value: f64) -> String {
    if value < 10_000.0 {
        format!("{value:.1}us")
    } else {
        format!("{:.1}ms", value / 1000.0)
    }
}
