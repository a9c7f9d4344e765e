//! authenta-bench: how fast authenta-keyd answers verify, next to a server that does nothing
//! but move the same bytes, and how it holds up with a million keys, durable creates and
//! usage flushes, and what the daemon's busy polling costs at steady rates;
//! docs/performance.md has the figures and the commands that produced them.
//! `--policy-latency` measures instead how soon a revocation written to the policy file is
//! enforced; `--http`, verify over the HTTP side's forward-auth next to the socket; `--redis`,
//! verify next to Redis `GET`, both servers driven by the same event loop; `--limits`, keys
//! with rate limits and credits next to plain keys.

mod compare;
mod cpu;
mod creates;
mod daemon;
mod echo;
mod event_loop;
mod fleet;
mod flush;
mod http;
mod http_load;
mod limits;
mod limits_mix;
mod load;
mod nats;
mod packed;
mod paired;
mod policy_latency;
mod policy_update;
mod poll_cost;
mod redis;
mod report;
mod scale;
mod seed;
mod spin;
mod stats;
mod vs_redis;
mod wire;
mod workload;

use anyhow::{bail, Context, Result};
use clap::Parser;
use load::{ClientKind, Shape, Timing, SHAPES};
use report::{Figures, Report, SeedFigures, ShapeRow};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// Benchmarks authenta-keyd's verify path in three load shapes, each also run against an
/// in-process echo server with the same frames, plus durable creates, verify during usage
/// flushes, busy polling at steady rates and (with --scale) a million keys.
#[derive(Parser, Debug)]
#[command(name = "authenta-bench", version)]
#[command(after_help = "Examples:\n  \
    cargo build --release -p authenta-keyd -p authenta-bench\n  \
    target/release/authenta-bench                 # shapes, flush, poll cost, creates (~2 min)\n  \
    target/release/authenta-bench --scale         # and the 1,000,000-key scenarios\n  \
    target/release/authenta-bench --smoke         # a few seconds, for CI\n  \
    target/release/authenta-bench --http --rounds 3  # forward-auth over HTTP (TCP, Unix) vs the socket\n  \
    target/release/authenta-bench --redis --rounds 3 # keyd vs Redis GET, same client (~3 min)\n  \
    target/release/authenta-bench --redis --smoke    # the same, tiny, for CI\n  \
    target/release/authenta-bench --limits --rounds 3 # limited keys vs plain keys (~3 min)\n  \
    target/release/authenta-bench --limits --smoke   # the same, tiny, for CI\n  \
    target/release/authenta-bench --policy-latency   # policy-file revocations (~15 s)")]
struct Args {
    /// The authenta-keyd binary [default: the one beside this executable]
    #[arg(long, value_name = "PATH")]
    keyd: Option<PathBuf>,

    /// Use the daemon already listening here instead of starting one. The bench seeds keys
    /// into it, so it must allow this user admin requests; the scenarios that restart the
    /// daemon (flush, scale) are skipped.
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,

    /// Keys to seed for the verify mix.
    #[arg(long, default_value_t = 10_000)]
    keys: usize,

    /// Seconds measured per shape and server.
    #[arg(long, default_value_t = 3.0, value_name = "SECS")]
    duration: f64,

    /// Seconds of unmeasured load before each measured run.
    #[arg(long, default_value_t = 0.5, value_name = "SECS")]
    warmup: f64,

    /// Runs of each shape against each server, alternating keyd and echo; the run with the
    /// median throughput is reported, so that a burst of other work on a shared machine
    /// does not decide a ratio.
    #[arg(long, default_value_t = 1)]
    rounds: usize,

    /// Only these shapes (comma-separated): sync-1, sync-50, pipe-50x32.
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    shapes: Option<Vec<String>>,

    /// Only the shapes: no flush, poll-cost or create scenario.
    #[arg(long)]
    shapes_only: bool,

    /// Concurrent admin clients of the durable-create scenario.
    #[arg(long, default_value_t = 16)]
    create_clients: usize,

    /// Also run the million-key scenarios (seeding takes minutes).
    #[arg(long)]
    scale: bool,

    /// Keys of the --scale scenarios.
    #[arg(long, default_value_t = 1_000_000)]
    scale_keys: usize,

    /// With --scale, A/B-test this other authenta-keyd build on the same million-key store:
    /// after the usual scenarios, each shape runs --rounds times (at least 3) per
    /// binary, alternating, each large run divided by the 10,000-key run just before it. For
    /// judging a change to the verify path on a machine too noisy for runs taken apart.
    #[arg(long, value_name = "PATH", requires = "scale")]
    scale_compare: Option<PathBuf>,

    /// Everything tiny (200 keys, 0.3 s runs, no --scale, one round of --http): checks the
    /// bench works, for CI. With --redis or --limits: that comparison only, 200 keys (per
    /// group), 0.3 s runs, one round.
    #[arg(long)]
    smoke: bool,

    /// What drives the load: one epoll loop over every connection, as `redis-benchmark`
    /// drives Redis, or one blocking thread per connection.
    #[arg(long, value_enum, default_value_t = ClientKind::EventLoop)]
    client: ClientKind,

    /// Keep every core busy with nice-19 threads during the runs, so that no core halts
    /// between requests (on a VM, waking a halted vCPU can cost more than a request).
    #[arg(long)]
    spin: bool,

    /// Instead of the verify load: how long a revocation written to the policy file takes
    /// to be enforced, for an atomic rename and a Kubernetes ConfigMap `..data` swap, next to
    /// `keys revoke` over the socket. Starts its own daemons (no --socket).
    #[arg(long, conflicts_with_all = [
        "socket", "keys", "duration", "warmup", "rounds", "shapes", "shapes_only",
        "create_clients", "scale", "scale_keys", "smoke", "spin", "client",
    ])]
    policy_latency: bool,

    /// Instead of the verify load: fleet mode on a 3-server NATS JetStream cluster (R3) and
    /// three daemons, all on loopback: revocation propagation, durable creates and verify
    /// throughput next to a single-host daemon. Needs `nats-server` on the PATH.
    #[arg(long, conflicts_with_all = ["socket", "scale", "policy_latency", "smoke"])]
    fleet: bool,

    /// Instead of the verify shapes: forward-auth over HTTP (`GET /v1/auth` on 50 keep-alive
    /// connections, one request in flight each), over loopback TCP and over the HTTP side's
    /// Unix socket, next to the socket's sync-50 on the same daemon, rounds alternating, with
    /// the default busy polling and with it off. Starts its own daemon.
    #[arg(long, conflicts_with_all = [
        "socket", "scale", "policy_latency", "fleet", "smoke", "shapes", "shapes_only",
        "client", "spin",
    ])]
    http: bool,

    /// Instead of the verify load: the daemon next to Redis `GET`, both driven by this
    /// bench's event loop with requests encoded beforehand and every answer checked, in the
    /// three shapes, rounds alternating keyd, Redis and the echo floor; with the default busy
    /// polling and with it off. Starts its own daemon and its own `redis-server` on a Unix
    /// socket in a temporary directory (Debian's package `redis-server`); Redis holds one
    /// entry per key, sized so that its answers are as long as the daemon's.
    #[arg(long, conflicts_with_all = [
        "socket", "scale", "policy_latency", "fleet", "http", "shapes_only", "client",
    ])]
    redis: bool,

    /// Instead of the verify load: keys with a rate limit, keys with a credit balance, and
    /// keys with both and an owner with both (--keys in each group), next to plain keys on
    /// one daemon, each group driven alike (the event loop, sync-50 and pipe-50x32 unless
    /// --shapes) with every verify to answer valid; rounds alternate the groups; with the
    /// default busy polling and with it off. Target: limited keys >= 0.9 x plain ops/s.
    /// Starts its own daemon.
    #[arg(long, conflicts_with_all = [
        "socket", "scale", "policy_latency", "fleet", "http", "redis", "shapes_only", "client",
    ])]
    limits: bool,

    /// The redis-server binary of --redis [default: the first on the PATH]
    #[arg(long, value_name = "PATH", requires = "redis")]
    redis_server: Option<PathBuf>,

    /// Revocations timed by --fleet.
    #[arg(long, default_value_t = 200, requires = "fleet")]
    fleet_trials: usize,

    /// Trials per update style of --policy-latency (a fresh key revoked in each).
    #[arg(long, default_value_t = 20, requires = "policy_latency")]
    trials: usize,

    /// Print the report as JSON on stdout (progress still goes to stderr).
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.policy_latency {
        return finish(args.json, policy_latency_report(&args));
    }
    if args.fleet {
        return finish(args.json, fleet_report(&args));
    }
    if args.http {
        return finish(args.json, http_report(&args));
    }
    if args.redis {
        return finish(args.json, redis_report(&args));
    }
    if args.limits {
        return finish(args.json, limits_report(&args));
    }
    match run(&args) {
        Ok(report) => {
            let printed = print_report(args.json, &report, &report.text());
            if report.wrong_answers > 0 {
                eprintln!(
                    "authenta-bench: {} wrong answers: the figures are not valid",
                    report.wrong_answers
                );
                return ExitCode::FAILURE;
            }
            printed
        }
        Err(e) => {
            eprintln!("authenta-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Prints what a mode measured. Its figures are reported whatever they are (a missed target
/// is not a failure: the smoke runs in CI check that the bench runs, not how fast); only an
/// error, or an answer that was not the expected one, fails the run.
fn finish(json: bool, figures: Result<impl Figures>) -> ExitCode {
    let figures = match figures {
        Ok(figures) => figures,
        Err(e) => {
            eprintln!("authenta-bench: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let printed = print_report(json, &figures, &figures.text());
    if figures.wrong_answers() > 0 {
        eprintln!("authenta-bench: wrong answers: the figures are not valid");
        return ExitCode::FAILURE;
    }
    printed
}

fn policy_latency_report(args: &Args) -> Result<policy_latency::PolicyLatency> {
    let bin = daemon::find_binary(args.keyd.as_deref())?;
    policy_latency::run(&bin, args.trials)
}

fn http_report(args: &Args) -> Result<http::HttpFigures> {
    let bin = daemon::find_binary(args.keyd.as_deref())?;
    let keys = keys(args)?;
    let timing = timing(args, ClientKind::EventLoop)?;
    http::run(&bin, keys, timing, rounds(args))
}

fn redis_report(args: &Args) -> Result<vs_redis::RedisFigures> {
    let keyd = daemon::find_binary(args.keyd.as_deref())?;
    let redis = redis::find_binary(args.redis_server.as_deref())?;
    let timing = timing(args, ClientKind::EventLoop)?;
    let keys = keys(args)?;
    let shapes = chosen_shapes(args.shapes.as_deref())?;
    let _spinners = if args.spin {
        Some(spin::Spinners::start()?)
    } else {
        None
    };
    vs_redis::run(&vs_redis::Plan {
        keyd: &keyd,
        redis: &redis,
        keys,
        shapes: &shapes,
        timing,
        rounds: rounds(args),
        smoke: args.smoke,
        spin: args.spin,
    })
}

fn limits_report(args: &Args) -> Result<limits::LimitsFigures> {
    let keyd = daemon::find_binary(args.keyd.as_deref())?;
    let timing = timing(args, ClientKind::EventLoop)?;
    let keys = keys(args)?;
    let default_shapes = limits::SHAPE_NAMES.map(String::from);
    let shapes = chosen_shapes(Some(args.shapes.as_deref().unwrap_or(&default_shapes)))?;
    let _spinners = if args.spin {
        Some(spin::Spinners::start()?)
    } else {
        None
    };
    limits::run(&limits::Plan {
        keyd: &keyd,
        keys,
        shapes: &shapes,
        timing,
        rounds: rounds(args),
        smoke: args.smoke,
        spin: args.spin,
    })
}

/// Prints a report as JSON or as text for people.
fn print_report(json: bool, report: &impl serde::Serialize, text: &str) -> ExitCode {
    if !json {
        print!("{text}");
        return ExitCode::SUCCESS;
    }
    match serde_json::to_string_pretty(report) {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("authenta-bench: cannot write JSON: {e}");
            ExitCode::FAILURE
        }
    }
}

fn fleet_report(args: &Args) -> Result<fleet::FleetFigures> {
    let bin = daemon::find_binary(args.keyd.as_deref())?;
    let timing = timing(args, args.client)?;
    let shapes = chosen_shapes(args.shapes.as_deref())?;
    fleet::run(
        &bin,
        &shapes,
        timing,
        args.rounds,
        args.fleet_trials,
        args.create_clients,
        args.keys,
    )
}

/// The warm-up and measured window: tiny with `--smoke`, else as asked.
fn timing(args: &Args, client: ClientKind) -> Result<Timing> {
    if args.smoke {
        return Ok(Timing {
            warmup: Duration::from_millis(100),
            duration: Duration::from_millis(300),
            client,
        });
    }
    Ok(Timing {
        warmup: seconds(args.warmup, "--warmup")?,
        duration: seconds(args.duration, "--duration")?,
        client,
    })
}

/// Keys to seed for the verify mix: a few with `--smoke`, else as asked.
fn keys(args: &Args) -> Result<usize> {
    let keys = if args.smoke { 200 } else { args.keys };
    if keys == 0 {
        bail!("--keys must be at least 1");
    }
    Ok(keys)
}

/// Runs of each side per shape, the median one reported: one with `--smoke`.
fn rounds(args: &Args) -> usize {
    if args.smoke {
        1
    } else {
        args.rounds.max(1)
    }
}

fn seconds(value: f64, what: &str) -> Result<Duration> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero() || what == "--warmup")
        .with_context(|| format!("{what} must be a positive number of seconds"))
}

fn chosen_shapes(names: Option<&[String]>) -> Result<Vec<Shape>> {
    let Some(names) = names else {
        return Ok(SHAPES.to_vec());
    };
    names
        .iter()
        .map(|name| {
            SHAPES
                .iter()
                .find(|s| s.name == name.trim())
                .copied()
                .with_context(|| {
                    format!("unknown shape '{name}': use sync-1, sync-50 or pipe-50x32")
                })
        })
        .collect()
}

fn run(args: &Args) -> Result<Report> {
    let timing = timing(args, args.client)?;
    let keys = keys(args)?;
    let shapes = chosen_shapes(args.shapes.as_deref())?;
    let bin = match &args.socket {
        Some(_) => None,
        None => Some(daemon::find_binary(args.keyd.as_deref())?),
    };
    // The daemon's defaults, as an operator runs it.
    let default_config = "";
    let mut own = match &bin {
        Some(bin) => Some(daemon::Keyd::start(bin, default_config)?),
        None => None,
    };
    let socket = match (&own, &args.socket) {
        (Some(keyd), _) => keyd.socket().to_path_buf(),
        (None, Some(socket)) => socket.clone(),
        (None, None) => unreachable!("either a daemon is started or --socket is given"),
    };

    let spinners = if args.spin {
        Some(spin::Spinners::start()?)
    } else {
        None
    };
    eprintln!("seeding {keys} keys...");
    let seeded = seed::seed(&socket, keys, 4, false)?;
    let workload = Arc::new(workload::Workload::build(&seeded.keys)?);
    let seed_figures = SeedFigures {
        keys,
        secs: seeded.elapsed.as_secs_f64(),
        per_sec: keys as f64 / seeded.elapsed.as_secs_f64().max(1e-9),
    };
    // Kept for the million-key comparison, which asks these keys a longer mix.
    let small_keys = seeded.keys;
    eprintln!(
        "seeded in {:.2} s; mix: {}",
        seed_figures.secs,
        workload.mix.describe()
    );

    let scratch = tempfile::Builder::new()
        .prefix("authenta-bench-echo-")
        .tempdir()
        .context("cannot make a temporary directory")?;
    let echo = echo::EchoServer::start(&scratch.path().join("echo.sock"), workload.clone())?;

    let keyd_pid = own.as_ref().and_then(daemon::Keyd::pid);
    let mut rows = Vec::new();
    let mut wrong = 0;
    let rounds = rounds(args);
    for &shape in &shapes {
        let mut keyd_runs = Vec::new();
        let mut echo_runs = Vec::new();
        for _ in 0..rounds {
            keyd_runs.push(load::drive(&socket, &workload, shape, timing, keyd_pid)?);
            echo_runs.push(load::drive(echo.path(), &workload, shape, timing, None)?);
        }
        wrong += keyd_runs
            .iter()
            .chain(&echo_runs)
            .map(|m| m.wrong_answers)
            .sum::<u64>();
        let keyd = load::median(keyd_runs);
        let baseline = load::median(echo_runs);
        eprintln!(
            "{}: keyd {:.0} ops/s p50 {:.1}us, echo {:.0} ops/s p50 {:.1}us",
            shape.name,
            keyd.ops_per_sec,
            keyd.latency.p50_us,
            baseline.ops_per_sec,
            baseline.latency.p50_us
        );
        rows.push(ShapeRow::new(shape, keyd, baseline));
    }
    let daemon_memory = own.as_ref().map(daemon::Keyd::memory).transpose()?;

    let mut flush = None;
    let mut poll_cost = None;
    let mut creates = None;
    if !args.shapes_only {
        if let Some(keyd) = own.as_mut() {
            eprintln!("flush scenario...");
            let flush_shapes: Vec<Shape> =
                shapes.iter().copied().filter(|s| s.depth == 1).collect();
            let figures = flush::run(
                keyd,
                &workload,
                &flush_shapes,
                timing,
                flush::INTERVAL,
                default_config,
            )?;
            wrong += figures.wrong_answers();
            flush = Some(figures);
            eprintln!("busy polling at steady rates...");
            let figures = poll_cost::run(keyd, &workload, timing.duration, default_config)?;
            wrong += figures.wrong_answers();
            poll_cost = Some(figures);
        }
    }

    let mut scale = None;
    if args.scale && !args.smoke {
        match &bin {
            Some(bin) => {
                let scale_shapes: Vec<Shape> = shapes
                    .iter()
                    .copied()
                    .filter(|s| s.connections > 1)
                    .collect();
                let figures = scale::run(
                    bin,
                    args.scale_compare.as_deref(),
                    args.scale_keys,
                    &socket,
                    &small_keys,
                    &scale_shapes,
                    timing,
                    rounds,
                )?;
                wrong += figures.wrong_answers();
                scale = Some(figures);
            }
            None => eprintln!("--scale needs a daemon the bench starts: skipped with --socket"),
        }
    }

    // After the million-key comparison, which needs the 10,000-key daemon to hold just its
    // 10,000 keys: this scenario adds tens of thousands more.
    if !args.shapes_only {
        eprintln!("durable creates with {} clients...", args.create_clients);
        creates = Some(creates::run(
            &socket,
            args.create_clients.max(1),
            timing.duration,
        )?);
    }
    // CI's only run of the HTTP path (over TCP and the Unix socket): one tiny round on a
    // daemon of its own, since this run's daemon is started as an operator runs it, with no
    // HTTP listener.
    let mut http = None;
    if let (true, Some(bin)) = (args.smoke, &bin) {
        eprintln!("http: one smoke round...");
        let figures = http::run(bin, keys, timing, 1)?;
        wrong += figures.wrong_answers();
        http = Some(figures);
    }
    drop(echo);
    drop(own.take());
    drop(spinners);

    let (request_bytes, answer_bytes) = workload.mean_frame_sizes();
    let mut report = Report {
        version: env!("CARGO_PKG_VERSION"),
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        smoke: args.smoke,
        rounds,
        spin: args.spin,
        warmup_secs: timing.warmup.as_secs_f64(),
        duration_secs: timing.duration.as_secs_f64(),
        mix: workload.mix,
        mix_text: workload.mix.describe(),
        request_bytes,
        answer_bytes,
        seed: seed_figures,
        shapes: rows,
        daemon_memory,
        flush,
        poll_cost,
        creates,
        scale,
        http,
        checks: Vec::new(),
        wrong_answers: wrong,
    };
    report.check_targets();
    Ok(report)
}
