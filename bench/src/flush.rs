//! Verify latency while usage is being flushed. Verify only bumps in-memory counters; every
//! `usage_flush_interval` the daemon collects the changed ones and the store thread seals
//! and writes them in one transaction. The same shapes run twice on the same store: once
//! with flushing put off for an hour (none happens in the run), once flushing often enough
//! that flushes run back to back, each writing the usage of every key touched since the last
//! (every 100 ms with 10,000 keys; every second with a million, where one flush takes about
//! that long).

use crate::daemon::Keyd;
use crate::load::{self, Measured, Shape, Timing};
use crate::workload::Workload;
use anyhow::Result;
use serde::Serialize;

/// The interval of the flushing run with 10,000 keys.
pub const INTERVAL: &str = "100ms";
/// The interval of the flushing run with a million keys.
pub const SCALE_INTERVAL: &str = "1s";

/// One shape without and with flushing.
#[derive(Debug, Clone, Serialize)]
pub struct FlushRow {
    pub shape: Shape,
    pub without: Measured,
    pub with: Measured,
    /// p99 with flushing over p99 without.
    pub p99_ratio: f64,
}

/// The flush scenario's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Flush {
    pub interval: &'static str,
    pub rows: Vec<FlushRow>,
}

impl Flush {
    /// Answers that differed from the expected ones, in every run of the scenario.
    pub fn wrong_answers(&self) -> u64 {
        self.rows
            .iter()
            .map(|r| r.with.wrong_answers + r.without.wrong_answers)
            .sum()
    }
}

/// Runs `shapes` on `keyd` without flushes and with one every `interval`, then restores
/// `restore_config`.
pub fn run(
    keyd: &mut Keyd,
    workload: &Workload,
    shapes: &[Shape],
    timing: Timing,
    interval: &'static str,
    restore_config: &str,
) -> Result<Flush> {
    keyd.restart("usage_flush_interval = \"1h\"\n")?;
    let mut without = Vec::new();
    for &shape in shapes {
        without.push(load::drive(keyd.socket(), workload, shape, timing, None)?);
    }
    keyd.restart(&format!("usage_flush_interval = \"{interval}\"\n"))?;
    let mut rows = Vec::new();
    for (&shape, without) in shapes.iter().zip(without) {
        let with = load::drive(keyd.socket(), workload, shape, timing, None)?;
        rows.push(FlushRow {
            shape,
            p99_ratio: with.latency.p99_us / without.latency.p99_us.max(1e-9),
            without,
            with,
        });
    }
    keyd.restart(restore_config)?;
    Ok(Flush { interval, rows })
}
