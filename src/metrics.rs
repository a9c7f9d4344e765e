//! What the daemon counts for `/metrics`, in Prometheus' text format through the
//! `prometheus-client` crate.
//!
//! Counters are bumped where things happen (the verify path adds a whole run at once, see
//! [`VerifyTally`]); values that are already kept elsewhere (keys by state, connections
//! open, fleet lag) are read when scraped, so the hot paths pay nothing for them. No label
//! ever carries a key id, a name or a token: labels are fixed words (a verify code, a
//! request kind, a state).

use authenta_client::proto::VerifyCode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicI64, AtomicU64};

/// Every verify code, in the order of [`VerifyCode`]'s variants.
pub const VERIFY_CODES: [VerifyCode; 9] = [
    VerifyCode::Valid,
    VerifyCode::Malformed,
    VerifyCode::Unknown,
    VerifyCode::Revoked,
    VerifyCode::Expired,
    VerifyCode::WrongEnvironment,
    VerifyCode::InsufficientPermissions,
    VerifyCode::RateLimited,
    VerifyCode::UsageExceeded,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AdminLabels {
    pub kind: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransportLabel {
    pub transport: &'static str,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// The daemon's metrics. Cloning a metric shares it, so the parts that bump one hold a
/// clone of it rather than the whole set.
pub struct Metrics {
    registry: Registry,
    verifies: Vec<Counter>,
    pub admin_requests: Family<AdminLabels, Counter>,
    pub connections_refused: Family<ReasonLabel, Counter>,
    pub connections_open: Family<TransportLabel, Gauge>,
    /// Seconds from the start of a store commit to its end.
    pub commit_seconds: Histogram,
    pub usage_flush_lag: FloatGauge,
    /// When every counter changed before it was last written (unix ms; the start before).
    pub usage_flushed_at: AtomicI64,
    /// When keys were last counted by state for `/metrics` (unix ms).
    pub keys_counted_at: AtomicI64,
    pub policy_reloads: Counter,
    pub policy_reload_failures: Counter,
    pub policy_loaded_at: FloatGauge,
    pub rotations_done: Counter,
    pub rotations_failing: Gauge,
    keys: Family<StateLabel, Gauge>,
    pub fleet_connected: Gauge,
    pub fleet_lag: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new(false)
    }
}

impl Metrics {
    /// The metrics of a daemon; `fleet`: in fleet mode, with the fleet's too.
    pub fn new(fleet: bool) -> Metrics {
        let mut registry = Registry::with_prefix("authenta");
        let verifies_family = Family::<CodeLabel, Counter>::default();
        let verifies = VERIFY_CODES
            .iter()
            .map(|code| {
                verifies_family
                    .get_or_create(&CodeLabel {
                        code: code.as_str(),
                    })
                    .clone()
            })
            .collect();
        registry.register("verifies", "Verifies answered, by code", verifies_family);
        let metrics = Metrics {
            verifies,
            admin_requests: Default::default(),
            connections_refused: Default::default(),
            connections_open: Default::default(),
            // 50 µs to ~3 s: a commit is an fsync, fast on SSDs and slow on a busy disk.
            commit_seconds: Histogram::new(exponential_buckets(0.000_05, 3.0, 11)),
            usage_flush_lag: Default::default(),
            usage_flushed_at: AtomicI64::new(crate::time::now_ms()),
            keys_counted_at: AtomicI64::new(0),
            policy_reloads: Default::default(),
            policy_reload_failures: Default::default(),
            policy_loaded_at: Default::default(),
            rotations_done: Default::default(),
            rotations_failing: Default::default(),
            keys: Default::default(),
            fleet_connected: Default::default(),
            fleet_lag: Default::default(),
            registry,
        };
        metrics.register_all(fleet)
    }

    fn register_all(mut self, fleet: bool) -> Metrics {
        let r = &mut self.registry;
        r.register(
            "admin_requests",
            "Admin requests answered, by kind and outcome",
            self.admin_requests.clone(),
        );
        r.register(
            "connections_refused",
            "Connections refused, by reason",
            self.connections_refused.clone(),
        );
        r.register(
            "connections_open",
            "Client connections open now, by transport",
            self.connections_open.clone(),
        );
        r.register(
            "store_commit_seconds",
            "Time a store commit takes (the fsync included)",
            self.commit_seconds.clone(),
        );
        r.register(
            "usage_flush_lag_seconds",
            "Seconds since usage counters were last written to the store",
            self.usage_flush_lag.clone(),
        );
        r.register(
            "policy_reloads",
            "Policy file loads that succeeded",
            self.policy_reloads.clone(),
        );
        r.register(
            "policy_reload_failures",
            "Policy file loads that failed (the previous policy stayed in force)",
            self.policy_reload_failures.clone(),
        );
        r.register(
            "policy_loaded_timestamp_seconds",
            "When the policy in force was loaded (unix seconds; 0: none)",
            self.policy_loaded_at.clone(),
        );
        r.register(
            "rotations",
            "Scheduled rotations done",
            self.rotations_done.clone(),
        );
        r.register(
            "rotations_failing",
            "Scheduled rotations failing now (retried)",
            self.rotations_failing.clone(),
        );
        r.register("keys", "Keys by state", self.keys.clone());
        if fleet {
            r.register(
                "fleet_connected",
                "1 when this node is connected to NATS",
                self.fleet_connected.clone(),
            );
            r.register(
                "fleet_lag_messages",
                "Changes the stream holds that this node has not applied yet",
                self.fleet_lag.clone(),
            );
        }
        self
    }

    /// Adds a run's tally of verifies.
    pub fn add_verifies(&self, tally: &VerifyTally) {
        for (counter, &n) in self.verifies.iter().zip(&tally.0) {
            if n > 0 {
                counter.inc_by(n);
            }
        }
    }

    /// Verifies answered since start, every code together.
    pub fn verifies_total(&self) -> u64 {
        self.verifies.iter().map(Counter::get).sum()
    }

    /// Sets the keys-by-state gauge.
    pub fn set_keys(&self, state: &'static str, count: u64) {
        self.keys
            .get_or_create(&StateLabel { state })
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// Counts an admin request by kind and outcome.
    pub fn admin(&self, kind: &'static str, ok: bool) {
        let outcome = if ok { "ok" } else { "error" };
        self.admin_requests
            .get_or_create(&AdminLabels { kind, outcome })
            .inc();
    }

    /// Counts a connection refused.
    pub fn refused(&self, reason: &'static str) {
        self.connections_refused
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// The gauge of connections open on `transport` ("socket" or "http").
    pub fn open(&self, transport: &'static str) -> Gauge {
        self.connections_open
            .get_or_create(&TransportLabel { transport })
            .clone()
    }

    /// The text exposition of everything registered.
    pub fn encode(&self) -> String {
        let mut text = String::with_capacity(4096);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// Verifies counted by code on a connection's own stack, then added to [`Metrics`] once per
/// run: one shared atomic add per code seen rather than one per verify.
#[derive(Default)]
pub struct VerifyTally([u64; VERIFY_CODES.len()]);

impl VerifyTally {
    pub fn count(&mut self, code: VerifyCode) {
        // Every code has a place (`the_code_table_follows_the_enum_order`); a code added
        // without one goes uncounted rather than taking the connection down.
        if let Some(count) = self.0.get_mut(code as usize) {
            *count += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_code_table_follows_the_enum_order() {
        for (n, code) in VERIFY_CODES.iter().enumerate() {
            assert_eq!(*code as usize, n, "{code:?}");
        }
        // The last variant is last in the table: none was added without a place.
        let last = match VerifyCode::Valid {
            VerifyCode::Valid
            | VerifyCode::Malformed
            | VerifyCode::Unknown
            | VerifyCode::Revoked
            | VerifyCode::Expired
            | VerifyCode::WrongEnvironment
            | VerifyCode::InsufficientPermissions
            | VerifyCode::RateLimited
            | VerifyCode::UsageExceeded => VerifyCode::UsageExceeded,
        };
        assert_eq!(VERIFY_CODES.last(), Some(&last));
    }

    #[test]
    fn a_tally_lands_under_its_code_and_nothing_names_a_key() {
        let metrics = Metrics::new(true);
        let mut tally = VerifyTally::default();
        tally.count(VerifyCode::Valid);
        tally.count(VerifyCode::Valid);
        tally.count(VerifyCode::Revoked);
        metrics.add_verifies(&tally);
        metrics.admin("create", true);
        let text = metrics.encode();
        assert!(
            text.contains("authenta_verifies_total{code=\"valid\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("authenta_verifies_total{code=\"revoked\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("authenta_admin_requests_total{kind=\"create\",outcome=\"ok\"} 1"),
            "{text}"
        );
        assert!(text.contains("authenta_fleet_connected"), "{text}");
        assert_eq!(metrics.verifies_total(), 3);
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
