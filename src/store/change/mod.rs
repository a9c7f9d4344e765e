//! Admin changes as computations: each reads the keys as the batch left them and returns
//! what to write (a [`ChangeSet`]) and what to answer, without touching the store.
//!
//! One host persists a change set in the batch's transaction (`crate::store::writer`); a
//! fleet publishes it, and every node persists it as it applies the fleet's stream. Either
//! way the same [`persist`] writes it and the same [`Changes`] carries it to the index.

mod lifecycle;

use lifecycle::limits_detail;
pub use lifecycle::{set_owner, update};

use crate::index::{Hit, Index};
use crate::key::{Credits, Grace, KeyDetails, KeyRecord, OwnerRecord, Permissions};
use crate::policy::sink::StagedSink;
use crate::policy::Sink;
use crate::random::Pool;
use crate::store::audit::AuditRecord;
use crate::store::outcome::{Outcome, WriteError};
use crate::store::{Lane, Store};
use crate::time;
use crate::token::{generate_key_id, generate_token, hash_token, start_of, TokenHash};
use authenta_client::proto::{Actor, CreateKey};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// What one admin change writes: key records, token hashes that must never verify again
/// (with their key when known), and audit entries, each in the order made.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeSet {
    /// When the change was made (unix milliseconds).
    pub at: i64,
    pub keys: Vec<KeyRecord>,
    pub retired: Vec<(TokenHash, Option<String>)>,
    pub audit: Vec<AuditRecord>,
    /// Fleet mode: the node that made the change.
    pub node: Option<String>,
    /// A scheduled rotation's new token. Never written to a store; in fleet mode it travels
    /// (sealed) so that every node whose policy names the key writes it to its own sink.
    pub rotated: Option<RotatedToken>,
    /// Owners whose limits were set.
    pub owners: Vec<OwnerRecord>,
}

/// A rotated token and when its overlap ends (when the fleet erases the message).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotatedToken {
    pub token: zeroize::Zeroizing<String>,
    pub overlap_until: i64,
}

impl std::fmt::Debug for RotatedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RotatedToken {{ token: <secret>, overlap_until: {} }}",
            self.overlap_until
        )
    }
}

impl ChangeSet {
    /// Nothing to write: the change found nothing to do (say, revoking a revoked key).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
            && self.retired.is_empty()
            && self.audit.is_empty()
            && self.owners.is_empty()
    }

    /// The change set cut into one per key it touches (and one for what no key holds), in
    /// the order the keys were first touched: a fleet carries each key's changes on that
    /// key's own subject.
    pub fn split_by_key(self) -> Vec<(Option<String>, ChangeSet)> {
        let mut parts: Vec<(Option<String>, ChangeSet)> = Vec::new();
        let at = self.at;
        let mut part = |key: Option<String>| -> usize {
            parts
                .iter()
                .position(|(k, _)| *k == key)
                .unwrap_or_else(|| {
                    let set = ChangeSet {
                        at,
                        ..ChangeSet::default()
                    };
                    parts.push((key, set));
                    parts.len() - 1
                })
        };
        let keys: Vec<_> = self
            .keys
            .into_iter()
            .map(|r| (part(Some(r.id.clone())), r))
            .collect();
        let retired: Vec<_> = self
            .retired
            .into_iter()
            .map(|r| (part(r.1.clone()), r))
            .collect();
        let audit: Vec<_> = self
            .audit
            .into_iter()
            .map(|a| (part(a.key_id.clone()), a))
            .collect();
        let owners_part = (!self.owners.is_empty()).then(|| part(None));
        for (n, record) in keys {
            parts[n].1.keys.push(record);
        }
        for (n, retired) in retired {
            parts[n].1.retired.push(retired);
        }
        for (n, entry) in audit {
            parts[n].1.audit.push(entry);
        }
        // A rotation changes one key: its token goes with that key's part.
        if let Some(first) = parts.first_mut() {
            first.1.rotated = self.rotated;
        }
        if let Some(n) = owners_part {
            parts[n].1.owners = self.owners;
        }
        parts
    }
}

/// Writes a change set in the open transaction. A key the store does not have yet also
/// gets its usage row (its slot learns where the row is at the first flush). Each audit
/// entry binds the row its key got, so that a row written back later is caught.
pub fn persist(
    store: &mut Store,
    index: &Index,
    batch: &Changes,
    set: &ChangeSet,
) -> Result<(), WriteError> {
    let mut rows: HashMap<&str, [u8; 32]> = HashMap::new();
    for record in &set.keys {
        let known =
            batch.latest.contains_key(&record.id) || index.read().by_id(&record.id).is_some();
        rows.insert(&record.id, store.put_key(record).map_err(storage)?);
        if !known {
            store.put_new_usage(&record.id).map_err(storage)?;
        }
    }
    for (hash, key_id) in &set.retired {
        store
            .put_retired(hash, key_id.as_deref(), set.at)
            .map_err(storage)?;
    }
    for owner in &set.owners {
        store.put_owner(owner).map_err(storage)?;
    }
    for entry in &set.audit {
        let row = entry.key_id.as_deref().and_then(|id| rows.get(id)).copied();
        store.append_bound_audit(entry, row).map_err(storage)?;
    }
    Ok(())
}

pub fn storage(e: anyhow::Error) -> WriteError {
    WriteError::Storage(e.to_string())
}

/// A change to make to the index once the batch is committed.
pub enum IndexChange {
    Upsert(Box<KeyRecord>),
    Retire(TokenHash, Option<String>),
    Owner(OwnerRecord),
}

/// What the batch changed so far: in order for the index, and by key for later jobs.
#[derive(Default)]
pub struct Changes {
    pub in_order: Vec<IndexChange>,
    latest: HashMap<String, KeyRecord>,
    latest_owners: HashMap<String, OwnerRecord>,
    /// Fleet mode: the stream sequences applied, each with its lane and where the lane
    /// stands after it.
    pub applied: Vec<(u64, Option<(String, Lane)>)>,
    /// Fleet mode: set when the batch applied the fleet's first change sealed with what it
    /// was made against (see `FleetPosition::bound_since`).
    pub bound_since: Option<u64>,
    /// Fleet mode: sequences refused as copies.
    pub refused: Vec<u64>,
    /// Fleet mode: rotations applied (the key, its new token, the node that made it), for
    /// this node's sinks.
    pub rotations: Vec<(KeyRecord, RotatedToken, Option<String>)>,
    /// The time of the newest audit entry written (unix ms; 0: none).
    pub newest_audit_at: i64,
}

impl Changes {
    /// Adds a persisted change set.
    pub fn merge(&mut self, set: ChangeSet) {
        let start = self.in_order.len();
        if let Some(newest) = set.audit.iter().map(|entry| entry.at).max() {
            self.newest_audit_at = self.newest_audit_at.max(newest);
        }
        for record in set.keys {
            self.latest.insert(record.id.clone(), record.clone());
            self.in_order.push(IndexChange::Upsert(Box::new(record)));
        }
        for (hash, key_id) in set.retired {
            self.in_order.push(IndexChange::Retire(hash, key_id));
        }
        // Owners first: keys changed in the same set may name them.
        for owner in set.owners {
            self.latest_owners.insert(owner.id.clone(), owner.clone());
            self.in_order.insert(start, IndexChange::Owner(owner));
        }
    }

    fn retires(&self, hash: &TokenHash) -> bool {
        self.in_order
            .iter()
            .any(|c| matches!(c, IndexChange::Retire(h, _) if h == hash))
    }
}

/// A change being computed: the keys as the batch (and this change so far) left them, and
/// the change set it is building.
pub struct Draft<'a> {
    index: &'a Index,
    batch: &'a Changes,
    rng: &'a Pool,
    set: ChangeSet,
}

impl<'a> Draft<'a> {
    pub fn new(index: &'a Index, batch: &'a Changes, rng: &'a Pool, now: i64) -> Self {
        Draft {
            index,
            batch,
            rng,
            set: ChangeSet {
                at: now,
                ..ChangeSet::default()
            },
        }
    }

    pub fn finish(self) -> ChangeSet {
        self.set
    }

    fn now(&self) -> i64 {
        self.set.at
    }

    /// The key as this change, else the batch, else the index left it.
    fn current(&self, id: &str) -> Result<KeyRecord, WriteError> {
        if let Some(record) = self.set.keys.iter().rev().find(|r| r.id == id) {
            return Ok(record.clone());
        }
        if let Some(record) = self.batch.latest.get(id) {
            return Ok(record.clone());
        }
        self.index
            .read()
            .by_id(id)
            .map(|entry| entry.to_record())
            .ok_or_else(|| WriteError::NotFound(id.to_owned()))
    }

    /// The latest version of every key changed by the batch or this change.
    fn changed_keys(&self) -> HashMap<&str, &KeyRecord> {
        let mut keys: HashMap<&str, &KeyRecord> = self
            .batch
            .latest
            .iter()
            .map(|(id, r)| (id.as_str(), r))
            .collect();
        for record in &self.set.keys {
            keys.insert(&record.id, record);
        }
        keys
    }

    /// The owner's record as this change, else the batch, else the index left it (none:
    /// no `owners set` made it yet).
    fn current_owner(&self, id: &str) -> Option<OwnerRecord> {
        if let Some(owner) = self.set.owners.iter().rev().find(|o| o.id == id) {
            return Some(owner.clone());
        }
        if let Some(owner) = self.batch.latest_owners.get(id) {
            return Some(owner.clone());
        }
        let maps = self.index.read();
        let owner = maps.owner_by_id(id).filter(|o| o.recorded)?;
        Some(owner.to_record())
    }

    /// Credits left now in the key's live balance, if it has one.
    fn left_of_key(&self, id: &str, now: i64) -> Option<u64> {
        let maps = self.index.read();
        let found = maps.by_id(id)?;
        found.extra()?.credits.as_ref().map(|b| b.left(now))
    }

    /// Credits left now in the owner's live balance, if it has one.
    fn left_of_owner(&self, id: &str, now: i64) -> Option<u64> {
        let maps = self.index.read();
        maps.owner_by_id(id)?.credits.as_ref().map(|b| b.left(now))
    }

    fn put_key(&mut self, record: &KeyRecord) {
        self.set.keys.push(record.clone());
    }

    fn retire(&mut self, hash: TokenHash, key_id: Option<String>) {
        self.set.retired.push((hash, key_id));
    }

    fn audit(&mut self, actor: Actor, action: &str, key_id: Option<&str>, detail: Option<String>) {
        self.set.audit.push(AuditRecord {
            at: self.now(),
            actor,
            action: action.to_owned(),
            key_id: key_id.map(str::to_owned),
            detail,
        });
    }

    fn token(&self) -> Result<zeroize::Zeroizing<String>, WriteError> {
        generate_token(self.rng).map_err(rng_failed)
    }
}

fn rng_failed(_: ring::error::Unspecified) -> WriteError {
    WriteError::Storage("the system random number generator failed".into())
}

/// A fresh key id that no key has. Ids made in the same millisecond differ only by their 8
/// random characters; writing a key under an id in use would replace that key.
fn unused_key_id(d: &Draft<'_>, now: i64) -> Result<String, WriteError> {
    for _ in 0..8 {
        let id = generate_key_id(d.rng, now).map_err(rng_failed)?;
        if matches!(d.current(&id), Err(WriteError::NotFound(_))) {
            return Ok(id);
        }
    }
    Err(WriteError::Storage(
        "no unused key id in 8 draws: the system random number generator is broken".into(),
    ))
}

pub fn create(d: &mut Draft<'_>, params: CreateKey, actor: Actor) -> Result<Outcome, WriteError> {
    let token = d.token()?;
    let now = d.now();
    let id = unused_key_id(d, now)?;
    let record = KeyRecord {
        id: id.clone(),
        token_hash: hash_token(&token),
        name: params.name,
        start: start_of(&token),
        permissions: Permissions::from_list(&params.permissions),
        environment: params.environment,
        created_at: now,
        rotated_at: None,
        expires_at: params.expires_in_secs.map(|s| time::add_secs(now, s)),
        revoked_at: None,
        revoke_reason: None,
        grace: None,
        details: KeyDetails {
            owner_id: params.owner_id,
            meta: params.meta,
            ratelimit: params.ratelimit,
            credits: params.remaining.map(|remaining| Credits {
                remaining,
                set_at: now,
                refill: params.refill,
            }),
        },
    };
    let permissions: Vec<_> = record
        .permissions
        .to_list()
        .iter()
        .map(|p| p.as_str())
        .collect();
    let environment = record
        .environment
        .as_ref()
        .map(|e| format!(" environment={e}"));
    let mut detail = format!(
        "permissions={}{}",
        permissions.join(","),
        environment.unwrap_or_default()
    );
    for limit in limits_detail(&record.details) {
        detail.push(' ');
        detail.push_str(&limit);
    }
    d.put_key(&record);
    d.audit(actor, "create", Some(&id), Some(detail));
    Ok(Outcome::Issued { key_id: id, token })
}

pub fn regenerate(
    d: &mut Draft<'_>,
    id: String,
    grace_secs: u64,
    expires_in_secs: Option<u64>,
    actor: Actor,
) -> Result<Outcome, WriteError> {
    let mut record = d.current(&id)?;
    if record.revoked_at.is_some() {
        return Err(WriteError::Refused(format!(
            "key {id} is revoked and stays so: create a new key instead"
        )));
    }
    if let Some(secs) = expires_in_secs {
        record.expires_at = Some(time::add_secs(d.now(), secs));
    }
    if let Some(expired_at) = record.expires_at.filter(|&at| at <= d.now()) {
        // Its new token would verify as expired from the start.
        return Err(WriteError::Refused(format!(
            "key {id} expired at {}: a new token for it would verify as expired from the start; \
             give it a new lifetime (keys regenerate {id} --expires-in DURATION)",
            crate::time::format_rfc3339(expired_at)
        )));
    }
    let token = d.token()?;
    let mut detail =
        (grace_secs > 0).then(|| format!("grace={}", crate::time::format_secs(grace_secs)));
    if let Some(secs) = expires_in_secs {
        let expiry = format!("expires-in={}", crate::time::format_secs(secs));
        detail = Some(match detail {
            Some(grace) => format!("{grace} {expiry}"),
            None => expiry,
        });
    }
    give_new_token(d, &mut record, &token, grace_secs, actor, detail);
    Ok(Outcome::Issued {
        key_id: record.id,
        token,
    })
}

pub fn revoke_by_admin(
    d: &mut Draft<'_>,
    id: String,
    reason: Option<String>,
    actor: Actor,
) -> Result<Outcome, WriteError> {
    let record = d.current(&id)?;
    if record.revoked_at.is_none() {
        revoke(d, record, actor, reason.as_deref().unwrap_or(""));
    }
    Ok(Outcome::Changed)
}

/// Revocations pushed by the policy file: keys by id, tokens by SHA-256.
pub fn apply_revocations(
    d: &mut Draft<'_>,
    ids: Vec<String>,
    hashes: Vec<TokenHash>,
) -> Result<Outcome, WriteError> {
    let mut applied = 0;
    for id in ids {
        let Ok(record) = d.current(&id) else {
            tracing::warn!(key_id = %id, "policy revokes a key id this store does not have");
            continue;
        };
        if record.revoked_at.is_none() {
            revoke(d, record, Actor::Policy, "policy: revoked by id");
            applied += 1;
        }
    }
    for hash in hashes {
        applied += usize::from(revoke_hash(d, hash));
    }
    Ok(Outcome::Revoked(applied))
}

/// A scheduled rotation: a regenerate by the policy, its new token staged at the sink.
pub fn rotate(
    d: &mut Draft<'_>,
    id: String,
    expected_base: i64,
    overlap_secs: u64,
    sink: Sink,
) -> Result<Outcome, WriteError> {
    let mut record = d.current(&id)?;
    if record.revoked_at.is_some()
        || record.rotated_at.unwrap_or(record.created_at) != expected_base
    {
        // Revoked or regenerated since it was scheduled: nothing to do now.
        return Ok(rotated(id, None));
    }
    let token = d.token()?;
    let staged = crate::policy::sink::stage(&sink, &token).map_err(|e| {
        WriteError::Refused(format!("cannot write sink {}: {e}", sink.path.display()))
    })?;
    let detail = Some(format!(
        "scheduled rotation, overlap={}",
        crate::time::format_secs(overlap_secs)
    ));
    give_new_token(d, &mut record, &token, overlap_secs, Actor::Policy, detail);
    d.set.rotated = Some(RotatedToken {
        token: token.clone(),
        overlap_until: time::add_secs(d.now(), overlap_secs),
    });
    Ok(rotated(id, Some(staged)))
}

fn rotated(key_id: String, staged: Option<StagedSink>) -> Outcome {
    Outcome::Rotated {
        key_id,
        staged,
        publish_error: None,
    }
}

/// Gives a key a new token and retires the tokens it replaces, audited as `regenerate`.
/// The replaced token stays valid for `grace_secs` (as the record's grace) or is retired at
/// once; a token still in an earlier grace is retired.
fn give_new_token(
    d: &mut Draft<'_>,
    record: &mut KeyRecord,
    token: &str,
    grace_secs: u64,
    actor: Actor,
    detail: Option<String>,
) {
    let now = d.now();
    let mut retiring: Vec<TokenHash> = record
        .grace
        .take()
        .map(|g| g.token_hash)
        .into_iter()
        .collect();
    if grace_secs > 0 {
        record.grace = Some(Grace {
            token_hash: record.token_hash,
            until: time::add_secs(now, grace_secs),
        });
    } else {
        retiring.push(record.token_hash);
    }
    record.token_hash = hash_token(token);
    record.start = start_of(token);
    record.rotated_at = Some(now);
    d.put_key(record);
    for hash in retiring {
        d.retire(hash, Some(record.id.clone()));
    }
    d.audit(actor, "regenerate", Some(&record.id), detail);
}

/// Revokes a key for good: its token answers `revoked`, and so does a token in its grace.
fn revoke(d: &mut Draft<'_>, mut record: KeyRecord, actor: Actor, reason: &str) {
    let reason = (!reason.is_empty()).then(|| reason.to_owned());
    record.revoked_at = Some(d.now());
    record.revoke_reason = reason.clone();
    let grace = record.grace.take();
    d.put_key(&record);
    if let Some(grace) = grace {
        d.retire(grace.token_hash, Some(record.id.clone()));
    }
    d.audit(actor, "revoke", Some(&record.id), reason);
}

/// Revokes whatever a leaked token's hash belongs to: its key (current token), just that
/// token (one in a grace), or — when it matches nothing — remembers the hash so that such a
/// token can never verify. Returns whether anything changed.
fn revoke_hash(d: &mut Draft<'_>, hash: TokenHash) -> bool {
    let reason = "policy: leaked token";
    match hash_owner(d, &hash) {
        Some(record) if record.token_hash == hash => {
            if record.revoked_at.is_some() {
                return false;
            }
            revoke(d, record, Actor::Policy, reason);
        }
        Some(mut record) => {
            // The hash is the token in the key's grace: end that token only.
            record.grace = None;
            d.put_key(&record);
            d.retire(hash, Some(record.id.clone()));
            d.audit(
                Actor::Policy,
                "retire-token",
                Some(&record.id),
                Some(reason.into()),
            );
        }
        None if already_retired(d, &hash) => return false,
        None => {
            d.retire(hash, None);
            let detail = format!("sha256 {}...", &hex::encode(hash)[..12]);
            d.audit(Actor::Policy, "retire-token", None, Some(detail));
        }
    }
    true
}

fn already_retired(d: &Draft<'_>, hash: &TokenHash) -> bool {
    d.set.retired.iter().any(|(h, _)| h == hash)
        || d.batch.retires(hash)
        || matches!(d.index.read().by_hash(hash), Some(Hit::Retired(_)))
}

/// The key whose current or grace token has this hash, as this change and the batch left it.
fn hash_owner(d: &Draft<'_>, hash: &TokenHash) -> Option<KeyRecord> {
    let holds = |r: &KeyRecord| {
        r.token_hash == *hash || r.grace.as_ref().is_some_and(|g| g.token_hash == *hash)
    };
    let changed = d.changed_keys();
    if let Some(record) = changed.values().find(|r| holds(r)) {
        return Some((*record).clone());
    }
    match d.index.read().by_hash(hash) {
        // A key changed earlier no longer holds the hash (else it would have matched
        // above): the index's version of it is out of date.
        Some(Hit::Current(entry)) | Some(Hit::Previous(entry))
            if !changed.contains_key(entry.id()) =>
        {
            Some(entry.to_record())
        }
        _ => None,
    }
}
