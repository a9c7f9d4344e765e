//! Writes live usage counters to the store in batches: verify only bumps atomics, and this
//! task turns what changed into one transaction every `usage_flush_interval`, and once more
//! at shutdown.

use crate::daemon::Daemon;
use crate::store::writer::{Command, WriteError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Flushes every `interval` until `shutdown` turns true.
pub async fn run(daemon: Arc<Daemon>, interval: Duration, mut shutdown: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.changed() => return,
        }
        if let Err(e) = flush(&daemon, Some(&mut shutdown)).await {
            tracing::warn!(error = %e, "usage flush failed; will retry");
        }
        if *shutdown.borrow() {
            return;
        }
    }
}

/// Writes where every owner's limits stand whose limits moved since the last flush (few
/// rows: one per owner with limits), before the keys.
async fn flush_owners(daemon: &Daemon) -> Result<(), WriteError> {
    let owners = daemon.index.take_owner_usage();
    if owners.is_empty() {
        return Ok(());
    }
    let ids: Vec<String> = owners.iter().map(|(id, _)| id.clone()).collect();
    if let Err(e) = daemon.writer.submit(Command::FlushOwners(owners)).await {
        daemon.index.requeue_owners(&ids);
        return Err(e);
    }
    Ok(())
}

/// Keys written per transaction, so that a flush after heavy use of a million keys neither
/// builds one huge batch in memory nor keeps the store thread busy for long at a stretch:
/// a transaction of 1,024 usage rows is a few milliseconds of CPU, which a connection thread
/// sharing its core waits out at worst; larger transactions show in verify's p99.
const CHUNK: usize = 1024;

/// A background flush pauses this many times as long as each transaction took, so that it
/// takes at most a sixteenth of a core from verify. With a million keys touched, writing
/// them all costs about two seconds of CPU; on a two-core host, unpaced, that would halve
/// verify throughput for as long, and under a million busy keys the flush never catches
/// up, so this share is taken from verify for as long as the load lasts. The price is
/// freshness: a million busy keys are each persisted every 30 s or more (sixteen times a
/// 2 s pass). Usage is never lost on a clean stop: a key stays queued until written, and
/// shutdown flushes without pauses. A crash loses at most the counts since the key's last
/// write.
const PAUSE_FACTOR: u32 = 15;

/// Writes every changed counter now, in transactions of [`CHUNK`] keys; on failure the
/// rest stay marked for the next flush. With `background` (the shutdown signal), pauses
/// between transactions and stops early, leaving the rest queued, once shutdown begins.
pub async fn flush(
    daemon: &Daemon,
    mut background: Option<&mut watch::Receiver<bool>>,
) -> Result<usize, WriteError> {
    flush_owners(daemon).await?;
    let dirty = daemon.index.take_dirty();
    let mut written = 0;
    for chunk in dirty.chunks(CHUNK) {
        let started = Instant::now();
        let usage = daemon.index.usage_of(chunk);
        let counts: Option<Vec<_>> = daemon
            .fleet
            .as_ref()
            .map(|_| usage.iter().map(|u| (u.id.clone(), u.usage)).collect());
        if let Err(e) = daemon.writer.submit(Command::FlushUsage(usage)).await {
            daemon.index.requeue(&dirty[written..]);
            return Err(e);
        }
        if let (Some(fleet), Some(counts)) = (&daemon.fleet, counts) {
            fleet.publish_usage(counts);
        }
        written += chunk.len();
        let rest = &dirty[written..];
        if rest.is_empty() {
            break;
        }
        if let Some(shutdown) = background.as_deref_mut() {
            let pause = started.elapsed() * PAUSE_FACTOR;
            let stopping = tokio::select! {
                _ = tokio::time::sleep(pause) => *shutdown.borrow(),
                _ = shutdown.changed() => true,
            };
            if stopping {
                daemon.index.requeue(rest);
                return Ok(written);
            }
        }
    }
    daemon
        .metrics
        .usage_flushed_at
        .store(crate::time::now_ms(), std::sync::atomic::Ordering::Relaxed);
    Ok(written)
}
