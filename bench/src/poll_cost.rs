//! What the daemon's busy polling costs and buys at a steady request rate: one connection
//! sending verifies paced at fixed rates (the way an app serving traffic asks, rather than
//! back to back), once with the daemon's default `busy_poll` and once with it off, each
//! time measuring the daemon's CPU and the round trip.

use crate::cpu;
use crate::daemon::Keyd;
use crate::stats::{nanos, Latency};
use crate::wire;
use crate::workload::Workload;
use anyhow::{Context, Result};
use serde::Serialize;
use std::io::Write;
use std::time::{Duration, Instant};

/// Verifies per second asked for, one connection, one in flight.
pub const RATES: [u32; 5] = [1_000, 2_000, 5_000, 10_000, 20_000];

/// One rate with polling on (the default) and off.
#[derive(Debug, Clone, Serialize)]
pub struct PollCostRow {
    pub rate: u32,
    pub polling: Paced,
    pub off: Paced,
}

/// What one paced run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Paced {
    /// Verifies per second the run achieved (below the rate when round trips fall behind).
    pub per_sec: f64,
    /// The daemon's CPU seconds per second.
    pub cpu_cores: f64,
    pub latency: Latency,
    /// Answers that were not the bytes expected.
    pub wrong_answers: u64,
}

/// The scenario's figures.
#[derive(Debug, Clone, Serialize)]
pub struct PollCost {
    pub secs_per_run: f64,
    pub rows: Vec<PollCostRow>,
}

impl PollCost {
    /// Answers that differed from the expected ones, in every run of the scenario.
    pub fn wrong_answers(&self) -> u64 {
        self.rows
            .iter()
            .map(|r| r.polling.wrong_answers + r.off.wrong_answers)
            .sum()
    }
}

/// Runs every rate for `duration` on `keyd` as it is configured (polling by default), then
/// with `busy_poll = "0"`, then restarts it with `restore_config`.
pub fn run(
    keyd: &mut Keyd,
    workload: &Workload,
    duration: Duration,
    restore_config: &str,
) -> Result<PollCost> {
    let polling = RATES
        .iter()
        .map(|&rate| paced(keyd, workload, rate, duration))
        .collect::<Result<Vec<_>>>()?;
    keyd.restart("busy_poll = \"0\"\n")?;
    let off = RATES
        .iter()
        .map(|&rate| paced(keyd, workload, rate, duration))
        .collect::<Result<Vec<_>>>()?;
    keyd.restart(restore_config)?;
    let rows = RATES
        .iter()
        .zip(polling.into_iter().zip(off))
        .map(|(&rate, (polling, off))| PollCostRow { rate, polling, off })
        .collect();
    Ok(PollCost {
        secs_per_run: duration.as_secs_f64(),
        rows,
    })
}

/// One connection sending a verify every `1/rate` seconds (on a fixed schedule, so a slow
/// answer does not push the next request later) for `duration`.
fn paced(keyd: &Keyd, workload: &Workload, rate: u32, duration: Duration) -> Result<Paced> {
    let pid = keyd.pid().context("the daemon is not running")?;
    let (mut stream, mut reader) = wire::connect(keyd.socket())?;
    let interval = Duration::from_secs(1) / rate.max(1);
    let mut samples = Vec::with_capacity((duration.as_secs_f64() * f64::from(rate)) as usize);
    let mut wrong = 0;
    let mut next = 0;
    let cpu_before = cpu::used(pid).context("cannot read the daemon's CPU time")?;
    let start = Instant::now();
    for n in 0u32.. {
        let due = start + interval * n;
        if due >= start + duration {
            break;
        }
        wait_until(due);
        let sent = Instant::now();
        stream.write_all(workload.request(next))?;
        let answer = reader.next(&mut stream)?;
        samples.push(nanos(sent.elapsed()));
        if answer != workload.answer(next) {
            wrong += 1;
        }
        next = (next + 1) % workload.len();
    }
    let wall = start.elapsed();
    let cpu = cpu::used(pid)
        .context("cannot read the daemon's CPU time")?
        .saturating_sub(cpu_before);
    Ok(Paced {
        per_sec: samples.len() as f64 / wall.as_secs_f64().max(1e-9),
        cpu_cores: cpu.as_secs_f64() / wall.as_secs_f64().max(1e-9),
        latency: Latency::from_nanos(&mut samples),
        wrong_answers: wrong,
    })
}

/// Sleeps most of the wait and spins the rest: a sleep overshoots by tens of microseconds
/// here, which would set the rate instead of the schedule.
fn wait_until(due: Instant) {
    const SPIN: Duration = Duration::from_micros(250);
    loop {
        let now = Instant::now();
        if now >= due {
            return;
        }
        let left = due - now;
        if left > SPIN {
            std::thread::sleep(left - SPIN);
        } else {
            std::hint::spin_loop();
        }
    }
}
