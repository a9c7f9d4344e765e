//! Two sides measured in alternating rounds on one machine (HTTP and the socket for
//! `--http`, keyd and Redis for `--redis`) and how the first compares with the second; and
//! the table cells both reports print them with.
//!
//! Rounds alternate so that a burst of other work on a shared machine lands on both sides:
//! each side's median run is reported, and each round's ratio shows a round that was off.

use crate::load::{self, Measured, ServerCpu};

/// One side's median run next to the other's, and the ratios of the first over the second.
pub struct Paired {
    /// The side on top of every ratio.
    pub subject: Measured,
    /// The side it is divided by.
    pub baseline: Measured,
    /// Answers per second of server CPU, when the server's CPU was read.
    pub subject_ops_per_cpu_sec: Option<f64>,
    pub baseline_ops_per_cpu_sec: Option<f64>,
    /// Subject over baseline: ops/s of the median runs, and ops per server CPU-second.
    pub ops_ratio: f64,
    pub cpu_ratio: Option<f64>,
    /// Each round's subject ops/s over that round's baseline, in order.
    pub round_ratios: Vec<f64>,
}

impl Paired {
    /// `rounds` holds each round's (subject, baseline) runs; it is not empty.
    pub fn from_rounds(rounds: Vec<(Measured, Measured)>) -> Paired {
        let round_ratios = rounds
            .iter()
            .map(|(subject, baseline)| ops_ratio(subject, baseline))
            .collect();
        let (subject, baseline): (Vec<_>, Vec<_>) = rounds.into_iter().unzip();
        let (subject, baseline) = (load::median(subject), load::median(baseline));
        let subject_ops_per_cpu_sec = per_cpu_sec(&subject);
        let baseline_ops_per_cpu_sec = per_cpu_sec(&baseline);
        Paired {
            ops_ratio: ops_ratio(&subject, &baseline),
            cpu_ratio: subject_ops_per_cpu_sec
                .zip(baseline_ops_per_cpu_sec)
                .map(|(s, b)| s / b.max(1e-9)),
            subject_ops_per_cpu_sec,
            baseline_ops_per_cpu_sec,
            round_ratios,
            subject,
            baseline,
        }
    }
}

fn ops_ratio(subject: &Measured, baseline: &Measured) -> f64 {
    subject.ops_per_sec / baseline.ops_per_sec.max(1e-9)
}

/// Answers per second of server CPU: what a core of the server buys.
fn per_cpu_sec(m: &Measured) -> Option<f64> {
    m.server_cpu.map(|cpu| 1e6 / cpu.us_per_op.max(1e-9))
}

/// The heads of [`run_cells`]' columns.
pub fn run_heads() -> String {
    format!(
        "{:>10} {:>9} {:>9} {:>6} {:>10} {:>11}",
        "ops/s", "p50", "p99", "cpu", "cpu us/op", "ops/cpu-s"
    )
}

/// One side's median run as table cells, the same in every paired report: ops/s, p50 and
/// p99, the server's cores and CPU µs per answer, and answers per server CPU-second.
pub fn run_cells(m: &Measured, ops_per_cpu_sec: Option<f64>) -> String {
    let (cores, us_per_op) = cpu_cells(m.server_cpu);
    format!(
        "{:>10.0} {:>9} {:>9} {:>6} {:>10} {:>11}",
        m.ops_per_sec,
        us(m.latency.p50_us),
        us(m.latency.p99_us),
        cores,
        us_per_op,
        or_dash(ops_per_cpu_sec, 0)
    )
}

/// Cores and µs per op, or dashes when not read.
pub fn cpu_cells(cpu: Option<ServerCpu>) -> (String, String) {
    match cpu {
        Some(c) => (format!("{:.2}", c.cores), format!("{:.2}", c.us_per_op)),
        None => ("-".into(), "-".into()),
    }
}

/// A figure with `decimals` decimals, or a dash when it was not read.
pub fn or_dash(figure: Option<f64>, decimals: usize) -> String {
    figure.map_or("-".into(), |x| format!("{x:.decimals$}"))
}

/// Microseconds, one decimal, never switched to milliseconds.
fn us(value: f64) -> String {
    format!("{value:.1}us")
}

/// Per-round ratios, in order, two decimals each.
pub fn ratios_line(ratios: &[f64]) -> String {
    let each: Vec<String> = ratios.iter().map(|x| format!("{x:.2}")).collect();
    each.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Latency;

    fn run(ops_per_sec: f64, us_per_op: Option<f64>) -> Measured {
        Measured {
            ops: 0,
            secs: 1.0,
            ops_per_sec,
            latency: Latency::default(),
            wrong_answers: 0,
            server_cpu: us_per_op.map(|us_per_op| ServerCpu {
                cores: 1.0,
                us_per_op,
            }),
            client_cpu: None,
        }
    }

    #[test]
    fn medians_and_ratios_of_the_subject_over_the_baseline() {
        let paired = Paired::from_rounds(vec![
            (run(300.0, Some(4.0)), run(100.0, Some(2.0))),
            (run(100.0, Some(5.0)), run(400.0, Some(1.0))),
            (run(200.0, Some(10.0)), run(200.0, None)),
        ]);
        assert_eq!(paired.round_ratios, [3.0, 0.25, 1.0]);
        assert_eq!(paired.subject.ops_per_sec, 200.0);
        assert_eq!(paired.baseline.ops_per_sec, 200.0);
        assert_eq!(paired.ops_ratio, 1.0);
        assert_eq!(paired.subject_ops_per_cpu_sec, Some(100_000.0));
        assert_eq!(paired.baseline_ops_per_cpu_sec, None);
        assert_eq!(paired.cpu_ratio, None);
    }

    #[test]
    fn cells_show_a_dash_for_what_was_not_read() {
        assert_eq!(or_dash(Some(2.0 / 3.0), 2), "0.67");
        assert_eq!(or_dash(Some(1234.4), 0), "1234");
        assert_eq!(or_dash(None, 2), "-");
        assert_eq!(cpu_cells(None), ("-".into(), "-".into()));
        assert_eq!(ratios_line(&[1.0, 0.456]), "1.00 0.46");
    }
}
