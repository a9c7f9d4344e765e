//! Issue 3: how long a revocation pushed through the policy file takes to reach verify.
//! For each update style (`policy_update`), a trial revokes one more key in the file and
//! times from the moment the new file is in place (the rename has returned) to the first
//! verify of that key's token that answers 401 `revoked`, polling one connection back to
//! back, so the resolution is one round trip (tens of microseconds), far below the ~50 ms
//! debounce it is meant to show. Each style has its own daemon and directory: the daemon
//! watches the whole directory, and one style's files must not wake the other's watch.
//! Trials of the styles are interleaved, so a burst of other work on a shared machine
//! lands on both, and `keys revoke` over the socket runs alongside as the baseline: the
//! same durable revocation without a file, a watch or a debounce.

use crate::daemon::Keyd;
use crate::policy_update::{self, PolicyDir, Style};
use crate::report::{self, Check};
use crate::seed::{self, SeededKey};
use anyhow::{bail, Context, Result};
use authenta_client::proto::{VerifyCode, VerifyRequest};
use authenta_client::Client;
use ring::rand::SecureRandom;
use serde::Serialize;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

/// The target for the median, in milliseconds.
pub const TARGET_MEDIAN_MS: f64 = 250.0;
/// Between trials: long enough for the debouncer's trailing events (the temporary file's,
/// the removed version directory's) to be delivered and the daemon to be idle again, so a
/// trial never starts inside the previous one's debounce window.
const PAUSE: Duration = Duration::from_millis(200);
/// Added to each pause, drawn at random up to this: the debouncer delivers on a 25 ms tick
/// that runs from the daemon's start, and with a fixed pause the trials of a quiet machine
/// land at nearly the same point of that tick and report nearly the same figure (in one run,
/// every ConfigMap trial took 71-73 ms and most rename trials 52 ms). A random offset
/// samples the whole tick, as real updates do.
const PAUSE_JITTER: Duration = Duration::from_millis(25);
/// A trial slower than this is an error, not a figure: past the daemon's 30 s safety-net
/// re-read, the file was not applied at all.
const TRIAL_LIMIT: Duration = Duration::from_secs(40);

/// Summary of one style's (or the baseline's) trials.
#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    pub name: &'static str,
    /// Nearest-rank percentiles over the trials, like every other figure of the bench.
    pub median_ms: f64,
    pub p90_ms: f64,
    pub worst_ms: f64,
    pub best_ms: f64,
    /// Every trial, in the order run.
    pub trials_ms: Vec<f64>,
    /// Mean verify round trip while polling: how finely the trials are resolved.
    pub poll_round_trip_us: f64,
}

/// One style's figures.
#[derive(Debug, Clone, Serialize)]
pub struct StyleFigures {
    pub style: Style,
    #[serde(flatten)]
    pub figures: Figures,
}

/// What the run measured.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyLatency {
    pub version: &'static str,
    pub cores: usize,
    pub trials: usize,
    /// Between trials: `pause_ms` plus a random part of `pause_jitter_ms`.
    pub pause_ms: u64,
    pub pause_jitter_ms: u64,
    pub styles: Vec<StyleFigures>,
    /// `keys revoke` over the socket: from the request to the first `revoked` answer.
    pub admin_revoke: Figures,
    /// Size of each style's last policy file (every trial's id, one per line).
    pub final_policy_bytes: usize,
    pub checks: Vec<Check>,
}

/// One timed trial.
struct Trial {
    elapsed: Duration,
    /// Verifies sent, and how long they took: the poller's round trip.
    polls: u64,
    polled: Duration,
}

/// One style: its daemon, its directory and the keys it revokes one trial at a time.
struct Lane {
    style: Style,
    // Dropped before `_dir`: the daemon stops watching before its directory goes.
    keyd: Keyd,
    policy: PolicyDir,
    _dir: tempfile::TempDir,
    client: Client,
    keys: Vec<SeededKey>,
    revoked: Vec<String>,
    trials: Vec<Trial>,
}

impl Lane {
    fn start(bin: &Path, style: Style, keys: usize) -> Result<Lane> {
        let dir = tempfile::Builder::new()
            .prefix("authenta-bench-policy-")
            .tempdir()
            .context("cannot make a temporary directory")?;
        let policy = PolicyDir::create(style, dir.path(), &policy_update::revoking(&[]))?;
        let keyd = Keyd::start_with_policy(bin, "", &policy.path())?;
        let keys = seed::seed(keyd.socket(), keys, 1, false)?.keys;
        let client = Client::connect(keyd.socket()).context("connecting the verify poller")?;
        Ok(Lane {
            style,
            keyd,
            policy,
            _dir: dir,
            client,
            keys,
            revoked: Vec::new(),
            trials: Vec::new(),
        })
    }

    /// Revokes key `n` through the file and times it.
    fn file_trial(&mut self, n: usize) -> Result<()> {
        let key = self.keys.get(n).context("a key per trial was seeded")?;
        let request = verify_request(key);
        expect_valid(&mut self.client, &request)?;
        self.revoked.push(key.id.clone());
        let text = policy_update::revoking(&self.revoked);
        self.policy.update(&text)?;
        let in_place = Instant::now();
        let trial =
            poll_until_revoked(&mut self.client, &request, in_place).with_context(|| {
                format!(
                    "{} trial {}; daemon log:\n{}",
                    self.style.name(),
                    n + 1,
                    self.keyd.log()
                )
            })?;
        self.trials.push(trial);
        self.policy.tidy()
    }

    fn final_policy_bytes(&self) -> usize {
        std::fs::metadata(self.policy.path()).map_or(0, |m| m.len() as usize)
    }
}

/// Runs `trials` trials of each style, and as many `keys revoke`, against daemons started
/// from `bin`.
pub fn run(bin: &Path, trials: usize) -> Result<PolicyLatency> {
    if trials == 0 {
        bail!("--trials must be at least 1");
    }
    eprintln!(
        "starting a daemon per update style, {trials} keys each (and {trials} for `keys revoke`)..."
    );
    let mut lanes = Vec::new();
    for style in Style::ALL {
        // The first lane's daemon also serves the baseline's keys.
        let keys = if lanes.is_empty() { 2 * trials } else { trials };
        lanes.push(Lane::start(bin, style, keys)?);
    }
    let mut admin = Client::connect(lanes[0].keyd.socket()).context("connecting an admin")?;
    let mut admin_trials = Vec::new();

    for n in 0..trials {
        for lane in &mut lanes {
            lane.file_trial(n)?;
            pause()?;
        }
        let lane = &mut lanes[0];
        let key = lane
            .keys
            .get(trials + n)
            .context("a key per baseline trial was seeded")?;
        let request = verify_request(key);
        expect_valid(&mut lane.client, &request)?;
        let sent = Instant::now();
        admin
            .revoke(&key.id, Some("authenta-bench baseline".into()))
            .context("keys revoke")?;
        admin_trials.push(poll_until_revoked(&mut lane.client, &request, sent)?);
        pause()?;
        eprintln!(
            "trial {}/{trials}: {}, keys revoke {:.2} ms",
            n + 1,
            lanes
                .iter()
                .filter_map(|l| l.trials.last().map(|t| format!(
                    "{} {:.2} ms",
                    l.style.name(),
                    ms(t.elapsed)
                )))
                .collect::<Vec<_>>()
                .join(", "),
            admin_trials.last().map_or(0.0, |t| ms(t.elapsed))
        );
    }

    let styles: Vec<StyleFigures> = lanes
        .iter()
        .map(|lane| StyleFigures {
            style: lane.style,
            figures: figures(lane.style.name(), &lane.trials),
        })
        .collect();
    let checks = styles
        .iter()
        .map(|s| Check {
            what: format!("{}: median revocation latency, ms", s.figures.name),
            figure: s.figures.median_ms,
            target: format!("< {TARGET_MEDIAN_MS}"),
            holds: s.figures.median_ms < TARGET_MEDIAN_MS,
        })
        .collect();
    Ok(PolicyLatency {
        version: env!("CARGO_PKG_VERSION"),
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        trials,
        pause_ms: PAUSE.as_millis() as u64,
        pause_jitter_ms: PAUSE_JITTER.as_millis() as u64,
        admin_revoke: figures("keys revoke (socket)", &admin_trials),
        final_policy_bytes: lanes
            .iter()
            .map(Lane::final_policy_bytes)
            .max()
            .unwrap_or(0),
        styles,
        checks,
    })
}

/// `PAUSE` plus a random part of `PAUSE_JITTER`.
fn pause() -> Result<()> {
    let mut bytes = [0u8; 4];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("the system random number generator failed"))?;
    let jitter = PAUSE_JITTER.mul_f64(f64::from(u32::from_le_bytes(bytes)) / f64::from(u32::MAX));
    std::thread::sleep(PAUSE + jitter);
    Ok(())
}

fn verify_request(key: &SeededKey) -> VerifyRequest {
    VerifyRequest {
        token: key.token.clone(),
        permissions: Vec::new(),
        environment: None,
        cost: None,
    }
}

/// A trial only means something if the key was valid before it.
fn expect_valid(client: &mut Client, request: &VerifyRequest) -> Result<()> {
    let answer = client
        .verify_answer(request.clone())
        .context("verify before the trial")?;
    if answer.code != VerifyCode::Valid {
        bail!(
            "a fresh key answered {} before its trial, not valid",
            answer.code.as_str()
        );
    }
    Ok(())
}

/// Verifies back to back until the key answers `revoked`; any answer but `valid` before
/// that is an error (the wrong key, or the daemon broken).
fn poll_until_revoked(
    client: &mut Client,
    request: &VerifyRequest,
    since: Instant,
) -> Result<Trial> {
    let polling = Instant::now();
    let mut polls = 0u64;
    loop {
        let answer = client
            .verify_answer(request.clone())
            .context("verify while waiting for the revocation")?;
        polls += 1;
        let elapsed = since.elapsed();
        match answer.code {
            VerifyCode::Revoked => {
                return Ok(Trial {
                    elapsed,
                    polls,
                    polled: polling.elapsed(),
                })
            }
            VerifyCode::Valid if elapsed < TRIAL_LIMIT => {}
            VerifyCode::Valid => bail!("still valid {TRIAL_LIMIT:?} after the update"),
            other => bail!(
                "answered {} {} while waiting for revoked",
                other.status(),
                other.as_str()
            ),
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn figures(name: &'static str, trials: &[Trial]) -> Figures {
    let trials_ms: Vec<f64> = trials.iter().map(|t| ms(t.elapsed)).collect();
    let mut sorted = trials_ms.clone();
    sorted.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1));
        sorted.get(rank - 1).copied().unwrap_or(0.0)
    };
    let polls: u64 = trials.iter().map(|t| t.polls).sum();
    let polled: f64 = trials.iter().map(|t| t.polled.as_secs_f64()).sum();
    Figures {
        name,
        median_ms: at(0.5),
        p90_ms: at(0.9),
        worst_ms: at(1.0),
        best_ms: sorted.first().copied().unwrap_or(0.0),
        poll_round_trip_us: polled * 1e6 / polls.max(1) as f64,
        trials_ms,
    }
}

impl report::Figures for PolicyLatency {
    /// Every answer is checked as the trials poll: one that is neither `valid` nor `revoked`
    /// is an error, which fails the run, so none is ever counted.
    fn wrong_answers(&self) -> u64 {
        0
    }

    /// The styles side by side, the baseline next to them.
    fn text(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(
            t,
            "authenta-bench {} --policy-latency: {} cores; {} trials per style, interleaved, \
             {}-{} ms apart (at random)",
            self.version,
            self.cores,
            self.trials,
            self.pause_ms,
            self.pause_ms + self.pause_jitter_ms
        );
        let _ = writeln!(
            t,
            "from the update's rename returning to the first verify answering 401 revoked \
             (polled back to back on one connection);\nbaseline: `keys revoke` over the \
             socket, from the request to the first revoked answer; last policy file {} bytes\n",
            self.final_policy_bytes
        );
        let columns: Vec<&Figures> = self
            .styles
            .iter()
            .map(|s| &s.figures)
            .chain(std::iter::once(&self.admin_revoke))
            .collect();
        let _ = write!(t, "{:<16}", "");
        for c in &columns {
            let _ = write!(t, " {:>21}", c.name);
        }
        let _ = writeln!(t);
        let row = |t: &mut String, label: &str, value: &dyn Fn(&Figures) -> String| {
            let _ = write!(t, "{label:<16}");
            for c in &columns {
                let _ = write!(t, " {:>21}", value(c));
            }
            let _ = writeln!(t);
        };
        row(&mut t, "median", &|f| format!("{:.2} ms", f.median_ms));
        row(&mut t, "p90", &|f| format!("{:.2} ms", f.p90_ms));
        row(&mut t, "worst", &|f| format!("{:.2} ms", f.worst_ms));
        row(&mut t, "best", &|f| format!("{:.2} ms", f.best_ms));
        row(&mut t, "poll round trip", &|f| {
            format!("{:.1} us", f.poll_round_trip_us)
        });
        let _ = writeln!(t, "\ntargets (from issue 3):");
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
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_over_trials() {
        let trials: Vec<Trial> = (1..=20)
            .rev()
            .map(|n| Trial {
                elapsed: Duration::from_millis(n),
                polls: 10,
                polled: Duration::from_millis(n),
            })
            .collect();
        let f = figures("x", &trials);
        assert_eq!(
            (f.median_ms, f.p90_ms, f.worst_ms, f.best_ms),
            (10.0, 18.0, 20.0, 1.0)
        );
        assert_eq!(f.trials_ms.first(), Some(&20.0), "in the order run");
    }
}
