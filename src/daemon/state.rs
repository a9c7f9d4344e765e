//! What every connection shares: the index, the writer, access rules and counters.

use crate::access::Access;
use crate::fleet::FleetState;
use crate::index::Index;
use crate::metrics::Metrics;
use crate::policy::SinkRules;
use crate::store::writer::WriterHandle;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// The daemon's shared state.
pub struct Daemon {
    pub index: Arc<Index>,
    pub writer: WriterHandle,
    /// Replaced whole on SIGHUP, so a request sees either the old rules or the new ones.
    pub access: RwLock<Arc<Access>>,
    pub started: Instant,
    pub socket: PathBuf,
    pub data_dir: PathBuf,
    /// Keys whose sealed rows did not open at start-up.
    pub corrupt_keys: Vec<String>,
    /// Grace of a regenerate that names none.
    pub default_grace: Duration,
    /// Connections open now on the main socket.
    pub connections: AtomicU64,
    /// What `/metrics` shows; verifies answered since start are counted there.
    pub metrics: Arc<Metrics>,
    /// The policy file's state, for `policy status`.
    pub policy: Mutex<PolicyState>,
    /// Rotations coming up and failing, for `policy status`.
    pub scheduler: Mutex<SchedulerState>,
    /// Wakes the scheduler when the policy changes.
    pub scheduler_wake: Notify,
    /// Where rotations may write tokens (the config's `sink_dirs`, `sink_owners`).
    pub sink_rules: SinkRules,
    /// The master key is the development key next to the data.
    pub development_key: bool,
    /// Fleet mode: where this node stands.
    pub fleet: Option<Arc<FleetState>>,
    /// `/readyz`'s last answer and when it was made (see [`crate::http::monitoring`]).
    pub readiness: tokio::sync::Mutex<Option<(Instant, authenta_client::proto::HealthReport)>>,
}

impl Daemon {
    /// The state of a daemon started at `started`, with no connection, verify or policy yet.
    #[allow(clippy::too_many_arguments)] // each is one part of the state, named at the call
    pub fn new(
        started: Instant,
        index: Arc<Index>,
        writer: WriterHandle,
        access: Access,
        socket: PathBuf,
        data_dir: PathBuf,
        corrupt_keys: Vec<String>,
        default_grace: Duration,
        sink_rules: SinkRules,
        development_key: bool,
        fleet: Option<Arc<FleetState>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Daemon {
            index,
            writer,
            access: RwLock::new(Arc::new(access)),
            started,
            socket,
            data_dir,
            corrupt_keys,
            default_grace,
            connections: AtomicU64::new(0),
            metrics,
            policy: Default::default(),
            scheduler: Default::default(),
            scheduler_wake: Default::default(),
            sink_rules,
            development_key,
            fleet,
            readiness: Default::default(),
        }
    }

    /// The access rules in force.
    pub fn access(&self) -> Arc<Access> {
        self.access
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Puts new access rules in force.
    pub fn set_access(&self, access: Access) {
        *self.access.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(access);
    }

    /// Sets the metrics that are read rather than counted: keys by state, connections
    /// open, how stale the stored usage is, the policy and rotations, the fleet.
    pub fn refresh_metrics(&self) {
        let metrics = &self.metrics;
        let now = crate::time::now_ms();
        // Counting keys by state reads every key under the index lock: at most once a
        // second, however often `/metrics` is asked.
        let last = metrics.keys_counted_at.load(Ordering::Relaxed);
        if now - last >= 1_000
            && metrics
                .keys_counted_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let counts = self.index.counts(now);
            metrics.set_keys("active", counts.active);
            metrics.set_keys("revoked", counts.revoked);
            metrics.set_keys("expired", counts.expired);
        }
        let socket = self.connections.load(Ordering::Relaxed);
        metrics
            .open("socket")
            .set(i64::try_from(socket).unwrap_or(i64::MAX));
        let flushed_at = metrics.usage_flushed_at.load(Ordering::Relaxed);
        metrics
            .usage_flush_lag
            .set((now - flushed_at).max(0) as f64 / 1000.0);
        let loaded_at = self.policy_state().loaded_at.unwrap_or(0);
        metrics.policy_loaded_at.set(loaded_at as f64 / 1000.0);
        let failing = self.scheduler_state().failures.len();
        metrics
            .rotations_failing
            .set(i64::try_from(failing).unwrap_or(i64::MAX));
        if let Some(fleet) = &self.fleet {
            let status = fleet.status();
            metrics.fleet_connected.set(i64::from(status.connected));
            metrics
                .fleet_lag
                .set(i64::try_from(status.lag).unwrap_or(i64::MAX));
        }
    }

    pub fn policy_state(&self) -> MutexGuard<'_, PolicyState> {
        self.policy.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn scheduler_state(&self) -> MutexGuard<'_, SchedulerState> {
        self.scheduler.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What `policy status` shows about the file.
#[derive(Debug, Clone, Default)]
pub struct PolicyState {
    pub file: Option<PathBuf>,
    /// SHA-256 (hex) of the content in force.
    pub content_sha256: Option<String>,
    pub loaded_at: Option<i64>,
    pub last_error: Option<String>,
    pub last_error_at: Option<i64>,
}

/// A rotation that failed, for `policy status`.
#[derive(Debug, Clone)]
pub struct RotationFailure {
    pub message: String,
    pub retry_at: i64,
}

/// What `policy status` shows about rotations.
#[derive(Debug, Clone, Default)]
pub struct SchedulerState {
    /// The next rotations, soonest first (at most 20).
    pub next: Vec<(String, i64)>,
    pub failures: HashMap<String, RotationFailure>,
}
