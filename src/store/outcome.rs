//! What a store-thread job produced, or why it did not happen.

use crate::policy::sink::StagedSink;
use authenta_client::proto::AuditReport;
use zeroize::Zeroizing;

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
    /// A change read from the fleet's stream was refused as a copy of an older one.
    Replayed,
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
    /// Another node changed the key first (fleet mode); nothing was changed.
    #[error("{0}")]
    Conflict(String),
    /// The fleet cannot be reached (fleet mode); nothing was changed.
    #[error("{0}")]
    FleetUnavailable(String),
}
