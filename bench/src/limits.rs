//! `--limits`: verify throughput of keys with a rate limit, with a credit balance, and with
//! both plus a shared owner's, next to plain keys on the same daemon in the same run. The
//! issue's target: limited keys at least 0.9 x the plain keys' verifies per second.
//!
//! One daemon holds every group (`keys` keys each); every group is driven by the same event
//! loop in the same shapes, each verify asking `read` of a live key, so that the groups
//! differ only in the limits the daemon enforces. Rounds alternate the groups, starting each
//! round with the next group, so that neither a burst of other work on a shared machine nor
//! the order of the runs favours one group. Then the same with the daemon's busy polling off.

use crate::daemon::{Keyd, Memory};
use crate::limits_mix::{self, Group, GroupMix, GROUPS};
use crate::load::{self, Measured, Shape, Timing};
use crate::paired::{cpu_cells, or_dash, ratios_line, run_cells, run_heads, Paired};
use crate::report::{self, Figures};
use anyhow::Result;
use serde::Serialize;
use std::fmt::Write as _;
use std::path::Path;

/// Limited keys' verifies per second over plain keys', at least (from the issue).
pub const TARGET: f64 = 0.9;

/// The shapes run unless `--shapes` names others.
pub const SHAPE_NAMES: [&str; 2] = ["sync-50", "pipe-50x32"];

/// The daemon configs measured, in order: as an operator runs it, then without polling.
const CONFIGS: [(&str, &str); 2] = [("default", ""), ("0 (off)", "busy_poll = \"0\"\n")];

/// What `--limits` is asked to do.
pub struct Plan<'a> {
    pub keyd: &'a Path,
    /// Keys in each group.
    pub keys: usize,
    pub shapes: &'a [Shape],
    pub timing: Timing,
    pub rounds: usize,
    pub smoke: bool,
    pub spin: bool,
}

/// Everything `--limits` measured.
#[derive(Debug, Clone, Serialize)]
pub struct LimitsFigures {
    pub version: &'static str,
    pub cores: usize,
    pub smoke: bool,
    pub spin: bool,
    pub keys_per_group: usize,
    pub groups: Vec<GroupInfo>,
    pub rounds: usize,
    pub warmup_secs: f64,
    pub duration_secs: f64,
    /// With the daemon's default busy polling, then with `busy_poll = "0"`.
    pub configs: Vec<ConfigFigures>,
    pub target: f64,
    /// Each limited group's lowest ops/s ratio over the shapes, default busy polling.
    pub lowest_ratios: Vec<Lowest>,
    /// Every limited group's ratio reached the target.
    pub reached: bool,
    /// Resident memory after the runs, every group's keys loaded.
    pub keyd_memory: Option<Memory>,
}

/// A limited group's lowest ops/s ratio to plain over the shapes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Lowest {
    pub group: &'static str,
    pub ops_ratio: f64,
}

/// A group as the report describes it.
#[derive(Debug, Clone, Serialize)]
pub struct GroupInfo {
    pub group: Group,
    pub enforces: String,
    /// Mean frame sizes, length prefix included; the answer's from one the daemon sent.
    pub request_bytes: f64,
    pub answer_bytes: f64,
}

/// One daemon config: every shape.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigFigures {
    pub busy_poll: &'static str,
    pub shapes: Vec<ShapeFigures>,
}

/// One shape with one daemon config: each group's median run, plain first.
#[derive(Debug, Clone, Serialize)]
pub struct ShapeFigures {
    pub shape: Shape,
    pub groups: Vec<GroupRow>,
}

/// One group's median run and its ratios to the plain keys' (1.0 for the plain keys).
#[derive(Debug, Clone, Serialize)]
pub struct GroupRow {
    pub group: &'static str,
    pub run: Measured,
    /// Verifies per second of daemon CPU.
    pub ops_per_cpu_sec: Option<f64>,
    /// This group over plain: ops/s of the median runs, and ops per daemon CPU-second.
    pub ops_ratio: f64,
    pub cpu_ratio: Option<f64>,
    /// Each round's ops/s over that round's plain run, in order.
    pub round_ratios: Vec<f64>,
}

impl ShapeFigures {
    /// `rounds` holds each round's runs, one per group in [`GROUPS`]' order.
    fn new(shape: Shape, rounds: &[Vec<Measured>]) -> ShapeFigures {
        let groups = GROUPS
            .iter()
            .enumerate()
            .map(|(g, group)| {
                let pairs = rounds
                    .iter()
                    .map(|r| (r[g].clone(), r[0].clone()))
                    .collect();
                let paired = Paired::from_rounds(pairs);
                GroupRow {
                    group: group.name,
                    run: paired.subject,
                    ops_per_cpu_sec: paired.subject_ops_per_cpu_sec,
                    ops_ratio: paired.ops_ratio,
                    cpu_ratio: paired.cpu_ratio,
                    round_ratios: paired.round_ratios,
                }
            })
            .collect();
        ShapeFigures { shape, groups }
    }
}

/// Starts one daemon, seeds every group into it, and measures every shape in alternating
/// rounds with each daemon config.
pub fn run(plan: &Plan<'_>) -> Result<LimitsFigures> {
    let mut keyd = Keyd::start(plan.keyd, CONFIGS[0].1)?;
    let (mixes, groups) = seed_groups(keyd.socket(), plan.keys)?;
    let rounds = plan.rounds.max(1);
    let mut configs = Vec::new();
    for (c, (busy_poll, config)) in CONFIGS.into_iter().enumerate() {
        if c > 0 {
            // The same store, so the same keys and mixes.
            keyd.restart(config)?;
        }
        let mut shapes = Vec::new();
        for &shape in plan.shapes {
            let runs = (0..rounds)
                .map(|r| round(&keyd, &mixes, shape, plan.timing, r))
                .collect::<Result<Vec<_>>>()?;
            let figures = ShapeFigures::new(shape, &runs);
            progress(busy_poll, &figures);
            shapes.push(figures);
        }
        configs.push(ConfigFigures { busy_poll, shapes });
    }
    let keyd_memory = keyd.memory().ok();
    Ok(LimitsFigures::new(
        plan,
        groups,
        rounds,
        configs,
        keyd_memory,
    ))
}

/// Sets the owner's limits, then seeds `keys` keys of every group and encodes their
/// verifies; each group's first verify is asked once, to check it and size its answer.
fn seed_groups(socket: &Path, keys: usize) -> Result<(Vec<GroupMix>, Vec<GroupInfo>)> {
    limits_mix::set_owner(socket)?;
    let mut mixes = Vec::with_capacity(GROUPS.len());
    let mut groups = Vec::with_capacity(GROUPS.len());
    for group in GROUPS {
        eprintln!("limits: seeding {keys} {} keys...", group.name);
        let mix = GroupMix::seed(socket, group, keys)?;
        let (request_bytes, answer_bytes) = mix.mean_sizes(mix.live_bytes(socket)?);
        groups.push(GroupInfo {
            group,
            enforces: group.describe(),
            request_bytes,
            answer_bytes,
        });
        mixes.push(mix);
    }
    Ok((mixes, groups))
}

/// One round of `shape`: every group once, starting with group `r` (mod their number).
/// Returns the runs in [`GROUPS`]' order.
fn round(
    keyd: &Keyd,
    mixes: &[GroupMix],
    shape: Shape,
    timing: Timing,
    r: usize,
) -> Result<Vec<Measured>> {
    let mut runs: Vec<Option<Measured>> = vec![None; mixes.len()];
    for k in 0..mixes.len() {
        let g = (r + k) % mixes.len();
        let run = load::drive_event_loop(keyd.socket(), &mixes[g], shape, timing, keyd.pid())?;
        runs[g] = Some(run);
    }
    Ok(runs.into_iter().flatten().collect())
}

fn progress(busy_poll: &str, figures: &ShapeFigures) {
    let each: Vec<String> = figures
        .groups
        .iter()
        .map(|g| format!("{} {:.0} ({:.2})", g.group, g.run.ops_per_sec, g.ops_ratio))
        .collect();
    eprintln!(
        "limits: busy_poll {busy_poll}, {}: {}",
        figures.shape.name,
        each.join(", ")
    );
}

impl LimitsFigures {
    fn new(
        plan: &Plan<'_>,
        groups: Vec<GroupInfo>,
        rounds: usize,
        configs: Vec<ConfigFigures>,
        keyd_memory: Option<Memory>,
    ) -> LimitsFigures {
        let lowest_ratios = lowest_ratios(configs.first());
        LimitsFigures {
            version: env!("CARGO_PKG_VERSION"),
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            smoke: plan.smoke,
            spin: plan.spin,
            keys_per_group: plan.keys,
            groups,
            rounds,
            warmup_secs: plan.timing.warmup.as_secs_f64(),
            duration_secs: plan.timing.duration.as_secs_f64(),
            target: TARGET,
            reached: lowest_ratios.iter().all(|l| l.ops_ratio >= TARGET),
            lowest_ratios,
            configs,
            keyd_memory,
        }
    }
}

/// Each limited group's lowest ops/s ratio to plain over the shapes of `config`.
fn lowest_ratios(config: Option<&ConfigFigures>) -> Vec<Lowest> {
    let Some(config) = config else {
        return Vec::new();
    };
    GROUPS
        .iter()
        .enumerate()
        .skip(1)
        .map(|(g, group)| {
            let lowest = config
                .shapes
                .iter()
                .filter_map(|s| s.groups.get(g))
                .map(|row| row.ops_ratio)
                .fold(f64::INFINITY, f64::min);
            Lowest {
                group: group.name,
                ops_ratio: lowest,
            }
        })
        .collect()
}

impl Figures for LimitsFigures {
    fn wrong_answers(&self) -> u64 {
        self.configs
            .iter()
            .flat_map(|c| &c.shapes)
            .flat_map(|s| &s.groups)
            .map(|g| g.run.wrong_answers)
            .sum()
    }

    /// The report for people.
    fn text(&self) -> String {
        let mut t = String::new();
        self.head(&mut t);
        for config in &self.configs {
            let _ = writeln!(t, "\nbusy_poll {}", config.busy_poll);
            let _ = writeln!(
                t,
                "{:<11} {:<10} {} {:>9} {:>7} {:>9} {:>9}  each round's x ops/s",
                "shape",
                "group",
                run_heads(),
                "client us",
                "invalid",
                "x ops/s",
                "x cpu-s"
            );
            for shape in &config.shapes {
                for g in &shape.groups {
                    let _ = writeln!(
                        t,
                        "{:<11} {:<10} {} {:>9} {:>7} {:>9.2} {:>9}  {}",
                        shape.shape.name,
                        g.group,
                        run_cells(&g.run, g.ops_per_cpu_sec),
                        cpu_cells(g.run.client_cpu).1,
                        g.run.wrong_answers,
                        g.ops_ratio,
                        or_dash(g.cpu_ratio, 2),
                        ratios_line(&g.round_ratios)
                    );
                }
            }
        }
        self.foot(&mut t);
        t
    }
}

impl LimitsFigures {
    fn head(&self, t: &mut String) {
        let _ = writeln!(
            t,
            "authenta-keyd verify of keys with limits next to plain keys, one daemon: {} \
             groups of {} keys, {} cores{}; each run {:.1} s after {:.1} s of warm-up; rounds \
             alternate the groups (each round starting with the next), median of {} per group",
            self.groups.len(),
            self.keys_per_group,
            self.cores,
            report::conditions(self.smoke, self.spin),
            self.duration_secs,
            self.warmup_secs,
            self.rounds
        );
        let _ = writeln!(
            t,
            "every verify asks read of a live key of the group and must answer valid; limits \
             never reached: rate limit {}/{} ms, {} credits, each verify costing 1",
            limits_mix::RATELIMIT.limit,
            limits_mix::RATELIMIT.window_ms,
            limits_mix::CREDITS
        );
        for g in &self.groups {
            let _ = writeln!(
                t,
                "  {:<10} {}; bytes per request / answer {:.1} / {:.0}",
                g.group.name, g.enforces, g.request_bytes, g.answer_bytes
            );
        }
    }

    fn foot(&self, t: &mut String) {
        let _ = writeln!(
            t,
            "cpu: the daemon's CPU seconds per second (all its threads); ops/cpu-s: verifies \
             per second of daemon CPU; client us: the load thread's CPU per verify, on the \
             same cores; invalid: answers other than valid; x ops/s, x cpu-s: the group over \
             plain keys, of the median runs"
        );
        if let Some(m) = self.keyd_memory {
            let _ = writeln!(
                t,
                "daemon after the runs: {:.1} MiB resident (peak {:.1} MiB)",
                m.rss_mib, m.peak_rss_mib
            );
        }
        let each: Vec<String> = self
            .lowest_ratios
            .iter()
            .map(|l| format!("{} {:.2}", l.group, l.ops_ratio))
            .collect();
        let _ = writeln!(
            t,
            "target: ops/s >= {:.1} x plain (default busy_poll, lowest over the shapes): {}; {}",
            self.target,
            each.join(", "),
            if self.reached {
                "reached"
            } else {
                "not reached"
            }
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Latency;

    fn run(ops_per_sec: f64, us_per_op: f64) -> Measured {
        Measured {
            ops: 0,
            secs: 1.0,
            ops_per_sec,
            latency: Latency::default(),
            wrong_answers: 0,
            server_cpu: Some(load::ServerCpu {
                cores: 1.0,
                us_per_op,
            }),
            client_cpu: None,
        }
    }

    #[test]
    fn each_group_is_divided_by_plain_and_the_lowest_ratio_decides() {
        let shape = load::SHAPES[1];
        let rounds = vec![
            vec![
                run(100.0, 2.0),
                run(95.0, 2.0),
                run(80.0, 4.0),
                run(85.0, 3.0),
                run(90.0, 2.0),
            ],
            vec![
                run(200.0, 2.0),
                run(180.0, 2.0),
                run(170.0, 4.0),
                run(160.0, 3.0),
                run(100.0, 2.0),
            ],
            vec![
                run(150.0, 2.0),
                run(150.0, 2.0),
                run(140.0, 4.0),
                run(135.0, 3.0),
                run(120.0, 2.0),
            ],
        ];
        let figures = ShapeFigures::new(shape, &rounds);
        let plain = &figures.groups[0];
        assert_eq!((plain.ops_ratio, plain.round_ratios.len()), (1.0, 3));
        let credits = &figures.groups[2];
        assert_eq!(credits.run.ops_per_sec, 140.0);
        assert!((credits.ops_ratio - 140.0 / 150.0).abs() < 1e-9);
        assert_eq!(credits.cpu_ratio, Some(0.5));
        assert_eq!(credits.round_ratios, [0.8, 0.85, 140.0 / 150.0]);
        let config = ConfigFigures {
            busy_poll: "default",
            shapes: vec![figures],
        };
        let lowest = lowest_ratios(Some(&config));
        assert_eq!(lowest[0].group, "ratelimit");
        assert_eq!(lowest[0].ops_ratio, 1.0);
        assert_eq!(lowest[2].group, "both");
        assert!((lowest[2].ops_ratio - 135.0 / 150.0).abs() < 1e-9);
        assert_eq!(lowest[3].group, "both+owner");
        assert!((lowest[3].ops_ratio - 100.0 / 150.0).abs() < 1e-9);
    }
}
