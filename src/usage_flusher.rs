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

/// Writes every changed counter now; on failure they stay marked for the next flush.
pub async fn flush(daemon: &Daemon) -> Result<usize, WriteError> {
    let dirty = daemon.index.take_dirty_usage();
    if dirty.is_empty() {
        return Ok(0);
    }
    let ids: Vec<String> = dirty.iter().map(|(id, _)| id.clone()).collect();
    match daemon.writer.submit(Command::FlushUsage(dirty)).await {
        Ok(_) => Ok(ids.len()),
        Err(e) => {
            daemon.index.mark_dirty(&ids);
            Err(e)
        }
    }
}
