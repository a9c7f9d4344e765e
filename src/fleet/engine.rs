//! The replication engine behind a fleet: an ordered, replicated log of sealed changes with
//! optimistic concurrency per subject. NATS JetStream is the one built ([`crate::fleet::nats`]);
//! another engine (etcd, PostgreSQL) would implement this trait and nothing else.

use futures_util::stream::BoxStream;
use std::future::Future;

/// What a publish expects of its subject: that its last message is `last`. `read` is the
/// last this node read there, later than `last` when the stream lost messages since; two
/// publishes made from the same state share both (see the NATS engine's message ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expect {
    pub last: u64,
    pub read: u64,
}

impl Expect {
    /// The subject's last message is the last this node read there.
    pub fn last(seq: u64) -> Expect {
        Expect {
            last: seq,
            read: seq,
        }
    }
}

/// A message read from the log.
#[derive(Debug)]
pub struct Delivered {
    pub seq: u64,
    pub subject: String,
    pub payload: Vec<u8>,
    /// Messages after this one the engine already holds (how far behind the reader is).
    pub pending: u64,
}

/// Messages of one subject as `(seq, payload)`, oldest first.
pub type Messages = BoxStream<'static, Result<(u64, Vec<u8>), EngineError>>;

/// The engine's two logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Log {
    /// Every change, kept.
    Changes,
    /// Each node's last counts of each key.
    Usage,
}

/// What a log holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// How many messages it holds.
    pub messages: u64,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    /// The subject's last sequence was not the one expected: another writer came first.
    #[error("another node changed it first")]
    Conflict,
    #[error("{0}")]
    Unavailable(String),
}

pub trait Engine: Send + Sync + 'static {
    /// Whether the engine is reachable now.
    fn connected(&self) -> bool;

    /// Creates the log when it does not exist yet.
    fn prepare(&self) -> impl Future<Output = Result<(), EngineError>> + Send;

    /// Appends `payload` on `subject`, if given only when the subject's last sequence is
    /// `expected.last` (0: the subject is empty); returns the new message's sequence once
    /// it is durable.
    fn publish(
        &self,
        subject: String,
        payload: Vec<u8>,
        expected: Option<Expect>,
    ) -> impl Future<Output = Result<u64, EngineError>> + Send;

    /// The last message on `subject` and its sequence, if any.
    fn last_on(
        &self,
        subject: String,
    ) -> impl Future<Output = Result<Option<(u64, Vec<u8>)>, EngineError>> + Send;

    /// The messages of the changes log on `subject` from sequence `from` on, oldest first.
    fn messages_on(
        &self,
        subject: String,
        from: u64,
    ) -> impl Future<Output = Result<Messages, EngineError>> + Send;

    /// Erases message `seq` of the changes log (overwritten, not only unlinked).
    fn erase(&self, seq: u64) -> impl Future<Output = Result<(), EngineError>> + Send;

    /// What the log holds now.
    fn bounds(&self) -> impl Future<Output = Result<Bounds, EngineError>> + Send;

    /// Every message `log` holds from sequence `from` on, in order, as they come.
    fn read(
        &self,
        log: Log,
        from: u64,
    ) -> impl Future<Output = Result<BoxStream<'static, Result<Delivered, EngineError>>, EngineError>>
           + Send;
}
