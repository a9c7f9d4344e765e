//! The seed's behaviours, end to end through the real binary: key shown once, permissions
//! 200/403, unknown and malformed 401, regenerate, revoke, list.

mod common;

use common::{run_with_stdin, Daemon};
use std::time::Duration;

#[test]
fn token_is_shown_once_and_in_no_later_output() {
    let daemon = Daemon::start();
    let out = daemon.cli(&[
        "keys",
        "create",
        "--name",
        "Backend-Server-Key",
        "--permissions",
        "read,write",
    ]);
    assert!(out.status.success());
    let token = String::from_utf8(out.stdout)
        .expect("utf8")
        .trim()
        .to_owned();
    assert!(
        token.starts_with("api_") && token.len() == 53,
        "stdout is the token: {token}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("shown only once"),
        "warning missing: {stderr}"
    );

    let id = daemon.cli_json(&["keys", "list", "--json"])[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    assert_eq!(daemon.verify_code(&token, &[]), "valid");
    for args in [
        vec!["keys", "list"],
        vec!["keys", "list", "--json"],
        vec!["keys", "show", &id],
        vec!["keys", "show", &id, "--json"],
        vec!["status"],
        vec!["status", "--json"],
        vec!["audit", "--verify"],
        vec!["audit", "--json"],
    ] {
        let out = daemon.cli(&args);
        assert!(out.status.success(), "{args:?}");
        for stream in [&out.stdout, &out.stderr] {
            assert!(
                !String::from_utf8_lossy(stream).contains(&token),
                "{args:?} printed the token"
            );
        }
    }
    assert!(
        !daemon.log().contains(&token),
        "the daemon logged the token"
    );
}

#[test]
fn create_json_has_the_documented_fields() {
    let daemon = Daemon::start();
    let created = daemon.cli_json(&[
        "keys",
        "create",
        "--name",
        "Mobile-App-Key",
        "--permissions",
        "read",
        "--environment",
        "staging",
        "--expires-in",
        "90d",
        "--json",
    ]);
    assert!(created["id"].as_str().expect("id").starts_with("key_"));
    assert_eq!(created["name"], "Mobile-App-Key");
    let token = created["token"].as_str().expect("token");
    assert_eq!(created["start"].as_str().expect("start"), &token[..12]);
    assert_eq!(created["permissions"], serde_json::json!(["read"]));
    assert_eq!(created["environment"], "staging");
    assert!(created["created_at"]
        .as_str()
        .expect("created")
        .ends_with('Z'));
    let expires = created["expires_at"].as_str().expect("expires");
    let created_at =
        humantime::parse_rfc3339(created["created_at"].as_str().expect("c")).expect("rfc3339");
    let expires_at = humantime::parse_rfc3339(expires).expect("rfc3339");
    let lifetime = expires_at.duration_since(created_at).expect("after");
    assert!(
        (lifetime.as_secs() as i64 - 90 * 86_400).abs() <= 1,
        "{lifetime:?}"
    );
}

#[test]
fn permissions_answer_200_or_403() {
    let daemon = Daemon::start();
    let (_, reader) = daemon.create("Data-Pipeline-Key", "read", &[]);
    let (_, writer) = daemon.create("Upload-Key", "write,delete", &[]);

    let (code, answer) = daemon.verify(&reader, &["--permission", "read"]);
    assert_eq!((code, answer["status"].as_u64()), (0, Some(200)));
    assert_eq!(answer["code"], "valid");

    for missing in ["write", "delete"] {
        let (code, answer) = daemon.verify(&reader, &["--permission", missing]);
        assert_eq!(code, 43, "{missing}");
        assert_eq!(answer["status"], 403);
        assert_eq!(answer["code"], "insufficient_permissions");
    }
    let (code, _) = daemon.verify(
        &writer,
        &["--permission", "write", "--permission", "delete"],
    );
    assert_eq!(code, 0);
    let (code, _) = daemon.verify(&writer, &["--permission", "write", "--permission", "read"]);
    assert_eq!(code, 43, "all named permissions must be held");
}

#[test]
fn unknown_and_malformed_keys_are_401() {
    let daemon = Daemon::start();
    let (_, token) = daemon.create("Backend-Server-Key", "read", &[]);

    // A well-formed token nobody issued: same shape, valid checksum.
    let other = Daemon::start();
    let (_, foreign) = other.create("Elsewhere", "read", &[]);
    let (code, answer) = daemon.verify(&foreign, &[]);
    assert_eq!((code, answer["status"].as_u64()), (41, Some(401)));
    assert_eq!(answer["code"], "unknown");
    assert_eq!(answer["key_id"], serde_json::Value::Null);

    let mut typo = token.clone().into_bytes();
    typo[20] = if typo[20] == b'x' { b'y' } else { b'x' };
    let typo = String::from_utf8(typo).expect("ascii");
    for bad in [typo.as_str(), &token[..40], "api_", "hello", "ghp_abcdef"] {
        let (code, answer) = daemon.verify(bad, &[]);
        assert_eq!(code, 41, "{bad}");
        assert_eq!(answer["code"], "malformed", "{bad}");
    }
}

#[test]
fn verify_reads_the_token_from_stdin_when_the_environment_has_none() {
    let daemon = Daemon::start();
    let (_, token) = daemon.create("Backend-Server-Key", "read", &[]);
    let out = run_with_stdin(
        daemon.cli_command(&["verify", "--permission", "read"]),
        &format!("{token}\n"),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("200 valid"));

    let out = run_with_stdin(daemon.cli_command(&["verify"]), "");
    assert_eq!(
        out.status.code(),
        Some(64),
        "no token is an error, not a verdict"
    );
}

#[test]
fn environment_labels_must_match_when_asked() {
    let daemon = Daemon::start();
    let (_, prod) = daemon.create("Prod", "read", &["--environment", "production"]);
    assert_eq!(
        daemon.verify_code(&prod, &["--environment", "production"]),
        "valid"
    );
    let (code, answer) = daemon.verify(&prod, &["--environment", "staging"]);
    assert_eq!(
        (code, answer["code"].as_str()),
        (41, Some("wrong_environment"))
    );
    assert_eq!(daemon.verify_code(&prod, &[]), "valid");
}

#[test]
fn regenerate_kills_the_old_token_at_once() {
    let daemon = Daemon::start();
    let (id, old) = daemon.create("Backend-Server-Key", "read", &[]);
    assert_eq!(daemon.verify_code(&old, &[]), "valid");

    let regenerated = daemon.cli_json(&["keys", "regenerate", &id, "--json"]);
    assert_eq!(regenerated["id"], id.as_str(), "same key id");
    let new = regenerated["token"].as_str().expect("token").to_owned();
    assert_ne!(new, old);

    let (code, answer) = daemon.verify(&old, &[]);
    assert_eq!((code, answer["code"].as_str()), (41, Some("revoked")));
    assert_eq!(answer["key_id"], id.as_str());
    assert_eq!(daemon.verify_code(&new, &["--permission", "read"]), "valid");

    // Twice more: every replaced token stays dead.
    let newer = daemon.cli_json(&["keys", "regenerate", &id, "--json"])["token"]
        .as_str()
        .expect("token")
        .to_owned();
    for dead in [&old, &new] {
        assert_eq!(daemon.verify_code(dead, &[]), "revoked");
    }
    assert_eq!(daemon.verify_code(&newer, &[]), "valid");
    let key = daemon.show(&id);
    assert_eq!(key["state"], "active");
    assert!(key["rotated_at"].is_string());
}

#[test]
fn regenerate_grace_keeps_the_old_token_only_for_its_window() {
    let daemon = Daemon::start();
    let (id, old) = daemon.create("Backend-Server-Key", "read", &[]);
    let regenerated = daemon.cli_json(&["keys", "regenerate", &id, "--grace", "2s", "--json"]);
    let new = regenerated["token"].as_str().expect("token").to_owned();
    assert!(regenerated["grace_until"].is_string());
    assert_eq!(
        daemon.verify_code(&old, &[]),
        "valid",
        "inside the grace window"
    );
    assert_eq!(daemon.verify_code(&new, &[]), "valid");
    std::thread::sleep(Duration::from_millis(2_300));
    assert_eq!(
        daemon.verify_code(&old, &[]),
        "revoked",
        "after the grace window"
    );
    assert_eq!(daemon.verify_code(&new, &[]), "valid");
}

#[test]
fn revoke_gives_401_revoked_and_is_final() {
    let daemon = Daemon::start();
    let (id, token) = daemon.create("Backend-Server-Key", "read,write,delete", &[]);
    let (_, other) = daemon.create("Other", "read", &[]);
    let out = daemon.cli(&["keys", "revoke", &id, "--reason", "staff change"]);
    assert!(out.status.success());

    let (code, answer) = daemon.verify(&token, &["--permission", "read"]);
    assert_eq!((code, answer["status"].as_u64()), (41, Some(401)));
    assert_eq!(answer["code"], "revoked");
    assert_eq!(daemon.show(&id)["state"], "revoked");
    assert_eq!(
        daemon.verify_code(&other, &[]),
        "valid",
        "other keys are untouched"
    );

    let out = daemon.cli(&["keys", "regenerate", &id]);
    assert_eq!(
        out.status.code(),
        Some(64),
        "a revoked key cannot come back"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("revoked"));
    assert_eq!(daemon.verify_code(&token, &[]), "revoked");
}

#[test]
fn several_keys_are_revoked_at_once_and_each_failure_is_named() {
    let daemon = Daemon::start();
    let (a, token_a) = daemon.create("A", "read", &[]);
    let (b, token_b) = daemon.create("B", "read", &[]);
    let (c, token_c) = daemon.create("C", "read", &[]);
    let (_, kept) = daemon.create("Kept", "read", &[]);
    let missing = "key_0000000000000000";
    let out = daemon.cli(&["keys", "revoke", &a, missing, &b, "--reason", "INC-42"]);
    assert_eq!(out.status.code(), Some(66), "the missing key's exit code");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains(&format!("Revoked {a}")), "{stdout}");
    assert!(stdout.contains(&format!("Revoked {b}")), "{stdout}");
    assert!(
        stderr.contains(&format!("cannot revoke {missing}")),
        "{stderr}"
    );
    assert!(stderr.contains("Revoked 2 of 3 keys; 1 failed"), "{stderr}");
    assert_eq!(daemon.verify_code(&token_a, &[]), "revoked");
    assert_eq!(daemon.verify_code(&token_b, &[]), "revoked");
    assert_eq!(daemon.verify_code(&token_c, &[]), "valid");

    // From stdin, with a comment, a blank line and a key already revoked: all succeed.
    let list = format!("# INC-42\n{a}\n\n{c}  # the last one\n");
    let out = run_with_stdin(
        daemon.cli_command(&["keys", "revoke", "-", "--json"]),
        &list,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let states: Vec<(&str, &str)> = answer
        .as_array()
        .expect("an array, one object a key")
        .iter()
        .map(|k| {
            (
                k["id"].as_str().unwrap_or(""),
                k["state"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(states, [(a.as_str(), "revoked"), (c.as_str(), "revoked")]);
    assert_eq!(daemon.verify_code(&token_c, &[]), "revoked");
    assert_eq!(
        daemon.verify_code(&kept, &[]),
        "valid",
        "other keys are untouched"
    );
    let audit = daemon.cli_json(&["audit", "--json"]);
    let reasons = audit.to_string().matches("INC-42").count();
    assert!(
        reasons >= 2,
        "each revoke is audited with its reason: {audit}"
    );
}

#[test]
fn revoke_during_a_grace_kills_both_tokens() {
    let daemon = Daemon::start();
    let (id, old) = daemon.create("K", "read", &[]);
    let new = daemon.cli_json(&["keys", "regenerate", &id, "--grace", "1h", "--json"])["token"]
        .as_str()
        .expect("token")
        .to_owned();
    assert!(daemon.cli(&["keys", "revoke", &id]).status.success());
    assert_eq!(daemon.verify_code(&old, &[]), "revoked");
    assert_eq!(daemon.verify_code(&new, &[]), "revoked");
}

#[test]
fn expired_keys_are_401_expired() {
    let daemon = Daemon::start();
    let (id, token) = daemon.create("Short", "read", &["--expires-in", "1s"]);
    assert_eq!(daemon.verify_code(&token, &[]), "valid");
    std::thread::sleep(Duration::from_millis(1_200));
    assert_eq!(daemon.verify_code(&token, &[]), "expired");
    assert_eq!(daemon.show(&id)["state"], "expired");
}

#[test]
fn list_shows_created_last_used_permissions_and_usage() {
    let daemon = Daemon::start();
    let (id, token) = daemon.create(
        "Backend-Server-Key",
        "read,delete",
        &["--environment", "production"],
    );
    let (unused_id, _) = daemon.create("Unused-Key", "write", &[]);
    for _ in 0..3 {
        assert_eq!(
            daemon.verify_code(&token, &["--permission", "read"]),
            "valid"
        );
    }
    assert_eq!(
        daemon.verify_code(&token, &["--permission", "write"]),
        "insufficient_permissions"
    );

    let list = daemon.cli_json(&["keys", "list", "--json"]);
    let keys = list.as_array().expect("array");
    assert_eq!(keys.len(), 2);
    let used = keys
        .iter()
        .find(|k| k["id"] == id.as_str())
        .expect("listed");
    assert_eq!(used["name"], "Backend-Server-Key");
    assert_eq!(used["permissions"], serde_json::json!(["read", "delete"]));
    assert_eq!(used["environment"], "production");
    assert_eq!(used["state"], "active");
    assert!(used["created_at"].is_string());
    assert!(
        used["last_used_at"].is_string(),
        "live, not only what was flushed"
    );
    assert_eq!(used["rotated_at"], serde_json::Value::Null);
    assert_eq!(used["expires_at"], serde_json::Value::Null);
    assert_eq!(
        used["usage"],
        serde_json::json!({"verifications": 4, "allowed": 3, "denied": 1})
    );
    assert_eq!(&token[..12], used["start"].as_str().expect("start"));
    let unused = keys
        .iter()
        .find(|k| k["id"] == unused_id.as_str())
        .expect("listed");
    assert_eq!(unused["last_used_at"], serde_json::Value::Null);
    assert_eq!(unused["usage"]["verifications"], 0);

    let table = String::from_utf8(daemon.cli(&["keys", "list"]).stdout).expect("utf8");
    for column in ["ID", "NAME", "PERMISSIONS", "CREATED", "LAST USED", "USAGE"] {
        assert!(table.contains(column), "table lacks {column}: {table}");
    }
    assert!(table.contains("Backend-Server-Key") && table.contains("read,delete"));
}

#[test]
fn admin_errors_say_what_to_do() {
    let daemon = Daemon::start();
    let out = daemon.cli(&["keys", "show", "key_AAAAAAAAAAAAAAAA"]);
    assert_eq!(out.status.code(), Some(66), "66: no key with that id");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no key with id key_AAAAAAAAAAAAAAAA"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");

    let out = daemon.cli(&["keys", "create", "--name", "x", "--permissions", "admin"]);
    assert_eq!(out.status.code(), Some(64), "64: usage");
    assert!(String::from_utf8_lossy(&out.stderr).contains("read, write or delete"));

    // A token passed where an id belongs is not echoed back.
    let (_, token) = daemon.create("K", "read", &[]);
    let out = daemon.cli(&["keys", "revoke", &token]);
    assert_eq!(out.status.code(), Some(66));
    assert!(!String::from_utf8_lossy(&out.stderr).contains(&token));

    let nowhere = daemon.dir.path().join("nowhere.sock");
    let out = common::Daemon::cli_command(&daemon, &["status"])
        .env("AUTHENTA_SOCKET", &nowhere)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(69), "69: unavailable");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is `authenta-keyd serve` running?"),
        "{stderr}"
    );
    let (code, _) = {
        let out = common::Daemon::cli_command(&daemon, &["verify"])
            .env("AUTHENTA_SOCKET", &nowhere)
            .env("AUTHENTA_KEY", &token)
            .output()
            .expect("run");
        (out.status.code(), ())
    };
    assert_eq!(
        code,
        Some(69),
        "an unreachable daemon is exit 69, not a verdict"
    );
}

#[test]
fn sigterm_exits_zero_and_removes_the_socket() {
    let mut daemon = Daemon::start();
    let status = daemon.stop();
    assert!(status.success(), "{status}");
    assert!(!daemon.socket.exists());
}

#[test]
fn an_expired_key_is_not_regenerated_into_a_token_that_is_expired_from_the_start() {
    let daemon = Daemon::start();
    let (id, token) = daemon.create("Short-Lived", "read", &["--expires-in", "1s"]);
    std::thread::sleep(std::time::Duration::from_millis(1_100));
    assert_eq!(daemon.verify_code(&token, &[]), "expired");
    let out = daemon.cli(&["keys", "regenerate", &id]);
    assert_eq!(out.status.code(), Some(64), "refused as a bad request");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("expired at") && stderr.contains("--expires-in"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "no token printed");
    // With a new lifetime it is regenerated, and the new token verifies.
    let issued = daemon.cli_json(&["keys", "regenerate", &id, "--expires-in", "1h", "--json"]);
    let new_token = issued["token"].as_str().expect("token");
    assert_eq!(daemon.verify_code(new_token, &[]), "valid");
}
