//! Fleet mode: the other nodes' usage of each key, as each last published it, so that
//! `keys list` and `keys show` give fleet-wide totals. Only in memory: a node reads it back
//! from the fleet's usage stream after every start.

use crate::key::UsageRecord;
use authenta_client::proto::KeyInfo;
use std::collections::HashMap;
use std::sync::RwLock;

/// Key id -> (node, that node's counts of the key).
#[derive(Default)]
pub struct RemoteUsage {
    by_key: RwLock<HashMap<String, Vec<(String, UsageRecord)>>>,
}

impl RemoteUsage {
    /// What `node` last published for `key`: its own counts, replacing the previous ones.
    pub fn set(&self, node: &str, key: &str, usage: UsageRecord) {
        let mut by_key = self.by_key.write().unwrap_or_else(|e| e.into_inner());
        let nodes = by_key.entry(key.to_owned()).or_default();
        match nodes.iter_mut().find(|(n, _)| n == node) {
            Some((_, counts)) => *counts = usage,
            None => nodes.push((node.to_owned(), usage)),
        }
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
