//! The encrypted store through the real binary: restarts keep everything, a wrong master key
//! refuses to start, no secret reaches the data directory, a tampered row fails closed.

mod common;

use authenta_client::proto::{RequestBody, ResponseBody, VerifyRequest};
use authenta_client::Permission;
use common::{contains, wait_for, Daemon, MASTER_HEX};
use std::time::{Duration, Instant};

fn key_view(daemon: &Daemon) -> Vec<serde_json::Value> {
    let mut keys: Vec<_> = daemon
        .cli_json(&["keys", "list", "--json"])
        .as_array()
        .expect("array")
        .iter()
        .map(|k| {
            serde_json::json!({
                "id": k["id"], "name": k["name"], "state": k["state"], "usage": k["usage"],
                "last_used_at": k["last_used_at"], "permissions": k["permissions"],
                "environment": k["environment"], "created_at": k["created_at"],
                "rotated_at": k["rotated_at"], "start": k["start"],
            })
        })
        .collect();
    keys.sort_by_key(|k| k["id"].as_str().unwrap_or_default().to_owned());
    keys
}

#[test]
fn restart_keeps_every_key_state_and_usage_count() {
    let mut daemon = Daemon::start();
    let (a, token_a) = daemon.create("Alpha", "read,write", &["--environment", "production"]);
    let (b, token_b) = daemon.create("Bravo", "read", &[]);
    let (c, old_c) = daemon.create("Charlie", "delete", &[]);
    for _ in 0..5 {
        daemon.verify(&token_a, &["--permission", "read"]);
    }
    daemon.verify(&token_b, &["--permission", "write"]);
    assert!(daemon.cli(&["keys", "revoke", &b]).status.success());
    let new_c = daemon.cli_json(&["keys", "regenerate", &c, "--json"])["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let before = key_view(&daemon);

    assert!(daemon.stop().success());
    daemon.restart();

    assert_eq!(
        key_view(&daemon),
        before,
        "keys, states and usage survive a restart"
    );
    assert_eq!(
        daemon.verify_code(&token_a, &["--permission", "write"]),
        "valid"
    );
    assert_eq!(daemon.verify_code(&token_b, &[]), "revoked");
    assert_eq!(daemon.verify_code(&old_c, &[]), "revoked");
    assert_eq!(
        daemon.verify_code(&new_c, &["--permission", "delete"]),
        "valid"
    );
    let shown = daemon.show(&a);
    assert_eq!(shown["usage"]["verifications"], 6);
    let audit = daemon.cli_json(&["audit", "--verify", "--json"]);
    assert_eq!(audit["chain"]["ok"], true, "{audit}");
    assert_eq!(audit["entries"].as_array().expect("entries").len(), 5);
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    let mut daemon = Daemon::start();
    let (id, token) = daemon.create("Durable", "read", &[]);
    let (revoked, revoked_token) = daemon.create("Gone", "read", &[]);
    assert!(daemon.cli(&["keys", "revoke", &revoked]).status.success());
    daemon.kill9();
    daemon.restart();
    assert_eq!(daemon.verify_code(&token, &[]), "valid");
    assert_eq!(daemon.verify_code(&revoked_token, &[]), "revoked");
    assert_eq!(daemon.show(&id)["state"], "active");
}

/// SQLite goes on writing the WAL it has open after the file is removed from the data
/// directory, into a file that a crash loses: the daemon acknowledged changes that `kill -9`
/// then took back, those made before the removal too. Now the next commit, health check or
/// periodic look (every 5 s) copies the WAL into the database file.
#[test]
fn a_wal_removed_under_the_daemon_loses_no_acknowledged_change() {
    let mut daemon = Daemon::start();
    let (_, before) = daemon.create("Before", "read", &[]);
    std::fs::remove_file(daemon.data_dir.join("keys.db-wal")).expect("WAL removed");
    wait_for("the periodic look", || {
        daemon.log().contains("was copied into the database file")
    });
    daemon.kill9();
    daemon.restart();
    assert_eq!(
        daemon.verify_code(&before, &[]),
        "valid",
        "{}",
        daemon.log()
    );

    std::fs::remove_file(daemon.data_dir.join("keys.db-wal")).expect("WAL removed");
    let (_, after) = daemon.create("After", "read", &[]);
    let (_, later) = daemon.create("Later", "read", &[]);
    let log = daemon.log();
    daemon.kill9();
    daemon.restart();
    for (n, token) in [&before, &after, &later].into_iter().enumerate() {
        assert_eq!(daemon.verify_code(token, &[]), "valid", "key {n}\n{log}");
    }
    assert!(log.contains("keys.db-wal was removed or replaced while the daemon had it open"));
    let (_, restarted) = daemon.create("Restarted", "read", &[]);
    daemon.kill9();
    daemon.restart();
    assert_eq!(daemon.verify_code(&restarted, &[]), "valid");
    assert_eq!(daemon.key_count(), 4);
}

/// An older copy of the WAL put back in its place while the daemon runs would be replayed
/// over the database at the next start, taking back a revoke; it is set aside instead.
#[test]
fn an_older_wal_put_back_under_the_daemon_is_set_aside() {
    let mut daemon = Daemon::start();
    let (id, token) = daemon.create("Revoked", "read", &[]);
    let wal = daemon.data_dir.join("keys.db-wal");
    let older = daemon.dir.path().join("older-wal");
    std::fs::copy(&wal, &older).expect("copied");
    assert!(daemon.cli(&["keys", "revoke", &id]).status.success());
    std::fs::rename(&older, &wal).expect("put back");
    daemon.create("Next", "read", &[]);
    daemon.kill9();
    daemon.restart();
    assert_eq!(daemon.verify_code(&token, &[]), "revoked");
    assert_eq!(daemon.key_count(), 2);
    let aside = std::fs::read_dir(&daemon.data_dir)
        .expect("listed")
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("keys.db-wal.foreign-")
        })
        .count();
    assert_eq!(aside, 1);
}

/// A backup moved over the store while the daemon runs (the restore steps say to stop it
/// first): SQLite goes on writing the file it has open, which vanishes at the stop, so the
/// daemon acknowledged changes that the next start did not have. Now it refuses them.
#[test]
fn a_store_file_replaced_under_the_daemon_refuses_changes_instead_of_losing_them() {
    let mut daemon = Daemon::start();
    let (_, before) = daemon.create("Before", "read", &[]);
    common::replace_store_with_a_copy(&daemon);
    let refused = daemon.cli(&["keys", "create", "--name", "After", "--permissions", "read"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "acknowledged: {stderr}");
    assert!(
        stderr.contains("keys.db was removed or replaced"),
        "{stderr}"
    );
    assert!(stderr.contains("put the store back"), "{stderr}");
    assert_eq!(daemon.verify_code(&before, &[]), "valid", "verify goes on");
    let health = daemon.cli(&["health"]);
    assert_eq!(health.status.code(), Some(1), "not ready");
    assert!(String::from_utf8_lossy(&health.stdout).contains("keys.db was removed or replaced"));
    assert!(daemon.stop().success());
    daemon.restart();
    assert_eq!(daemon.key_count(), 1);
    daemon.create("Restarted", "read", &[]);
}

#[test]
fn usage_is_flushed_periodically_without_a_clean_stop() {
    let mut daemon = Daemon::start_with_config(Some("usage_flush_interval = \"200ms\"\n"));
    let (id, token) = daemon.create("Counted", "read", &[]);
    for _ in 0..3 {
        daemon.verify(&token, &[]);
    }
    std::thread::sleep(Duration::from_millis(800));
    daemon.kill9();
    daemon.restart();
    assert_eq!(daemon.show(&id)["usage"]["verifications"], 3);
}

#[test]
fn a_wrong_master_key_refuses_to_start_and_says_so() {
    let mut daemon = Daemon::start();
    daemon.create("Alpha", "read", &[]);
    assert!(daemon.stop().success());

    let wrong = daemon.dir.path().join("wrong.hex");
    std::fs::write(&wrong, "ff".repeat(32)).expect("write");
    let started = Instant::now();
    let out = daemon.serve_command(&wrong).output().expect("run serve");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("master key"),
        "message names the master key: {stderr}"
    );
    assert!(!contains(&out.stderr, "ff".repeat(32).as_bytes()));

    let malformed = daemon.dir.path().join("short.hex");
    std::fs::write(&malformed, "abc").expect("write");
    assert!(daemon
        .serve_refused(&malformed)
        .contains("32 raw bytes or 64 hex digits"));

    // The right key still opens it.
    daemon.restart();
    assert_eq!(daemon.key_count(), 1);
}

#[test]
fn raw_32_byte_master_key_files_work() {
    let dir = tempfile::tempdir().expect("tmp");
    let key = dir.path().join("raw.key");
    std::fs::write(&key, [0x5au8; 32]).expect("write");
    let socket = dir.path().join("k.sock");
    let mut child = common::serve_at(dir.path(), &socket, &key)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(10);
    while authenta_client::Client::connect(&socket).is_err() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(authenta_client::Client::connect(&socket).is_ok());
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn no_token_name_or_master_key_reaches_the_data_directory() {
    let mut daemon = Daemon::start();
    let names = ["Zebra-Pipeline-Name-7781", "Quokka-Backend-Secretname"];
    let mut tokens = Vec::new();
    for name in names {
        let (id, token) = daemon.create(name, "read,write", &["--environment", "production"]);
        daemon.verify(&token, &["--permission", "read"]);
        tokens.push(token);
        let regenerated = daemon.cli_json(&["keys", "regenerate", &id, "--grace", "1h", "--json"]);
        tokens.push(regenerated["token"].as_str().expect("token").to_owned());
    }
    // Check once while running (WAL and shared memory in use), once after a clean stop.
    for round in ["running", "stopped"] {
        if round == "stopped" {
            assert!(daemon.stop().success());
        }
        let files = daemon.data_dir_bytes();
        assert!(files.iter().any(|(p, _)| p.ends_with("keys.db")));
        let master_raw = hex::decode(MASTER_HEX).expect("hex");
        for (path, bytes) in &files {
            for token in &tokens {
                assert!(
                    !contains(bytes, token.as_bytes()),
                    "{round}: token in {path:?}"
                );
                assert!(
                    !contains(bytes, &token.as_bytes()[4..20]),
                    "{round}: token part in {path:?}"
                );
            }
            for name in names {
                assert!(
                    !contains(bytes, name.as_bytes()),
                    "{round}: name in {path:?}"
                );
            }
            assert!(
                !contains(bytes, MASTER_HEX.as_bytes()),
                "{round}: master key in {path:?}"
            );
            assert!(
                !contains(bytes, &master_raw),
                "{round}: raw master key in {path:?}"
            );
        }
    }
    let log = daemon.log();
    for token in &tokens {
        assert!(!log.contains(token.as_str()), "token in the log");
    }
    for name in names {
        assert!(!log.contains(name), "name in the log");
    }
    assert!(!log.contains(MASTER_HEX), "master key in the log");
}

/// SQLite spills a statement's rollback journal past 64 KiB to a file in its temporary
/// directory (`SQLITE_TMPDIR`, `TMPDIR`, else `/var/tmp`): a batch of creates wrote pages of
/// the store into a directory shared with every local user, outside the data directory whose
/// owner and mode the daemon checks, and failed whenever that directory was full or
/// unwritable. Everything the daemon writes stays in the data directory.
#[test]
fn nothing_is_written_outside_the_data_directory() {
    use notify::{RecursiveMode, Watcher};
    let temp = tempfile::tempdir().expect("temp dir");
    let (tx, rx) = std::sync::mpsc::channel();
    let mut watcher = notify::recommended_watcher(tx).expect("watcher");
    watcher
        .watch(temp.path(), RecursiveMode::Recursive)
        .expect("watch the temporary directory");
    let mut daemon =
        Daemon::start_with_env(&[("SQLITE_TMPDIR", temp.path()), ("TMPDIR", temp.path())]);
    let mut client = authenta_client::Client::connect(&daemon.socket).expect("connect");
    let tokens: Vec<String> = common::create_pipelined(&mut client, 2_000)
        .into_iter()
        .map(|(_, token)| token)
        .collect();
    // One verify of every key: the usage flush at stop then writes 1,024 usage rows in one
    // change, which is what filled SQLite's journal past 64 KiB.
    for chunk in tokens.chunks(100) {
        let requests = chunk
            .iter()
            .map(|token| {
                RequestBody::Verify(VerifyRequest {
                    token: token.to_string(),
                    permissions: vec![Permission::Read],
                    environment: None,
                    cost: None,
                })
            })
            .collect();
        for answer in client.call_many(requests).expect("a batch of verifies") {
            assert!(matches!(answer, ResponseBody::Verify(_)), "{answer:?}");
        }
    }
    assert!(daemon.stop().success());
    daemon.restart();
    assert_eq!(daemon.key_count(), 2_000);
    drop(watcher);
    let events: Vec<_> = rx.try_iter().collect();
    assert!(
        events.is_empty(),
        "the daemon wrote in its temporary directory: {events:?}"
    );
}

#[test]
fn a_tampered_row_fails_closed_and_is_reported_by_id() {
    let mut daemon = Daemon::start();
    let (bad_id, bad_token) = daemon.create("Tampered", "read", &[]);
    let (good_id, good_token) = daemon.create("Intact", "read", &[]);
    assert!(daemon.stop().success());
    common::flip_a_bit_of_the_row(&daemon, "keys", &bad_id);
    daemon.restart();
    let (code, answer) = daemon.verify(&bad_token, &[]);
    assert_eq!(code, 41, "a tampered key never verifies: {answer}");
    assert_eq!(daemon.verify_code(&good_token, &[]), "valid");
    let status = daemon.cli_json(&["status", "--json"]);
    assert_eq!(status["corrupt_keys"], serde_json::json!([bad_id]));
    assert_eq!(status["corrupt_total"], 1);
    assert!(daemon.log().contains(&bad_id), "the log names the key");
    let ids: Vec<_> = daemon
        .cli_json(&["keys", "list", "--json"])
        .as_array()
        .expect("a")
        .iter()
        .map(|k| k["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(ids, vec![good_id]);
}

/// Start-up reads the store file ahead through a descriptor of its own. Closing it dropped
/// every POSIX lock the daemon held on the file, SQLite's included: another process's
/// connection (here this test's, as a backup tool's would) then took itself for the last
/// one and, closing, checkpointed and deleted the WAL the daemon still wrote to. The next
/// acknowledged create went into the deleted file and was gone after a `kill -9`.
#[test]
fn another_process_reading_the_store_costs_the_daemon_no_writes() {
    let mut daemon = Daemon::start();
    daemon.create("Before", "read", &[]);
    assert!(daemon.stop().success());
    // A start from an existing store warms the page cache; give its threads time to end.
    daemon.restart();
    std::thread::sleep(std::time::Duration::from_millis(500));
    {
        let db = rusqlite::Connection::open(daemon.data_dir.join("keys.db")).expect("open");
        let keys: i64 = db
            .query_row("SELECT count(*) FROM keys", [], |r| r.get(0))
            .expect("count");
        assert_eq!(keys, 1);
    }
    let (id, token) = daemon.create("After", "read", &[]);
    daemon.kill9();
    daemon.restart();
    assert_eq!(
        daemon.verify_code(&token, &[]),
        "valid",
        "the create of {id} was acknowledged before the kill"
    );
}

/// The usage row is opened apart from the key row at start-up: one that does not open
/// refuses its key all the same.
#[test]
fn a_tampered_usage_row_fails_closed_too() {
    let mut daemon = Daemon::start();
    let (bad_id, bad_token) = daemon.create("Tampered usage", "read", &[]);
    let (_, good_token) = daemon.create("Intact", "read", &[]);
    assert_eq!(daemon.verify_code(&bad_token, &[]), "valid");
    assert!(daemon.stop().success());
    common::flip_a_bit_of_the_row(&daemon, "usage", &bad_id);
    daemon.restart();
    assert_eq!(daemon.verify(&bad_token, &[]).0, 41, "refused");
    assert_eq!(daemon.verify_code(&good_token, &[]), "valid");
    let status = daemon.cli_json(&["status", "--json"]);
    assert_eq!(status["corrupt_keys"], serde_json::json!([bad_id]));
    assert!(daemon.log().contains("sealed usage row does not open"));
}

#[test]
fn swapped_rows_are_detected() {
    let mut daemon = Daemon::start();
    let (reader_id, reader_token) = daemon.create("Reader", "read", &[]);
    let (admin_id, admin_token) = daemon.create("Deleter", "read,write,delete", &[]);
    assert!(daemon.stop().success());
    {
        let db = rusqlite::Connection::open(daemon.data_dir.join("keys.db")).expect("open");
        // Point the reader's token at the deleter's sealed record.
        let admin_sealed: Vec<u8> = db
            .query_row("SELECT sealed FROM keys WHERE id = ?1", [&admin_id], |r| {
                r.get(0)
            })
            .expect("row");
        db.execute(
            "UPDATE keys SET sealed = ?1 WHERE id = ?2",
            rusqlite::params![admin_sealed, reader_id],
        )
        .expect("update");
    }
    daemon.restart();
    assert_eq!(
        daemon.verify(&reader_token, &["--permission", "delete"]).0,
        41
    );
    assert_eq!(
        daemon.verify_code(&admin_token, &["--permission", "delete"]),
        "valid"
    );
}

#[test]
fn a_store_from_a_newer_schema_is_refused() {
    let mut daemon = Daemon::start();
    assert!(daemon.stop().success());
    {
        let db = rusqlite::Connection::open(daemon.data_dir.join("keys.db")).expect("open");
        db.execute_batch("PRAGMA user_version = 99").expect("bump");
    }
    let stderr = daemon.serve_refused(&daemon.master_key);
    assert!(stderr.contains("schema version 99"), "{stderr}");
}

#[test]
fn status_gives_the_total_of_corrupt_keys_and_says_when_the_list_is_cut() {
    let mut daemon = Daemon::start();
    for n in 0..105 {
        daemon.create(&format!("K{n}"), "read", &[]);
    }
    assert!(daemon.stop().success());
    {
        let db = rusqlite::Connection::open(daemon.data_dir.join("keys.db")).expect("open");
        // A flipped last byte breaks every row's GCM tag.
        let rows: Vec<(String, Vec<u8>)> = db
            .prepare("SELECT id, sealed FROM keys")
            .expect("select")
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("rows")
            .collect::<Result<_, _>>()
            .expect("rows");
        for (id, mut sealed) in rows {
            let last = sealed.len() - 1;
            sealed[last] ^= 0x01;
            db.execute(
                "UPDATE keys SET sealed = ?1 WHERE id = ?2",
                rusqlite::params![sealed, id],
            )
            .expect("tamper");
        }
    }
    daemon.restart();
    let status = daemon.cli_json(&["status", "--json"]);
    assert_eq!(status["corrupt_total"], 105, "{status}");
    assert_eq!(status["corrupt_keys"].as_array().map(Vec::len), Some(100));
    let text = String::from_utf8_lossy(&daemon.cli(&["status"]).stdout).into_owned();
    assert!(
        text.contains("105 keys") && text.contains("the first 100 listed"),
        "{text}"
    );
}
