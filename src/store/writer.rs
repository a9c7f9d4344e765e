//! The store thread: the one owner of the SQLite connection and the one writer of the index.
//!
//! Jobs arrive on a channel. The thread takes every job waiting (up to a batch limit), runs
//! them in one transaction, each under its own savepoint so that one job's failure undoes
//! only that job (group commit), commits durably, then applies the changes to the index, and
//! only then answers. So once an admin call returns, every verify sees its effect.

use crate::index::{Hit, Index, UsageWrite};
use crate::key::UsageRow;
use crate::key::{Grace, KeyRecord, Permissions, UsageRecord};
use crate::policy::sink::StagedSink;
use crate::policy::Sink;
use crate::store::audit::AuditRecord;
use crate::store::barrier::KeyBytes;
use crate::store::Store;
use crate::time;
use crate::token::{generate_key_id, generate_token, hash_token, start_of, TokenHash};
use authenta_client::proto::{Actor, AuditReport, CreateKey};
use ring::rand::SystemRandom;
use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::Arc;
use tokio::sync::oneshot;
use zeroize::Zeroizing;

/// Most jobs committed in one transaction.
const MAX_BATCH: usize = 512;

/// A change (or read) for the store thread.
#[derive(Debug)]
pub enum Command {
    Create {
        params: CreateKey,
        actor: Actor,
    },
    Regenerate {
        id: String,
        grace_secs: u64,
        actor: Actor,
    },
    Revoke {
        id: String,
        reason: Option<String>,
        actor: Actor,
    },
    FlushUsage(Vec<UsageWrite>),
    ReadAudit {
        verify: bool,
        after: u64,
    },
    /// Revocations pushed by the policy file: keys by id, tokens by SHA-256. Already
    /// revoked keys and already retired hashes are left alone.
    ApplyRevocations {
        ids: Vec<String>,
        hashes: Vec<TokenHash>,
    },
    /// A scheduled rotation: regenerate (unless the key changed since it was scheduled),
    /// stage the new token at the sink, and publish it once committed.
    Rotate {
        id: String,
        /// The key's last (re)generation when the rotation was scheduled.
        expected_base: i64,
        overlap_secs: u64,
        sink: Sink,
    },
    /// Moves the WAL into the database file (at shutdown), so the file stands alone.
    Checkpoint,
    /// Re-wrap the data key under a new master key.
    Rekey {
        new_master_key: KeyBytes,
        actor: Actor,
    },
}

/// What a job produced.
pub enum Outcome {
    /// A key with a fresh token, shown this once.
    Issued {
        key_id: String,
        token: Zeroizing<String>,
    },
    /// A key was changed; the index has the new version.
    Changed,
    /// How many revocations a policy push applied.
    Revoked(usize),
    /// A scheduled rotation, committed; `staged` is published right after the commit.
    Rotated {
        key_id: String,
        staged: Option<StagedSink>,
        /// Why the sink could not be published, if it could not.
        publish_error: Option<String>,
    },
    Flushed,
    Audit(AuditReport),
}

/// Why a job did not happen. Nothing of a failed job is committed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    #[error("no key with id {0}")]
    NotFound(String),
    #[error("{0}")]
    Refused(String),
    #[error("the store could not commit the change: {0}")]
    Storage(String),
    #[error("the store is shutting down")]
    Stopped,
}

struct Job {
    command: Command,
    reply: Reply,
}

/// Sends jobs to the store thread. Cloneable; the thread stops when every handle is gone.
#[derive(Clone)]
pub struct WriterHandle {
    tx: mpsc::Sender<Job>,
}

impl WriterHandle {
    /// Runs a job and waits for its commit.
    pub async fn submit(&self, command: Command) -> Result<Outcome, WriteError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Job { command, reply })
            .map_err(|_| WriteError::Stopped)?;
        answer.await.map_err(|_| WriteError::Stopped)?
    }
}

/// Starts the store thread.
pub fn spawn(
    store: Store,
    index: Arc<Index>,
) -> std::io::Result<(WriterHandle, std::thread::JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("authenta-store".into())
        .spawn(move || run(store, index, rx))?;
    Ok((WriterHandle { tx }, thread))
}

fn run(mut store: Store, index: Arc<Index>, rx: mpsc::Receiver<Job>) {
    let rng = SystemRandom::new();
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        run_batch(&mut store, &index, &rng, batch);
    }
    tracing::debug!("store thread stopped");
}

type Reply = oneshot::Sender<Result<Outcome, WriteError>>;

/// Runs a batch of jobs: reads at once, then every change in one transaction (group
/// commit), then the index, then the answers. A change is answered only once it is both
/// committed and visible to verify.
fn run_batch(store: &mut Store, index: &Index, rng: &SystemRandom, batch: Vec<Job>) {
    let writes = answer_reads(store, batch);
    if writes.is_empty() {
        return;
    }
    if let Err(e) = store.begin() {
        tracing::error!(error = %e, "cannot start a store transaction");
        for (_, reply) in writes {
            let _ = reply.send(Err(WriteError::Storage(e.to_string())));
        }
        return;
    }
    let mut changed = Changes::default();
    let mut txn = Txn {
        store,
        index,
        changed: &mut changed,
        rng,
        now: time::now_ms(),
    };
    let done = apply_each(&mut txn, writes);
    if let Err(e) = store.commit() {
        tracing::error!(error = %e, "store commit failed; the batch's changes are dropped");
        store.rollback();
        for (_, reply) in done {
            let _ = reply.send(Err(WriteError::Storage(e.to_string())));
        }
        return;
    }
    update_index(index, changed);
    for (outcome, reply) in done {
        let _ = reply.send(Ok(publish_sinks(outcome)));
    }
}

/// Answers the jobs that only read (they need no transaction); returns the changes.
fn answer_reads(store: &mut Store, batch: Vec<Job>) -> Vec<(Command, Reply)> {
    let mut writes = Vec::with_capacity(batch.len());
    for job in batch {
        let result = match job.command {
            Command::ReadAudit { verify, after } => {
                store.read_audit(verify, after).map(Outcome::Audit)
            }
            Command::Checkpoint => store.checkpoint().map(|()| Outcome::Changed),
            command => {
                writes.push((command, job.reply));
                continue;
            }
        };
        let _ = job.reply.send(result.map_err(storage));
    }
    writes
}

/// Makes each change in its own savepoint, so that one that fails leaves the others; a
/// failed one is answered at once, the rest are returned to be answered after the commit.
fn apply_each(t: &mut Txn<'_>, writes: Vec<(Command, Reply)>) -> Vec<(Outcome, Reply)> {
    let mut done = Vec::with_capacity(writes.len());
    for (command, reply) in writes {
        match apply_in_savepoint(t, command) {
            Ok(outcome) => done.push((outcome, reply)),
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }
    done
}

fn apply_in_savepoint(t: &mut Txn<'_>, command: Command) -> Result<Outcome, WriteError> {
    let head = t.store.savepoint().map_err(storage)?;
    match apply(t, command) {
        Ok(outcome) => t.store.release().map(|()| outcome).map_err(storage),
        Err(e) => {
            if let Err(undo) = t.store.rollback_to(head) {
                tracing::error!(error = %undo, "cannot undo a failed job");
            }
            Err(e)
        }
    }
}

/// Puts a committed batch's changes in the index, in order, under one write lock.
fn update_index(index: &Index, changed: Changes) {
    if changed.in_order.is_empty() {
        return;
    }
    let mut maps = index.write();
    for change in changed.in_order {
        match change {
            IndexChange::Upsert(record) => maps.upsert(*record),
            IndexChange::Retire(hash, key_id) => maps.retire(hash, key_id),
        }
    }
    drop(maps);
    index.changed.notify_one();
}

/// After the commit: puts a rotated token in its sink.
fn publish_sinks(outcome: Outcome) -> Outcome {
    match outcome {
        Outcome::Rotated {
            key_id,
            staged: Some(staged),
            ..
        } => {
            let publish_error = staged.publish().err().map(|e| e.to_string());
            if let Some(error) = &publish_error {
                tracing::error!(key_id = %key_id, error = %error, "rotated, but the sink could not be replaced");
            }
            Outcome::Rotated {
                key_id,
                staged: None,
                publish_error,
            }
        }
        other => other,
    }
}

/// A change to make to the index once the batch is committed.
enum IndexChange {
    Upsert(Box<KeyRecord>),
    Retire(TokenHash, Option<String>),
}

/// What the batch changed so far: in order for the index, and by key for later jobs.
#[derive(Default)]
struct Changes {
    in_order: Vec<IndexChange>,
    latest: HashMap<String, KeyRecord>,
}

impl Changes {
    fn upsert(&mut self, record: &KeyRecord) {
        self.latest.insert(record.id.clone(), record.clone());
        self.in_order
            .push(IndexChange::Upsert(Box::new(record.clone())));
    }

    fn retire(&mut self, hash: TokenHash, key_id: Option<String>) {
        self.in_order.push(IndexChange::Retire(hash, key_id));
    }
}

/// The key as this batch left it: an earlier job's uncommitted change, else the index's.
fn current(index: &Index, changed: &Changes, id: &str) -> Result<KeyRecord, WriteError> {
    if let Some(record) = changed.latest.get(id) {
        return Ok(record.clone());
    }
    index
        .read()
        .by_id(id)
        .map(|entry| entry.to_record())
        .ok_or_else(|| WriteError::NotFound(id.to_owned()))
}

fn storage(e: anyhow::Error) -> WriteError {
    WriteError::Storage(e.to_string())
}

/// What every change of one batch works with: the store inside the batch's transaction, the
/// index as last committed, what earlier jobs of the batch changed, and the batch's time.
struct Txn<'a> {
    store: &'a mut Store,
    index: &'a Index,
    changed: &'a mut Changes,
    rng: &'a SystemRandom,
    now: i64,
}

fn rng_failed(_: ring::error::Unspecified) -> WriteError {
    WriteError::Storage("the system random number generator failed".into())
}

/// Makes one change inside the batch's transaction.
fn apply(t: &mut Txn<'_>, command: Command) -> Result<Outcome, WriteError> {
    match command {
        Command::Create { params, actor } => create(t, params, actor),
        Command::Regenerate {
            id,
            grace_secs,
            actor,
        } => regenerate(t, id, grace_secs, actor),
        Command::Revoke { id, reason, actor } => revoke_by_admin(t, id, reason, actor),
        Command::FlushUsage(usage) => flush_usage(t, &usage),
        Command::ReadAudit { verify, after } => t
            .store
            .read_audit(verify, after)
            .map(Outcome::Audit)
            .map_err(storage),
        Command::Checkpoint => t
            .store
            .checkpoint()
            .map(|()| Outcome::Changed)
            .map_err(storage),
        Command::ApplyRevocations { ids, hashes } => apply_revocations(t, ids, hashes),
        Command::Rotate {
            id,
            expected_base,
            overlap_secs,
            sink,
        } => rotate(t, id, expected_base, overlap_secs, sink),
        Command::Rekey {
            new_master_key,
            actor,
        } => rekey(t, &new_master_key, actor),
    }
}

fn create(t: &mut Txn<'_>, params: CreateKey, actor: Actor) -> Result<Outcome, WriteError> {
    let token = generate_token(t.rng).map_err(rng_failed)?;
    let id = generate_key_id(t.rng).map_err(rng_failed)?;
    let record = KeyRecord {
        id: id.clone(),
        token_hash: hash_token(&token),
        name: params.name,
        start: start_of(&token),
        permissions: Permissions::from_list(&params.permissions),
        environment: params.environment,
        created_at: t.now,
        rotated_at: None,
        expires_at: params.expires_in_secs.map(|s| time::add_secs(t.now, s)),
        revoked_at: None,
        revoke_reason: None,
        grace: None,
    };
    t.store.put_key(&record).map_err(storage)?;
    // Its slot learns where the row is at the first flush.
    t.store
        .put_usage(&id, &UsageRecord::default(), UsageRow::UNKNOWN)
        .map_err(storage)?;
    let detail = format!(
        "permissions={}{}",
        record
            .permissions
            .to_list()
            .iter()
            .map(|p| p.as_str())
            .collect::<Vec<_>>()
            .join(","),
        record
            .environment
            .as_ref()
            .map(|e| format!(" environment={e}"))
            .unwrap_or_default()
    );
    audit(t.store, t.now, actor, "create", &id, Some(detail))?;
    t.changed.upsert(&record);
    Ok(Outcome::Issued {
        key_id: record.id,
        token,
    })
}

fn regenerate(
    t: &mut Txn<'_>,
    id: String,
    grace_secs: u64,
    actor: Actor,
) -> Result<Outcome, WriteError> {
    let mut record = current(t.index, t.changed, &id)?;
    if record.revoked_at.is_some() {
        return Err(WriteError::Refused(format!(
            "key {id} is revoked and stays so: create a new key instead"
        )));
    }
    let token = generate_token(t.rng).map_err(rng_failed)?;
    let detail = (grace_secs > 0).then(|| format!("grace={grace_secs}s"));
    let change = TokenChange {
        token: &token,
        grace_secs,
        actor,
        detail,
    };
    give_new_token(t.store, t.changed, &mut record, change, t.now)?;
    Ok(Outcome::Issued {
        key_id: record.id,
        token,
    })
}

fn revoke_by_admin(
    t: &mut Txn<'_>,
    id: String,
    reason: Option<String>,
    actor: Actor,
) -> Result<Outcome, WriteError> {
    let record = current(t.index, t.changed, &id)?;
    if record.revoked_at.is_none() {
        let reason = reason.as_deref().unwrap_or("");
        revoke(t.store, t.changed, record, t.now, actor, reason)?;
    }
    Ok(Outcome::Changed)
}

fn flush_usage(t: &mut Txn<'_>, usage: &[UsageWrite]) -> Result<Outcome, WriteError> {
    for write in usage {
        let row = t
            .store
            .put_usage(&write.id, &write.usage, write.row)
            .map_err(storage)?;
        // A hint only: kept even if this transaction rolls back, as `put_usage`
        // checks the id on the row it names.
        if row != write.row {
            t.index.remember_usage_row(write.slot, row);
        }
    }
    Ok(Outcome::Flushed)
}

fn apply_revocations(
    t: &mut Txn<'_>,
    ids: Vec<String>,
    hashes: Vec<TokenHash>,
) -> Result<Outcome, WriteError> {
    let mut applied = 0;
    for id in ids {
        let record = match current(t.index, t.changed, &id) {
            Ok(record) => record,
            Err(_) => {
                tracing::warn!(key_id = %id, "policy revokes a key id this store does not have");
                continue;
            }
        };
        if record.revoked_at.is_none() {
            let reason = "policy: revoked by id";
            revoke(t.store, t.changed, record, t.now, Actor::Policy, reason)?;
            applied += 1;
        }
    }
    for hash in hashes {
        applied += usize::from(revoke_hash(t.store, t.index, t.changed, hash, t.now)?);
    }
    Ok(Outcome::Revoked(applied))
}

fn rotate(
    t: &mut Txn<'_>,
    id: String,
    expected_base: i64,
    overlap_secs: u64,
    sink: Sink,
) -> Result<Outcome, WriteError> {
    let mut record = current(t.index, t.changed, &id)?;
    if record.revoked_at.is_some()
        || record.rotated_at.unwrap_or(record.created_at) != expected_base
    {
        // Revoked or regenerated since it was scheduled: nothing to do now.
        return Ok(Outcome::Rotated {
            key_id: id,
            staged: None,
            publish_error: None,
        });
    }
    let token = generate_token(t.rng).map_err(rng_failed)?;
    let staged = crate::policy::sink::stage(&sink, &token).map_err(|e| {
        WriteError::Refused(format!("cannot write sink {}: {e}", sink.path.display()))
    })?;
    let change = TokenChange {
        token: &token,
        grace_secs: overlap_secs,
        actor: Actor::Policy,
        detail: Some(format!("scheduled rotation, overlap={overlap_secs}s")),
    };
    give_new_token(t.store, t.changed, &mut record, change, t.now)?;
    Ok(Outcome::Rotated {
        key_id: id,
        staged: Some(staged),
        publish_error: None,
    })
}

fn rekey(t: &mut Txn<'_>, new_master_key: &KeyBytes, actor: Actor) -> Result<Outcome, WriteError> {
    t.store.rewrap_data_key(new_master_key).map_err(storage)?;
    t.store
        .append_audit(&AuditRecord {
            at: t.now,
            actor,
            action: "rekey".into(),
            key_id: None,
            detail: None,
        })
        .map_err(storage)?;
    Ok(Outcome::Changed)
}

/// A regenerate, by an admin or by the scheduler.
struct TokenChange<'a> {
    token: &'a str,
    /// How long the replaced token keeps verifying (0: it is retired at once).
    grace_secs: u64,
    actor: Actor,
    detail: Option<String>,
}

/// Writes a key's new token (its hash) and retires the tokens it replaces, audited as
/// `regenerate`; the index follows after the commit.
fn give_new_token(
    store: &mut Store,
    changed: &mut Changes,
    record: &mut KeyRecord,
    change: TokenChange<'_>,
    now: i64,
) -> Result<(), WriteError> {
    let retiring = replace_token(record, change.token, change.grace_secs, now);
    store.put_key(record).map_err(storage)?;
    for hash in &retiring {
        store
            .put_retired(hash, Some(&record.id), now)
            .map_err(storage)?;
    }
    audit(
        store,
        now,
        change.actor,
        "regenerate",
        &record.id,
        change.detail,
    )?;
    changed.upsert(record);
    for hash in retiring {
        changed.retire(hash, Some(record.id.clone()));
    }
    Ok(())
}

/// Gives `record` the new `token`. The replaced token stays valid for `grace_secs` (as the
/// record's grace) or is retired at once; a token still in an earlier grace is retired.
/// Returns the hashes to retire.
fn replace_token(record: &mut KeyRecord, token: &str, grace_secs: u64, now: i64) -> Vec<TokenHash> {
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
    retiring
}

/// Revokes a key for good: its token answers `revoked`, and so does a token in its grace.
fn revoke(
    store: &mut Store,
    changed: &mut Changes,
    mut record: KeyRecord,
    now: i64,
    actor: Actor,
    reason: &str,
) -> Result<(), WriteError> {
    let reason = (!reason.is_empty()).then(|| reason.to_owned());
    record.revoked_at = Some(now);
    record.revoke_reason = reason.clone();
    let grace = record.grace.take();
    store.put_key(&record).map_err(storage)?;
    if let Some(grace) = &grace {
        store
            .put_retired(&grace.token_hash, Some(&record.id), now)
            .map_err(storage)?;
    }
    audit(store, now, actor, "revoke", &record.id, reason)?;
    changed.upsert(&record);
    if let Some(grace) = grace {
        changed.retire(grace.token_hash, Some(record.id));
    }
    Ok(())
}

/// Revokes whatever a leaked token's hash belongs to: its key (current token), just that
/// token (one in a grace), or — when it matches nothing — remembers the hash so that such a
/// token can never verify. Returns whether anything changed.
fn revoke_hash(
    store: &mut Store,
    index: &Index,
    changed: &mut Changes,
    hash: TokenHash,
    now: i64,
) -> Result<bool, WriteError> {
    let retired_in_batch = changed
        .in_order
        .iter()
        .any(|c| matches!(c, IndexChange::Retire(h, _) if *h == hash));
    let already_retired =
        retired_in_batch || matches!(index.read().by_hash(&hash), Some(Hit::Retired(_)));
    match hash_owner(index, changed, &hash) {
        Some(record) if record.token_hash == hash => {
            if record.revoked_at.is_some() {
                return Ok(false);
            }
            let reason = "policy: leaked token";
            revoke(store, changed, record, now, Actor::Policy, reason)?;
            Ok(true)
        }
        Some(record) => end_grace_token(store, changed, record, hash, now).map(|()| true),
        None if already_retired => Ok(false),
        None => {
            store.put_retired(&hash, None, now).map_err(storage)?;
            store
                .append_audit(&AuditRecord {
                    at: now,
                    actor: Actor::Policy,
                    action: "retire-token".into(),
                    key_id: None,
                    detail: Some(format!("sha256 {}...", &hex::encode(hash)[..12])),
                })
                .map_err(storage)?;
            changed.retire(hash, None);
            Ok(true)
        }
    }
}

/// The key whose current or grace token has this hash, as this batch left it.
fn hash_owner(index: &Index, changed: &Changes, hash: &TokenHash) -> Option<KeyRecord> {
    let held = |r: &&KeyRecord| {
        r.token_hash == *hash || r.grace.as_ref().is_some_and(|g| g.token_hash == *hash)
    };
    if let Some(record) = changed.latest.values().find(held) {
        return Some(record.clone());
    }
    match index.read().by_hash(hash) {
        // A key changed earlier in this batch no longer holds the hash (else `latest`
        // would have matched): the index's version of it is out of date.
        Some(Hit::Current(entry)) | Some(Hit::Previous(entry))
            if !changed.latest.contains_key(entry.id()) =>
        {
            Some(entry.to_record())
        }
        _ => None,
    }
}

/// Ends the token in a key's grace (its previous one), leaving the current token alone.
fn end_grace_token(
    store: &mut Store,
    changed: &mut Changes,
    mut record: KeyRecord,
    hash: TokenHash,
    now: i64,
) -> Result<(), WriteError> {
    record.grace = None;
    store.put_key(&record).map_err(storage)?;
    store
        .put_retired(&hash, Some(&record.id), now)
        .map_err(storage)?;
    let id = record.id.clone();
    let detail = Some("policy: leaked token".into());
    audit(store, now, Actor::Policy, "retire-token", &id, detail)?;
    changed.upsert(&record);
    changed.retire(hash, Some(id));
    Ok(())
}

fn audit(
    store: &mut Store,
    at: i64,
    actor: Actor,
    action: &str,
    key_id: &str,
    detail: Option<String>,
) -> Result<(), WriteError> {
    store
        .append_audit(&AuditRecord {
            at,
            actor,
            action: action.to_owned(),
            key_id: Some(key_id.to_owned()),
            detail,
        })
        .map_err(storage)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::hash_token;
    use authenta_client::proto::{CreateKey, Permission};

    fn job(command: Command) -> (Job, oneshot::Receiver<Result<Outcome, WriteError>>) {
        let (reply, answer) = oneshot::channel();
        (Job { command, reply }, answer)
    }

    fn issued(answer: oneshot::Receiver<Result<Outcome, WriteError>>) -> (String, String) {
        match answer.blocking_recv() {
            Ok(Ok(Outcome::Issued { key_id, token })) => (key_id, token.to_string()),
            _ => panic!("no token issued"),
        }
    }

    /// A policy revocation of a token that a regenerate earlier in the same batch already
    /// replaced ends that token only: the key and its new token stay.
    #[test]
    fn revoking_a_token_replaced_in_the_same_batch_leaves_the_key_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::open(dir.path(), &Zeroizing::new([7u8; 32])).expect("store");
        let index = Index::default();
        let rng = SystemRandom::new();
        let actor = Actor::Peer { uid: 0, pid: None };
        let (create, answer) = job(Command::Create {
            params: CreateKey {
                name: "k".into(),
                permissions: vec![Permission::Read],
                environment: None,
                expires_in_secs: None,
            },
            actor: actor.clone(),
        });
        run_batch(&mut store, &index, &rng, vec![create]);
        let (id, old_token) = issued(answer);

        let (regenerate, new_answer) = job(Command::Regenerate {
            id: id.clone(),
            grace_secs: 0,
            actor,
        });
        let (revocation, revoked) = job(Command::ApplyRevocations {
            ids: vec![],
            hashes: vec![hash_token(&old_token)],
        });
        run_batch(&mut store, &index, &rng, vec![regenerate, revocation]);
        let (_, new_token) = issued(new_answer);
        assert!(matches!(
            revoked.blocking_recv(),
            Ok(Ok(Outcome::Revoked(0)))
        ));

        let maps = index.read();
        let Some(Hit::Current(key)) = maps.by_hash(&hash_token(&new_token)) else {
            panic!("the new token is not the key's");
        };
        assert_eq!(key.revoked_at(), None);
        assert!(matches!(
            maps.by_hash(&hash_token(&old_token)),
            Some(Hit::Retired(_))
        ));
    }

    fn create(store: &mut Store, index: &Index, name: &str) -> String {
        let (job, answer) = job(Command::Create {
            params: CreateKey {
                name: name.into(),
                permissions: vec![Permission::Read],
                environment: None,
                expires_in_secs: None,
            },
            actor: Actor::Peer { uid: 0, pid: None },
        });
        run_batch(store, index, &SystemRandom::new(), vec![job]);
        issued(answer).0
    }

    fn flush(store: &mut Store, index: &Index, write: UsageWrite) {
        let (job, answer) = job(Command::FlushUsage(vec![write]));
        run_batch(store, index, &SystemRandom::new(), vec![job]);
        assert!(matches!(answer.blocking_recv(), Ok(Ok(Outcome::Flushed))));
    }

    fn counted(n: u64) -> UsageRecord {
        UsageRecord {
            verifications: n,
            allowed: n,
            denied: 0,
            last_used_at: Some(1),
        }
    }

    /// A flush learns where each usage row is and rewrites it there after; a hint that
    /// names another key's row never touches that row.
    #[test]
    fn usage_rows_are_rewritten_where_they_are_and_a_wrong_hint_harms_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::open(dir.path(), &Zeroizing::new([7u8; 32])).expect("store");
        let index = Index::default();
        let a = create(&mut store, &index, "a");
        let b = create(&mut store, &index, "b");
        // Slots in creation order: a is 0, b is 1.
        let row_of = |slot: u32| index.usage_of(&[slot])[0].row;
        assert_eq!(
            row_of(0),
            UsageRow::UNKNOWN,
            "created keys learn it at a flush"
        );

        let write = |slot: u32, id: &str, n: u64, row: UsageRow| UsageWrite {
            slot,
            id: id.into(),
            usage: counted(n),
            row,
        };
        flush(&mut store, &index, write(0, &a, 3, UsageRow::UNKNOWN));
        flush(&mut store, &index, write(1, &b, 4, UsageRow::UNKNOWN));
        let (row_a, row_b) = (row_of(0), row_of(1));
        assert_ne!(row_a, UsageRow::UNKNOWN);
        assert_ne!(row_a, row_b);

        flush(&mut store, &index, write(0, &a, 5, row_a));
        flush(&mut store, &index, write(0, &a, 6, row_b));
        assert_eq!(
            row_of(0),
            row_a,
            "the wrong hint was replaced by the row found"
        );

        let loaded = store.load().expect("load");
        let usage = |id: &str| {
            loaded
                .keys
                .iter()
                .find(|(record, _)| record.id == id)
                .map(|(_, usage)| usage.verifications)
        };
        assert_eq!(usage(&a), Some(6));
        assert_eq!(usage(&b), Some(4), "b's row kept its own usage");
        assert!(loaded.corrupt.is_empty());
        let mut rows = Vec::new();
        store
            .load_each(|record, _, row| rows.push((record.id, row)))
            .expect("load");
        assert!(
            rows.contains(&(a.clone(), row_a)),
            "start-up learns the rows"
        );
        assert!(rows.contains(&(b.clone(), row_b)));
    }
}
