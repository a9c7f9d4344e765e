//! Writes live usage counters to the store in batches: verify only bumps atomics, and this
//! task turns what changed into one transaction every `usage_flush_interval`, and once more
//! at shutdown.

use crate::daemon::Daemon;
use crate::writer::{Command, WriteError};
use std::sync::Arc;
use std::time::Duration;
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
        if let Err(e) = flush(&daemon).await {
            tracing::warn!(error = %e, "usage flush failed; will retry");
        }
    }
}

/// Keys written per transaction, so that a flush after heavy use of a million keys neither
/// builds one huge batch in memory nor holds the store thread for a whole second at once.
const CHUNK: usize = 4096;

/// Writes every changed counter now, in transactions of [`CHUNK`] keys; on failure the
/// rest stay marked for the next flush.
pub async fn flush(daemon: &Daemon) -> Result<usize, WriteError> {
    let dirty = daemon.index.take_dirty();
    let mut written = 0;
    for (n, chunk) in dirty.chunks(CHUNK).enumerate() {
        let usage = daemon.index.usage_of(chunk);
        if let Err(e) = daemon.writer.submit(Command::FlushUsage(usage)).await {
            daemon.index.requeue(chunk);
            daemon.index.put_back(&dirty[(n * CHUNK + chunk.len())..]);
            return Err(e);
        }
        written += chunk.len();
    }
    Ok(written)
}
