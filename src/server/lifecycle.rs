//! Admin requests of protocol 2's key lifecycle: `keys update`, `owners set` and
//! `owners show`, and the checks on owners, metadata and limits that `keys create` shares.

use super::admin::{bad_request, submit};
use crate::daemon::Daemon;
use crate::key::{meta_json_len, MAX_META_JSON};
use crate::store::writer::Command;
use authenta_client::proto::{
    Actor, CreateKey, ErrorAnswer, ErrorCode, Meta, OwnerInfo, OwnerUpdate, RateLimit, Refill,
    ResponseBody, UpdateKey,
};

/// Longest owner id accepted.
const MAX_OWNER_LEN: usize = 128;
/// Longest rate-limit window and refill interval: 366 days.
const MAX_WINDOW_MS: u64 = 366 * 86_400_000;
/// Shortest refill interval: a second.
const MIN_REFILL_MS: u64 = 1_000;

/// The arguments of `keys update`.
pub(super) fn check_update(params: &UpdateKey) -> Result<(), ErrorAnswer> {
    super::admin::check_id(&params.id)?;
    if let Some(name) = &params.name {
        super::admin::check_name(name)?;
    }
    if params.permissions.as_ref().is_some_and(Vec::is_empty) {
        return Err(bad_request(
            "a key needs at least one permission: read, write or delete".into(),
        ));
    }
    if let Some(Some(environment)) = &params.environment {
        super::admin::check_environment(environment)?;
    }
    if let Some(Some(secs)) = params.expires_in_secs {
        super::admin::check_expiry(secs)?;
    }
    if let Some(Some(owner)) = &params.owner_id {
        check_owner(owner)?;
    }
    check_meta(&params.set_meta)?;
    if params.unset_meta.len() > MAX_META_JSON {
        return Err(bad_request("too many metadata entries to remove".into()));
    }
    check_limits(params.ratelimit.flatten(), params.refill.flatten())
}

pub(super) async fn set_owner(
    daemon: &Daemon,
    params: OwnerUpdate,
    actor: Actor,
    now: i64,
) -> Result<ResponseBody, ErrorAnswer> {
    check_owner(&params.id)?;
    check_limits(params.ratelimit.flatten(), params.refill.flatten())?;
    let id = params.id.clone();
    submit(daemon, Command::SetOwner { params, actor }).await?;
    show_owner(daemon, &id, now)
}

pub(super) fn show_owner(daemon: &Daemon, id: &str, now: i64) -> Result<ResponseBody, ErrorAnswer> {
    check_owner(id)?;
    let maps = daemon.index.read();
    let keys = maps.entries().filter(|e| e.owner_id() == Some(id)).count() as u64;
    let Some(owner) = maps.owner_by_id(id) else {
        return Err(ErrorAnswer {
            code: ErrorCode::NotFound,
            message: "no key or `owners set` names that owner".into(),
        });
    };
    Ok(ResponseBody::Owner(OwnerInfo {
        id: id.to_owned(),
        ratelimit: owner.ratelimit.as_ref().map(|b| b.rule),
        ratelimit_state: owner.ratelimit.as_ref().map(|b| b.peek(now)),
        remaining: owner.credits.as_ref().map(|b| b.left(now)),
        refill: owner.credits.as_ref().and_then(|b| b.credits.refill),
        keys,
    }))
}

/// The lifecycle fields of a new key.
pub(super) fn check_create(params: &CreateKey) -> Result<(), ErrorAnswer> {
    if let Some(owner) = &params.owner_id {
        check_owner(owner)?;
    }
    check_meta(&params.meta)?;
    check_limits(params.ratelimit, params.refill)?;
    if params.refill.is_some() && params.remaining.is_none() {
        return Err(bad_request(
            "a refill needs a balance: give --remaining N too".into(),
        ));
    }
    Ok(())
}

/// Visible ASCII only: an owner id goes into an HTTP header as it is, where other
/// characters cannot travel and surrounding spaces would be trimmed (making ` acme` and
/// `acme` one owner to the app and two to the daemon).
fn check_owner(owner: &str) -> Result<(), ErrorAnswer> {
    let visible = owner.bytes().all(|b| b.is_ascii_graphic());
    if owner.is_empty() || owner.len() > MAX_OWNER_LEN || !visible {
        return Err(bad_request(format!(
            "an owner id is 1 to {MAX_OWNER_LEN} visible ASCII characters (no spaces), \
             e.g. acme-corp or tenant:4711"
        )));
    }
    Ok(())
}

/// Printable text, as a key's name: `keys show` prints metadata to an admin's terminal,
/// where a control character could rewrite what it shows or run an escape sequence.
fn check_meta(meta: &Meta) -> Result<(), ErrorAnswer> {
    if meta.keys().any(|k| k.is_empty()) {
        return Err(bad_request("a metadata key must not be empty".into()));
    }
    let control = |text: &String| text.chars().any(char::is_control);
    if meta.iter().any(|(k, v)| control(k) || control(v)) {
        return Err(bad_request(
            "metadata keys and values must be printable text (no control characters)".into(),
        ));
    }
    let size = meta_json_len(meta);
    if size > MAX_META_JSON {
        return Err(bad_request(format!(
            "metadata is {size} bytes as JSON: at most {MAX_META_JSON}"
        )));
    }
    Ok(())
}

fn check_limits(ratelimit: Option<RateLimit>, refill: Option<Refill>) -> Result<(), ErrorAnswer> {
    if let Some(r) = ratelimit {
        // At most one verify a microsecond: finer, a bucket counting in nanoseconds rounds
        // the rate by more than a thousandth.
        let too_fast = u64::from(r.limit) > r.window_ms.saturating_mul(1_000);
        if r.limit == 0 || r.window_ms == 0 || r.window_ms > MAX_WINDOW_MS || too_fast {
            return Err(bad_request(
                "a rate limit is 1 to 1,000 requests per millisecond of its window, and a \
                 window is 1ms to 366d (e.g. 100/1s)"
                    .into(),
            ));
        }
    }
    if let Some(r) = refill {
        if r.amount == 0 || !(MIN_REFILL_MS..=MAX_WINDOW_MS).contains(&r.interval_ms) {
            return Err(bad_request(
                "a refill is at least 1 credit every 1s to 366d (e.g. 1000/1d)".into(),
            ));
        }
    }
    Ok(())
}
