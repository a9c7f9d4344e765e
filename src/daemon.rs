//! What every connection shares: the index, the writer, access rules and counters.

use crate::index::Index;
use crate::peer::Access;
use crate::writer::WriterHandle;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The daemon's shared state.
pub struct Daemon {
    pub index: Arc<Index>,
    pub writer: WriterHandle,
    pub access: Access,
    pub started: Instant,
    pub socket: PathBuf,
    pub data_dir: PathBuf,
    /// Keys whose sealed rows did not open at start-up.
    pub corrupt_keys: Vec<String>,
    /// Grace of a regenerate that names none.
    pub default_grace: Duration,
    /// Connections open now.
    pub connections: AtomicU64,
    /// Verifies answered since start.
    pub verifications: AtomicU64,
}
