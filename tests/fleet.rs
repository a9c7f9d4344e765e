//! Fleet mode on a real 3-server JetStream cluster (R3) with three daemons: changes made on
//! any node reach every node, conflicting writers cannot both win, a node with the wrong
//! master key is refused, and verify keeps answering with every NATS server down.

mod common;

use authenta_client::VerifyCode;
use common::fleet::{fleet_status, keys_without_usage, wait_code, wait_until, Fleet};
use std::time::Duration;

#[test]
fn a_change_on_any_node_reaches_every_node() {
    let fleet = Fleet::start(3);
    let [a, b, c] = [&fleet.nodes[0], &fleet.nodes[1], &fleet.nodes[2]];
    let (id, token) = a.create("K", "read,write", &[]);
    assert_eq!(
        a.answer_code(&token),
        VerifyCode::Valid,
        "valid at once where created"
    );
    wait_code(b, &token, VerifyCode::Valid);
    wait_code(c, &token, VerifyCode::Valid);

    let revoked = c.cli(&["keys", "revoke", &id]);
    assert!(
        revoked.status.success(),
        "{}",
        String::from_utf8_lossy(&revoked.stderr)
    );
    assert_eq!(
        c.answer_code(&token),
        VerifyCode::Revoked,
        "revoked at once where revoked"
    );
    wait_code(a, &token, VerifyCode::Revoked);
    wait_code(b, &token, VerifyCode::Revoked);

    let (other, old) = a.create("L", "read", &[]);
    wait_code(b, &old, VerifyCode::Valid);
    let new = b.cli_json(&["keys", "regenerate", &other, "--json"])["token"]
        .as_str()
        .expect("a new token")
        .to_owned();
    assert_eq!(b.answer_code(&old), VerifyCode::Revoked);
    for node in [a, b, c] {
        wait_code(node, &new, VerifyCode::Valid);
        wait_code(node, &old, VerifyCode::Revoked);
    }
    let reference = keys_without_usage(a);
    assert_eq!(reference.len(), 2);
    for node in [b, c] {
        wait_until(
            "the same keys on every node",
            Duration::from_secs(10),
            || keys_without_usage(node) == reference,
        );
    }
    // One audit chain for the fleet, the same on every node, each entry naming its node.
    let audit = |node: &common::Daemon| node.cli_json(&["audit", "--json"]);
    let entries = audit(a)["entries"].clone();
    let revoke = entries
        .as_array()
        .expect("entries")
        .iter()
        .find(|e| e["action"] == "revoke")
        .expect("the revoke is audited");
    assert!(
        revoke["detail"]
            .as_str()
            .is_some_and(|d| d.contains("node=c")),
        "{revoke}"
    );
    for node in [b, c] {
        wait_until("the same audit chain", Duration::from_secs(10), || {
            audit(node)["entries"] == entries
        });
    }
    let status = fleet_status(a);
    assert_eq!(status["node"], "a");
    assert_eq!(status["lag"], 0);
    assert!(status["applied_seq"].as_u64().unwrap_or(0) >= 5, "{status}");
}

#[test]
fn usage_on_any_node_shows_on_every_node_and_after_a_restart() {
    let mut fleet = Fleet::start(3);
    let (id, token) = fleet.nodes[0].create("K", "read", &[]);
    for node in &fleet.nodes {
        wait_code(node, &token, VerifyCode::Valid);
    }
    // 1 + 2 + 3 verifies on a, b, c (wait_code asked each once already).
    for (n, node) in fleet.nodes.iter().enumerate() {
        for _ in 0..n {
            assert_eq!(node.answer_code(&token), VerifyCode::Valid);
        }
    }
    let total = |node: &common::Daemon| node.show(&id)["usage"]["verifications"].as_u64();
    for node in &fleet.nodes {
        wait_until("fleet-wide usage", Duration::from_secs(10), || {
            total(node) == Some(6)
        });
    }
    fleet.nodes[1].stop();
    fleet.nodes[1].restart();
    common::fleet::wait_joined(&fleet.nodes[1]);
    wait_until("usage after a restart", Duration::from_secs(10), || {
        total(&fleet.nodes[1]) == Some(6)
    });
}

#[test]
fn a_scheduled_rotation_runs_once_and_reaches_every_nodes_sink() {
    let sinks = tempfile::tempdir().expect("sinks");
    let sink = |n: usize| sinks.path().join(format!("token-{n}"));
    let allowed = format!("sink_dirs = [\"{}\"]\n", sinks.path().display());
    let fleet = Fleet::start_with_policies(
        3,
        |n| {
            Some(format!(
                "[[rotation]]\nname = \"Rotated-*\"\nevery = \"3s\"\noverlap = \"1s\"\nsink = \"{}\"\n",
                sink(n).display()
            ))
        },
        &allowed,
    );
    let (id, old) = fleet.nodes[0].create("Rotated-1", "read", &[]);
    let mut new = String::new();
    wait_until("every node's sink", Duration::from_secs(15), || {
        let tokens: Vec<String> = (0..3)
            .map(|n| {
                std::fs::read_to_string(sink(n))
                    .unwrap_or_default()
                    .trim()
                    .to_owned()
            })
            .collect();
        new = tokens[0].clone();
        !new.is_empty() && tokens.iter().all(|t| *t == new)
    });
    for node in &fleet.nodes {
        wait_code(node, &new, VerifyCode::Valid);
        wait_code(node, &old, VerifyCode::Revoked);
    }
    // One rotation per 3 s period, not one per node: rotations are at least ~3 s apart.
    let entries = fleet.nodes[1].cli_json(&["audit", "--json"])["entries"].clone();
    let seconds: Vec<u32> = entries
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["action"] == "regenerate" && e["key_id"] == id.as_str())
        .map(|e| second_of_day(e["at"].as_str().expect("at")))
        .collect();
    assert!(!seconds.is_empty());
    for pair in seconds.windows(2) {
        assert!(
            pair[1] >= pair[0] + 2,
            "two rotations in one period: {entries}"
        );
    }
    // The new token travels sealed, and only until the overlap ends: then its message is
    // erased from the fleet's stream (by whichever node gets there first).
    wait_until(
        "the rotated token's message erased",
        Duration::from_secs(10),
        || {
            fleet.nodes.iter().any(|n| {
                n.log()
                    .contains("erased a rotated token from the fleet's stream")
            })
        },
    );
    // Later changes to the key still go through: the erased message was not its last.
    let revoked = fleet.nodes[2].cli(&["keys", "revoke", &id]);
    assert!(
        revoked.status.success(),
        "{}",
        String::from_utf8_lossy(&revoked.stderr)
    );
}

/// `...THH:MM:SSZ` as seconds since midnight.
fn second_of_day(rfc3339: &str) -> u32 {
    let time = rfc3339.split('T').nth(1).expect("a time");
    time.trim_end_matches('Z')
        .split(':')
        .map(|part| part.parse::<u32>().expect("a number"))
        .fold(0, |total, part| total * 60 + part)
}

#[test]
fn a_node_with_another_master_key_refuses_to_join() {
    let fleet = Fleet::start(1);
    let stranger = common::Daemon::start();
    let wrong = stranger.dir.path().join("other.hex");
    std::fs::write(&wrong, "ff".repeat(32)).expect("write key");
    let mut node = common::Daemon::start_with_config(Some(&common::fleet::config(
        &fleet.nats,
        &fleet.name,
        "b",
    )));
    node.stop();
    std::fs::remove_dir_all(&node.data_dir).expect("fresh store");
    let refused = node.serve_refused(&wrong);
    assert!(
        refused.contains("master key does not open fleet"),
        "the refusal names the cause: {refused}"
    );
}

/// A rotation's message is erased once its overlap ends: a node that was down meanwhile
/// must still get the key's new record (what stands in for the message), and its later
/// changes must apply on every node.
#[test]
fn a_node_down_through_a_rotation_catches_up_and_stays_in_step() {
    let sinks = tempfile::tempdir().expect("sinks");
    let allowed = format!("sink_dirs = [\"{}\"]\n", sinks.path().display());
    let rotating = format!(
        "[[rotation]]\nname = \"Rotated-*\"\nevery = \"2s\"\noverlap = \"1s\"\nsink = \"{}\"\n",
        sinks.path().join("token").display()
    );
    let mut fleet = Fleet::start_with_policies(
        2,
        |n| {
            Some(if n == 0 {
                rotating.clone()
            } else {
                "[defaults]\n".into()
            })
        },
        &allowed,
    );
    let (id, old) = fleet.nodes[0].create("Rotated-1", "read", &[]);
    wait_code(&fleet.nodes[1], &old, VerifyCode::Valid);
    fleet.nodes[1].stop();
    wait_until("a rotation erased", Duration::from_secs(15), || {
        fleet.nodes[0]
            .log()
            .contains("erased a rotated token from the fleet's stream")
    });
    // No more rotations: what node b must catch up with stays put.
    let policy = fleet.nodes[0].policy.as_deref().expect("policy file");
    std::fs::write(policy.with_extension("new"), "[defaults]\n").expect("write policy");
    std::fs::rename(policy.with_extension("new"), policy).expect("rename policy");
    wait_until("the rotation rule gone", Duration::from_secs(10), || {
        fleet.nodes[0].cli_json(&["policy", "status", "--json"])["rules"] == 0
    });
    std::thread::sleep(Duration::from_secs(3));
    fleet.nodes[1].restart();
    common::fleet::wait_joined(&fleet.nodes[1]);
    wait_until(
        "node b has the key's last record",
        Duration::from_secs(10),
        || fleet.nodes[1].show(&id)["start"] == fleet.nodes[0].show(&id)["start"],
    );
    assert_eq!(fleet.nodes[1].answer_code(&old), VerifyCode::Revoked);
    let token = std::fs::read_to_string(sinks.path().join("token")).expect("sink");
    common::fleet::revoke_everywhere(&fleet, 1, &id, token.trim());
}

#[test]
fn a_stream_made_by_version_0_1_gains_the_owners_subject() {
    let mut fleet = Fleet::start(1);
    let operator = common::nats::Operator::connect(&fleet.nats, &fleet.name);
    let owners = format!("authenta.{}.owners", fleet.name);
    let old: Vec<String> = operator
        .subjects()
        .into_iter()
        .filter(|s| *s != owners)
        .collect();
    fleet.nodes[0].stop();
    operator.set_subjects(&old);
    fleet.nodes[0].restart();
    common::fleet::wait_joined(&fleet.nodes[0]);
    assert!(operator.subjects().contains(&owners));
    for limit in ["5/1s", "6/1s"] {
        let set =
            fleet.nodes[0].cli_json(&["owners", "set", "acme", "--ratelimit", limit, "--json"]);
        assert_eq!(set["ratelimit"], limit, "{set}");
    }
}

#[test]
fn a_rekey_on_every_node_moves_the_fleet_to_the_new_master_key() {
    let mut fleet = Fleet::start(2);
    let (_, token) = fleet.nodes[0].create("K", "read", &[]);
    wait_code(&fleet.nodes[1], &token, VerifyCode::Valid);
    let new_key = fleet.nats.path().join("new-master.hex");
    std::fs::write(&new_key, "ab".repeat(32)).expect("write key");
    let new_key = new_key.to_str().expect("utf-8 path").to_owned();
    for node in &fleet.nodes {
        let out = node.cli(&["rekey", "--new-master-key-file", &new_key]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for node in &mut fleet.nodes {
        node.stop();
        std::fs::copy(&new_key, &node.master_key).expect("the new key in place");
        node.restart();
        common::fleet::wait_joined(node);
        assert_eq!(node.answer_code(&token), VerifyCode::Valid);
    }
    let (_, after) = fleet.nodes[1].create("L", "read", &[]);
    wait_code(&fleet.nodes[0], &after, VerifyCode::Valid);
}

#[test]
fn the_same_policy_revocation_on_every_node_applies_once() {
    let fleet = Fleet::start_with_policies(3, |_| Some("[defaults]\n".to_owned()), "");
    let (id, token) = fleet.nodes[0].create("K", "read", &[]);
    for node in &fleet.nodes {
        wait_code(node, &token, VerifyCode::Valid);
    }
    let revoking = format!("[defaults]\n\n[revocations]\nids = [\"{id}\"]\n");
    for node in &fleet.nodes {
        let path = node.policy.as_deref().expect("policy file");
        let staged = path.with_extension("new");
        std::fs::write(&staged, &revoking).expect("write policy");
        std::fs::rename(&staged, path).expect("rename policy");
    }
    for node in &fleet.nodes {
        wait_code(node, &token, VerifyCode::Revoked);
        wait_until("the policy in force", Duration::from_secs(10), || {
            let report = node.cli_json(&["policy", "status", "--json"]);
            report["last_error"].is_null() && report["revoked_ids"] == 1
        });
    }
    let entries = fleet.nodes[2].cli_json(&["audit", "--json"])["entries"].clone();
    let revokes = entries
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["action"] == "revoke")
        .count();
    assert_eq!(
        revokes, 1,
        "one revocation for the fleet, not one per node: {entries}"
    );
}
