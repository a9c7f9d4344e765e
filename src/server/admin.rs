//! Admin requests: access check, argument checks, then a read of the index or a change
//! submitted to the writer thread. Nothing here knows about sockets.

use super::key_change::{names, KeyChange};
use super::lifecycle;
use crate::access::Peer;
use crate::daemon::Daemon;
use crate::store::writer::{Command, Outcome, WriteError};
use crate::time;
use crate::token::is_key_id;
use authenta_client::proto::{
    self, Actor, CreateKey, ErrorAnswer, ErrorCode, KeyInfo, KeyPage, PolicyReport, RequestBody,
    ResponseBody, RotationFailure, ScheduledRotation, StatusInfo,
};
use std::sync::atomic::Ordering;

/// Longest key name and environment label accepted.
const MAX_NAME_LEN: usize = 200;
const MAX_ENVIRONMENT_LEN: usize = 64;
/// Most corrupt keys or failing rotations named in one answer.
const MAX_LISTED: usize = 100;
/// Longest expiry or grace accepted: 100 years.
pub(super) const MAX_SECS: u64 = 100 * 365 * 86_400;

/// Answers one admin request from `peer`: checks that the peer may administer, then the
/// arguments, then reads the index or submits the change to the writer thread.
pub(crate) async fn dispatch(daemon: &Daemon, peer: &Peer, body: RequestBody) -> ResponseBody {
    let kind = kind(&body);
    if let RequestBody::Health = body {
        // Any peer that was let in may ask: a monitoring user needs no admin rights.
        return ResponseBody::Health(crate::daemon::health::check(daemon).await);
    }
    let access = daemon.access();
    let answer = if !access.may_admin(peer) {
        tracing::warn!(uid = peer.uid, pid = ?peer.pid, "admin request refused");
        error(
            ErrorCode::PermissionDenied,
            &format!(
                "uid {} may not make admin requests: run as root or as the daemon's user \
                 (uid {}), or add the uid to admin_uids (or its group to admin_gids) in the \
                 daemon's config",
                peer.uid,
                access.daemon_uid()
            ),
        )
    } else {
        match admin(daemon, peer, body).await {
            Ok(body) => body,
            Err(answer) => ResponseBody::Error(answer),
        }
    };
    let ok = !matches!(answer, ResponseBody::Error(_));
    daemon.metrics.admin(kind, ok);
    answer
}

/// The request's kind, as `/metrics` labels it.
pub(super) fn kind(body: &RequestBody) -> &'static str {
    match body {
        RequestBody::Verify(_) => "verify",
        RequestBody::CreateKey(_) => "create",
        RequestBody::ListKeys { .. } => "list",
        RequestBody::ShowKey { .. } => "show",
        RequestBody::Regenerate { .. } => "regenerate",
        RequestBody::Revoke { .. } => "revoke",
        RequestBody::Status => "status",
        RequestBody::Audit { .. } => "audit",
        RequestBody::Rekey { .. } => "rekey",
        RequestBody::PolicyStatus => "policy_status",
        RequestBody::Health => "health",
        RequestBody::UpdateKey(_) => "update",
        RequestBody::SetOwner(_) => "owner_set",
        RequestBody::ShowOwner { .. } => "owner_show",
    }
}

async fn admin(
    daemon: &Daemon,
    peer: &Peer,
    body: RequestBody,
) -> Result<ResponseBody, ErrorAnswer> {
    let actor = Actor::Peer {
        uid: peer.uid,
        pid: peer.pid,
    };
    let now = time::now_ms();
    if names(&body).is_some() {
        let KeyChange {
            command,
            answer_with,
        } = KeyChange::of(daemon, body, actor)?;
        let outcome = submit(daemon, command).await?;
        return answer_with.answer(daemon, outcome, now);
    }
    match body {
        // Every verify is taken by the connection's borrowed decoder, which reads the same
        // bytes the owned one does; one arriving here is refused, not answered a second way.
        RequestBody::Verify(_) => Err(bad_request("a verify is not an admin request".into())),
        RequestBody::ListKeys { after, owner_id } => Ok(ResponseBody::Keys(key_page(
            daemon,
            after,
            owner_id.as_deref(),
            now,
        ))),
        RequestBody::ShowKey { id } => Ok(ResponseBody::Key(key_info(daemon, &id, now)?)),
        RequestBody::SetOwner(params) => lifecycle::set_owner(daemon, params, actor, now).await,
        RequestBody::ShowOwner { id } => lifecycle::show_owner(daemon, &id, now),
        RequestBody::Status => Ok(ResponseBody::Status(status(daemon, now))),
        RequestBody::PolicyStatus => Ok(ResponseBody::Policy(policy_report(daemon))),
        RequestBody::Rekey { new_master_key } => rekey(daemon, &new_master_key.0, actor).await,
        // Health is answered before this; key changes above.
        RequestBody::Health
        | RequestBody::CreateKey(_)
        | RequestBody::Regenerate { .. }
        | RequestBody::Revoke { .. }
        | RequestBody::UpdateKey(_) => Err(internal()),
        RequestBody::Audit { verify, after } => {
            match submit(daemon, Command::ReadAudit { verify, after }).await? {
                Outcome::Audit(report) => Ok(ResponseBody::Audit(report)),
                _ => Err(internal()),
            }
        }
    }
}

fn status(daemon: &Daemon, now: i64) -> StatusInfo {
    StatusInfo {
        version: env!("CARGO_PKG_VERSION").into(),
        uptime_secs: daemon.started.elapsed().as_secs(),
        socket: daemon.socket.display().to_string(),
        data_dir: daemon.data_dir.display().to_string(),
        keys: daemon.index.counts(now),
        // Bounded so the answer always fits a frame; the log names every one.
        corrupt_keys: daemon
            .corrupt_keys
            .iter()
            .take(MAX_LISTED)
            .cloned()
            .collect(),
        connections: daemon.connections.load(Ordering::Relaxed),
        verifications: daemon.metrics.verifies_total(),
        policy_error: daemon.policy_state().last_error.clone(),
        rotation_failures: daemon.scheduler_state().failures.len() as u64,
        fleet: daemon.fleet.as_ref().map(|f| f.status()),
        development_key: daemon.development_key,
        newest_audit_at: Some(daemon.index.newest_audit_at.load(Ordering::Relaxed))
            .filter(|&at| at > 0),
        corrupt_total: daemon.corrupt_keys.len() as u64,
    }
}

async fn rekey(
    daemon: &Daemon,
    new_master_key: &[u8],
    actor: Actor,
) -> Result<ResponseBody, ErrorAnswer> {
    let key = crate::store::master_key::parse_key(new_master_key).map_err(|_| {
        bad_request("the new master key must be 32 raw bytes or 64 hex digits".into())
    })?;
    // Fleet mode: the fleet's data key first, so that this node's store is never wrapped
    // by a key the fleet does not know.
    let fleet_data_key = match &daemon.fleet {
        Some(fleet) => Some(
            fleet
                .rewrap_data_key(key.clone())
                .await
                .map_err(write_error)?,
        ),
        None => None,
    };
    let command = Command::Rekey {
        new_master_key: key,
        actor,
        fleet_data_key,
    };
    submit(daemon, command).await?;
    Ok(ResponseBody::Done(
        "the data key is now wrapped by the new master key: start the daemon with the new \
         key from now on (the old one no longer opens the store)"
            .into(),
    ))
}

/// Budget for the keys of one page: well inside a frame, leaving room for the envelope.
const PAGE_BYTES: usize = proto::MAX_FRAME_LEN - 4096;

/// As many keys after `after` (of `owner` only, when set) as fit in one answer.
fn key_page(daemon: &Daemon, after: Option<String>, owner: Option<&str>, now: i64) -> KeyPage {
    let maps = daemon.index.read();
    let mut keys = Vec::new();
    let mut used = 0;
    let mut entries = maps
        .entries_after(after.as_deref())
        .filter(|e| owner.is_none() || e.owner_id() == owner)
        .peekable();
    while let Some(entry) = entries.peek() {
        let mut info = entry.info(now);
        daemon.index.remote_usage.add_to(&mut info);
        let size = proto::encode(&info).map(|b| b.len()).unwrap_or(PAGE_BYTES);
        if used + size > PAGE_BYTES && !keys.is_empty() {
            break;
        }
        used += size;
        keys.push(info);
        entries.next();
    }
    let next = entries
        .peek()
        .and_then(|_| keys.last().map(|k: &KeyInfo| k.id.clone()));
    KeyPage { keys, next }
}

fn policy_report(daemon: &Daemon) -> PolicyReport {
    let policy = daemon.index.policy();
    let state = daemon.policy_state().clone();
    let scheduler = daemon.scheduler_state().clone();
    let mut rotation_failures: Vec<RotationFailure> = scheduler
        .failures
        .into_iter()
        .map(|(key_id, f)| RotationFailure {
            key_id,
            message: f.message,
            retry_at: f.retry_at,
        })
        .collect();
    rotation_failures.sort_by(|a, b| a.key_id.cmp(&b.key_id));
    // Bounded so the answer always fits a frame; the log has every failure.
    rotation_failures.truncate(MAX_LISTED);
    for failure in &mut rotation_failures {
        failure.message.truncate(300);
    }
    PolicyReport {
        file: state.file.map(|f| f.display().to_string()),
        content_sha256: state.content_sha256,
        loaded_at: state.loaded_at,
        last_error: state.last_error,
        last_error_at: state.last_error_at,
        rules: policy.rotation.len() as u32,
        revoked_ids: policy.revocations.ids.len() as u32,
        revoked_hashes: policy.revocations.token_sha256.len() as u32,
        next_rotations: scheduler
            .next
            .into_iter()
            .map(|(key_id, at)| ScheduledRotation { key_id, at })
            .collect(),
        rotation_failures,
    }
}

pub(super) async fn submit(daemon: &Daemon, command: Command) -> Result<Outcome, ErrorAnswer> {
    daemon.writer.submit(command).await.map_err(write_error)
}

pub(super) fn write_error(e: WriteError) -> ErrorAnswer {
    let code = match &e {
        WriteError::NotFound(_) => ErrorCode::NotFound,
        WriteError::Refused(_) => ErrorCode::BadRequest,
        WriteError::Storage(_) => ErrorCode::Storage,
        WriteError::Stopped => ErrorCode::Busy,
        WriteError::Conflict(_) => ErrorCode::Conflict,
        WriteError::FleetUnavailable(_) => ErrorCode::FleetUnavailable,
    };
    if code == ErrorCode::Storage {
        tracing::error!(error = %e, "admin write failed");
    }
    ErrorAnswer {
        code,
        message: e.to_string(),
    }
}

pub(super) fn key_info(daemon: &Daemon, id: &str, now: i64) -> Result<KeyInfo, ErrorAnswer> {
    check_id(id)?;
    daemon
        .index
        .read()
        .by_id(id)
        .map(|entry| entry.info(now))
        .map(|mut info| {
            daemon.index.remote_usage.add_to(&mut info);
            info
        })
        .ok_or_else(|| not_found(id))
}

pub(super) fn check_id(id: &str) -> Result<(), ErrorAnswer> {
    if is_key_id(id) {
        Ok(())
    } else {
        Err(not_found(id))
    }
}

pub(super) fn check_create(params: &CreateKey) -> Result<(), ErrorAnswer> {
    check_name(&params.name)?;
    if params.permissions.is_empty() {
        return Err(bad_request(
            "a key needs at least one permission: read, write or delete".into(),
        ));
    }
    if let Some(env) = &params.environment {
        check_environment(env)?;
    }
    if let Some(secs) = params.expires_in_secs {
        check_expiry(secs)?;
    }
    lifecycle::check_create(params)
}

pub(super) fn check_name(name: &str) -> Result<(), ErrorAnswer> {
    let trimmed = name.trim();
    if trimmed.is_empty() || name.len() > MAX_NAME_LEN || name.chars().any(char::is_control) {
        return Err(bad_request(format!(
            "a key name must be 1 to {MAX_NAME_LEN} bytes of printable text"
        )));
    }
    Ok(())
}

pub(super) fn check_environment(env: &str) -> Result<(), ErrorAnswer> {
    let ok = !env.is_empty()
        && env.len() <= MAX_ENVIRONMENT_LEN
        && env
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(bad_request(format!(
            "an environment label is 1 to {MAX_ENVIRONMENT_LEN} letters, digits, '-', '_' or '.'"
        )))
    }
}

pub(super) fn check_expiry(secs: u64) -> Result<(), ErrorAnswer> {
    if secs == 0 || secs > MAX_SECS {
        return Err(bad_request(
            "expiry must be between 1 second and 100 years".into(),
        ));
    }
    Ok(())
}

fn error(code: ErrorCode, message: &str) -> ResponseBody {
    ResponseBody::Error(ErrorAnswer {
        code,
        message: message.into(),
    })
}

pub(super) fn bad_request(message: String) -> ErrorAnswer {
    ErrorAnswer {
        code: ErrorCode::BadRequest,
        message,
    }
}

fn not_found(id: &str) -> ErrorAnswer {
    // Only a well-formed key id is echoed: whatever else was passed might be a token.
    let message = if is_key_id(id) {
        format!("no key with id {id}: see `authenta-keyd keys list`")
    } else {
        "that is not a key id (they look like key_ and 16 letters or digits): see \
         `authenta-keyd keys list`"
            .to_owned()
    };
    ErrorAnswer {
        code: ErrorCode::NotFound,
        message,
    }
}

pub(super) fn internal() -> ErrorAnswer {
    ErrorAnswer {
        code: ErrorCode::Internal,
        message: "unexpected outcome from the store".into(),
    }
}
