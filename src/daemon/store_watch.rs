//! Asks the store thread to look at its files every few seconds, also when no change comes.
//!
//! The store thread looks at the database file and the WAL around each batch and at each
//! ping ([`crate::store`]): a WAL removed from the data directory is copied into the
//! database file at the next look, before a crash can lose what it held. Without changes
//! or health checks that look might be hours away; this task bounds it.

use crate::daemon::Daemon;
use crate::store::writer::Command;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Longest time between two looks at the store's files.
pub const EVERY: Duration = Duration::from_secs(5);

/// Pings the store thread every [`EVERY`] until `stopped`.
pub async fn run(daemon: Arc<Daemon>, mut stopped: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                // What it finds is logged by the store thread.
                let _ = daemon.writer.submit(Command::Ping).await;
            }
            _ = stopped.changed() => return,
        }
    }
}
