//! The store thread: the one owner of the SQLite connection and the one writer of the index.
//!
//! Jobs arrive on a channel. The thread takes every job waiting (up to a batch limit), runs
//! them in one transaction (group commit), commits durably, then applies the changes to the
//! index, and only then answers. An admin change is computed before anything is written, so
//! one refused leaves the others; housekeeping and fleet changes each run under a savepoint
//! for the same reason. A storage error while an admin change is written, or one that
//! leaves a savepoint unusable, drops the whole batch.
//!
//! So once an admin call returns, every verify sees its effect. The thread checks that the
//! store's files are still the ones SQLite has open ([`crate::store::store_files`]): the
//! database file before each batch (no change is made while it is not), the WAL after each
//! commit (copied into the database file when it is not).

use crate::fleet::refused::RefusedChanges;
use crate::fleet::subjects::Subjects;
use crate::index::{Index, UsageWrite};
use crate::key::{KeyRecord, OwnerUsage};
use crate::policy::Sink;
use crate::random::Pool;
use crate::store::audit::AuditRecord;
use crate::store::barrier::KeyBytes;
use crate::store::change::{self, storage, ChangeSet, Changes, Draft, IndexChange, RotatedToken};
pub use crate::store::outcome::{Outcome, WriteError};
use crate::store::Store;
use crate::store::{FleetPosition, Lane};
use crate::time;
use crate::token::TokenHash;
use authenta_client::proto::{Actor, CreateKey, OwnerUpdate, UpdateKey};
use prometheus_client::metrics::histogram::Histogram;
use std::sync::mpsc;
use std::sync::Arc;
use tokio::sync::oneshot;

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
        expires_in_secs: Option<u64>,
        actor: Actor,
    },
    Update {
        params: UpdateKey,
        actor: Actor,
    },
    SetOwner {
        params: OwnerUpdate,
        actor: Actor,
    },
    Revoke {
        id: String,
        reason: Option<String>,
        actor: Actor,
    },
    FlushUsage(Vec<UsageWrite>),
    /// Where owners' shared limits stand, each written to its owner's row.
    FlushOwners(Vec<(String, OwnerUsage)>),
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
    /// After the stop's checkpoint: writes the index snapshot the next start reads
    /// ([`crate::store::index_snapshot`]); `refused` are the keys refused at this start.
    SaveIndexSnapshot {
        refused: Vec<String>,
    },
    /// Nothing: answered as soon as the store thread reaches it, to show it is alive.
    Ping,
    /// Re-wrap the data key under a new master key; in fleet mode also keep the fleet's data
    /// key as the fleet now wraps it (by the new master key).
    Rekey {
        new_master_key: KeyBytes,
        actor: Actor,
        fleet_data_key: Option<Vec<u8>>,
    },
    /// In fleet mode: a change read from the fleet's stream at sequence `seq` on `lane`
    /// (see [`Subjects::lane`]), made against the lane's change `after` (None: version 0.1
    /// did not say); `stands_in` for an erased message. An empty set only moves the
    /// position (a message refused as tampered).
    ApplyFleet {
        seq: u64,
        lane: Option<String>,
        after: Option<u64>,
        stands_in: bool,
        set: ChangeSet,
    },
    /// In fleet mode: the fleet's data key (wrapped by the master key), kept so that this
    /// node can put it back should the stream lose it.
    KeepFleetDataKey(Vec<u8>),
}

impl Command {
    /// A change to keys that a fleet replicates (rather than local housekeeping).
    fn is_admin_change(&self) -> bool {
        matches!(
            self,
            Command::Create { .. }
                | Command::Regenerate { .. }
                | Command::Update { .. }
                | Command::SetOwner { .. }
                | Command::Revoke { .. }
                | Command::ApplyRevocations { .. }
                | Command::Rotate { .. }
        )
    }
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

/// A job's answer, once the store thread has run it.
pub type Answer = oneshot::Receiver<Result<Outcome, WriteError>>;

impl WriterHandle {
    /// Runs a job and waits for its commit.
    pub async fn submit(&self, command: Command) -> Result<Outcome, WriteError> {
        WriterHandle::wait(self.send(command)?).await
    }

    /// Hands a job to the store thread without waiting: jobs sent one after the other are
    /// run in that order, in one batch when they are waiting together (on one host: a
    /// fleet node publishes each admin change it proposes on its own task).
    pub fn send(&self, command: Command) -> Result<Answer, WriteError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Job { command, reply })
            .map_err(|_| WriteError::Stopped)?;
        Ok(answer)
    }

    /// Waits for a job sent with [`WriterHandle::send`].
    pub async fn wait(answer: Answer) -> Result<Outcome, WriteError> {
        answer.await.map_err(|_| WriteError::Stopped)?
    }
}

/// In fleet mode, where the writer sends the changes it computes, and what it knows of the
/// fleet's stream.
pub struct FleetLink {
    /// This node's name, in the audit entries of the changes it makes.
    pub node: String,
    pub subjects: Subjects,
    /// Where the changes refused as copies are noted, before their sequences count as
    /// applied.
    pub refused_changes: Arc<RefusedChanges>,
    /// Proposed changes, for the fleet to publish; they come back through the stream.
    pub proposals: tokio::sync::mpsc::UnboundedSender<Proposal>,
    /// The replica's position as committed (owned by the store thread once it runs).
    pub position: FleetPosition,
    /// The last stream sequence applied, as committed.
    pub applied: tokio::sync::watch::Sender<u64>,
}

/// An admin change computed on this node, to be published to the fleet: one part per key
/// it touches (each expects that key's last sequence), answered once applied here.
pub struct Proposal {
    pub parts: Vec<Part>,
    pub outcome: Outcome,
    pub reply: Reply,
}

/// The part of a change that touches one key, or the owners, or hashes no key holds.
pub struct Part {
    pub subject: String,
    /// The lane's last message as this node read it (0: none yet): what the publish expects.
    pub expected: u64,
    /// The lane's last change this one was computed against, sealed with it.
    pub after: u64,
    pub set: ChangeSet,
}

/// Starts the store thread, for one host (`fleet` None) or a fleet node.
pub fn spawn(
    store: Store,
    index: Arc<Index>,
    fleet: Option<FleetLink>,
    commit_seconds: Histogram,
) -> std::io::Result<(WriterHandle, std::thread::JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel();
    let mut writer = Writer {
        store,
        index,
        rng: Pool::new(),
        fleet,
        commit_seconds,
    };
    let thread = std::thread::Builder::new()
        .name("authenta-store".into())
        .spawn(move || writer.run(rx))?;
    Ok((WriterHandle { tx }, thread))
}

/// The store thread's state.
struct Writer {
    store: Store,
    index: Arc<Index>,
    /// Tokens and key ids: two draws for every key created, so from a pool.
    rng: Pool,
    fleet: Option<FleetLink>,
    /// How long each batch takes to commit, for `/metrics`.
    commit_seconds: Histogram,
}

pub(crate) type Reply = oneshot::Sender<Result<Outcome, WriteError>>;

impl Writer {
    fn run(&mut self, rx: mpsc::Receiver<Job>) {
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            self.run_batch(batch);
        }
        tracing::debug!("store thread stopped");
    }

    /// Runs a batch of jobs: reads and proposals at once, then every change together.
    fn run_batch(&mut self, batch: Vec<Job>) {
        self.rng.discard();
        self.store.discard_unused_random();
        let writes = self.answer_at_once(batch);
        if writes.is_empty() {
            return;
        }
        if let Err(why) = self.store.database_in_place() {
            for (_, reply) in writes {
                let _ = reply.send(Err(WriteError::Storage(why.clone())));
            }
            return;
        }
        let started = std::time::Instant::now();
        let position = self.fleet.as_ref().map(|f| &f.position);
        let (from_fleet, done) =
            commit_batch(&mut self.store, &self.index, &self.rng, position, writes);
        self.commit_seconds.observe(started.elapsed().as_secs_f64());
        self.store.secure_wal();
        for (outcome, reply) in done {
            let _ = reply.send(Ok(publish_sinks(outcome)));
        }
        if let Some(fleet) = &mut self.fleet {
            let FromFleet {
                applied,
                rotations,
                bound_since,
                refused,
            } = from_fleet;
            fleet.position.bound_since = fleet.position.bound_since.or(bound_since);
            fleet.refused_changes.note(&refused);
            fleet.note_applied(applied);
            for (record, rotated, made_by) in rotations {
                if made_by.as_deref() != Some(fleet.node.as_str()) {
                    write_rotated_sink(&self.index, &record, &rotated);
                }
            }
        }
    }

    /// Answers the jobs that need no transaction here: reads, and in fleet mode the admin
    /// changes (computed and handed to the fleet). Returns the rest.
    fn answer_at_once(&mut self, batch: Vec<Job>) -> Vec<(Command, Reply)> {
        let mut writes = Vec::with_capacity(batch.len());
        for job in batch {
            let result = match job.command {
                Command::ReadAudit { verify, after } => {
                    self.store.read_audit(verify, after).map(Outcome::Audit)
                }
                Command::Checkpoint => self.store.checkpoint().map(|()| Outcome::Changed),
                Command::SaveIndexSnapshot { refused } => self
                    .store
                    .write_index_snapshot(&self.index, &refused)
                    .map(|_| Outcome::Changed),
                Command::Ping => {
                    // Health checks come even when no change does: a WAL out of place is
                    // copied into the database file before a crash can lose it.
                    self.store.secure_wal();
                    self.store
                        .database_in_place()
                        .map(|()| Outcome::Changed)
                        .map_err(|why| anyhow::anyhow!(why))
                }
                command if self.fleet.is_some() && command.is_admin_change() => {
                    self.propose(command, job.reply);
                    continue;
                }
                command => {
                    writes.push((command, job.reply));
                    continue;
                }
            };
            let _ = job.reply.send(result.map_err(storage));
        }
        writes
    }

    /// Computes an admin change against the keys as applied here and hands it to the fleet,
    /// which answers once it is published and applied.
    fn propose(&mut self, command: Command, reply: Reply) {
        let Some(fleet) = &self.fleet else { return };
        let nothing = Changes::default();
        let mut draft = Draft::new(&self.index, &nothing, &self.rng, time::now_ms());
        let outcome = match compute(&mut draft, command) {
            Ok(outcome) => outcome,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        let mut set = draft.finish();
        set.node = Some(fleet.node.clone());
        if set.is_empty() {
            let _ = reply.send(Ok(outcome));
            return;
        }
        // The fleet's audit chain is one for every node: each entry says where it was made.
        for entry in &mut set.audit {
            let detail = entry.detail.take();
            entry.detail = Some(match detail {
                Some(detail) => format!("node={} {detail}", fleet.node),
                None => format!("node={}", fleet.node),
            });
        }
        let parts = set
            .split_by_key()
            .into_iter()
            .map(|(key, set)| {
                let subject = fleet.subjects.of_change(key.as_deref(), &set);
                let lane = fleet.subjects.lane(&subject);
                let at = lane.as_ref().and_then(|l| fleet.position.lanes.get(l));
                let at = at.copied().unwrap_or_default();
                Part {
                    subject,
                    expected: at.last,
                    after: at.changed,
                    set,
                }
            })
            .collect();
        let proposal = Proposal {
            parts,
            outcome,
            reply,
        };
        if let Err(unsent) = fleet.proposals.send(proposal) {
            let _ = unsent.0.reply.send(Err(WriteError::Stopped));
        }
    }
}

impl FleetLink {
    /// After a commit: the new position, for the next proposals and for those waiting on it.
    fn note_applied(&mut self, applied: Vec<(u64, Option<(String, Lane)>)>) {
        let Some(last) = applied.iter().map(|(seq, _)| *seq).max() else {
            return;
        };
        for (name, lane) in applied.into_iter().filter_map(|(_, lane)| lane) {
            self.position.lanes.insert(name, lane);
        }
        self.position.applied = self.position.applied.max(last);
        self.applied.send_replace(self.position.applied);
    }
}

/// Fleet mode: a rotation another node made, whose new token goes to this node's sink when
/// this node's policy names the key.
fn write_rotated_sink(index: &Index, record: &KeyRecord, rotated: &RotatedToken) {
    let policy = index.policy();
    let Some(sink) = policy.rule_for(record).and_then(|rule| rule.sink.as_ref()) else {
        return;
    };
    let written = crate::policy::sink::stage(sink, &rotated.token).and_then(|s| s.publish());
    match written {
        Ok(()) => {
            tracing::info!(key_id = %record.id, sink = %sink.path.display(), "rotated on another node; new token written to this node's sink")
        }
        Err(e) => {
            tracing::error!(key_id = %record.id, sink = %sink.path.display(), error = %e, "rotated on another node, but this node's sink could not be written")
        }
    }
}

/// What a committed batch applied from the fleet's stream.
#[derive(Default)]
struct FromFleet {
    /// Sequences, each with its lane and where the lane stands after it.
    applied: Vec<(u64, Option<(String, Lane)>)>,
    /// Rotations: the key, its new token, the node that made it.
    rotations: Vec<(KeyRecord, RotatedToken, Option<String>)>,
    /// Set when the batch applied the fleet's first change in the current form.
    bound_since: Option<u64>,
    /// Sequences refused as copies.
    refused: Vec<u64>,
}

/// Runs changes in one transaction (group commit), then updates the index. Returns what it
/// applied from the fleet, and the changes made with their replies: a change is answered
/// only once it is both committed and visible to verify (one that failed is answered here).
fn commit_batch(
    store: &mut Store,
    index: &Index,
    rng: &Pool,
    fleet: Option<&FleetPosition>,
    writes: Vec<(Command, Reply)>,
) -> (FromFleet, Vec<(Outcome, Reply)>) {
    if let Err(e) = store.begin() {
        tracing::error!(error = %e, "cannot start a store transaction");
        for (_, reply) in writes {
            let _ = reply.send(Err(WriteError::Storage(e.to_string())));
        }
        return Default::default();
    }
    let mut changed = Changes::default();
    let mut txn = Txn {
        store,
        index,
        changed: &mut changed,
        rng,
        now: time::now_ms(),
        fleet,
    };
    let Some(done) = apply_each(&mut txn, writes) else {
        store.rollback();
        return Default::default();
    };
    if let Err(e) = store.commit() {
        tracing::error!(error = %e, "store commit failed; the batch's changes are dropped");
        store.rollback();
        for (_, reply) in done {
            let _ = reply.send(Err(WriteError::Storage(e.to_string())));
        }
        return Default::default();
    }
    let from_fleet = FromFleet {
        applied: std::mem::take(&mut changed.applied),
        rotations: std::mem::take(&mut changed.rotations),
        bound_since: changed.bound_since,
        refused: std::mem::take(&mut changed.refused),
    };
    update_index(index, changed);
    (from_fleet, done)
}

/// Makes each change, answering a failed one at once; the rest are returned to be answered
/// after the commit. None when a change failed part-way and took the batch with it (every
/// job then answered with its error, and the transaction to be rolled back).
fn apply_each(t: &mut Txn<'_>, writes: Vec<(Command, Reply)>) -> Option<Vec<(Outcome, Reply)>> {
    let mut done = Vec::with_capacity(writes.len());
    let mut writes = writes.into_iter();
    while let Some((command, reply)) = writes.next() {
        let result = if command.is_admin_change() {
            apply_admin_change(t, command)
        } else {
            apply_in_savepoint(t, command)
        };
        match result {
            Ok(outcome) => done.push((outcome, reply)),
            Err(Failed::Job(e)) => {
                let _ = reply.send(Err(e));
            }
            Err(Failed::Batch(e)) => {
                tracing::error!(error = %e, "a change failed part-way; the batch's changes are dropped");
                let others = done.into_iter().map(|(_, r)| r);
                for reply in std::iter::once(reply)
                    .chain(others)
                    .chain(writes.map(|(_, r)| r))
                {
                    let _ = reply.send(Err(e.clone()));
                }
                return None;
            }
        }
    }
    Some(done)
}

/// How a change failed: alone, or with the batch it was in.
enum Failed {
    Job(WriteError),
    Batch(WriteError),
}

/// An admin change without a savepoint of its own: it is computed without writing, so a
/// refusal leaves nothing to undo, and only a storage error while writing it (which fails
/// the batch) can leave it half made. Saves the savepoint's copy of every page it touches,
/// a tenth of a create's time on the store thread.
fn apply_admin_change(t: &mut Txn<'_>, command: Command) -> Result<Outcome, Failed> {
    let mut draft = Draft::new(t.index, t.changed, t.rng, t.now);
    let outcome = compute(&mut draft, command).map_err(Failed::Job)?;
    let set = draft.finish();
    change::persist(t.store, t.index, t.changed, &set).map_err(Failed::Batch)?;
    t.changed.merge(set);
    Ok(outcome)
}

/// A housekeeping or fleet change, in a savepoint so that its failure undoes only it. When
/// the savepoint itself fails (SQLite may have abandoned the transaction), so does the batch.
fn apply_in_savepoint(t: &mut Txn<'_>, command: Command) -> Result<Outcome, Failed> {
    let batch_failed = |e| Failed::Batch(storage(e));
    let head = t.store.savepoint().map_err(batch_failed)?;
    match apply(t, command) {
        Ok(outcome) => t.store.release().map(|()| outcome).map_err(batch_failed),
        Err(e) => match t.store.rollback_to(head) {
            Ok(()) => Err(Failed::Job(e)),
            Err(undo) => {
                tracing::error!(error = %undo, "cannot undo a failed job");
                Err(Failed::Batch(e))
            }
        },
    }
}

/// Puts a committed batch's changes in the index, in order, under one write lock.
fn update_index(index: &Index, changed: Changes) {
    index.newest_audit_at.fetch_max(
        changed.newest_audit_at,
        std::sync::atomic::Ordering::Relaxed,
    );
    if changed.in_order.is_empty() {
        return;
    }
    let mut maps = index.write();
    for change in changed.in_order {
        match change {
            IndexChange::Upsert(record) => maps.upsert(*record),
            IndexChange::Retire(hash, key_id) => maps.retire(hash, key_id),
            IndexChange::Owner(owner) => maps.upsert_owner(&owner, &Default::default()),
        }
    }
    drop(maps);
    // Only the rotation scheduler listens, and only when the policy schedules rotations:
    // waking it costs the store thread a system call a batch.
    if index.policy().schedules_rotations() {
        index.changed.notify_one();
    }
}

/// After the commit: puts a rotated token in its sink.
pub(crate) fn publish_sinks(outcome: Outcome) -> Outcome {
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

/// What every job of one batch works with: the store inside the batch's transaction, the
/// index as last committed, what earlier jobs of the batch changed, and the batch's time.
struct Txn<'a> {
    store: &'a mut Store,
    index: &'a Index,
    changed: &'a mut Changes,
    rng: &'a Pool,
    now: i64,
    /// Fleet mode: the replica's position as last committed.
    fleet: Option<&'a FleetPosition>,
}

impl Txn<'_> {
    /// Where a lane stands, counting what this batch applied.
    fn lane(&self, name: &str) -> Lane {
        let in_batch = self.changed.applied.iter().rev();
        let mut lanes = in_batch.filter_map(|(_, lane)| lane.as_ref());
        match lanes.find(|(l, _)| l == name) {
            Some((_, lane)) => *lane,
            None => self
                .fleet
                .and_then(|f| f.lanes.get(name))
                .copied()
                .unwrap_or_default(),
        }
    }

    fn bound_since(&self) -> Option<u64> {
        self.changed
            .bound_since
            .or(self.fleet.and_then(|f| f.bound_since))
    }
}

/// Why a change at stream sequence `seq`, made against its lane's change `after`, is a copy
/// of one already applied (or superseded) here, if it is: `floor` is the lane's
/// [`Lane::floor`]. A change in version 0.1's form (no `after`) is taken for one after the
/// fleet's first change in the current form.
fn replayed(seq: u64, after: Option<u64>, floor: u64, bound_since: Option<u64>) -> Option<String> {
    match after {
        Some(after) if after < floor || after >= seq => Some(format!(
            "it was made against its subject's change {after}, older than what the last \
             change applied here was made against: a copy of an older change published again"
        )),
        Some(_) => None,
        None => bound_since.filter(|&first| seq > first).map(|first| {
            format!(
                "it is in version 0.1's form, after the fleet's first change in the current \
                 form ({first}): a copy of an older change published again"
            )
        }),
    }
}

/// Applies a change read from the fleet's stream at sequence `seq` (see
/// [`Command::ApplyFleet`]); a copy of one already applied moves only the position.
fn apply_from_fleet(
    t: &mut Txn<'_>,
    seq: u64,
    lane: Option<String>,
    after: Option<u64>,
    stands_in: bool,
    mut set: ChangeSet,
) -> Result<Outcome, WriteError> {
    let was = lane.as_deref().map(|l| t.lane(l)).unwrap_or_default();
    let copy = if set.is_empty() {
        None
    } else {
        replayed(seq, after, was.floor, t.bound_since())
    };
    let applies = copy.is_none() && !set.is_empty();
    let now = match after {
        Some(after) if applies => Lane {
            last: seq,
            changed: seq,
            floor: after + 1,
        },
        None if applies => Lane {
            last: seq,
            changed: seq,
            ..was
        },
        _ => Lane { last: seq, ..was },
    };
    let lane = lane.map(|l| (l, now));
    let lane_now = lane.as_ref().map(|(l, now)| (l.as_str(), *now));
    t.store.put_fleet_applied(seq, lane_now).map_err(storage)?;
    if let Some(why) = copy {
        if !stands_in {
            tracing::error!(seq, lane = lane_now.map_or("-", |l| l.0), reason = %why, "refused a message of the fleet's stream; later changes still apply");
        }
        t.changed.applied.push((seq, lane));
        // One standing in for a message this node read: nothing is missing here.
        if stands_in {
            return Ok(Outcome::Changed);
        }
        t.changed.refused.push(seq);
        return Ok(Outcome::Replayed);
    }
    let first_bound = after.is_some() && t.bound_since().is_none();
    if first_bound {
        t.store.put_fleet_bound_since(seq).map_err(storage)?;
    }
    change::persist(t.store, t.index, t.changed, &set)?;
    if let (Some(rotated), Some(record)) = (set.rotated.take(), set.keys.last()) {
        let made_by = set.node.clone();
        t.changed.rotations.push((record.clone(), rotated, made_by));
    }
    t.changed.merge(set);
    t.changed.applied.push((seq, lane));
    if first_bound {
        t.changed.bound_since = Some(seq);
    }
    Ok(Outcome::Changed)
}

/// Makes one job's change inside the batch's transaction.
fn apply(t: &mut Txn<'_>, command: Command) -> Result<Outcome, WriteError> {
    match command {
        Command::FlushUsage(usage) => flush_usage(t, &usage),
        Command::FlushOwners(owners) => {
            for (id, usage) in &owners {
                t.store.put_owner_usage(id, usage).map_err(storage)?;
            }
            Ok(Outcome::Flushed)
        }
        Command::Rekey {
            new_master_key,
            actor,
            fleet_data_key,
        } => {
            if let Some(wrapped) = fleet_data_key {
                t.store.put_fleet_data_key(&wrapped).map_err(storage)?;
            }
            rekey(t, &new_master_key, actor)
        }
        Command::ApplyFleet {
            seq,
            lane,
            after,
            stands_in,
            set,
        } => apply_from_fleet(t, seq, lane, after, stands_in, set),
        Command::KeepFleetDataKey(wrapped) => {
            t.store.put_fleet_data_key(&wrapped).map_err(storage)?;
            Ok(Outcome::Changed)
        }
        command => apply_admin_change(t, command).map_err(|(Failed::Job(e) | Failed::Batch(e))| e),
    }
}

/// The change an admin command makes, computed against the keys as the batch left them.
fn compute(draft: &mut Draft<'_>, command: Command) -> Result<Outcome, WriteError> {
    match command {
        Command::Create { params, actor } => change::create(draft, params, actor),
        Command::Regenerate {
            id,
            grace_secs,
            expires_in_secs,
            actor,
        } => change::regenerate(draft, id, grace_secs, expires_in_secs, actor),
        Command::Update { params, actor } => change::update(draft, params, actor),
        Command::SetOwner { params, actor } => change::set_owner(draft, params, actor),
        Command::Revoke { id, reason, actor } => change::revoke_by_admin(draft, id, reason, actor),
        Command::ApplyRevocations { ids, hashes } => change::apply_revocations(draft, ids, hashes),
        Command::Rotate {
            id,
            expected_base,
            overlap_secs,
            sink,
        } => change::rotate(draft, id, expected_base, overlap_secs, sink),
        Command::FlushUsage(_)
        | Command::FlushOwners(_)
        | Command::Rekey { .. }
        | Command::ReadAudit { .. }
        | Command::Checkpoint
        | Command::SaveIndexSnapshot { .. }
        | Command::Ping
        | Command::ApplyFleet { .. }
        | Command::KeepFleetDataKey(_) => Err(WriteError::Refused("not an admin change".into())),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::Hit;
    use crate::key::{UsageRecord, UsageRow};
    use crate::token::hash_token;
    use authenta_client::proto::{CreateKey, Permission};
    use zeroize::Zeroizing;

    /// A batch as the store thread of one host runs it.
    fn run_batch(store: &mut Store, index: &Index, rng: &Pool, batch: Vec<Job>) {
        let writes = batch.into_iter().map(|j| (j.command, j.reply)).collect();
        let (_, done) = commit_batch(store, index, rng, None, writes);
        for (outcome, reply) in done {
            let _ = reply.send(Ok(publish_sinks(outcome)));
        }
    }

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
        let rng = Pool::new();
        let actor = Actor::Peer { uid: 0, pid: None };
        let (create, answer) = job(Command::Create {
            params: CreateKey {
                name: "k".into(),
                permissions: vec![Permission::Read],
                environment: None,
                expires_in_secs: None,
                ..Default::default()
            },
            actor: actor.clone(),
        });
        run_batch(&mut store, &index, &rng, vec![create]);
        let (id, old_token) = issued(answer);

        let (regenerate, new_answer) = job(Command::Regenerate {
            id: id.clone(),
            grace_secs: 0,
            expires_in_secs: None,
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
                ..Default::default()
            },
            actor: Actor::Peer { uid: 0, pid: None },
        });
        run_batch(store, index, &Pool::new(), vec![job]);
        issued(answer).0
    }

    fn create_job(name: &str) -> (Job, oneshot::Receiver<Result<Outcome, WriteError>>) {
        job(Command::Create {
            params: CreateKey {
                name: name.into(),
                permissions: vec![Permission::Read],
                ..Default::default()
            },
            actor: Actor::Peer { uid: 0, pid: None },
        })
    }

    /// The audit chain as the store on disk has it: entries checked, and the newest.
    fn chain_on_disk(dir: &std::path::Path) -> (u64, u64) {
        let store = Store::open(dir, &Zeroizing::new([7u8; 32])).expect("store");
        let report = store.read_audit(true, 0).expect("audit");
        let check = report.chain.expect("checked");
        assert!(check.ok, "chain broken: {:?}", check.problem);
        let newest = report.entries.last().map_or(0, |e| e.seq);
        (check.checked, newest)
    }

    /// An admin change has no savepoint of its own: one refused leaves the rest of its
    /// batch, and the audit head written once at the commit matches every entry.
    #[test]
    fn a_refused_change_leaves_the_rest_of_its_batch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::open(dir.path(), &Zeroizing::new([7u8; 32])).expect("store");
        let index = Index::default();
        let (a, a_answer) = create_job("a");
        let (revoke, refused) = job(Command::Revoke {
            id: "key_0000000000000000".into(),
            reason: None,
            actor: Actor::Peer { uid: 0, pid: None },
        });
        let (b, b_answer) = create_job("b");
        run_batch(&mut store, &index, &Pool::new(), vec![a, revoke, b]);
        let (a, b) = (issued(a_answer).0, issued(b_answer).0);
        assert!(matches!(
            refused.blocking_recv(),
            Ok(Err(WriteError::NotFound(_)))
        ));
        assert!(index.read().by_id(&a).is_some() && index.read().by_id(&b).is_some());
        drop(store);
        assert_eq!(chain_on_disk(dir.path()), (2, 2));
    }

    /// A change that fails while it is written cannot be undone alone: the whole batch is
    /// dropped and every job in it told so; nothing of it is in the store or the index, and
    /// the next batch continues the audit chain from where the last commit left it.
    #[test]
    fn a_change_that_fails_while_written_drops_its_whole_batch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::open(dir.path(), &Zeroizing::new([7u8; 32])).expect("store");
        let index = Index::default();
        create(&mut store, &index, "first");
        let other = rusqlite::Connection::open(dir.path().join("keys.db")).expect("open");
        other
            .execute_batch(
                "CREATE TRIGGER fail BEFORE INSERT ON audit WHEN NEW.seq = 3
                 BEGIN SELECT RAISE(ABORT, 'injected'); END",
            )
            .expect("trigger");
        let jobs: Vec<_> = ["x", "y", "z"].into_iter().map(create_job).collect();
        let (jobs, answers): (Vec<_>, Vec<_>) = jobs.into_iter().unzip();
        run_batch(&mut store, &index, &Pool::new(), jobs);
        for answer in answers {
            assert!(matches!(
                answer.blocking_recv(),
                Ok(Err(WriteError::Storage(_)))
            ));
        }
        assert_eq!(index.read().entries().count(), 1);
        assert_eq!(store.key_count().expect("count"), 1);

        other.execute_batch("DROP TRIGGER fail").expect("drop");
        let after = create(&mut store, &index, "after");
        assert!(index.read().by_id(&after).is_some());
        drop(store);
        assert_eq!(chain_on_disk(dir.path()), (2, 2));
    }

    fn flush(store: &mut Store, index: &Index, write: UsageWrite) {
        let (job, answer) = job(Command::FlushUsage(vec![write]));
        run_batch(store, index, &Pool::new(), vec![job]);
        assert!(matches!(answer.blocking_recv(), Ok(Ok(Outcome::Flushed))));
    }

    fn counted(n: u64) -> UsageRecord {
        UsageRecord {
            verifications: n,
            allowed: n,
            denied: 0,
            last_used_at: Some(1),
            limits: Default::default(),
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
            .load_each(
                crate::store::RowCheck::Whole,
                |record: KeyRecord, _, row| rows.push((record.id, row)),
            )
            .expect("load");
        assert!(
            rows.contains(&(a.clone(), row_a)),
            "start-up learns the rows"
        );
        assert!(rows.contains(&(b.clone(), row_b)));
    }
    #[test]
    fn a_change_made_against_an_older_one_than_the_floor_is_a_copy() {
        // The floor is one past what the last change applied was made against (6 here).
        // Made against a change at or past it (a node may have missed some): applied.
        assert_eq!(replayed(10, Some(7), 7, None), None);
        assert_eq!(replayed(10, Some(9), 7, Some(3)), None);
        // Made against an older one (the applied change's own copy included), or claiming
        // a change later than itself: a copy.
        assert!(replayed(12, Some(6), 7, Some(3)).is_some());
        assert!(replayed(12, Some(12), 7, None).is_some());
        // Version 0.1's form: applied until the first change in the current form.
        assert_eq!(replayed(2, None, 1, None), None);
        assert_eq!(replayed(2, None, 1, Some(5)), None);
        assert!(replayed(6, None, 1, Some(5)).is_some());
    }
}
