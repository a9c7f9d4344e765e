//! A fleet node: joins the fleet (its data key), publishes the changes this node's writer
//! proposes, applies the fleet's stream to the local replica in order, and reports where it
//! stands. The replica (SQLite and the index) keeps serving verifies whatever NATS does.

use crate::fleet::engine::{Delivered, Engine, EngineError, Expect, Log};
use crate::fleet::refused::RefusedChanges;
use crate::fleet::seal;
use crate::fleet::subjects::{Carries, Subjects};
use crate::index::Index;
use crate::key::UsageRecord;
use crate::store::barrier::{random_key, unwrap_data_key, wrap_data_key, Barrier, KeyBytes};
use crate::store::change::ChangeSet;
use crate::store::locked_key::LockedKey;
use crate::store::writer::{self, Command, Outcome, Part, Proposal, WriteError, WriterHandle};
use crate::time;
use authenta_client::proto::FleetStatus;
use futures_util::stream::FuturesOrdered;
use futures_util::StreamExt;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// How long a publishing node waits for its own change to come back through the stream.
const APPLY_WAIT: Duration = Duration::from_secs(10);
/// Changes handed to the writer and not yet committed, at most.
const MAX_IN_FLIGHT: usize = 256;
/// Pause before trying to join again after a failure.
const JOIN_RETRY: Duration = Duration::from_secs(2);
/// Pause before reading the stream again after it broke off.
const RETRY: Duration = Duration::from_millis(500);

/// What `status` shows of the fleet, kept up to date by the node's tasks.
pub struct FleetState {
    pub node: String,
    pub servers: Vec<String>,
    applied: watch::Receiver<u64>,
    /// The highest sequence the stream is known to hold.
    known: AtomicU64,
    connected: AtomicBool,
    /// Unix milliseconds; 0 while connected.
    disconnected_since: AtomicI64,
    /// Messages refused (bad seal, wrong key, a copy), since start.
    refused: AtomicU64,
    /// Changes refused as copies (written by the store thread).
    refused_changes: Arc<RefusedChanges>,
    /// Gaps in the stream read over (changes no longer held), since start.
    resyncs: AtomicU64,
    joined: OnceLock<Barrier>,
    /// The fleet's data key itself, once joined, to wrap it again at a rekey.
    data_key: OnceLock<LockedKey>,
    /// Rekey requests, for the task that can reach the fleet.
    rekeys: mpsc::UnboundedSender<Rekey>,
    /// This node's counts of keys, for the other nodes (see [`FleetState::publish_usage`]).
    usage: mpsc::UnboundedSender<Vec<(String, UsageRecord)>>,
}

/// A request to wrap the fleet's data key under a new master key.
type Rekey = (
    KeyBytes,
    tokio::sync::oneshot::Sender<Result<Vec<u8>, WriteError>>,
);

impl FleetState {
    /// Wraps the fleet's data key under `new_master` in the fleet (unless an earlier rekey
    /// on another node already did); returns it wrapped, for this node to keep.
    pub async fn rewrap_data_key(&self, new_master: KeyBytes) -> Result<Vec<u8>, WriteError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.rekeys
            .send((new_master, reply))
            .map_err(|_| WriteError::Stopped)?;
        answer.await.map_err(|_| WriteError::Stopped)?
    }

    /// Tells the other nodes this node's counts of these keys (best effort: a count that
    /// does not get through goes with the key's next flush).
    pub fn publish_usage(&self, counts: Vec<(String, UsageRecord)>) {
        let _ = self.usage.send(counts);
    }

    pub fn status(&self) -> FleetStatus {
        let applied = *self.applied.borrow();
        let since = self.disconnected_since.load(Ordering::Relaxed);
        FleetStatus {
            connected: self.connected.load(Ordering::Relaxed),
            node: self.node.clone(),
            servers: self.servers.clone(),
            applied_seq: applied,
            lag: self.known.load(Ordering::Relaxed).saturating_sub(applied),
            disconnected_since: (since != 0).then_some(since),
            refused_messages: self.refused.load(Ordering::Relaxed),
            resyncs: self.resyncs.load(Ordering::Relaxed),
            joined: self.joined.get().is_some(),
        }
    }

    /// Ready for admin writes: connected and holding the fleet's data key.
    pub fn ready(&self) -> bool {
        self.connected.load(Ordering::Relaxed) && self.joined.get().is_some()
    }
}

/// Why a node cannot join its fleet.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error(
        "this node's master key does not open fleet '{0}''s data key: every node of a fleet \
         must start with the same master key (the one its first node used)"
    )]
    WrongMasterKey(String),
    #[error(
        "fleet '{0}''s stream holds changes but not its data key (purged?), and this node \
         never saw it: start a node that joined before (it puts the key back), then this one"
    )]
    DataKeyLost(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// Everything a node needs to run.
pub struct NodeParts<E> {
    pub engine: Arc<E>,
    pub subjects: Subjects,
    pub fleet_name: String,
    pub node: String,
    pub servers: Vec<String>,
    pub writer: WriterHandle,
    pub proposals: mpsc::UnboundedReceiver<Proposal>,
    pub applied: watch::Receiver<u64>,
    /// The fleet's data key as this node kept it (wrapped), if it ever joined.
    pub kept_data_key: Option<Vec<u8>>,
    /// Where the other nodes' usage goes.
    pub index: Arc<Index>,
    /// The replica has applied no change in the current form yet.
    pub unbound: bool,
    /// Where the store thread notes the changes it refused as copies.
    pub refused_changes: Arc<RefusedChanges>,
}

/// Starts the node's tasks. Tries to join within `first_try`: a wrong master key is an
/// error then; an unreachable fleet is not (the node serves its replica and keeps trying).
pub async fn start<E: Engine>(
    parts: NodeParts<E>,
    master: LockedKey,
    first_try: Duration,
    stopped: watch::Receiver<bool>,
) -> Result<Arc<FleetState>, JoinError> {
    let (usage_tx, usage_rx) = mpsc::unbounded_channel();
    let (rekeys_tx, rekeys_rx) = mpsc::unbounded_channel();
    let state = Arc::new(FleetState {
        node: parts.node.clone(),
        servers: parts.servers.clone(),
        applied: parts.applied.clone(),
        known: AtomicU64::new(*parts.applied.borrow()),
        connected: AtomicBool::new(false),
        disconnected_since: AtomicI64::new(time::now_ms()),
        refused: AtomicU64::new(0),
        refused_changes: parts.refused_changes.clone(),
        resyncs: AtomicU64::new(0),
        joined: OnceLock::new(),
        data_key: OnceLock::new(),
        rekeys: rekeys_tx,
        usage: usage_tx,
    });
    let shared = Arc::new(Shared {
        engine: parts.engine,
        subjects: parts.subjects,
        fleet_name: parts.fleet_name,
        state: state.clone(),
        writer: parts.writer,
        kept_data_key: parts.kept_data_key,
        nothing_applied: *parts.applied.borrow() == 0,
        node: parts.node.clone(),
        index: parts.index,
        unbound: parts.unbound,
    });
    match tokio::time::timeout(first_try, join(&shared, &master)).await {
        Ok(Ok(barrier)) => {
            let _ = state.joined.set(barrier);
            tracing::info!(node = %parts.node, fleet = %shared.fleet_name, "joined the fleet");
        }
        Ok(Err(e @ (JoinError::WrongMasterKey(_) | JoinError::DataKeyLost(_)))) => return Err(e),
        Ok(Err(e)) => tracing::warn!(error = %e, "the fleet is not reachable yet: serving this node's replica and retrying"),
        Err(_) => tracing::warn!("the fleet's NATS servers did not answer in time: serving this node's replica and retrying"),
    }
    tokio::spawn(watch_connection(shared.clone(), master, stopped.clone()));
    tokio::spawn(publish_proposals(
        shared.clone(),
        parts.proposals,
        parts.applied,
    ));
    tokio::spawn(publish_usage(shared.clone(), usage_rx));
    tokio::spawn(serve_rekeys(shared.clone(), rekeys_rx));
    tokio::spawn(read_usage(shared.clone(), stopped.clone()));
    tokio::spawn(apply_stream(shared, stopped));
    Ok(state)
}

struct Shared<E> {
    engine: Arc<E>,
    subjects: Subjects,
    fleet_name: String,
    state: Arc<FleetState>,
    writer: WriterHandle,
    kept_data_key: Option<Vec<u8>>,
    /// This replica has applied nothing from the fleet yet.
    nothing_applied: bool,
    node: String,
    index: Arc<Index>,
    unbound: bool,
}

/// Most messages of the data key's subject a node reads when it joins (a few are there:
/// the first node's, one per `rekey`, one per time a node put it back).
const MAX_DATA_KEY_MESSAGES: usize = 1024;

/// The fleet's data key: the newest in the stream that the master key opens; else the one
/// this node kept (the stream lost it, or holds only messages that do not open: put it
/// back); else, for the first node of an empty fleet, a new one. Sealing and opening
/// changes need it; a master key that opens none means this node belongs to another fleet
/// or was started with the wrong key.
async fn join<E: Engine>(shared: &Shared<E>, master: &LockedKey) -> Result<Barrier, JoinError> {
    let engine = &*shared.engine;
    let subject = shared.subjects.data_key();
    engine.prepare().await?;
    // Read, else put one there and read again; twice is enough unless the stream keeps
    // losing it.
    for _ in 0..3 {
        let in_stream = data_key_in_stream(shared, master).await?;
        if let Some((key, wrapped)) = in_stream.opens {
            if shared.kept_data_key.as_deref() != Some(wrapped.as_slice()) {
                // Kept, so that this node can put it back should the stream lose it.
                let keep = Command::KeepFleetDataKey(wrapped);
                let _ = shared.writer.submit(keep).await;
            }
            let barrier = Barrier::new(&key);
            let _ = shared.state.data_key.set(LockedKey::new(key));
            close_the_unbound_window(shared, &barrier).await;
            return Ok(barrier);
        }
        let key: KeyBytes = match &shared.kept_data_key {
            Some(kept) => unwrap_data_key(master.bytes(), kept)
                .map_err(|_| JoinError::WrongMasterKey(shared.fleet_name.clone()))?,
            None if in_stream.last.is_some() => {
                return Err(JoinError::WrongMasterKey(shared.fleet_name.clone()))
            }
            None if engine.bounds().await?.messages == 0 && shared.nothing_applied => {
                let rng = ring::rand::SystemRandom::new();
                random_key(&rng).map_err(|_| {
                    EngineError::Unavailable("the system random number generator failed".into())
                })?
            }
            None => return Err(JoinError::DataKeyLost(shared.fleet_name.clone())),
        };
        // Wrapped afresh (a new nonce): a message the stream lost may still be in its
        // duplicate window, which would swallow the same bytes again.
        let wrapped = wrap_data_key(master.bytes(), &key);
        let expected = in_stream.last.unwrap_or(0);
        match engine
            .publish(subject.clone(), wrapped, Some(Expect::last(expected)))
            .await
        {
            // Read back above: the key in the stream is the one every node uses.
            Ok(_) | Err(EngineError::Conflict) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Err(EngineError::Unavailable("the fleet's data key did not stay in its stream".into()).into())
}

/// What the data key's subject holds, for one master key.
struct DataKeyInStream {
    /// The newest message the master key opens: the data key and its wrapped form.
    opens: Option<(KeyBytes, Vec<u8>)>,
    /// The subject's last message, whatever it holds.
    last: Option<u64>,
}

/// Reads the data key's subject. Newer messages than the one that opens are counted as
/// refused: any NATS user allowed to publish could have put them there, and taking the last
/// message as the key would let them stop every node from starting. (After a `rekey` the
/// newest is wrapped by the new master key; a node still on the old one opens the older
/// wrapping of the same data key, as it could anyway.)
async fn data_key_in_stream<E: Engine>(
    shared: &Shared<E>,
    master: &LockedKey,
) -> Result<DataKeyInStream, JoinError> {
    let mut messages = shared
        .engine
        .messages_on(shared.subjects.data_key(), 1)
        .await?;
    let mut found = DataKeyInStream {
        opens: None,
        last: None,
    };
    let (mut read, mut newer) = (0, 0u64);
    while let Some(message) = messages.next().await {
        let (seq, wrapped) = message?;
        found.last = Some(seq);
        match unwrap_data_key(master.bytes(), &wrapped) {
            Ok(key) => {
                found.opens = Some((key, wrapped));
                newer = 0;
            }
            Err(_) => newer += 1,
        }
        read += 1;
        if read == MAX_DATA_KEY_MESSAGES {
            tracing::error!(read, "the fleet's data key subject holds too many messages (put there by someone with NATS access?): read only the first ones");
            break;
        }
    }
    if newer > 0 {
        shared.state.refused.fetch_add(newer, Ordering::Relaxed);
        tracing::error!(refused = newer, "the fleet's data key subject has messages that this node's master key does not open (another master key's, or put there by someone with NATS access)");
    }
    Ok(found)
}

/// A replica that has applied no change in the current form applies changes in version
/// 0.1's form (which carry no sequence, so copies of them cannot be told) until the first
/// change in the current form. One, empty, goes out now, so that this window closes as soon
/// as an upgraded node joins rather than at the fleet's next change.
async fn close_the_unbound_window<E: Engine>(shared: &Shared<E>, barrier: &Barrier) {
    if !shared.unbound {
        return;
    }
    // A subject no admin change writes to, so that the marker is in nobody's way.
    let subject = shared.subjects.unkeyed(&[0; 32]);
    let marker = ChangeSet {
        at: time::now_ms(),
        node: Some(shared.node.clone()),
        ..ChangeSet::default()
    };
    let payload = seal::seal(barrier, &subject, 0, &marker);
    if let Err(e) = shared.engine.publish(subject, payload, None).await {
        tracing::debug!(error = %e, "could not publish the first change in the current form; the next change will be");
    }
}

/// Keeps `connected` and `disconnected_since` current, and joins once the fleet is reachable.
async fn watch_connection<E: Engine>(
    shared: Arc<Shared<E>>,
    master: LockedKey,
    mut stopped: watch::Receiver<bool>,
) {
    let mut master = Some(master);
    let mut ticker = tokio::time::interval(Duration::from_millis(200));
    let mut next_join = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stopped.changed() => return,
        }
        let client_up = shared.engine.connected();
        let state = &shared.state;
        if client_up && state.joined.get().is_none() && tokio::time::Instant::now() >= next_join {
            if let Some(key) = &master {
                match join(&shared, key).await {
                    Ok(barrier) => {
                        let _ = state.joined.set(barrier);
                        tracing::info!("joined the fleet");
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot join the fleet yet");
                        next_join = tokio::time::Instant::now() + JOIN_RETRY;
                    }
                }
            }
        }
        if state.joined.get().is_some() {
            // Joined: the master key is not needed any more.
            master = None;
        }
        let connected = client_up && stream_answers(&*shared.engine).await;
        if connected != state.connected.swap(connected, Ordering::Relaxed) {
            let since = if connected { 0 } else { time::now_ms() };
            state.disconnected_since.store(since, Ordering::Relaxed);
            if connected {
                tracing::info!("the fleet's NATS servers answer");
            } else {
                tracing::warn!("lost the fleet's NATS servers: verify keeps answering from this node's replica; admin writes are refused until they return");
            }
        }
    }
}

/// The stream answers (after a restart of the servers, the client connects well before
/// JetStream has elected the stream's leader).
async fn stream_answers<E: Engine>(engine: &E) -> bool {
    tokio::time::timeout(Duration::from_secs(1), engine.bounds())
        .await
        .is_ok_and(|bounds| bounds.is_ok())
}

/// Publishes each proposed change, concurrently, and answers it once it is applied here.
async fn publish_proposals<E: Engine>(
    shared: Arc<Shared<E>>,
    mut proposals: mpsc::UnboundedReceiver<Proposal>,
    applied: watch::Receiver<u64>,
) {
    while let Some(proposal) = proposals.recv().await {
        tokio::spawn(publish_one(shared.clone(), proposal, applied.clone()));
    }
}

async fn publish_one<E: Engine>(
    shared: Arc<Shared<E>>,
    proposal: Proposal,
    mut applied: watch::Receiver<u64>,
) {
    let Proposal {
        parts,
        outcome,
        reply,
    } = proposal;
    let result = match publish_parts(&shared, parts).await {
        Ok(seqs) => {
            let last = seqs.iter().copied().max().unwrap_or(0);
            let waited = tokio::time::timeout(APPLY_WAIT, applied.wait_for(|a| *a >= last)).await;
            match waited {
                Ok(Ok(_)) if shared.state.refused_changes.any(&seqs) => Err(WriteError::Conflict(
                    "another node changed it at the same time, and the fleet took that change: \
                     this one was refused; read it again and retry"
                        .into(),
                )),
                Ok(Ok(_)) => Ok(writer::publish_sinks(outcome)),
                _ => Err(WriteError::Storage(
                    "the change is in the fleet but this node has not applied it yet: it \
                     will, once its store thread catches up"
                        .into(),
                )),
            }
        }
        Err(e) => Err(e),
    };
    let _ = reply.send(result);
}

/// Publishes the parts in order; their sequences.
async fn publish_parts<E: Engine>(
    shared: &Shared<E>,
    parts: Vec<Part>,
) -> Result<Vec<u64>, WriteError> {
    let Some(barrier) = shared.state.joined.get() else {
        return Err(WriteError::FleetUnavailable(
            "the fleet has not been reachable since this daemon started: admin writes are \
             refused until it is; verify keeps answering from this node's replica"
                .into(),
        ));
    };
    let mut seqs = Vec::with_capacity(parts.len());
    for part in parts {
        tracing::debug!(subject = %part.subject, expected = part.expected, "publishing a change");
        let payload = seal::seal(barrier, &part.subject, part.after, &part.set);
        let subject = part.subject.clone();
        let expected = Some(Expect::last(part.expected));
        let published = match shared
            .engine
            .publish(subject, payload.clone(), expected)
            .await
        {
            Err(EngineError::Conflict) => retry_if_lost(shared, &part, payload).await,
            other => other,
        };
        match published {
            Ok(seq) => {
                tracing::debug!(seq, "published a change");
                seqs.push(seq)
            }
            Err(EngineError::Conflict) => {
                let what = match &shared.subjects.carries(&part.subject) {
                    Some(Carries::Key(id)) => id.clone(),
                    Some(Carries::Owners) => "an owner".into(),
                    _ => "a token hash".into(),
                };
                return Err(WriteError::Conflict(format!(
                    "{what} was changed on another node at the same time: nothing was changed \
                     here; read it again and retry"
                )));
            }
            Err(EngineError::Unavailable(why)) => {
                return Err(WriteError::FleetUnavailable(format!(
                    "{why}: admin writes are refused while the fleet is unreachable; verify \
                     keeps answering from this node's replica"
                )))
            }
        }
    }
    Ok(seqs)
}

/// After a conflict: when the subject's last message in the stream is older than the last
/// one this node read (the stream lost messages, or someone deleted them), nobody changed
/// it since this node did, so the change goes on top of what the stream holds. Otherwise
/// it stays a conflict.
async fn retry_if_lost<E: Engine>(
    shared: &Shared<E>,
    part: &Part,
    payload: Vec<u8>,
) -> Result<u64, EngineError> {
    let held = shared.engine.last_on(part.subject.clone()).await?;
    let held = held.map_or(0, |(seq, _)| seq);
    if held >= part.expected {
        return Err(EngineError::Conflict);
    }
    tracing::warn!(subject = %part.subject, expected = part.expected, held, "the fleet's stream no longer holds this subject's last message: publishing on top of what it holds");
    let expected = Expect {
        last: held,
        read: part.expected,
    };
    let subject = part.subject.clone();
    shared
        .engine
        .publish(subject, payload, Some(expected))
        .await
}

/// Applies the fleet's stream, in order, from the sequence after the last applied; starts
/// over (after a pause) whenever the stream breaks off.
async fn apply_stream<E: Engine>(shared: Arc<Shared<E>>, mut stopped: watch::Receiver<bool>) {
    let mut applied = shared.state.applied.clone();
    loop {
        if shared.state.ready() {
            let from = *applied.borrow_and_update();
            if let Err(e) = apply_from(&shared, from, &mut stopped).await {
                tracing::warn!(error = %e, "reading the fleet's stream stopped; starting again");
            }
        }
        if pause_or_stop(&mut stopped).await {
            return;
        }
    }
}

/// Waits [`RETRY`] before a reader starts again; true when the daemon is stopping.
async fn pause_or_stop(stopped: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(RETRY) => *stopped.borrow(),
        _ = stopped.changed() => true,
    }
}

async fn apply_from<E: Engine>(
    shared: &Shared<E>,
    applied: u64,
    stopped: &mut watch::Receiver<bool>,
) -> Result<(), EngineError> {
    let mut messages = shared.engine.read(Log::Changes, applied + 1).await?;
    let mut in_flight = FuturesOrdered::new();
    let mut sent = applied;
    loop {
        tokio::select! {
            message = messages.next(), if in_flight.len() < MAX_IN_FLIGHT => {
                let Some(message) = message else { return Ok(()) };
                let delivered = message?;
                shared.state.known.fetch_max(delivered.seq + delivered.pending, Ordering::Relaxed);
                if delivered.seq <= sent {
                    continue;
                }
                if delivered.seq > sent + 1 {
                    // Messages between were removed (purged, or trimmed by retention):
                    // what follows still holds the last change of every key it kept.
                    tracing::warn!(from = sent + 1, to = delivered.seq - 1, "the fleet's stream no longer holds these changes: resyncing from the last change of every key it still holds");
                    shared.state.resyncs.fetch_add(1, Ordering::Relaxed);
                }
                sent = delivered.seq;
                let command = to_command(shared, delivered);
                in_flight.push_back(shared.writer.submit(command));
            }
            Some(done) = in_flight.next(), if !in_flight.is_empty() => {
                match done {
                    Ok(Outcome::Replayed) => {
                        shared.state.refused.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        return Err(EngineError::Unavailable(format!("applying a change failed: {e}")));
                    }
                }
            }
            _ = stopped.changed() => return Ok(()),
        }
    }
}

/// A rotation's message, to erase from the stream once its overlap ends.
struct Erasing {
    subject: String,
    seq: u64,
    /// What the rotation was made against (None: version 0.1's form).
    after: Option<u64>,
    until: i64,
}

/// A rotated token travels in the fleet only until its overlap ends. As soon as a node
/// applies the rotation it publishes the same change without its token right after it, to
/// stand in for it (every node that applied it tries; the message id lets one in), and again
/// when the overlap ends. Then a node erases the rotation's message only if the next message
/// on the key's subject is that stand-in, from which a node that had not read the rotation
/// gets the key's new record, retired hashes and audit entries. Otherwise (another change
/// came first, or junk) the rotation's message stays, its token sealed, so that no node
/// misses it. A rotation in version 0.1's form is left as it is.
fn stand_in_then_erase<E: Engine>(shared: &Shared<E>, erasing: Erasing, rotation: &ChangeSet) {
    let (Some(barrier), Some(after)) = (shared.state.joined.get(), erasing.after) else {
        return;
    };
    let Some(carries) = shared.subjects.carries(&erasing.subject) else {
        return;
    };
    let without_token = ChangeSet {
        rotated: None,
        ..rotation.clone()
    };
    let payload = seal::seal_stand_in(barrier, &erasing.subject, after, &without_token);
    let (engine, state) = (shared.engine.clone(), shared.state.clone());
    tokio::spawn(async move {
        let Erasing {
            subject,
            seq,
            until,
            ..
        } = erasing;
        let publish = || engine.publish(subject.clone(), payload.clone(), Some(Expect::last(seq)));
        let wait = u64::try_from(until - time::now_ms()).unwrap_or(0);
        // A node catching up on an old rotation publishes once, not twice.
        if wait > 0 {
            let _ = publish().await;
            tokio::time::sleep(Duration::from_millis(wait)).await;
        }
        let _ = publish().await;
        let stood_in = match state.joined.get() {
            Some(barrier) => {
                next_stands_in(&*engine, barrier, &carries, &subject, seq, after).await
            }
            None => Ok(false),
        };
        match stood_in {
            Ok(true) => match engine.erase(seq).await {
                Ok(()) => tracing::debug!(seq, "erased a rotated token from the fleet's stream"),
                Err(e) => {
                    tracing::debug!(seq, error = %e, "a rotated token's message is already gone or cannot be erased now")
                }
            },
            Ok(false) => {
                tracing::warn!(seq, subject = %subject, "a rotation's message stays in the fleet's stream, its token sealed: another message came right after it, not what stands in for it")
            }
            Err(e) => {
                tracing::debug!(seq, error = %e, "a rotation's message stays for now: the stream did not answer")
            }
        }
    });
}

/// Whether the message after `seq` on `subject` stands in for the rotation at `seq`, made
/// against `after`.
async fn next_stands_in<E: Engine>(
    engine: &E,
    barrier: &Barrier,
    carries: &Carries,
    subject: &str,
    seq: u64,
    after: u64,
) -> Result<bool, EngineError> {
    let mut next = engine.messages_on(subject.to_owned(), seq + 1).await?;
    let Some(message) = next.next().await else {
        return Ok(false);
    };
    let (_, payload) = message?;
    let opened = seal::open(barrier, subject, carries, &payload);
    Ok(opened.is_ok_and(|o| o.stands_in && o.after == Some(after)))
}

/// What applying a message means: its change, or (refused or not a change) only moving the
/// position past it, so that one bad message does not stop the changes after it.
fn to_command<E: Engine>(shared: &Shared<E>, delivered: Delivered) -> Command {
    let Delivered {
        seq,
        subject,
        payload,
        ..
    } = delivered;
    let nothing = |lane| Command::ApplyFleet {
        seq,
        lane,
        after: None,
        stands_in: false,
        set: ChangeSet::default(),
    };
    let Some(barrier) = shared.state.joined.get() else {
        return nothing(None);
    };
    let carries = shared.subjects.carries(&subject);
    let lane = shared.subjects.lane(&subject);
    match carries {
        None | Some(Carries::DataKey) => nothing(None),
        Some(carries) => match seal::open(barrier, &subject, &carries, &payload) {
            Ok(seal::Opened {
                after,
                stands_in,
                set,
            }) => {
                if let Some(rotated) = &set.rotated {
                    let erasing = Erasing {
                        subject: subject.clone(),
                        seq,
                        after,
                        until: rotated.overlap_until,
                    };
                    stand_in_then_erase(shared, erasing, &set);
                }
                Command::ApplyFleet {
                    seq,
                    lane,
                    after,
                    stands_in,
                    set,
                }
            }
            Err(why) => {
                shared.state.refused.fetch_add(1, Ordering::Relaxed);
                tracing::error!(seq, subject = %subject, reason = %why, "refused a message of the fleet's stream; later changes still apply");
                nothing(lane)
            }
        },
    }
}

/// Most usage publishes awaiting their acknowledgement at once.
const USAGE_IN_FLIGHT: usize = 256;

/// Publishes this node's counts, each on its own subject (the usage stream keeps the last).
async fn publish_usage<E: Engine>(
    shared: Arc<Shared<E>>,
    mut batches: mpsc::UnboundedReceiver<Vec<(String, UsageRecord)>>,
) {
    while let Some(batch) = batches.recv().await {
        let Some(barrier) = shared.state.joined.get() else {
            continue;
        };
        let mut in_flight = futures_util::stream::FuturesUnordered::new();
        let mut failed = 0usize;
        for (id, counts) in batch {
            let subject = shared.subjects.usage(&shared.node, &id);
            let payload = seal::seal_usage(barrier, &subject, &counts);
            in_flight.push(shared.engine.publish(subject, payload, None));
            if in_flight.len() >= USAGE_IN_FLIGHT {
                failed += usize::from(matches!(in_flight.next().await, Some(Err(_))));
            }
        }
        while let Some(result) = in_flight.next().await {
            failed += usize::from(result.is_err());
        }
        if failed > 0 {
            tracing::debug!(
                failed,
                "some usage counts did not reach the fleet; they go with the keys' next flush"
            );
        }
    }
}

/// Keeps the other nodes' counts of every key, from the usage stream (all of it after a
/// start, then as it grows).
async fn read_usage<E: Engine>(shared: Arc<Shared<E>>, mut stopped: watch::Receiver<bool>) {
    loop {
        if shared.state.ready() {
            if let Err(e) = read_usage_once(&shared, &mut stopped).await {
                tracing::debug!(error = %e, "reading the fleet's usage stopped; starting again");
            }
        }
        if pause_or_stop(&mut stopped).await {
            return;
        }
    }
}

async fn read_usage_once<E: Engine>(
    shared: &Shared<E>,
    stopped: &mut watch::Receiver<bool>,
) -> Result<(), EngineError> {
    let mut messages = shared.engine.read(Log::Usage, 1).await?;
    loop {
        let message = tokio::select! {
            message = messages.next() => message,
            _ = stopped.changed() => return Ok(()),
        };
        let Some(delivered) = message.transpose()? else {
            return Ok(());
        };
        let Some((node, id)) = shared.subjects.usage_of(&delivered.subject) else {
            continue;
        };
        if node == shared.node {
            continue;
        }
        let Some(barrier) = shared.state.joined.get() else {
            continue;
        };
        match seal::open_usage(barrier, &delivered.subject, &delivered.payload) {
            Ok(counts) => {
                let remote = &shared.index.remote_usage;
                let previous = remote.set(node, id, counts);
                let maps = shared.index.read();
                remote.apply(
                    &maps,
                    node,
                    id,
                    previous.as_ref(),
                    &counts,
                    crate::time::now_ms(),
                );
            }
            Err(why) => {
                shared.state.refused.fetch_add(1, Ordering::Relaxed);
                tracing::error!(subject = %delivered.subject, reason = %why, "refused a usage message of the fleet");
            }
        }
    }
}

/// Wraps the fleet's data key under new master keys, as `rekey` asks.
async fn serve_rekeys<E: Engine>(
    shared: Arc<Shared<E>>,
    mut requests: mpsc::UnboundedReceiver<Rekey>,
) {
    while let Some((new_master, reply)) = requests.recv().await {
        let _ = reply.send(rewrap(&shared, &new_master).await);
    }
}

async fn rewrap<E: Engine>(
    shared: &Shared<E>,
    new_master: &KeyBytes,
) -> Result<Vec<u8>, WriteError> {
    let unreachable =
        |e: EngineError| WriteError::FleetUnavailable(format!("cannot rekey the fleet: {e}"));
    let Some(data_key) = shared.state.data_key.get() else {
        return Err(WriteError::FleetUnavailable(
            "cannot rekey: this node has not joined its fleet (is NATS reachable?)".into(),
        ));
    };
    let subject = shared.subjects.data_key();
    let current = shared
        .engine
        .last_on(subject.clone())
        .await
        .map_err(unreachable)?;
    let Some((seq, wrapped)) = current else {
        return Err(WriteError::FleetUnavailable(
            "the fleet's data key is missing from its stream".into(),
        ));
    };
    if unwrap_data_key(new_master, &wrapped).is_ok() {
        // Another node's rekey with the same key came first.
        return Ok(wrapped);
    }
    let rewrapped = wrap_data_key(new_master, data_key.bytes());
    match shared
        .engine
        .publish(subject, rewrapped.clone(), Some(Expect::last(seq)))
        .await
    {
        Ok(_) => Ok(rewrapped),
        Err(EngineError::Conflict) => Err(WriteError::Conflict(
            "the fleet's data key changed at the same time (another rekey?): run rekey again"
                .into(),
        )),
        Err(e) => Err(unreachable(e)),
    }
}
