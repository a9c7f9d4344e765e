//! Fleet mode against its own edge cases, on a real 3-server JetStream cluster: two nodes
//! changing one key at once, a message nobody sealed, one published again, junk where the
//! data key is, and what NATS stores and carries.

mod common;

use authenta_client::proto::ErrorCode;
use authenta_client::{Client, Error, VerifyCode};
use common::fleet::{config, wait_code, wait_converged, wait_joined, wait_until, Fleet};
use common::nats::Operator;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Regenerates on both nodes at once; (successes, conflicts).
fn race(a: &common::Daemon, b: &common::Daemon, id: &str) -> (Vec<String>, usize) {
    let barrier = std::sync::Barrier::new(2);
    let results: Vec<Result<String, Error>> = std::thread::scope(|scope| {
        let handles: Vec<_> = [a, b]
            .into_iter()
            .map(|node| {
                let barrier = &barrier;
                scope.spawn(move || {
                    let mut client = Client::connect(&node.socket).expect("connect");
                    barrier.wait();
                    client.regenerate(id, Some(0)).map(|new| new.token)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("racer"))
            .collect()
    });
    let mut tokens = Vec::new();
    let mut conflicts = 0;
    for result in results {
        match result {
            Ok(token) => tokens.push(token),
            Err(Error::Refused {
                code: ErrorCode::Conflict,
                message,
            }) => {
                assert!(message.contains("another node"), "{message}");
                conflicts += 1;
            }
            Err(other) => panic!("neither a success nor a conflict: {other}"),
        }
    }
    (tokens, conflicts)
}

#[test]
fn two_nodes_changing_one_key_never_both_win() {
    let fleet = Fleet::start(3);
    let [a, b] = [&fleet.nodes[0], &fleet.nodes[1]];
    let mut conflicts = 0;
    for round in 0..20 {
        let (id, first) = a.create(&format!("race-{round}"), "read", &[]);
        wait_code(b, &first, VerifyCode::Valid);
        let (tokens, lost) = race(a, b, &id);
        conflicts += lost;
        assert!(!tokens.is_empty(), "round {round}: someone wins");
        // Exactly one token is the key's now, everywhere. When both calls succeeded, the
        // second was made on top of the first (so it revoked the first's token): two changes
        // made from the same state would leave the first's token unknown instead.
        for node in &fleet.nodes {
            wait_until(
                "one valid token, the others revoked",
                Duration::from_secs(10),
                || {
                    let codes: Vec<VerifyCode> =
                        tokens.iter().map(|t| node.answer_code(t)).collect();
                    let valid = codes.iter().filter(|c| **c == VerifyCode::Valid).count();
                    valid == 1
                        && codes
                            .iter()
                            .all(|c| matches!(c, VerifyCode::Valid | VerifyCode::Revoked))
                        && node.answer_code(&first) == VerifyCode::Revoked
                },
            );
        }
    }
    assert!(
        conflicts > 0,
        "20 simultaneous rounds produced no conflict at all"
    );
    wait_converged(&fleet.nodes);
}

#[test]
fn a_message_with_a_bad_seal_is_refused_and_later_changes_still_apply() {
    let fleet = Fleet::start(3);
    let (id, token) = fleet.nodes[0].create("K", "read", &[]);
    for node in &fleet.nodes {
        wait_code(node, &token, VerifyCode::Valid);
    }
    let operator = Operator::connect(&fleet.nats, &fleet.name);
    let subject = format!("authenta.{}.key.{id}", fleet.name);
    operator.publish(&subject, b"not sealed by anyone in this fleet");
    for node in &fleet.nodes {
        wait_until("the refusal to show", Duration::from_secs(10), || {
            common::fleet::fleet_status(node)["refused_messages"] == 1
        });
        assert!(node
            .log()
            .contains("refused a message of the fleet's stream"));
        assert_eq!(
            node.answer_code(&token),
            VerifyCode::Valid,
            "nothing changed"
        );
    }
    common::fleet::revoke_everywhere(&fleet, 1, &id, &token);
}

/// Someone who can publish to the stream but has no master key copies a key's creation and
/// an owner's first limits, and publishes them again after they changed: replayed, they
/// would bring the revoked key back and the owner's old limit.
#[test]
fn a_change_published_again_does_not_roll_a_key_or_an_owner_back() {
    let fleet = Fleet::start(3);
    let operator = Operator::connect(&fleet.nats, &fleet.name);
    let (id, token) = fleet.nodes[0].create("K", "read", &[]);
    for node in &fleet.nodes {
        wait_code(node, &token, VerifyCode::Valid);
    }
    let key_subject = format!("authenta.{}.key.{id}", fleet.name);
    let (_, creation) = operator.last_on(&key_subject);
    common::fleet::revoke_everywhere(&fleet, 1, &id, &token);
    operator.publish(&key_subject, &creation);
    for node in &fleet.nodes {
        wait_applied(node, operator.last_seq());
        assert_eq!(node.answer_code(&token), VerifyCode::Revoked);
        assert_eq!(common::fleet::fleet_status(node)["refused_messages"], 1);
    }

    let owners_subject = format!("authenta.{}.owners", fleet.name);
    let limit = |node: &common::Daemon| node.cli_json(&["owners", "show", "acme", "--json"]);
    fleet.nodes[0].cli_json(&["owners", "set", "acme", "--ratelimit", "100/1s", "--json"]);
    let (_, first) = operator.last_on(&owners_subject);
    wait_until(
        "the first limit everywhere",
        Duration::from_secs(10),
        || {
            fleet
                .nodes
                .iter()
                .all(|n| limit(n)["ratelimit"] == "100/1s")
        },
    );
    fleet.nodes[2].cli_json(&["owners", "set", "acme", "--ratelimit", "1/1s", "--json"]);
    operator.publish(&owners_subject, &first);
    for node in &fleet.nodes {
        wait_applied(node, operator.last_seq());
        assert_eq!(limit(node)["ratelimit"], "1/1s");
        assert_eq!(common::fleet::fleet_status(node)["refused_messages"], 2);
    }
    wait_converged(&fleet.nodes);
}

/// Someone with NATS access publishes junk on a key's subject, then deletes it: the nodes
/// read it (and refused it), the stream no longer holds it. Every node must still be able
/// to change the key, and every node must apply the change, including one that was down
/// while it happened.
#[test]
fn junk_published_then_deleted_neither_freezes_a_key_nor_splits_the_fleet() {
    let mut fleet = Fleet::start(3);
    let operator = Operator::connect(&fleet.nats, &fleet.name);
    let (id, token) = fleet.nodes[0].create("K", "read", &[]);
    for node in &fleet.nodes {
        wait_code(node, &token, VerifyCode::Valid);
    }
    fleet.nodes[2].stop();
    let subject = format!("authenta.{}.key.{id}", fleet.name);
    operator.publish(&subject, b"junk");
    let junk = operator.last_seq();
    for node in &fleet.nodes[..2] {
        wait_applied(node, junk);
    }
    operator.delete(junk);
    fleet.nodes[2].restart();
    wait_joined(&fleet.nodes[2]);
    let renamed = fleet.nodes[1].cli(&["keys", "update", &id, "--name", "Renamed"]);
    assert!(renamed.status.success(), "{renamed:?}");
    wait_until("the rename everywhere", Duration::from_secs(10), || {
        fleet.nodes.iter().all(|n| n.show(&id)["name"] == "Renamed")
    });
    // The node that missed the junk revokes: every node applies it.
    common::fleet::revoke_everywhere(&fleet, 2, &id, &token);
}

/// Someone with NATS access puts junk on the data key's subject: taken as the fleet's data
/// key, it would stop every node from starting ("master key does not open").
#[test]
fn junk_on_the_data_keys_subject_does_not_stop_nodes_from_joining() {
    let mut fleet = Fleet::start(1);
    let (_, token) = fleet.nodes[0].create("K", "read", &[]);
    let operator = Operator::connect(&fleet.nats, &fleet.name);
    operator.publish(
        &format!("authenta.{}.datakey", fleet.name),
        b"not a data key anyone wrapped",
    );
    fleet.nodes[0].stop();
    fleet.nodes[0].restart();
    wait_joined(&fleet.nodes[0]);
    let fresh = common::Daemon::start_with_config(Some(&config(&fleet.nats, &fleet.name, "b")));
    wait_joined(&fresh);
    wait_code(&fresh, &token, VerifyCode::Valid);
    for node in [&fleet.nodes[0], &fresh] {
        assert_eq!(common::fleet::fleet_status(node)["refused_messages"], 1);
        assert!(node.log().contains("does not open"), "{}", node.log());
    }
}

/// The same, with the real data key deleted first: only junk is left where it was. A node
/// that kept the key puts it back on top, and nodes that never saw it can join again.
#[test]
fn a_node_puts_the_data_key_back_over_junk() {
    let mut fleet = Fleet::start(1);
    let (_, token) = fleet.nodes[0].create("K", "read", &[]);
    let operator = Operator::connect(&fleet.nats, &fleet.name);
    let subject = format!("authenta.{}.datakey", fleet.name);
    let (real, _) = operator.last_on(&subject);
    operator.publish(&subject, b"not a data key anyone wrapped");
    let junk = operator.last_seq();
    operator.delete(real);
    fleet.nodes[0].stop();
    fleet.nodes[0].restart();
    wait_joined(&fleet.nodes[0]);
    assert!(
        operator.last_on(&subject).0 > junk,
        "put back on top of the junk"
    );
    let fresh = common::Daemon::start_with_config(Some(&config(&fleet.nats, &fleet.name, "b")));
    wait_joined(&fresh);
    wait_code(&fresh, &token, VerifyCode::Valid);
}

fn wait_applied(node: &common::Daemon, seq: u64) {
    wait_until("the stream applied", Duration::from_secs(10), || {
        common::fleet::fleet_status(node)["applied_seq"].as_u64() >= Some(seq)
    });
}

/// Forwards one TCP connection at a time to `target`, recording every byte both ways.
fn recording_proxy(target: u16) -> (u16, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
    let port = listener.local_addr().expect("addr").port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                continue;
            };
            for (mut from, mut to) in [
                (
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                ),
                (server, client),
            ] {
                let record = record.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16 * 1024];
                    while let Ok(n) = from.read(&mut buf) {
                        if n == 0 || to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        record.lock().expect("lock").extend_from_slice(&buf[..n]);
                    }
                });
            }
        }
    });
    (port, seen)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn nats_stores_and_carries_no_token_name_or_master_key() {
    let fleet = Fleet::start(1);
    let (proxy, traffic) = recording_proxy(fleet.nats.client_ports[0]);
    let text = config(&fleet.nats, &fleet.name, "b").replace(
        &fleet.nats.servers_toml(),
        &format!("[\"nats://127.0.0.1:{proxy}\"]"),
    );
    let b = common::Daemon::start_with_config(Some(&text));
    wait_joined(&b);
    let mut secrets: Vec<Vec<u8>> = Vec::new();
    for n in 0..5 {
        let name = format!("Very-Secret-Service-Name-{n}");
        let (id, token) = b.create(&name, "read,write", &["--environment", "production"]);
        let regenerated = b.cli_json(&["keys", "regenerate", &id, "--json"]);
        secrets.push(name.into_bytes());
        secrets.push(token.clone().into_bytes());
        secrets.push(token.as_bytes()[4..20].to_vec());
        secrets.push(
            regenerated["token"]
                .as_str()
                .expect("token")
                .as_bytes()
                .to_vec(),
        );
        wait_code(&fleet.nodes[0], &token, VerifyCode::Revoked);
    }
    secrets.push(common::MASTER_HEX.as_bytes().to_vec());
    secrets.push(hex_decode(common::MASTER_HEX));
    let captured = traffic.lock().expect("lock").clone();
    assert!(captured.len() > 1000, "the proxy saw the traffic");
    let mut stored = Vec::new();
    for i in 0..3 {
        collect_files(&fleet.nats.store_dir(i), &mut stored);
    }
    assert!(!stored.is_empty(), "NATS stored the stream");
    for secret in &secrets {
        assert!(!contains(&captured, secret), "a secret crossed the wire");
        assert!(
            !stored.iter().any(|f| contains(f, secret)),
            "a secret is in NATS's store"
        );
    }
}

fn hex_decode(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

fn collect_files(dir: &std::path::Path, out: &mut Vec<Vec<u8>>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_files(&path, out);
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.push(bytes);
        }
    }
}
