//! Putting a policy in force: revocations first (durably, through the store, audited with
//! actor `policy`), then the new ages and schedules in the index, then the scheduler is
//! woken. A file that does not parse, or whose revocations cannot be written, leaves the
//! last good policy in force and is reported.

use crate::daemon::Daemon;
use crate::index::Hit;
use crate::policy::parse::parse;
use crate::policy::Policy;
use crate::store::writer::{Command, Outcome, WriteError};
use crate::time;
use crate::token::TokenHash;
use ring::digest;
use std::path::Path;
use std::sync::Arc;

/// Most revocations written in one change: SQLite keeps a change's rollback journal in
/// memory, a page of the store for each page it touches.
const REVOCATIONS_A_CHANGE: usize = 1024;

/// Writes the policy's revocations, in changes of at most [`REVOCATIONS_A_CHANGE`]. Each is
/// final, so a failure part way leaves the earlier ones in force, and the next load of the
/// file finds only the rest to do.
async fn apply_revocations(
    daemon: &Daemon,
    ids: Vec<String>,
    hashes: Vec<TokenHash>,
) -> Result<usize, WriteError> {
    let mut revoked = 0;
    for ids in ids.chunks(REVOCATIONS_A_CHANGE) {
        revoked += apply_revocation_change(daemon, ids.to_vec(), Vec::new()).await?;
    }
    for hashes in hashes.chunks(REVOCATIONS_A_CHANGE) {
        revoked += apply_revocation_change(daemon, Vec::new(), hashes.to_vec()).await?;
    }
    Ok(revoked)
}

/// Writes one change of revocations. In fleet mode every node reads its own policy file:
/// when another node published the same revocation first, this one conflicts, and once the
/// other's change is applied here, trying again finds nothing left to do.
async fn apply_revocation_change(
    daemon: &Daemon,
    ids: Vec<String>,
    hashes: Vec<TokenHash>,
) -> Result<usize, WriteError> {
    let mut tries = 0;
    loop {
        let command = Command::ApplyRevocations {
            ids: ids.clone(),
            hashes: hashes.clone(),
        };
        match daemon.writer.submit(command).await {
            Ok(Outcome::Revoked(n)) => return Ok(n),
            Ok(_) => return Ok(0),
            Err(WriteError::Conflict(_)) if tries < 5 => {
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(100 * tries)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Reads and parses a policy file, without putting it in force.
pub fn read(path: &Path) -> Result<Policy, String> {
    crate::host::trust::check(path)?;
    let text = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse_bytes(&text)
}

fn parse_bytes(text: &[u8]) -> Result<Policy, String> {
    std::str::from_utf8(text)
        .map_err(|_| "the file is not UTF-8 text".to_owned())
        .and_then(parse)
}

/// Reads `path` and, if it changed since the last good load, puts it in force.
pub async fn reload(daemon: &Daemon, path: &Path) {
    // Named before it loads, so a file that never loads shows as failed, not as absent.
    daemon.policy_state().file = Some(path.to_path_buf());
    if let Err(untrusted) = crate::host::trust::check(path) {
        report_error(
            daemon,
            format!("{untrusted}; the last good policy stays in force"),
        );
        return;
    }
    let text = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) => {
            report_error(
                daemon,
                format!(
                    "cannot read {}: {e}; the last good policy stays in force",
                    path.display()
                ),
            );
            return;
        }
    };
    let sha = hex::encode(digest::digest(&digest::SHA256, &text));
    let unchanged = {
        let state = daemon.policy_state();
        state.content_sha256.as_deref() == Some(sha.as_str()) && state.last_error.is_none()
    };
    if unchanged {
        return;
    }
    let policy = match parse_bytes(&text) {
        Ok(policy) => policy,
        Err(e) => {
            report_error(
                daemon,
                format!(
                    "{}: {e}; the last good policy stays in force",
                    path.display()
                ),
            );
            return;
        }
    };
    if let Err(refused) = daemon.sink_rules.check(&policy) {
        report_error(
            daemon,
            format!("{refused}; the last good policy stays in force"),
        );
        return;
    }
    match put_in_force(daemon, policy).await {
        Ok(revoked) => {
            let mut state = daemon.policy_state();
            state.file = Some(path.to_path_buf());
            state.content_sha256 = Some(sha);
            state.loaded_at = Some(time::now_ms());
            state.last_error = None;
            drop(state);
            daemon.metrics.policy_reloads.inc();
            tracing::info!(file = %path.display(), revoked, "policy applied");
        }
        Err(e) => report_error(daemon, format!("{}: {e}", path.display())),
    }
}

fn report_error(daemon: &Daemon, message: String) {
    tracing::error!(error = %message, "policy not applied");
    daemon.metrics.policy_reload_failures.inc();
    let mut state = daemon.policy_state();
    state.last_error = Some(message);
    state.last_error_at = Some(time::now_ms());
}

/// Applies revocations durably, then the policy's times; returns how many revocations
/// were new.
pub async fn put_in_force(daemon: &Daemon, policy: Policy) -> Result<usize, String> {
    let (ids, hashes) = pending_revocations(daemon, &policy);
    let revoked = if ids.is_empty() && hashes.is_empty() {
        0
    } else {
        apply_revocations(daemon, ids, hashes).await.map_err(|e| {
            format!(
                "its revocations could not be written ({e}); the last good policy stays in force"
            )
        })?
    };
    daemon.index.set_policy(Arc::new(policy));
    // A changed policy may have fixed what made rotations fail: try them again now.
    let now = time::now_ms();
    for failure in daemon.scheduler_state().failures.values_mut() {
        failure.retry_at = now;
    }
    daemon.scheduler_wake.notify_one();
    Ok(revoked)
}

/// The revocations not yet in effect, so a reload of the same file writes nothing.
fn pending_revocations(
    daemon: &Daemon,
    policy: &Policy,
) -> (Vec<String>, Vec<crate::token::TokenHash>) {
    let maps = daemon.index.read();
    let ids = policy
        .revocations
        .ids
        .iter()
        .filter(|id| maps.by_id(id).is_some_and(|e| e.revoked_at().is_none()))
        .cloned()
        .collect();
    let hashes = policy
        .revocations
        .token_sha256
        .iter()
        .filter(|hash| match maps.by_hash(hash) {
            None => true,
            Some(Hit::Retired(_)) => false,
            Some(Hit::Current(e)) => e.revoked_at().is_none(),
            Some(Hit::Previous(_)) => true,
        })
        .copied()
        .collect();
    (ids, hashes)
}
