//! Latency percentiles from every sample of a run: exact (sorted), not estimated.

use serde::Serialize;
use std::time::Duration;

/// A run's latencies, in microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Latency {
    pub samples: usize,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

impl Latency {
    /// Summarises samples in nanoseconds (sorted in place).
    pub fn from_nanos(samples: &mut [u32]) -> Latency {
        if samples.is_empty() {
            return Latency::default();
        }
        samples.sort_unstable();
        let at = |q: f64| {
            // Nearest-rank percentile.
            let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
            f64::from(samples[rank - 1]) / 1000.0
        };
        Latency {
            samples: samples.len(),
            p50_us: at(0.50),
            p90_us: at(0.90),
            p99_us: at(0.99),
            p999_us: at(0.999),
            max_us: at(1.0),
        }
    }
}

/// A duration as whole nanoseconds, saturating at about 4.3 s (longer is a broken run).
pub fn nanos(d: Duration) -> u32 {
    u32::try_from(d.as_nanos()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let mut samples: Vec<u32> = (1..=100).map(|us| us * 1000).collect();
        let l = Latency::from_nanos(&mut samples);
        assert_eq!((l.p50_us, l.p99_us, l.max_us), (50.0, 99.0, 100.0));
        assert_eq!(Latency::from_nanos(&mut []).samples, 0);
    }
}
