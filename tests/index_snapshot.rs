//! The index snapshot through the real binary: a clean stop writes it, the next start reads
//! it once instead of every row and answers the same; a snapshot that is tampered with,
//! older than the store, or beside a store written since is not used, and that start reads
//! and checks every row as without one.

mod common;

use common::Daemon;
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

const READ_FROM_SNAPSHOT: &str = "index read from the snapshot";
const NOT_USED: &str = "does not copy the store as it is";

fn snapshot(daemon: &Daemon) -> PathBuf {
    daemon.data_dir.join("index.snapshot")
}

fn times_in_log(daemon: &Daemon, what: &str) -> usize {
    daemon.log().matches(what).count()
}

/// Every key as listed, sorted by id, with what a restart must keep.
fn listed(daemon: &Daemon) -> Vec<Value> {
    let mut keys: Vec<Value> = daemon
        .cli_json(&["keys", "list", "--json"])
        .as_array()
        .expect("an array")
        .clone();
    keys.sort_by_key(|k| k["id"].as_str().unwrap_or_default().to_owned());
    keys
}

fn remaining(answer: &Value) -> i64 {
    answer["remaining"].as_i64().unwrap_or(-1)
}

#[test]
fn a_clean_stop_writes_a_snapshot_that_the_next_start_reads_once_and_answers_the_same() {
    let mut daemon = Daemon::start();
    assert!(daemon
        .cli(&["owners", "set", "acme", "--remaining", "100"])
        .status
        .success());
    let (_, plain) = daemon.create("Plain", "read", &["--environment", "production"]);
    let (_, metered) = daemon.create(
        "Metered",
        "read,write",
        &[
            "--owner",
            "acme",
            "--remaining",
            "10",
            "--ratelimit",
            "50/1h",
            "--meta",
            "plan=pro",
        ],
    );
    let (revoked_id, revoked) = daemon.create("Revoked", "read", &[]);
    let (rotated_id, old_token) = daemon.create("Rotated", "read", &[]);
    assert!(daemon
        .cli(&["keys", "revoke", &revoked_id])
        .status
        .success());
    let new_token = daemon.cli_json(&["keys", "regenerate", &rotated_id, "--json"])["token"]
        .as_str()
        .expect("token")
        .to_owned();
    for _ in 0..3 {
        daemon.verify(&metered, &["--permission", "read"]);
        daemon.verify(&plain, &[]);
    }
    let before = listed(&daemon);

    assert!(daemon.stop().success());
    let mode = std::fs::metadata(snapshot(&daemon))
        .expect("a clean stop leaves a snapshot")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the snapshot is the daemon's alone");
    daemon.restart();

    assert_eq!(
        times_in_log(&daemon, READ_FROM_SNAPSHOT),
        1,
        "{}",
        daemon.log()
    );
    assert!(
        !snapshot(&daemon).exists(),
        "a snapshot is read once: it is gone while the daemon runs"
    );
    assert_eq!(listed(&daemon), before, "keys, usage and limits as before");
    let (_, answer) = daemon.verify(&metered, &["--permission", "read"]);
    assert_eq!(answer["code"], "valid", "{answer}");
    assert_eq!(
        remaining(&answer),
        6,
        "credits go on from where they stood: {answer}"
    );
    assert_eq!(answer["owner_id"], "acme");
    assert_eq!(answer["meta"]["plan"], "pro");
    assert_eq!(answer["ratelimit"]["remaining"], 46, "{answer}");
    assert_eq!(daemon.verify_code(&plain, &[]), "valid");
    assert_eq!(daemon.verify_code(&revoked, &[]), "revoked");
    assert_eq!(daemon.verify_code(&old_token, &[]), "revoked");
    assert_eq!(daemon.verify_code(&new_token, &[]), "valid");
    let owner = daemon.cli_json(&["owners", "show", "acme", "--json"]);
    assert_eq!(owner["remaining"], 96, "{owner}");
    assert_eq!(daemon.key_count(), 4);
}

#[test]
fn a_snapshot_changed_on_disk_is_not_used_and_every_row_is_read() {
    let mut daemon = Daemon::start();
    let (_, token) = daemon.create("Kept", "read", &[]);
    assert!(daemon.stop().success());
    let mut bytes = std::fs::read(snapshot(&daemon)).expect("snapshot");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(snapshot(&daemon), &bytes).expect("write it back");

    daemon.restart();
    assert_eq!(times_in_log(&daemon, READ_FROM_SNAPSHOT), 0);
    assert!(daemon.log().contains(NOT_USED), "{}", daemon.log());
    assert!(!snapshot(&daemon).exists(), "not read twice");
    assert_eq!(daemon.verify_code(&token, &[]), "valid");
}

#[test]
fn a_row_tampered_with_while_stopped_is_refused_although_a_snapshot_was_written() {
    let mut daemon = Daemon::start();
    let (bad_id, bad_token) = daemon.create("Tampered", "read", &[]);
    let (_, good_token) = daemon.create("Intact", "read", &[]);
    assert!(daemon.stop().success());
    assert!(snapshot(&daemon).exists());
    common::flip_a_bit_of_the_row(&daemon, "keys", &bad_id);

    daemon.restart();
    assert!(
        daemon.log().contains("the database file was written since"),
        "{}",
        daemon.log()
    );
    let (code, answer) = daemon.verify(&bad_token, &[]);
    assert_eq!(code, 41, "the tampered key never verifies: {answer}");
    assert_eq!(daemon.verify_code(&good_token, &[]), "valid");
    let status = daemon.cli_json(&["status", "--json"]);
    assert_eq!(status["corrupt_keys"], serde_json::json!([bad_id]));

    // The refusal outlives a clean restart through the next snapshot.
    assert!(daemon.stop().success());
    daemon.restart();
    assert_eq!(times_in_log(&daemon, READ_FROM_SNAPSHOT), 1);
    let status = daemon.cli_json(&["status", "--json"]);
    assert_eq!(status["corrupt_keys"], serde_json::json!([bad_id]));
    assert_eq!(daemon.verify(&bad_token, &[]).0, 41);
}

/// An older snapshot put back gives nothing back: neither keys changed since (the audit
/// chain moved on) nor credits spent since (no audited change, but each start removes the
/// token the stop before committed, and the usage written since changed the file).
#[test]
fn an_older_snapshot_put_back_is_not_used() {
    let mut daemon = Daemon::start();
    let (_, metered) = daemon.create("Metered", "read", &["--remaining", "10"]);
    assert!(daemon.stop().success());
    let older = std::fs::read(snapshot(&daemon)).expect("snapshot");

    daemon.restart();
    for _ in 0..4 {
        daemon.verify(&metered, &[]);
    }
    assert!(daemon.stop().success());
    std::fs::write(snapshot(&daemon), &older).expect("put the older one back");
    daemon.restart();
    assert_eq!(
        times_in_log(&daemon, READ_FROM_SNAPSHOT),
        1,
        "only the first restart"
    );
    assert!(
        daemon.log().contains("not the one the last stop wrote"),
        "{}",
        daemon.log()
    );
    let (_, answer) = daemon.verify(&metered, &[]);
    assert_eq!(remaining(&answer), 5, "spent credits stay spent: {answer}");

    let (_, later) = daemon.create("Later", "read", &[]);
    assert!(daemon.stop().success());
    std::fs::write(snapshot(&daemon), &older).expect("put the older one back");
    daemon.restart();
    assert!(
        daemon.log().contains("the audit chain moved on"),
        "{}",
        daemon.log()
    );
    assert_eq!(daemon.verify_code(&later, &[]), "valid");
}

#[test]
fn a_kill_9_leaves_no_snapshot_and_the_next_start_reads_every_row() {
    let mut daemon = Daemon::start();
    let (_, token) = daemon.create("Before", "read", &[]);
    assert!(daemon.stop().success());
    daemon.restart();
    let (_, after) = daemon.create("After", "read", &[]);
    daemon.kill9();
    assert!(!snapshot(&daemon).exists(), "only a clean stop writes one");
    daemon.restart();
    assert_eq!(
        times_in_log(&daemon, READ_FROM_SNAPSHOT),
        1,
        "the first restart only"
    );
    assert_eq!(daemon.verify_code(&token, &[]), "valid");
    assert_eq!(daemon.verify_code(&after, &[]), "valid");
}

#[test]
fn a_snapshot_others_may_write_is_not_used() {
    let mut daemon = Daemon::start();
    let (_, token) = daemon.create("Kept", "read", &[]);
    assert!(daemon.stop().success());
    std::fs::set_permissions(snapshot(&daemon), std::fs::Permissions::from_mode(0o666))
        .expect("chmod");
    daemon.restart();
    assert_eq!(times_in_log(&daemon, READ_FROM_SNAPSHOT), 0);
    assert!(
        daemon.log().contains("only that user may write"),
        "{}",
        daemon.log()
    );
    assert_eq!(daemon.verify_code(&token, &[]), "valid");
}

/// Rows are checked when the daemon starts; a row changed through SQLite while it runs
/// would otherwise first be checked at the start after the next crash.
#[test]
fn a_store_written_by_another_connection_while_the_daemon_ran_gets_no_snapshot() {
    let mut daemon = Daemon::start();
    let (bad_id, bad_token) = daemon.create("Tampered", "read", &[]);
    let (_, good_token) = daemon.create("Intact", "read", &[]);
    // Through SQLite, while the daemon runs.
    common::flip_a_bit_of_the_row(&daemon, "keys", &bad_id);

    assert!(daemon.stop().success());
    assert!(!snapshot(&daemon).exists(), "{}", daemon.log());
    assert!(
        daemon
            .log()
            .contains("another connection committed to the store while the daemon ran"),
        "{}",
        daemon.log()
    );
    daemon.restart();
    assert_eq!(times_in_log(&daemon, READ_FROM_SNAPSHOT), 0);
    assert_eq!(
        daemon.verify(&bad_token, &[]).0,
        41,
        "refused at this start"
    );
    assert_eq!(daemon.verify_code(&good_token, &[]), "valid");
}

/// A WAL found beside the store is replayed by SQLite as it opens: whatever it held is in
/// what the daemon reads, so the snapshot, which copies the file alone, is not used.
#[test]
fn a_wal_put_beside_a_stopped_store_keeps_the_snapshot_from_being_used() {
    let mut daemon = Daemon::start();
    let (_, token) = daemon.create("Kept", "read", &[]);
    assert!(daemon.stop().success());
    std::fs::write(
        daemon.data_dir.join("keys.db-wal"),
        b"not a WAL SQLite wrote",
    )
    .expect("write a WAL");
    daemon.restart();
    assert_eq!(times_in_log(&daemon, READ_FROM_SNAPSHOT), 0);
    assert!(
        daemon.log().contains("the database file was written since"),
        "{}",
        daemon.log()
    );
    assert_eq!(daemon.verify_code(&token, &[]), "valid");
}

/// A store file replaced while the daemon runs is not the one the daemon wrote: the stop
/// writes no snapshot of it, and the next start reads the file that is there.
#[test]
fn a_store_file_replaced_while_the_daemon_ran_gets_no_snapshot() {
    let mut daemon = Daemon::start();
    let (_, token) = daemon.create("Kept", "read", &[]);
    common::replace_store_with_a_copy(&daemon);

    assert!(daemon.stop().success());
    assert!(!snapshot(&daemon).exists(), "{}", daemon.log());
    assert!(
        daemon.log().contains("cannot write the index snapshot"),
        "{}",
        daemon.log()
    );
    daemon.restart();
    assert_eq!(times_in_log(&daemon, READ_FROM_SNAPSHOT), 0);
    assert_eq!(daemon.verify_code(&token, &[]), "valid");
}
