//! Protocol 2's lifecycle changes: a key updated in place, an owner's shared limits, and
//! the limits and credits both set.

use super::{Draft, WriteError};
use crate::key::{Credits, KeyDetails, OwnerRecord, Permissions};
use crate::store::outcome::Outcome;
use crate::time;
use authenta_client::proto::{Actor, Change, OwnerUpdate, RateLimit, Refill, UpdateKey};

/// Changes a key in place: its token stays. Audited with the fields that changed (values
/// only where they are not sealed: never a name, owner or metadata value).
pub fn update(d: &mut Draft<'_>, params: UpdateKey, actor: Actor) -> Result<Outcome, WriteError> {
    let mut record = d.current(&params.id)?;
    if record.revoked_at.is_some() {
        return Err(WriteError::Refused(format!(
            "key {} is revoked and stays so: create a new key instead",
            params.id
        )));
    }
    let before = record.clone();
    let now = d.now();
    let mut changed = Vec::new();
    if let Some(name) = params.name {
        record.name = name;
        changed.push("name".to_owned());
    }
    if let Some(list) = params.permissions {
        record.permissions = Permissions::from_list(&list);
        let names: Vec<_> = record
            .permissions
            .to_list()
            .iter()
            .map(|p| p.as_str())
            .collect();
        changed.push(format!("permissions={}", names.join(",")));
    }
    if let Some(environment) = params.environment {
        changed.push(format!(
            "environment={}",
            environment.as_deref().unwrap_or("none")
        ));
        record.environment = environment;
    }
    if let Some(expiry) = params.expires_in_secs {
        record.expires_at = expiry.map(|secs| time::add_secs(now, secs));
        changed.push(match expiry {
            Some(secs) => format!("expires-in={}", time::format_secs(secs)),
            None => "expiry=none".to_owned(),
        });
    }
    let details = &mut record.details;
    if let Some(owner) = params.owner_id {
        details.owner_id = owner;
        changed.push("owner".to_owned());
    }
    for key in &params.unset_meta {
        details.meta.remove(key);
    }
    details.meta.extend(params.set_meta);
    if details.meta != before.details.meta {
        let size = crate::key::meta_json_len(&details.meta);
        if size > crate::key::MAX_META_JSON {
            return Err(WriteError::Refused(format!(
                "key {}: its metadata would be {size} bytes as JSON, over the {} allowed; \
                 remove entries with --unset-meta",
                params.id,
                crate::key::MAX_META_JSON
            )));
        }
        changed.push("meta".to_owned());
    }
    let left = d.left_of_key(&params.id, now);
    let (ratelimit, credits) = apply_limits(
        (details.ratelimit, details.credits, left),
        params.ratelimit,
        params.remaining,
        params.refill,
        now,
    )
    .map_err(|e| WriteError::Refused(format!("key {}: {e}", params.id)))?;
    details.ratelimit = ratelimit;
    details.credits = credits;
    if ratelimit != before.details.ratelimit || credits != before.details.credits {
        changed.extend(limits_detail(details));
    }
    if record != before {
        d.put_key(&record);
        d.audit(actor, "update", Some(&record.id), Some(changed.join(" ")));
    }
    Ok(Outcome::Changed)
}

/// Creates or changes an owner's shared limits.
pub fn set_owner(
    d: &mut Draft<'_>,
    params: OwnerUpdate,
    actor: Actor,
) -> Result<Outcome, WriteError> {
    let now = d.now();
    let current = d.current_owner(&params.id);
    let left = d.left_of_owner(&params.id, now);
    let (ratelimit, credits) = apply_limits(
        (
            current.as_ref().and_then(|o| o.ratelimit),
            current.as_ref().and_then(|o| o.credits),
            left,
        ),
        params.ratelimit,
        params.remaining,
        params.refill,
        now,
    )
    .map_err(|e| WriteError::Refused(format!("owner: {e}")))?;
    let record = OwnerRecord {
        id: params.id,
        ratelimit,
        credits,
    };
    if current.as_ref() != Some(&record) {
        let detail = limits_detail(&KeyDetails {
            ratelimit,
            credits,
            ..KeyDetails::default()
        });
        d.set.owners.push(record);
        // The owner id is sealed like a name: the entry says only what its limits became.
        d.audit(actor, "owner-set", None, Some(detail.join(" ")));
    }
    Ok(Outcome::Changed)
}

/// A rate limit and credits after the changes asked for, from `(rate limit, credits,
/// credits left now)`. Setting `remaining` starts a new balance now. A new refill alone
/// starts a new balance now too, holding what is left of the old one: its periods counted
/// from the old start under another interval would put the next refill anywhere.
fn apply_limits(
    (ratelimit, credits, left): (Option<RateLimit>, Option<Credits>, Option<u64>),
    new_ratelimit: Change<RateLimit>,
    remaining: Change<u64>,
    refill: Change<Refill>,
    now: i64,
) -> Result<(Option<RateLimit>, Option<Credits>), String> {
    let ratelimit = new_ratelimit.unwrap_or(ratelimit);
    let mut credits = match remaining {
        None => credits,
        Some(None) => None,
        Some(Some(remaining)) => Some(Credits {
            remaining,
            set_at: now,
            refill: credits.and_then(|c| c.refill),
        }),
    };
    if let Some(refill) = refill {
        match credits.as_mut() {
            Some(credits) if credits.refill != refill => {
                if remaining.is_none() {
                    credits.remaining = left.unwrap_or(credits.remaining);
                    credits.set_at = now;
                }
                credits.refill = refill;
            }
            Some(_) => {}
            None if refill.is_some() => {
                return Err("a refill needs a balance: give --remaining N too".into())
            }
            None => {}
        }
    }
    Ok((ratelimit, credits))
}

/// The limits, as audit details say them.
pub(super) fn limits_detail(details: &KeyDetails) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(r) = details.ratelimit {
        out.push(format!(
            "ratelimit={}/{}",
            r.limit,
            time::format_millis(r.window_ms)
        ));
    }
    if let Some(c) = details.credits {
        out.push(format!("remaining={}", c.remaining));
        if let Some(refill) = c.refill {
            out.push(format!(
                "refill={}/{}",
                refill.amount,
                time::format_millis(refill.interval_ms)
            ));
        }
    }
    out
}
