//! Changing the master key through the real binary: `rekey` offline on a stopped store and
//! online through the socket. Either way the old key stops opening the store, nothing is
//! lost, tokens keep verifying, and the audit chain records the rekey.

mod common;

use common::Daemon;

#[test]
fn rekey_offline_rewraps_so_the_old_key_stops_working_and_nothing_is_lost() {
    let mut daemon = Daemon::start();
    let (_, token) = daemon.create("Alpha", "read", &[]);
    daemon.create("Bravo", "write", &[]);
    let before = daemon.cli_json(&["keys", "list", "--json"]);
    assert!(daemon.stop().success());

    let new_key = daemon.dir.path().join("new.hex");
    std::fs::write(&new_key, "42".repeat(32)).expect("key");
    let data_dir = daemon.data_dir.to_string_lossy().to_string();
    let old_key = daemon.master_key.to_string_lossy().to_string();
    let new_key_arg = new_key.to_string_lossy().to_string();
    let out = daemon.cli(&[
        "rekey",
        "--new-master-key-file",
        &new_key_arg,
        "--data-dir",
        &data_dir,
        "--master-key-file",
        &old_key,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let old = refused_with_the_old_key(&daemon);
    assert!(String::from_utf8_lossy(&old.stderr).contains("master key"));

    daemon.master_key = new_key;
    daemon.restart();
    assert_eq!(
        daemon.cli_json(&["keys", "list", "--json"]),
        before,
        "no row lost"
    );
    assert_eq!(daemon.verify_code(&token, &[]), "valid");
    let audit = daemon.cli_json(&["audit", "--verify", "--json"]);
    assert_eq!(audit["chain"]["ok"], true);
    assert!(audit["entries"]
        .as_array()
        .expect("a")
        .iter()
        .any(|e| e["action"] == "rekey"));
}

#[test]
fn rekey_online_through_the_socket() {
    let mut daemon = Daemon::start();
    let (_, token) = daemon.create("Alpha", "read", &[]);
    let new_key = daemon.dir.path().join("new.hex");
    std::fs::write(&new_key, "17".repeat(32)).expect("key");
    let out = daemon.cli(&["rekey", "--new-master-key-file", &new_key.to_string_lossy()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(daemon.verify_code(&token, &[]), "valid", "serving goes on");
    assert!(
        !daemon.log().contains(&"17".repeat(32)),
        "the new key is not logged"
    );
    assert!(daemon.stop().success());

    refused_with_the_old_key(&daemon);
    daemon.master_key = new_key;
    daemon.restart();
    assert_eq!(daemon.verify_code(&token, &[]), "valid");
}

/// Starts the daemon with its old master key file; asserts that it refuses to start.
fn refused_with_the_old_key(daemon: &Daemon) -> std::process::Output {
    let old = daemon
        .serve_command(&daemon.master_key)
        .output()
        .expect("run");
    assert!(
        !old.status.success(),
        "the old master key no longer opens the store"
    );
    old
}
