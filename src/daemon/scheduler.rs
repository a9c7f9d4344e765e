//! Scheduled rotations: keys matched by a `[[rotation]]` rule with `every` are regenerated
//! when due, their new token written to the rule's sink. Due times derive from each key's
//! last (re)generation, which the store keeps, so a rotation missed while the daemon was
//! down runs at start-up, and a restart during an overlap changes nothing (the overlap is
//! the key's grace, also in the store). Failures are logged, shown in `policy status`, and
//! retried.

use crate::daemon::{Daemon, RotationFailure};
use crate::store::writer::{Command, Outcome, WriteError};
use crate::time;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// How long after a failed rotation it is tried again.
const RETRY_AFTER_MS: i64 = 30_000;
/// The longest the scheduler sleeps without looking (clock changes, safety).
const MAX_SLEEP: Duration = Duration::from_secs(30);
/// The shortest time between a scan and the next one that a key change starts: a scan reads
/// every key, and creates committed back to back would otherwise keep a core scanning. A
/// new key falls due no sooner than its rule's `every`, and `every` is at least a second.
const MIN_RESCAN: Duration = Duration::from_secs(1);

struct Due {
    id: String,
    base: i64,
    overlap_secs: u64,
    sink: crate::policy::Sink,
}

/// Runs rotations as they fall due, until `stopped`.
pub async fn run(daemon: Arc<Daemon>, mut stopped: watch::Receiver<bool>) {
    loop {
        let now = time::now_ms();
        let (due, next_at) = scan(&daemon, now);
        for job in due {
            rotate(&daemon, job).await;
        }
        let sleep = next_at
            .map(|at| Duration::from_millis(u64::try_from(at - time::now_ms()).unwrap_or(0)))
            .unwrap_or(MAX_SLEEP)
            .clamp(Duration::from_millis(10), MAX_SLEEP);
        let scanned = Instant::now();
        let wake_at = scanned + sleep;
        tokio::select! {
            () = tokio::time::sleep_until(wake_at) => {}
            () = daemon.scheduler_wake.notified() => {}
            () = daemon.index.changed.notified() => {
                tokio::select! {
                    () = tokio::time::sleep_until(wake_at.min(scanned + MIN_RESCAN)) => {}
                    () = daemon.scheduler_wake.notified() => {}
                    _ = stopped.changed() => return,
                }
            }
            _ = stopped.changed() => return,
        }
    }
}

/// The rotations due at `now`, and when the next one (or retry) falls due.
fn scan(daemon: &Daemon, now: i64) -> (Vec<Due>, Option<i64>) {
    let policy = daemon.index.policy();
    if !policy.schedules_rotations() {
        daemon.scheduler_state().next.clear();
        return (Vec::new(), None);
    }
    let failures = daemon.scheduler_state().failures.clone();
    let mut due = Vec::new();
    let mut upcoming = Vec::new();
    {
        let maps = daemon.index.read();
        for entry in maps.entries() {
            let Some(at) = entry.times().scheduled_at else {
                continue;
            };
            if entry.revoked_at().is_some() {
                continue;
            }
            let retry_at = failures.get(entry.id()).map(|f| f.retry_at);
            let at = retry_at.map_or(at, |r| at.max(r));
            if at > now {
                upcoming.push((entry.id().to_owned(), at));
                continue;
            }
            let Some(rule) = policy.rule_for(&entry.facts()) else {
                continue;
            };
            let Some(sink) = rule.sink.clone() else {
                continue;
            };
            due.push(Due {
                id: entry.id().to_owned(),
                base: entry.rotated_at().unwrap_or(entry.created_at()),
                overlap_secs: rule.overlap.as_secs(),
                sink,
            });
        }
    }
    upcoming.sort_by_key(|(_, at)| *at);
    let next_at = upcoming.first().map(|(_, at)| *at);
    upcoming.truncate(20);
    daemon.scheduler_state().next = upcoming;
    (due, next_at)
}

async fn rotate(daemon: &Daemon, job: Due) {
    let id = job.id.clone();
    let sink = job.sink.path.clone();
    let result = daemon
        .writer
        .submit(Command::Rotate {
            id: job.id,
            expected_base: job.base,
            overlap_secs: job.overlap_secs,
            sink: job.sink,
        })
        .await;
    let failure = match result {
        Ok(Outcome::Rotated {
            publish_error: None,
            ..
        }) => {
            tracing::info!(key_id = %id, sink = %sink.display(), "scheduled rotation done");
            daemon.metrics.rotations_done.inc();
            None
        }
        Ok(Outcome::Rotated {
            publish_error: Some(e),
            ..
        }) => Some(format!(
            "rotated, but the sink {} was not replaced: {e}",
            sink.display()
        )),
        Ok(_) => None,
        // Fleet mode: another node's scheduler rotated the key for this period.
        Err(WriteError::Conflict(_)) => {
            tracing::info!(key_id = %id, "rotated by another node of the fleet");
            None
        }
        Err(e) => Some(e.to_string()),
    };
    let mut state = daemon.scheduler_state();
    match failure {
        None => {
            state.failures.remove(&id);
        }
        Some(message) => {
            tracing::error!(key_id = %id, error = %message, "scheduled rotation failed; will retry");
            state.failures.insert(
                id,
                RotationFailure {
                    message,
                    retry_at: time::now_ms() + RETRY_AFTER_MS,
                },
            );
        }
    }
}
