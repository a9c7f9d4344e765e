//! Trust boundaries against someone with write access to the data files but not the master
//! key: rows written back from an older copy, deleted rows, an emptied audit log, and a
//! store from before rows were bound to the audit chain.

mod common;

/// Someone with write access to the data files but not the master key deletes every audit
/// entry and the chain's sealed head, hoping the log then looks new.
#[test]
fn an_emptied_audit_log_is_reported_broken() {
    let mut daemon = common::Daemon::start();
    daemon.create("A", "read", &[]);
    daemon.create("B", "read", &[]);
    daemon.stop();
    let db = rusqlite::Connection::open(daemon.data_dir.join("keys.db")).expect("open");
    db.execute_batch("DELETE FROM audit; DELETE FROM meta WHERE name = 'audit_head';")
        .expect("empty the log");
    drop(db);
    daemon.restart();
    let out = daemon.cli(&["audit", "--verify"]);
    assert_eq!(
        out.status.code(),
        Some(65),
        "a broken chain fails the check (65: data error)"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("the log is empty but the store holds 2 keys"),
        "{stdout}"
    );
}

/// Someone with write access to the data files (not the master key) copies a key's sealed
/// row from an earlier copy of the store over the current one: the AAD matches (same key
/// id), so the row opened, and a revoked key came back `valid`, unnoticed.
#[test]
fn a_row_written_back_from_an_older_copy_or_deleted_is_caught() {
    let mut daemon = common::Daemon::start();
    let (replayed, token) = daemon.create("Revoked-Later", "read", &[]);
    let (deleted, _) = daemon.create("Deleted", "read", &[]);
    let (_, untouched) = daemon.create("Untouched", "read", &[]);
    daemon.stop();
    let db_path = daemon.data_dir.join("keys.db");
    let old: (Vec<u8>, Vec<u8>) = rusqlite::Connection::open(&db_path)
        .expect("open")
        .query_row(
            "SELECT token_hash, sealed FROM keys WHERE id = ?1",
            [&replayed],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .expect("the row as it was");
    daemon.restart();
    assert!(daemon.cli(&["keys", "revoke", &replayed]).status.success());
    daemon.stop();

    let db = rusqlite::Connection::open(&db_path).expect("open");
    db.execute(
        "UPDATE keys SET token_hash = ?1, sealed = ?2 WHERE id = ?3",
        rusqlite::params![old.0, old.1, replayed],
    )
    .expect("write the old row back");
    db.execute("DELETE FROM keys WHERE id = ?1", [&deleted])
        .expect("delete a row");
    drop(db);
    daemon.restart();

    assert_ne!(
        daemon.verify_code(&token, &[]),
        "valid",
        "the replayed row is refused"
    );
    let status = daemon.cli_json(&["status", "--json"]);
    let corrupt = status["corrupt_keys"].to_string();
    assert!(
        corrupt.contains(&replayed) && corrupt.contains(&deleted),
        "{status}"
    );
    let log = daemon.log();
    assert!(log.contains("written back from an older copy"), "{log}");
    assert!(
        log.contains("reading every row again to find which"),
        "the set of rows as a whole differed first: {log}"
    );
    let check = daemon.cli(&["audit", "--verify"]);
    assert_eq!(
        check.status.code(),
        Some(65),
        "audit --verify reports it too"
    );
    assert!(String::from_utf8_lossy(&check.stdout).contains("written back from an older copy"));
    // status shows when the newest entry was made, for noticing a store rolled back whole.
    assert!(status["newest_audit_at"].is_string(), "{status}");
    assert_eq!(
        daemon.verify_code(&untouched, &[]),
        "valid",
        "the other keys are served"
    );
}

/// A store from before rows were bound (schema 1) is upgraded without losing a key: its
/// rows are bound as they are, once.
#[test]
fn a_store_from_before_rows_were_bound_keeps_its_keys() {
    let mut daemon = common::Daemon::start();
    let (_, token) = daemon.create("Old", "read", &[]);
    daemon.stop();
    let db = rusqlite::Connection::open(daemon.data_dir.join("keys.db")).expect("open");
    db.execute_batch(
        "DROP INDEX audit_by_key; ALTER TABLE audit DROP COLUMN row_digest;
         ALTER TABLE audit DROP COLUMN key_id; DROP TABLE fleet_keys; DROP TABLE owners;
         PRAGMA user_version = 1;",
    )
    .expect("back to schema 1");
    common::relink_chain_as_0_1_did(&db, &common::barrier(&db));
    drop(db);
    daemon.restart();
    assert_eq!(daemon.verify_code(&token, &[]), "valid");
    assert!(daemon
        .log()
        .contains("bound every key row to the audit chain"));
    let status = daemon.cli_json(&["status", "--json"]);
    assert_eq!(status["corrupt_keys"], serde_json::json!([]), "{status}");
}

/// The digest start-up compares a key row with is a plaintext column of the audit table.
/// Someone with write access to the data files writes a revoked key's old row back and
/// puts that row's SHA-256 in the column of the key's last entry (the revoke): the row
/// matched, and the revoked key came back `valid`.
#[test]
fn a_row_written_back_with_its_audit_digest_edited_to_match_is_refused() {
    let mut daemon = common::Daemon::start();
    let (revoked, token, old_row) = revoked_with_its_old_row(&mut daemon);
    daemon.create("Other", "read", &[]);
    daemon.stop();

    let db = rusqlite::Connection::open(daemon.data_dir.join("keys.db")).expect("open");
    write_row_back(&db, &revoked, &old_row);
    point_last_entry_at(&db, &revoked, &old_row);
    drop(db);

    assert_refused_as_edited(&mut daemon, &token);
}

/// The same attack, with the revoke's entry deleted instead of edited: the key's last entry
/// is then its create, which bound the old row. Later entries keep the chain's head where
/// it was.
#[test]
fn a_row_written_back_with_its_revoke_deleted_from_the_audit_log_is_refused() {
    let mut daemon = common::Daemon::start();
    let (revoked, token, old_row) = revoked_with_its_old_row(&mut daemon);
    daemon.create("Created-After", "read", &[]);
    daemon.stop();

    let db = rusqlite::Connection::open(daemon.data_dir.join("keys.db")).expect("open");
    write_row_back(&db, &revoked, &old_row);
    let deleted = db
        .execute(
            "DELETE FROM audit WHERE seq = (SELECT max(seq) FROM audit WHERE key_id = ?1)",
            [&revoked],
        )
        .expect("delete the revoke's entry");
    assert_eq!(deleted, 1);
    drop(db);

    assert_refused_as_edited(&mut daemon, &token);
}

/// A store of schema 1 (version 0.1's) has its key rows bound to the audit chain as they
/// are when it is upgraded. Someone with write access to the data files writes a revoked
/// key's old row back and sets the store back to schema 1, deleting the chain's head too
/// in a second try: the old row was bound, and the revoked key came back `valid`.
#[test]
fn a_store_set_back_to_schema_1_to_bind_an_old_row_is_refused() {
    for delete_the_head in [false, true] {
        let mut daemon = common::Daemon::start();
        let (revoked, token, old_row) = revoked_with_its_old_row(&mut daemon);
        daemon.stop();

        let db = rusqlite::Connection::open(daemon.data_dir.join("keys.db")).expect("open");
        write_row_back(&db, &revoked, &old_row);
        db.execute_batch(
            "DROP INDEX audit_by_key; ALTER TABLE audit DROP COLUMN row_digest;
             ALTER TABLE audit DROP COLUMN key_id; DROP TABLE fleet_keys; DROP TABLE owners;
             PRAGMA user_version = 1;",
        )
        .expect("back to schema 1");
        if delete_the_head {
            db.execute("DELETE FROM meta WHERE name = 'audit_head'", [])
                .expect("delete the head");
        }
        drop(db);

        assert_refused(&mut daemon, &token, "it says schema 1");
    }
}

/// A head of the form stores had before it summed their entries is summed as the entries
/// stand, once. Someone with write access to the data files and an older copy (a backup
/// taken before the upgrade) puts that copy's head back, to have entries they edited
/// summed: refused, as the entries after that head no longer link up to it.
#[test]
fn a_head_of_the_older_form_put_back_does_not_launder_an_edited_entry() {
    let mut daemon = common::Daemon::start();
    let (revoked, token) = daemon.create("Revoked-Later", "read", &[]);
    daemon.stop();
    let db_path = daemon.data_dir.join("keys.db");
    let db = rusqlite::Connection::open(&db_path).expect("open");
    let head = |db: &rusqlite::Connection| -> Vec<u8> {
        db.query_row(
            "SELECT value FROM meta WHERE name = 'audit_head'",
            [],
            |r| r.get(0),
        )
        .expect("the head")
    };
    let current = head(&db);
    common::write_head_as_before_entry_sums(&db, &common::barrier(&db));
    let older_form = head(&db);
    db.execute(
        "UPDATE meta SET value = ?1 WHERE name = 'audit_head'",
        [&current],
    )
    .expect("the head as it was");
    let old_row: Vec<u8> = db
        .query_row("SELECT sealed FROM keys WHERE id = ?1", [&revoked], |r| {
            r.get(0)
        })
        .expect("the row as it is");
    drop(db);
    daemon.restart();
    assert!(daemon.cli(&["keys", "revoke", &revoked]).status.success());
    daemon.create("Created-After", "read", &[]);
    daemon.stop();

    let db = rusqlite::Connection::open(&db_path).expect("open");
    write_row_back(&db, &revoked, &old_row);
    point_last_entry_at(&db, &revoked, &old_row);
    db.execute(
        "UPDATE meta SET value = ?1 WHERE name = 'audit_head'",
        [&older_form],
    )
    .expect("put the older head back");
    drop(db);

    assert_refused_as_edited(&mut daemon, &token);
}

/// An older store's first start sums its entries once. Someone with write access to the
/// data files edits the index start-up reads (built without the revoke's entry, then
/// declared whole) and writes the revoked key's old row back before that start: the sum is
/// taken from the entries the chain check read, so the next reading through the index
/// misses one, and the store is refused.
#[test]
fn an_index_edited_before_an_older_store_is_summed_does_not_hide_an_entry() {
    let mut daemon = common::Daemon::start();
    let (revoked, token, old_row) = revoked_with_its_old_row(&mut daemon);
    daemon.stop();

    let db = rusqlite::Connection::open(daemon.data_dir.join("keys.db")).expect("open");
    common::write_head_as_before_entry_sums(&db, &common::barrier(&db));
    write_row_back(&db, &revoked, &old_row);
    let revoke_seq: i64 = db
        .query_row(
            "SELECT max(seq) FROM audit WHERE key_id = ?1",
            [&revoked],
            |r| r.get(0),
        )
        .expect("the revoke's entry");
    db.execute_batch(&format!(
        "DROP INDEX audit_by_key;
         CREATE INDEX audit_by_key ON audit (key_id, seq, row_digest) WHERE seq <> {revoke_seq};
         PRAGMA writable_schema = ON;
         UPDATE sqlite_schema
             SET sql = 'CREATE INDEX audit_by_key ON audit (key_id, seq, row_digest)'
             WHERE name = 'audit_by_key';
         PRAGMA writable_schema = OFF;"
    ))
    .expect("an index without the revoke");
    drop(db);

    assert_refused_as_edited(&mut daemon, &token);
}

/// Writes `row` back as key `id`'s sealed row, as someone with the data files could.
fn write_row_back(db: &rusqlite::Connection, id: &str, row: &[u8]) {
    let written = db
        .execute(
            "UPDATE keys SET sealed = ?1 WHERE id = ?2",
            rusqlite::params![row, id],
        )
        .expect("write the old row back");
    assert_eq!(written, 1);
}

/// Sets the row digest of key `id`'s last audit entry to the SHA-256 of `row`, so that the
/// entry names that row.
fn point_last_entry_at(db: &rusqlite::Connection, id: &str, row: &[u8]) {
    use sha2::Digest;
    let digest: [u8; 32] = sha2::Sha256::digest(row).into();
    let edited = db
        .execute(
            "UPDATE audit SET row_digest = ?1
             WHERE seq = (SELECT max(seq) FROM audit WHERE key_id = ?2)",
            rusqlite::params![digest.as_slice(), id],
        )
        .expect("edit the last entry's digest");
    assert_eq!(edited, 1);
}

/// A key created and then revoked: (id, token, its sealed row from before the revoke), the
/// row someone with an older copy of the data files could write back.
fn revoked_with_its_old_row(daemon: &mut common::Daemon) -> (String, String, Vec<u8>) {
    let (id, token) = daemon.create("Revoked-Later", "read", &[]);
    let old_row = sealed_row(daemon, &id);
    assert!(daemon.cli(&["keys", "revoke", &id]).status.success());
    (id, token, old_row)
}

/// The sealed row of key `id` as it is now (the daemon is stopped and started around it).
fn sealed_row(daemon: &mut common::Daemon, id: &str) -> Vec<u8> {
    daemon.stop();
    let row = rusqlite::Connection::open(daemon.data_dir.join("keys.db"))
        .expect("open")
        .query_row("SELECT sealed FROM keys WHERE id = ?1", [id], |row| {
            row.get(0)
        })
        .expect("the row as it is");
    daemon.restart();
    row
}

/// The daemon refuses to start on an audit log edited outside it, saying what to do, and
/// so never answers `valid` for `token`.
fn assert_refused_as_edited(daemon: &mut common::Daemon, token: &str) {
    assert_refused(
        daemon,
        token,
        "the audit log was changed outside the daemon",
    );
}

/// The daemon refuses to start, saying `why` and what to do, and so never answers `valid`
/// for `token`.
fn assert_refused(daemon: &mut common::Daemon, token: &str, why: &str) {
    if daemon.try_restart().is_ok() {
        let code = daemon.verify_code(token, &[]);
        panic!("the daemon started on the edited store; the revoked key answers {code}");
    }
    let log = daemon.log();
    assert!(log.contains(why), "{log}");
    assert!(log.contains("restore"), "says what to do: {log}");
    assert!(!log.contains(token), "{log}");
}

/// Someone with write access to the data files (not the master key) deletes a key's usage
/// row, or empties an owner's stored usage, to have spent credits and a used rate limit
/// come back full at the next start. The limits resume spent instead.
#[test]
fn limits_whose_stored_usage_is_removed_resume_spent() {
    let mut daemon = common::Daemon::start();
    let (key_id, key_token) = daemon.create("Limited", "read", &["--remaining", "3"]);
    let (reset_id, reset_token) = daemon.create("Reset", "read", &["--remaining", "3"]);
    let (rated_id, rated) = daemon.create("Rated", "read", &["--ratelimit", "2/1h"]);
    let owners = daemon.cli(&["owners", "set", "tenant-7", "--remaining", "2"]);
    assert!(owners.status.success(), "{owners:?}");
    let (_, shared) = daemon.create("Shared", "read", &["--owner", "tenant-7"]);
    for _ in 0..2 {
        for token in [&key_token, &reset_token, &rated, &shared] {
            assert_eq!(daemon.verify_code(token, &[]), "valid");
        }
    }
    assert!(daemon.stop().success());
    let db = rusqlite::Connection::open(daemon.data_dir.join("keys.db")).expect("open");
    for id in [&key_id, &reset_id] {
        db.execute("DELETE FROM usage WHERE id = ?1", [id])
            .expect("delete a key's usage row");
    }
    db.execute("DELETE FROM usage WHERE id = ?1", [&rated_id])
        .expect("delete a rate-limited key's usage row");
    db.execute_batch("UPDATE owners SET usage = NULL")
        .expect("empty the owner's usage");
    drop(db);
    daemon.restart();
    assert_eq!(daemon.verify_code(&key_token, &[]), "usage_exceeded");
    assert_eq!(daemon.verify_code(&rated, &[]), "rate_limited");
    assert_eq!(daemon.verify_code(&shared, &[]), "usage_exceeded");
    assert!(
        daemon.log().contains("usage row is missing"),
        "said in the log"
    );

    // The spent state is written back (a key whose row is missing is flushed even if no
    // verify touched it since), so an admin's reset holds across a restart.
    let reset = daemon.cli(&["keys", "update", &reset_id, "--remaining", "5"]);
    assert!(reset.status.success(), "{reset:?}");
    assert!(daemon.stop().success());
    daemon.restart();
    assert_eq!(
        daemon.verify_code(&reset_token, &[]),
        "valid",
        "the reset held"
    );
    assert_eq!(
        daemon.verify_code(&key_token, &[]),
        "usage_exceeded",
        "still spent"
    );
}

/// Owner rows made before they got their usage with them (schema 6) had none until their
/// first flush: the upgrade gives them theirs, so they are not taken for emptied ones.
#[test]
fn owners_from_before_schema_7_keep_their_limits() {
    let mut daemon = common::Daemon::start();
    let owners = daemon.cli(&["owners", "set", "tenant-8", "--remaining", "2"]);
    assert!(owners.status.success(), "{owners:?}");
    let (_, token) = daemon.create("Shared", "read", &["--owner", "tenant-8"]);
    assert!(daemon.stop().success());
    let db = rusqlite::Connection::open(daemon.data_dir.join("keys.db")).expect("open");
    db.execute_batch("UPDATE owners SET usage = NULL; PRAGMA user_version = 6;")
        .expect("an owner row as schema 6 left it before its first flush");
    drop(db);
    daemon.restart();
    assert_eq!(daemon.verify_code(&token, &[]), "valid");
    assert_eq!(daemon.verify_code(&token, &[]), "valid");
    assert_eq!(daemon.verify_code(&token, &[]), "usage_exceeded");
}
