//! Fleet mode: the other nodes' usage of each key, as each last published it, so that
//! `keys list` and `keys show` give fleet-wide totals, and so that each node's limits count
//! what the others allowed (see [`RemoteUsage::apply`]). Only in memory: a node reads it
//! back from the fleet's usage stream after every start.

use super::Maps;
use crate::key::{Spent, UsageRecord};
use authenta_client::proto::KeyInfo;
use std::collections::HashMap;
use std::sync::{Mutex, RwLock};

/// Key id -> (node, that node's counts of the key).
#[derive(Default)]
pub struct RemoteUsage {
    by_key: RwLock<HashMap<String, Vec<(String, UsageRecord)>>>,
    /// (node, owner) -> the most of the owner's balance that node said it spent.
    owners: Mutex<HashMap<(String, String), Spent>>,
}

impl RemoteUsage {
    /// What `node` last published for `key`: its own counts, replacing the previous ones.
    /// Returns the previous ones.
    pub fn set(&self, node: &str, key: &str, usage: UsageRecord) -> Option<UsageRecord> {
        let mut by_key = self.by_key.write().unwrap_or_else(|e| e.into_inner());
        let nodes = by_key.entry(key.to_owned()).or_default();
        match nodes.iter_mut().find(|(n, _)| n == node) {
            Some((_, counts)) => Some(std::mem::replace(counts, usage)),
            None => {
                nodes.push((node.to_owned(), usage));
                None
            }
        }
    }

    /// Counts what `node` published for `key` against this node's view of the key's limits
    /// and its owner's, at `now`: the verifies it allowed since its previous message move
    /// the rate limits on, and what it spent of a balance in the current period is taken
    /// from it. So each node enforces against its own uses plus the others' as last
    /// published; how far a fleet can overshoot is the uses made between two publishes.
    ///
    /// Rate limits count only what was allowed since a previous message of the node (the
    /// first after a start gives no baseline): counted whole, a node's all-time count would
    /// close the limit. Balances count what was spent in the period, so the first message
    /// counts whole.
    pub fn apply(
        &self,
        maps: &Maps,
        node: &str,
        key: &str,
        previous: Option<&UsageRecord>,
        usage: &UsageRecord,
        now: i64,
    ) {
        let Some(extra) = maps.by_id(key).and_then(|found| found.extra()) else {
            return;
        };
        let owner = extra.owner.as_deref();
        if let Some(previous) = previous {
            let allowed = usage.allowed.saturating_sub(previous.allowed);
            if allowed > 0 {
                let buckets = [
                    extra.ratelimit.as_ref(),
                    owner.and_then(|o| o.ratelimit.as_ref()),
                ];
                for bucket in buckets.into_iter().flatten() {
                    bucket.add_uses(allowed, now);
                }
            }
        }
        if let Some(balance) = &extra.credits {
            let before = previous.map(|p| p.limits.credits);
            let delta = spent_since(before.as_ref(), &usage.limits.credits);
            balance.add_remote(delta, &usage.limits.credits, now);
        }
        if let Some(owner) = owner {
            if let Some(balance) = &owner.credits {
                let spent = usage.limits.owner_credits;
                let delta = self.owner_spent(node, &owner.id, spent);
                balance.add_remote(delta, &spent, now);
            }
        }
    }

    /// What `node` spent of an owner's balance since the most it said before (each of its
    /// keys carries the owner's total at its flush, so the same spending comes in many
    /// messages: only the rise counts).
    fn owner_spent(&self, node: &str, owner: &str, spent: Spent) -> u64 {
        let mut owners = self.owners.lock().unwrap_or_else(|e| e.into_inner());
        let seen = owners
            .entry((node.to_owned(), owner.to_owned()))
            .or_default();
        let delta = spent_since(Some(seen), &spent);
        if delta > 0 || !same_period(seen, &spent) {
            *seen = spent;
        }
        delta
    }

    /// Adds the other nodes' counts to what this node counted of the key.
    pub fn add_to(&self, info: &mut KeyInfo) {
        let by_key = self.by_key.read().unwrap_or_else(|e| e.into_inner());
        for (_, counts) in by_key.get(&info.id).into_iter().flatten() {
            info.usage.verifications += counts.verifications;
            info.usage.allowed += counts.allowed;
            info.usage.denied += counts.denied;
            info.last_used_at = info.last_used_at.max(counts.last_used_at);
        }
    }
}

fn same_period(a: &Spent, b: &Spent) -> bool {
    a.set_at == b.set_at && a.period == b.period
}

/// How much more `now` says was spent than `before`, in the same balance and period (all
/// of it in a new one; nothing in an older one).
fn spent_since(before: Option<&Spent>, now: &Spent) -> u64 {
    match before {
        Some(before) if same_period(before, now) => now.spent.saturating_sub(before.spent),
        Some(before) if before.set_at == now.set_at && before.period > now.period => 0,
        _ => now.spent,
    }
}
