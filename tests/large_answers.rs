//! Answers that grow with the store: `keys list` and `audit`. A host accumulates keys, and
//! the audit log only ever grows (every create, regenerate and revoke appends), so both
//! must keep working long after the first few hundred changes.
//!
//! `keys_list_shows_every_key_of_a_large_store` lists 600 keys, through the client library
//! and through the CLI; `audit_verify_works_on_a_long_log` runs `audit --verify` over a log
//! of 900 entries (300 creates, then two regenerates of every key). Answers this large come
//! near or past the 64 KiB frame limit (the limit itself is tested in `tests/wire.rs`), and
//! every key and every entry must still arrive, with the chain intact.

mod common;

use authenta_client::proto::{CreateKey, RequestBody, ResponseBody};
use authenta_client::{Client, Permission};
use common::Daemon;

/// Creates `count` keys, pipelined in batches (one group commit each), and returns their ids.
fn create_keys(client: &mut Client, count: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(count);
    while ids.len() < count {
        let batch = (count - ids.len()).min(100);
        let requests = (0..batch)
            .map(|i| {
                RequestBody::CreateKey(CreateKey {
                    name: format!("Service-Key-{}", ids.len() + i),
                    permissions: vec![Permission::Read],
                    environment: Some("production".into()),
                    expires_in_secs: None,
                    ..Default::default()
                })
            })
            .collect();
        for answer in client.call_many(requests).expect("create batch") {
            match answer {
                ResponseBody::Created(new) => ids.push(new.key.id),
                other => panic!("create answered {other:?}"),
            }
        }
    }
    ids
}

#[test]
fn keys_list_shows_every_key_of_a_large_store() {
    let daemon = Daemon::start();
    let mut client = Client::connect(&daemon.socket).expect("connect");
    let ids = create_keys(&mut client, 600);

    let listed = client.list_keys().expect("list of 600 keys");
    assert_eq!(listed.len(), ids.len());
    let listed = daemon.cli_json(&["keys", "list", "--json"]);
    assert_eq!(listed.as_array().map(Vec::len), Some(ids.len()));
}

#[test]
fn audit_verify_works_on_a_long_log() {
    let daemon = Daemon::start();
    let mut client = Client::connect(&daemon.socket).expect("connect");
    let ids = create_keys(&mut client, 300);
    for round in 0..2 {
        let requests = ids
            .iter()
            .map(|id| RequestBody::Regenerate {
                id: id.clone(),
                grace_secs: Some(0),
                expires_in_secs: None,
            })
            .collect();
        for answer in client.call_many(requests).expect("regenerate batch") {
            assert!(
                matches!(answer, ResponseBody::Created(_)),
                "round {round}: regenerate answered {answer:?}"
            );
        }
    }

    let out = daemon.cli(&["audit", "--verify", "--json"]);
    assert!(
        out.status.success(),
        "`audit --verify` over 900 entries failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report["chain"]["ok"], true, "{report}");
    assert_eq!(report["entries"].as_array().map(Vec::len), Some(900));
}
