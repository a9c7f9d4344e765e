//! Three daemons of one fleet on a real 3-server JetStream cluster, for the fleet tests.

use super::nats::NatsCluster;
use super::Daemon;
use authenta_client::VerifyCode;
use serde_json::Value;
use std::time::{Duration, Instant};

pub struct Fleet {
    pub nats: NatsCluster,
    pub nodes: Vec<Daemon>,
    pub name: String,
}

/// The config of node `node` of fleet `name` on `nats`.
pub fn config(nats: &NatsCluster, name: &str, node: &str) -> String {
    format!(
        "[fleet]\nservers = {}\nname = \"{name}\"\nnode = \"{node}\"\nreplicas = 3\n",
        nats.servers_toml()
    )
}

impl Fleet {
    /// A 3-server cluster and `nodes` daemons, each joined.
    pub fn start(nodes: usize) -> Fleet {
        let nats = NatsCluster::start(3);
        let name = format!("t{}", std::process::id());
        let nodes = (0..nodes)
            .map(|n| {
                let node = ["a", "b", "c", "d"][n];
                Daemon::start_with_config(Some(&config(&nats, &name, node)))
            })
            .collect();
        let fleet = Fleet { nats, nodes, name };
        for node in &fleet.nodes {
            wait_joined(node);
        }
        fleet
    }
}

/// The node's `status --json` fleet section.
pub fn fleet_status(node: &Daemon) -> Value {
    node.cli_json(&["status", "--json"])["fleet"].clone()
}

/// Waits until the node is connected and holds the fleet's data key.
pub fn wait_joined(node: &Daemon) {
    wait_until(
        "the node to join its fleet",
        Duration::from_secs(30),
        || {
            let status = fleet_status(node);
            status["connected"] == true && status["joined"] == true
        },
    );
}

/// Waits until `token` answers `code` on `node`.
pub fn wait_code(node: &Daemon, token: &str, code: VerifyCode) {
    wait_until(
        &format!("{code:?} on a node"),
        Duration::from_secs(10),
        || node.answer_code(token) == code,
    );
}

pub fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every key as `keys list --json` shows it, without usage (which is per node), by id.
pub fn keys_without_usage(node: &Daemon) -> Vec<Value> {
    let mut keys: Vec<Value> = node
        .cli_json(&["keys", "list", "--json"])
        .as_array()
        .expect("an array")
        .iter()
        .map(|k| {
            let mut k = k.clone();
            if let Some(map) = k.as_object_mut() {
                map.remove("usage");
                map.remove("last_used_at");
            }
            k
        })
        .collect();
    keys.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    keys
}
