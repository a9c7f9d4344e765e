//! Admin requests that change one key: create, regenerate, revoke and update. Each is
//! checked into a command for the store thread, then answered once that command is
//! committed. Two steps rather than one call, so that a connection can hand a run of them
//! to the store thread before it awaits the first ([`super::pipelined_changes`]) and still
//! answer each as it would alone ([`super::admin`]).

use super::admin::{
    bad_request, check_create, check_expiry, check_id, internal, key_info, MAX_SECS,
};
use super::lifecycle::check_update;
use crate::daemon::Daemon;
use crate::store::writer::{Command, Outcome};
use crate::time::format_secs;
use authenta_client::proto::{Actor, ErrorAnswer, NewToken, RequestBody, ResponseBody};

/// Longest revoke reason accepted.
const MAX_REASON_LEN: usize = 500;

/// A checked change to one key: what the store thread is to do, and what to answer.
pub(super) struct KeyChange {
    pub(super) command: Command,
    pub(super) answer_with: AnswerWith,
}

/// What a change is answered with once the store thread has committed it.
pub(super) enum AnswerWith {
    /// The new token and the key (create, regenerate).
    Issued,
    /// The key as it is now (revoke, update).
    Key(String),
}

/// Which key a key change names.
pub(super) enum Names<'a> {
    /// A key it makes (a create).
    NewKey,
    /// A key that exists (or should).
    Key(&'a str),
}

/// Which key `body` changes; `None` when it is not a request that changes one key.
pub(super) fn names(body: &RequestBody) -> Option<Names<'_>> {
    match body {
        RequestBody::CreateKey(_) => Some(Names::NewKey),
        RequestBody::Regenerate { id, .. } | RequestBody::Revoke { id, .. } => Some(Names::Key(id)),
        RequestBody::UpdateKey(params) => Some(Names::Key(&params.id)),
        _ => None,
    }
}

impl KeyChange {
    /// The change `body` asks for, its arguments checked. `body` must be a key change
    /// ([`names`] says which are).
    pub(super) fn of(
        daemon: &Daemon,
        body: RequestBody,
        actor: Actor,
    ) -> Result<KeyChange, ErrorAnswer> {
        match body {
            RequestBody::CreateKey(params) => check_create(&params).map(|()| KeyChange {
                command: Command::Create { params, actor },
                answer_with: AnswerWith::Issued,
            }),
            RequestBody::Regenerate {
                id,
                grace_secs,
                expires_in_secs,
            } => regenerate(daemon, id, grace_secs, expires_in_secs, actor),
            RequestBody::Revoke { id, reason } => revoke(id, reason, actor),
            RequestBody::UpdateKey(params) => check_update(&params).map(|()| KeyChange {
                answer_with: AnswerWith::Key(params.id.clone()),
                command: Command::Update { params, actor },
            }),
            _ => Err(internal()),
        }
    }
}

impl AnswerWith {
    /// The answer to a change the store thread made (`outcome`), as of `now`.
    pub(super) fn answer(
        self,
        daemon: &Daemon,
        outcome: Outcome,
        now: i64,
    ) -> Result<ResponseBody, ErrorAnswer> {
        match (self, outcome) {
            (AnswerWith::Issued, Outcome::Issued { key_id, token }) => {
                Ok(ResponseBody::Created(NewToken {
                    key: key_info(daemon, &key_id, now)?,
                    token: token.to_string(),
                }))
            }
            (AnswerWith::Issued, _) => Err(internal()),
            (AnswerWith::Key(id), _) => Ok(ResponseBody::Key(key_info(daemon, &id, now)?)),
        }
    }
}

fn regenerate(
    daemon: &Daemon,
    id: String,
    grace_secs: Option<u64>,
    expires_in_secs: Option<u64>,
    actor: Actor,
) -> Result<KeyChange, ErrorAnswer> {
    check_id(&id)?;
    if let Some(secs) = expires_in_secs {
        check_expiry(secs)?;
    }
    let default_grace = daemon.index.policy().regenerate_grace(daemon.default_grace);
    let grace_secs = grace_secs.unwrap_or(default_grace.as_secs());
    if grace_secs > MAX_SECS {
        return Err(bad_request(format!(
            "grace of {} is too long: at most 100 years",
            format_secs(grace_secs)
        )));
    }
    Ok(KeyChange {
        command: Command::Regenerate {
            id,
            grace_secs,
            expires_in_secs,
            actor,
        },
        answer_with: AnswerWith::Issued,
    })
}

fn revoke(id: String, reason: Option<String>, actor: Actor) -> Result<KeyChange, ErrorAnswer> {
    check_id(&id)?;
    if reason.as_ref().is_some_and(|r| r.len() > MAX_REASON_LEN) {
        return Err(bad_request(format!(
            "reason is longer than {MAX_REASON_LEN} bytes"
        )));
    }
    Ok(KeyChange {
        answer_with: AnswerWith::Key(id.clone()),
        command: Command::Revoke { id, reason, actor },
    })
}
