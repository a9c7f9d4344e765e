//! Noticing policy changes. The file's **parent directory** is watched (notify +
//! notify-debouncer-full), not the file: a watch on the file itself ends at the first atomic
//! rename, editor save or Kubernetes ConfigMap `..data` symlink swap. SIGHUP and a periodic
//! re-read are safety nets for anything a watch misses. Every trigger just re-reads the
//! file; an unchanged file costs one read and one hash.

use super::policy_reload::reload;
use crate::daemon::Daemon;
use notify::RecursiveMode;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// How long the debouncer waits for a burst of events to settle.
const DEBOUNCE: Duration = Duration::from_millis(50);
/// The periodic re-read.
const SAFETY_NET: Duration = Duration::from_secs(30);

/// Watches `path` until `stopped`. (SIGHUP reloads directly, see `cli::serve`.)
pub async fn run(daemon: Arc<Daemon>, path: PathBuf, mut stopped: watch::Receiver<bool>) {
    let (tx, mut events) = mpsc::channel::<()>(1);
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    let debouncer = notify_debouncer_full::new_debouncer(
        DEBOUNCE,
        Some(DEBOUNCE / 2),
        move |result: notify_debouncer_full::DebounceEventResult| {
            // Reads (our own included: inotify reports opens and closes) change nothing;
            // reacting to them would re-read the file forever.
            let changed = result.is_ok_and(|events| {
                events
                    .iter()
                    .any(|e| !matches!(e.event.kind, notify::EventKind::Access(_)))
            });
            if changed {
                // A full channel already holds a pending reload: that one will do.
                let _ = tx.try_send(());
            }
        },
    );
    let _debouncer = match debouncer {
        Ok(mut debouncer) => match debouncer.watch(&dir, RecursiveMode::NonRecursive) {
            Ok(()) => Some(debouncer),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot watch the policy directory; relying on SIGHUP and the periodic re-read");
                None
            }
        },
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the file watcher; relying on SIGHUP and the periodic re-read");
            None
        }
    };
    let mut ticker = tokio::time::interval(SAFETY_NET);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            Some(()) = events.recv() => {}
            _ = ticker.tick() => {}
            _ = stopped.changed() => return,
        }
        reload(&daemon, &path).await;
    }
}
