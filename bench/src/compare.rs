//! `--scale-compare`: an A/B test of two authenta-keyd builds on the same million-key store.
//!
//! On a shared VM, runs an hour apart differ by more than most changes to the verify path
//! (one binary's million-key ratio moved between 0.81 and 0.92), so a change is judged by
//! alternating the two binaries round by round in one run. Each round restarts the large
//! daemon with the binary whose turn it is, so both start alike (no usage left to flush),
//! and divides its throughput by the 10,000-key daemon's just before it.

use crate::daemon::Keyd;
use crate::load::{self, Shape, Timing};
use crate::workload::Workload;
use anyhow::Result;
use serde::Serialize;
use std::path::Path;

/// One shape: each round's large/small ratio with either binary, in order.
#[derive(Debug, Clone, Serialize)]
pub struct CompareRow {
    pub shape: Shape,
    pub this: Vec<f64>,
    pub other: Vec<f64>,
}

/// The A/B figures.
#[derive(Debug, Clone, Serialize)]
pub struct Compare {
    /// The other binary, as given.
    pub other_binary: String,
    pub rows: Vec<CompareRow>,
    /// Answers that were not the bytes expected, in every run of the comparison.
    pub wrong_answers: u64,
}

/// The middle of `ratios` (the upper one of two).
pub fn median(ratios: &[f64]) -> f64 {
    let mut sorted = ratios.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Runs each of `shapes` `rounds` times per binary, alternating `this` and `other` as the
/// large daemon `keyd` (restarted on its store each time), against the small daemon at
/// `small_socket`. Leaves `keyd` running `this`.
#[allow(clippy::too_many_arguments)]
pub fn run(
    keyd: &mut Keyd,
    this: &Path,
    other: &Path,
    small_socket: &Path,
    small: &Workload,
    large: &Workload,
    shapes: &[Shape],
    timing: Timing,
    rounds: usize,
) -> Result<Compare> {
    let mut rows = Vec::new();
    let mut wrong_answers = 0;
    for &shape in shapes {
        let mut ratios: [Vec<f64>; 2] = Default::default();
        for round in 0..rounds {
            for (turn, bin) in [this, other].into_iter().enumerate() {
                keyd.stop()?;
                keyd.use_binary(bin);
                keyd.launch("")?;
                keyd.pause()?;
                let small_run = load::drive(small_socket, small, shape, timing, None)?;
                keyd.resume()?;
                let large_run = load::drive(keyd.socket(), large, shape, timing, None)?;
                wrong_answers += small_run.wrong_answers + large_run.wrong_answers;
                let ratio = large_run.ops_per_sec / small_run.ops_per_sec.max(1e-9);
                eprintln!(
                    "compare: {} round {} {}: {ratio:.3}",
                    shape.name,
                    round + 1,
                    ["this", "other"][turn]
                );
                ratios[turn].push(ratio);
            }
        }
        let [this, other] = ratios;
        rows.push(CompareRow { shape, this, other });
    }
    keyd.stop()?;
    keyd.use_binary(this);
    keyd.launch("")?;
    Ok(Compare {
        other_binary: other.display().to_string(),
        rows,
        wrong_answers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_is_the_middle_ratio() {
        assert_eq!(median(&[0.9, 0.8, 0.85]), 0.85);
        assert_eq!(median(&[0.9, 0.8]), 0.9);
        assert!(median(&[]).is_nan());
    }
}
