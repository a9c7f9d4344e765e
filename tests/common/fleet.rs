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
        "usage_flush_interval = \"250ms\"\n\
         [fleet]\nservers = {}\nname = \"{name}\"\nnode = \"{node}\"\nreplicas = 3\n",
        nats.servers_toml()
    )
}

impl Fleet {
    /// A 3-server cluster and `nodes` daemons, each joined.
    pub fn start(nodes: usize) -> Fleet {
        Fleet::start_with_policies(nodes, |_| None, "")
    }

    /// The same, node `n` watching the policy `policy(n)` if any, with `extra` at the top
    /// of every node's config.
    pub fn start_with_policies(
        nodes: usize,
        policy: impl Fn(usize) -> Option<String>,
        extra: &str,
    ) -> Fleet {
        let nats = NatsCluster::start(3);
        let name = format!("t{}", std::process::id());
        let nodes = (0..nodes)
            .map(|n| {
                let node = ["a", "b", "c", "d"][n];
                let config = format!("{extra}{}", config(&nats, &name, node));
                Daemon::start_with(Some(&config), policy(n).as_deref())
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
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = fleet_status(node);
        if status["connected"] == true && status["joined"] == true {
            return;
        }
        if Instant::now() > deadline {
            let log = node.log();
            let tail: Vec<&str> = log.lines().filter(|l| !l.contains("DEBUG")).collect();
            let tail = tail[tail.len().saturating_sub(30)..].join("\n");
            panic!("the node did not join its fleet within 30 s: {status}\n{tail}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
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

/// Creates `count` keys on `node`, pipelined in batches; returns (id, token) of each.
pub fn create_many(node: &Daemon, prefix: &str, count: usize) -> Vec<(String, String)> {
    use authenta_client::proto::{CreateKey, RequestBody, ResponseBody};
    let mut client = authenta_client::Client::connect(&node.socket).expect("connect");
    client.set_timeout(Some(Duration::from_secs(30)));
    let mut keys = Vec::with_capacity(count);
    while keys.len() < count {
        let batch = (count - keys.len()).min(100);
        let requests = (0..batch)
            .map(|i| {
                RequestBody::CreateKey(CreateKey {
                    name: format!("{prefix}-{}", keys.len() + i),
                    permissions: vec![authenta_client::Permission::Read],
                    environment: None,
                    expires_in_secs: None,
                    ..Default::default()
                })
            })
            .collect();
        for answer in client.call_many(requests).expect("create batch") {
            match answer {
                ResponseBody::Created(new) => keys.push((new.key.id, new.token)),
                other => panic!("create answered {other:?}"),
            }
        }
    }
    keys
}

/// Sends one admin request per id on `node`, pipelined; panics on any refusal.
pub fn change_many(
    node: &Daemon,
    ids: &[String],
    body: impl Fn(&str) -> authenta_client::proto::RequestBody,
) {
    use authenta_client::proto::ResponseBody;
    let mut client = authenta_client::Client::connect(&node.socket).expect("connect");
    client.set_timeout(Some(Duration::from_secs(30)));
    for chunk in ids.chunks(100) {
        let requests = chunk.iter().map(|id| body(id)).collect();
        for answer in client.call_many(requests).expect("change batch") {
            assert!(
                !matches!(answer, ResponseBody::Error(_)),
                "a change was refused: {answer:?}"
            );
        }
    }
}

/// Waits until every node lists the same keys as the first one.
pub fn wait_converged(nodes: &[Daemon]) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let lists: Vec<Vec<Value>> = nodes.iter().map(keys_without_usage).collect();
        if lists[1..].iter().all(|list| *list == lists[0]) {
            return lists.into_iter().next().unwrap_or_default();
        }
        if Instant::now() >= deadline {
            panic!(
                "timed out waiting for every node to list the same keys: {}",
                how_lists_differ(&lists)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Per node, how many keys it lists and the first that differs from node 0's list.
fn how_lists_differ(lists: &[Vec<Value>]) -> String {
    lists
        .iter()
        .enumerate()
        .map(|(n, list)| {
            let first_difference = list
                .iter()
                .zip(&lists[0])
                .find(|(a, b)| a != b)
                .map(|(a, b)| format!("; first difference: {a} against node 0's {b}"))
                .unwrap_or_default();
            format!("node {n}: {} keys{first_difference}", list.len())
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

/// Revokes `id` on `node` and waits until every node answers `revoked` for `token`.
pub fn revoke_everywhere(fleet: &Fleet, node: usize, id: &str, token: &str) {
    let revoked = fleet.nodes[node].cli(&["keys", "revoke", id]);
    assert!(
        revoked.status.success(),
        "{}",
        String::from_utf8_lossy(&revoked.stderr)
    );
    for node in &fleet.nodes {
        wait_code(node, token, VerifyCode::Revoked);
    }
}
