//! The million-key scenarios: how long seeding takes, start-up time and resident memory with
//! that many keys in the store, and verify throughput against the same shapes on the
//! 10,000-key daemon, run alternately so that the noisy machine affects both alike.

use crate::compare::{self, Compare};
use crate::daemon::{Keyd, Memory};
use crate::echo::EchoServer;
use crate::flush::{self, Flush};
use crate::load::{self, Measured, Shape, Timing};
use crate::seed::{self, SeededKey};
use crate::workload::{Mix, Workload};
use anyhow::Result;
use serde::Serialize;
use std::path::Path;
use std::sync::Arc;

/// Connections used to seed: enough to keep the store thread's batches full.
const SEED_CONNECTIONS: usize = 8;

/// One shape on the small and the large store.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleRow {
    pub shape: Shape,
    pub small: Measured,
    pub large: Measured,
    /// Large ops/s over small ops/s (the median run of each).
    pub throughput_ratio: f64,
    /// Each round's large ops/s over the small ops/s measured just before it, in order: the
    /// spread a reader needs on a noisy machine, where one median hides it.
    pub round_ratios: Vec<f64>,
    /// The same two mixes against the echo server: the part of any difference that is not
    /// the daemon's.
    pub echo_small: Measured,
    pub echo_large: Measured,
}

/// The million-key figures.
#[derive(Debug, Clone, Serialize)]
pub struct Scale {
    pub keys: usize,
    pub small_keys: usize,
    pub seed_secs: f64,
    pub seed_per_sec: f64,
    /// SIGTERM to exit, with the usage of every key flushed (just after seeding: none used).
    pub stop_secs: f64,
    /// SIGTERM to exit after the load runs, and how many keys' usage that stop wrote: what
    /// one unpaced flush of that many keys costs.
    pub stop_after_load_secs: f64,
    pub flushed_at_stop: Option<u64>,
    /// Process start until the socket answers a handshake, from the index snapshot the
    /// stop before wrote.
    pub startup_secs: f64,
    /// The same from every row, the snapshot removed (as after a crash), and what the
    /// daemon logged.
    pub startup_from_rows_secs: f64,
    pub logged_from_rows_ms: Option<u64>,
    /// What the daemon logged as its own start-up (store open to listening).
    pub logged_startup_ms: Option<u64>,
    pub memory_after_start: Memory,
    pub memory_after_load: Memory,
    pub mix: Mix,
    /// The small daemon's mix in these runs: its keys asked over and over, as many requests
    /// as `mix` (see [`Workload::build_at_least`]).
    pub small_mix: Mix,
    pub rows: Vec<ScaleRow>,
    /// Verify latency with and without usage flushes, on the large store.
    pub flush: Flush,
    /// With `--scale-compare`: the A/B test of another build on the large store.
    pub compare: Option<Compare>,
}

impl Scale {
    /// Answers that differed from the expected ones, in every run of the million-key
    /// scenarios (the comparison, its flush scenario and any A/B).
    pub fn wrong_answers(&self) -> u64 {
        let compared: u64 = self
            .rows
            .iter()
            .map(|r| {
                r.small.wrong_answers
                    + r.large.wrong_answers
                    + r.echo_small.wrong_answers
                    + r.echo_large.wrong_answers
            })
            .sum();
        compared + self.flush.wrong_answers() + self.compare.as_ref().map_or(0, |c| c.wrong_answers)
    }
}

/// Seeds `keys` keys into a fresh daemon, restarts it, and compares it with the small daemon
/// at `small_socket` (which holds `small_keys`) on `shapes`, each `rounds` times; then, given
/// `compare_with`, A/B-tests that build against `bin` on the same store ([`compare::run`]).
///
/// The small daemon is asked a mix as long as the large one (its keys over and over), so
/// that the client streams as much pre-encoded mix through the caches the two share with
/// the daemons in both runs: with the small daemon's usual mix (12,500 requests, which stay
/// in cache), part of the difference was the client's.
#[allow(clippy::too_many_arguments)]
pub fn run(
    bin: &Path,
    compare_with: Option<&Path>,
    keys: usize,
    small_socket: &Path,
    small_keys: &[SeededKey],
    shapes: &[Shape],
    timing: Timing,
    rounds: usize,
) -> Result<Scale> {
    let mut keyd = Keyd::start(bin, "")?;
    eprintln!("scale: seeding {keys} keys on {SEED_CONNECTIONS} connections...");
    let seeded = seed::seed(keyd.socket(), keys, SEED_CONNECTIONS, true)?;
    let seed_secs = seeded.elapsed.as_secs_f64();
    eprintln!("scale: seeded in {seed_secs:.1} s; building the mix");
    let large = Workload::build(&seeded.keys)?;
    drop(seeded);

    let stop_secs = keyd.stop()?.as_secs_f64();
    keyd.remove_index_snapshot()?;
    let startup_from_rows_secs = keyd.launch("")?.as_secs_f64();
    let logged_from_rows_ms = keyd.logged_startup_ms();
    keyd.stop()?;
    let startup_secs = keyd.launch("")?.as_secs_f64();
    let memory_after_start = keyd.memory()?;
    eprintln!(
        "scale: restarted in {startup_secs:.2} s, {:.0} MiB resident",
        memory_after_start.rss_mib
    );

    let scratch = tempfile::Builder::new()
        .prefix("authenta-bench-echo-")
        .tempdir()?;
    let large = Arc::new(large);
    let echo_large = EchoServer::start(&scratch.path().join("large.sock"), large.clone())?;
    let small = Arc::new(Workload::build_at_least(small_keys, large.mix.requests)?);
    let echo_small = EchoServer::start(&scratch.path().join("small.sock"), small.clone())?;
    eprintln!(
        "scale: the small daemon's mix here: {}",
        small.mix.describe()
    );
    let mut rows = Vec::new();
    for &shape in shapes {
        // Alternating, `rounds` times, and the median of each: one burst of other work on a
        // shared machine must not decide the ratio.
        let mut runs: [Vec<Measured>; 4] = Default::default();
        // The large daemon is frozen while the others are measured: its usage flush after
        // a run goes on in the background, and is its cost, not theirs.
        for _ in 0..rounds {
            keyd.pause()?;
            runs[0].push(load::drive(small_socket, &small, shape, timing, None)?);
            keyd.resume()?;
            runs[1].push(load::drive(keyd.socket(), &large, shape, timing, None)?);
            keyd.pause()?;
            runs[2].push(load::drive(echo_small.path(), &small, shape, timing, None)?);
            runs[3].push(load::drive(echo_large.path(), &large, shape, timing, None)?);
            keyd.resume()?;
        }
        let round_ratios = runs[0]
            .iter()
            .zip(&runs[1])
            .map(|(small_run, large_run)| large_run.ops_per_sec / small_run.ops_per_sec.max(1e-9))
            .collect();
        // The median of each, carrying the wrong answers of all its rounds, so that one in
        // any round fails the bench.
        let [small_run, large_run, echo_small_run, echo_large_run] = runs.map(|group| {
            let wrong = group.iter().map(|run| run.wrong_answers).sum();
            let mut median = load::median(group);
            median.wrong_answers = wrong;
            median
        });
        eprintln!(
            "scale: {}: {:.0} ops/s with {} keys, {:.0} ops/s with {keys}",
            shape.name, small_run.ops_per_sec, small.mix.keys, large_run.ops_per_sec
        );
        rows.push(ScaleRow {
            shape,
            throughput_ratio: large_run.ops_per_sec / small_run.ops_per_sec.max(1e-9),
            round_ratios,
            small: small_run,
            large: large_run,
            echo_small: echo_small_run,
            echo_large: echo_large_run,
        });
    }
    let memory_after_load = keyd.memory()?;
    let logged_startup_ms = keyd.logged_startup_ms();
    // The load runs left most keys' usage unwritten; a stop writes all of it unpaced.
    let stop_after_load_secs = keyd.stop()?.as_secs_f64();
    let flushed_at_stop = keyd.logged_flushed_keys();
    eprintln!(
        "scale: stopped in {stop_after_load_secs:.2} s, flushing the usage of {} keys",
        flushed_at_stop.map_or("?".into(), |n| n.to_string())
    );
    keyd.launch("")?;
    eprintln!("scale: flush scenario...");
    let flush_shapes: Vec<Shape> = shapes.iter().copied().filter(|s| s.depth == 1).collect();
    let flush = flush::run(
        &mut keyd,
        &large,
        &flush_shapes,
        timing,
        flush::SCALE_INTERVAL,
        "",
    )?;
    let compare = match compare_with {
        Some(other) => {
            eprintln!("scale: A/B with {}...", other.display());
            Some(compare::run(
                &mut keyd,
                bin,
                other,
                small_socket,
                &small,
                &large,
                shapes,
                timing,
                rounds.max(3),
            )?)
        }
        None => None,
    };
    Ok(Scale {
        keys,
        small_keys: small.mix.keys,
        seed_secs,
        seed_per_sec: keys as f64 / seed_secs.max(1e-9),
        stop_secs,
        stop_after_load_secs,
        flushed_at_stop,
        startup_secs,
        startup_from_rows_secs,
        logged_from_rows_ms,
        logged_startup_ms,
        memory_after_start,
        memory_after_load,
        mix: large.mix,
        small_mix: small.mix,
        rows,
        flush,
        compare,
    })
}
