//! A store written by version 0.1 (protocol 1, schema 1 to 3) opens under this version with
//! every key and its usage: rows sealed in the old record forms are read through them
//! (`store::legacy`), and the schema gains the owners table.

mod common;

use authenta_keyd::key::{Grace, KeyRecord, Permissions, UsageRecord};
use authenta_keyd::store::record_codec::{from_bytes, to_bytes};
use serde::Serialize;

/// `KeyRecord` as 0.1 sealed it: the same fields, without `details`.
#[derive(Serialize)]
struct KeyRecordV1<'a>(
    &'a str,
    [u8; 32],
    &'a str,
    &'a str,
    Permissions,
    Option<&'a str>,
    i64,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<&'a str>,
    Option<&'a Grace>,
);

/// `UsageRecord` as 0.1 sealed it: the counts, without `limits`.
#[derive(Serialize)]
struct UsageRecordV1(u64, u64, u64, Option<i64>);

/// Rewrites every key and usage row in its 0.1 form, and the schema back to 1 (before rows
/// were bound to the audit chain, so that the rewritten rows are bound as they are).
fn make_it_a_0_1_store(path: &std::path::Path) {
    let db = rusqlite::Connection::open(path).expect("open");
    let barrier = common::barrier(&db);
    let rows: Vec<(String, Vec<u8>, Vec<u8>)> = db
        .prepare("SELECT keys.id, keys.sealed, usage.sealed FROM keys JOIN usage USING (id)")
        .expect("prepare")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    for (id, sealed_key, sealed_usage) in rows {
        let plain = barrier.open("keys", &id, &sealed_key).expect("opens");
        let k: KeyRecord = from_bytes(&plain).expect("a key record");
        assert!(k.details.is_empty(), "a 0.1 key has no lifecycle fields");
        let old = KeyRecordV1(
            &k.id,
            k.token_hash,
            &k.name,
            &k.start,
            k.permissions,
            k.environment.as_deref(),
            k.created_at,
            k.rotated_at,
            k.expires_at,
            k.revoked_at,
            k.revoke_reason.as_deref(),
            k.grace.as_ref(),
        );
        let plain = barrier.open("usage", &id, &sealed_usage).expect("opens");
        let u: UsageRecord = from_bytes(&plain).expect("a usage record");
        let old_usage = UsageRecordV1(u.verifications, u.allowed, u.denied, u.last_used_at);
        db.execute(
            "UPDATE keys SET sealed = ?2 WHERE id = ?1",
            rusqlite::params![id, barrier.seal("keys", &id, &to_bytes(&old))],
        )
        .expect("key row");
        db.execute(
            "UPDATE usage SET sealed = ?2 WHERE id = ?1",
            rusqlite::params![id, barrier.seal("usage", &id, &to_bytes(&old_usage))],
        )
        .expect("usage row");
    }
    db.execute_batch(
        "DROP INDEX audit_by_key; ALTER TABLE audit DROP COLUMN row_digest;
         ALTER TABLE audit DROP COLUMN key_id; DROP TABLE fleet_keys; DROP TABLE owners;
         CREATE TABLE keys_v1 (id TEXT PRIMARY KEY, token_hash BLOB NOT NULL UNIQUE, sealed BLOB NOT NULL);
         INSERT INTO keys_v1 (rowid, id, token_hash, sealed)
             SELECT rowid, id, token_hash, sealed FROM keys;
         DROP TABLE keys; ALTER TABLE keys_v1 RENAME TO keys;
         PRAGMA user_version = 1;",
    )
    .expect("back to schema 1");
    common::relink_chain_as_0_1_did(&db, &barrier);
}

/// Each key's rowid, and how many indexes the keys table has.
fn key_rows(path: &std::path::Path) -> (Vec<(i64, String)>, i64) {
    let db = rusqlite::Connection::open(path).expect("open");
    let rows = db
        .prepare("SELECT rowid, id FROM keys ORDER BY rowid")
        .expect("prepare")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    let indexes = db
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND tbl_name = 'keys'",
            [],
            |r| r.get(0),
        )
        .expect("count");
    (rows, indexes)
}

#[test]
fn a_store_of_version_0_1_keeps_every_key_and_its_usage() {
    let mut daemon = common::Daemon::start();
    let (id, token) = daemon.create("Old", "read,write", &["--environment", "production"]);
    let (revoked, old_token) = daemon.create("Gone", "read", &[]);
    daemon.cli(&["keys", "revoke", &revoked]);
    for _ in 0..3 {
        assert_eq!(
            daemon.verify_code(&token, &["--permission", "write"]),
            "valid"
        );
    }
    daemon.stop();
    let db_file = daemon.data_dir.join("keys.db");
    make_it_a_0_1_store(&db_file);
    let (rows, indexes) = key_rows(&db_file);
    assert_eq!(indexes, 2, "0.1 indexed ids and token hashes");
    daemon.restart();
    // Schema 5 copied the keys without the token hashes' index, each in its own row.
    assert_eq!(key_rows(&db_file), (rows, 1));
    assert_eq!(
        daemon.verify_code(&token, &["--permission", "write"]),
        "valid"
    );
    assert_eq!(daemon.verify_code(&old_token, &[]), "revoked");
    let key = daemon.show(&id);
    assert_eq!(key["usage"]["allowed"], 4, "{key}");
    assert_eq!(key["environment"], "production");
    let status = daemon.cli_json(&["status", "--json"]);
    assert_eq!(status["corrupt_keys"], serde_json::json!([]), "{status}");
    // And the upgraded key takes protocol 2's fields, in its new form from then on.
    daemon.cli_json(&[
        "keys",
        "update",
        &id,
        "--remaining",
        "1",
        "--owner",
        "acme",
        "--json",
    ]);
    daemon.stop();
    daemon.restart();
    let (_, answer) = daemon.verify(&token, &[]);
    assert_eq!(
        (answer["owner_id"].as_str(), answer["remaining"].as_u64()),
        (Some("acme"), Some(0))
    );
}
