//! The listening socket and the accept loop.
//!
//! Each accepted connection is handed to a connection thread ([`Workers`]) and served there
//! as its own task. A semaphore caps how many are served at once; one over the cap is told
//! `busy` and closed, rather than left waiting, so a flood of connections cannot starve the
//! apps already connected.

use super::connection;
use super::slots::{Refusal, Slots};
use crate::access::Peer;
use crate::daemon::Daemon;
use crate::server::workers::Workers;
use anyhow::{bail, Context, Result};
use std::fs;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use tokio::net::UnixListener;
use tokio::sync::watch;

/// Binds the socket at `path`: a stale socket file is replaced, but a live daemon, a
/// regular file or a symlink in its place is refused.
pub fn bind(path: &Path, mode: u32, group: Option<u32>) -> Result<UnixListener> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => bail!(
            "{} is a symbolic link; refusing to bind there (remove it, or pick another --socket)",
            path.display()
        ),
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                bail!(
                    "another authenta-keyd is already listening on {}: stop it, or pick another --socket",
                    path.display()
                );
            }
            fs::remove_file(path)
                .with_context(|| format!("cannot remove the stale socket {}", path.display()))?;
        }
        Ok(_) => bail!(
            "{} exists and is not a socket; refusing to replace it",
            path.display()
        ),
        Err(_) => {}
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("cannot listen on {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set the mode of {}", path.display()))?;
    if let Some(gid) = group {
        nix::unistd::chown(path, None, Some(nix::unistd::Gid::from_raw(gid)))
            .with_context(|| format!("cannot give {} to group {gid}", path.display()))?;
    }
    Ok(listener)
}

/// Accepts connections until `shutdown` turns true, then waits for open connections to end.
/// `workers` serve them.
pub async fn accept_loop(
    listener: UnixListener,
    daemon: Arc<Daemon>,
    workers: Arc<Workers>,
    max_connections: usize,
    max_per_uid: usize,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Slots::new(max_connections, max_per_uid);
    let tracker = workers.tracker().clone();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: pause briefly rather than spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let peer = match stream.peer_cred() {
            Ok(cred) => Peer::new(
                cred.uid(),
                cred.gid(),
                cred.pid(),
                daemon.access().needs_groups(),
            ),
            Err(e) => {
                tracing::warn!(error = %e, "no peer credentials; closing");
                continue;
            }
        };
        let access = daemon.access();
        let slot = if access.may_verify(&peer) || access.may_admin(&peer) {
            slots.take(peer.uid)
        } else {
            Err(Refusal::NotAllowed)
        };
        match slot {
            Ok(slot) => workers.hand_off(stream, peer, slot),
            Err(refusal) => {
                slots.note(refusal, peer.uid);
                daemon.metrics.refused(refusal.as_str());
                // Answered while a refuser is free; past that, just closed.
                if let Some(refuser) = slots.refuser() {
                    tracker.spawn(async move {
                        connection::refuse(stream, refusal).await;
                        drop(refuser);
                    });
                }
            }
        }
    }
    drop(workers);
    tracker.close();
    if tokio::time::timeout(std::time::Duration::from_secs(5), tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after 5 s; shutting down anyway");
    }
}
