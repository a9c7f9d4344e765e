//! The policy file against the real daemon: every way a file gets updated, broken files,
//! durable revocations, and scheduled rotations with sinks and overlaps across restarts.

mod common;

use authenta_client::proto::VerifyCode;
use common::Daemon;
use std::path::Path;
use std::time::{Duration, Instant};

const EMPTY: &str = "[defaults]\nwarn_before = \"1d\"\n";

fn revoking(id: &str) -> String {
    format!("[defaults]\nwarn_before = \"1d\"\n\n[revocations]\nids = [\"{id}\"]\n")
}

fn code(daemon: &Daemon, token: &str) -> VerifyCode {
    daemon.answer_code(token)
}

/// Polls until `token` verifies with `wanted`; returns how long it took.
fn wait_for_code(daemon: &Daemon, token: &str, wanted: VerifyCode, limit: Duration) -> Duration {
    let started = Instant::now();
    while started.elapsed() < limit {
        if code(daemon, token) == wanted {
            return started.elapsed();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!(
        "{wanted:?} not reached within {limit:?}; last answer {:?}; log: {}",
        code(daemon, token),
        daemon.log()
    );
}

fn policy_path(daemon: &Daemon) -> &Path {
    daemon.policy.as_deref().expect("policy file")
}

fn write_then_rename(path: &Path, text: &str) {
    let temp = path.with_extension("swp");
    std::fs::write(&temp, text).expect("write temp");
    std::fs::rename(&temp, path).expect("rename");
}

#[test]
fn a_revocation_written_in_place_applies_without_a_restart() {
    let daemon = Daemon::start_with_policy(EMPTY);
    let (id, token) = daemon.create("Backend-Server-Key", "read", &[]);
    assert_eq!(code(&daemon, &token), VerifyCode::Valid);
    std::fs::write(policy_path(&daemon), revoking(&id)).expect("write in place");
    wait_for_code(&daemon, &token, VerifyCode::Revoked, Duration::from_secs(5));
    let audit = daemon.cli_json(&["audit", "--json"]);
    let last = audit["entries"]
        .as_array()
        .and_then(|e| e.last())
        .cloned()
        .expect("entry");
    assert_eq!(
        (last["action"].as_str(), last["actor"].as_str()),
        (Some("revoke"), Some("policy"))
    );
}

#[test]
fn an_editor_style_write_and_rename_applies() {
    let daemon = Daemon::start_with_policy(EMPTY);
    let (id, token) = daemon.create("K", "read", &[]);
    assert_eq!(code(&daemon, &token), VerifyCode::Valid);
    write_then_rename(policy_path(&daemon), &revoking(&id));
    wait_for_code(&daemon, &token, VerifyCode::Revoked, Duration::from_secs(5));
}

#[test]
fn an_atomic_mv_from_elsewhere_applies() {
    let daemon = Daemon::start_with_policy(EMPTY);
    let (id, token) = daemon.create("K", "read", &[]);
    let staging = daemon.dir.path().join("staged.toml");
    std::fs::write(&staging, revoking(&id)).expect("write");
    let status = std::process::Command::new("mv")
        .arg("-f")
        .arg(&staging)
        .arg(policy_path(&daemon))
        .status()
        .expect("mv");
    assert!(status.success());
    wait_for_code(&daemon, &token, VerifyCode::Revoked, Duration::from_secs(5));
}

/// Lays out a directory the way a Kubernetes ConfigMap volume does: `policy.toml` is a
/// symlink to `..data/policy.toml`, `..data` a symlink to a timestamped directory, and an
/// update swaps `..data` atomically to a new directory.
fn configmap_swap(dir: &Path, generation: u32, text: &str) {
    let versioned = dir.join(format!("..2026_11_28_{generation:02}"));
    std::fs::create_dir(&versioned).expect("versioned dir");
    std::fs::write(versioned.join("policy.toml"), text).expect("write");
    let temp_link = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&temp_link);
    std::os::unix::fs::symlink(versioned.file_name().expect("name"), &temp_link).expect("link");
    std::fs::rename(&temp_link, dir.join("..data")).expect("swap ..data");
}

#[test]
fn a_configmap_style_symlink_swap_applies() {
    let dir = tempfile::tempdir().expect("tmp");
    let cm = dir.path().join("configmap");
    std::fs::create_dir(&cm).expect("dir");
    configmap_swap(&cm, 1, EMPTY);
    std::os::unix::fs::symlink("..data/policy.toml", cm.join("policy.toml")).expect("link");
    let mut daemon = Daemon::start();
    assert!(daemon.stop().success());
    daemon.policy = Some(cm.join("policy.toml"));
    daemon.restart();
    let (id, token) = daemon.create("K", "read", &[]);
    assert_eq!(code(&daemon, &token), VerifyCode::Valid);
    configmap_swap(&cm, 2, &revoking(&id));
    wait_for_code(&daemon, &token, VerifyCode::Revoked, Duration::from_secs(5));
}

#[test]
fn a_deleted_then_recreated_file_applies_and_deletion_keeps_the_policy() {
    let daemon = Daemon::start_with_policy("[defaults]\nmax_age = \"365d\"\n");
    let (id, token) = daemon.create("K", "read", &[]);
    std::fs::remove_file(policy_path(&daemon)).expect("delete");
    let deadline = Instant::now() + Duration::from_secs(5);
    while daemon.cli_json(&["status", "--json"])["policy_error"].is_null()
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = daemon.cli_json(&["policy", "status", "--json"]);
    assert!(
        status["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("cannot read"),
        "{status}"
    );
    assert!(
        daemon.show(&id)["rotate_by"].is_string(),
        "the last good policy stays in force"
    );
    std::fs::write(policy_path(&daemon), revoking(&id)).expect("re-create");
    wait_for_code(&daemon, &token, VerifyCode::Revoked, Duration::from_secs(5));
    assert!(daemon.cli_json(&["policy", "status", "--json"])["last_error"].is_null());
}

#[test]
fn a_broken_file_keeps_the_previous_policy_and_reports_the_error_until_fixed() {
    let daemon =
        Daemon::start_with_policy("[defaults]\nmax_age = \"365d\"\nwarn_before = \"400d\"\n");
    let (id, token) = daemon.create("K", "read", &[]);
    assert_eq!(
        daemon.show(&id)["rotation_due"],
        true,
        "warn_before wider than max_age"
    );
    let good_sha = daemon.cli_json(&["policy", "status", "--json"])["content_sha256"].clone();

    std::fs::write(
        policy_path(&daemon),
        format!("{}\n[defaults]\nmax_age = \"soon\"\n", revoking(&id)),
    )
    .expect("write broken");
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut status = serde_json::Value::Null;
    while Instant::now() < deadline {
        status = daemon.cli_json(&["policy", "status", "--json"]);
        if status["last_error"].is_string() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let error = status["last_error"].as_str().expect("the error is shown");
    assert!(error.contains("line"), "names the line: {error}");
    assert_eq!(
        status["content_sha256"], good_sha,
        "the previous policy is still in force"
    );
    assert_eq!(
        code(&daemon, &token),
        VerifyCode::Valid,
        "nothing of the broken file applied"
    );
    assert!(daemon.show(&id)["rotate_by"].is_string());
    let out = daemon.cli(&["status"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("POLICY ERROR"));
    assert!(daemon.log().contains("policy not applied"));

    std::fs::write(policy_path(&daemon), revoking(&id)).expect("fix");
    wait_for_code(&daemon, &token, VerifyCode::Revoked, Duration::from_secs(5));
    assert!(daemon.cli_json(&["policy", "status", "--json"])["last_error"].is_null());
}

#[test]
fn revocations_are_durable_and_leaked_hashes_are_remembered() {
    let mut daemon = Daemon::start_with_policy(EMPTY);
    let (_, leaked) = daemon.create("Leaked", "read", &[]);
    let (kept_id, kept) = daemon.create("Kept", "read", &[]);
    // A token of the right shape that this store never issued, as a scanner might find.
    let other = Daemon::start();
    let (_, stranger) = other.create("Elsewhere", "read", &[]);
    assert_eq!(code(&daemon, &stranger), VerifyCode::Unknown);

    let sha = |t: &str| hex::encode(ring::digest::digest(&ring::digest::SHA256, t.as_bytes()));
    std::fs::write(
        policy_path(&daemon),
        format!(
            "[revocations]\ntoken_sha256 = [\"{}\", \"{}\"]\n",
            sha(&leaked),
            sha(&stranger)
        ),
    )
    .expect("write");
    wait_for_code(
        &daemon,
        &leaked,
        VerifyCode::Revoked,
        Duration::from_secs(5),
    );
    wait_for_code(
        &daemon,
        &stranger,
        VerifyCode::Revoked,
        Duration::from_secs(5),
    );
    assert_eq!(code(&daemon, &kept), VerifyCode::Valid);

    // Taking the revocations out of the file, and restarting, revives nothing.
    std::fs::write(policy_path(&daemon), EMPTY).expect("write");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(code(&daemon, &leaked), VerifyCode::Revoked);
    assert!(daemon.stop().success());
    daemon.restart();
    assert_eq!(code(&daemon, &leaked), VerifyCode::Revoked);
    assert_eq!(code(&daemon, &stranger), VerifyCode::Revoked);
    assert_eq!(daemon.show(&kept_id)["state"], "active");
    let audit = daemon.cli_json(&["audit", "--verify", "--json"]);
    assert_eq!(audit["chain"]["ok"], true);
}

#[test]
fn sighup_reloads_the_policy() {
    let daemon = Daemon::start_with_policy(EMPTY);
    let (id, token) = daemon.create("K", "read", &[]);
    std::fs::write(policy_path(&daemon), revoking(&id)).expect("write");
    common::signal_pid(daemon.pid(), libc::SIGHUP);
    wait_for_code(&daemon, &token, VerifyCode::Revoked, Duration::from_secs(5));
}

#[test]
fn policy_check_validates_and_explains() {
    let daemon = Daemon::start();
    let (id, _) = daemon.create(
        "Backend-Server-Key",
        "read",
        &["--environment", "production"],
    );
    let dir = daemon.dir.path();
    let good = dir.join("good.toml");
    std::fs::write(
        &good,
        format!("[defaults]\nmax_age = \"365d\"\n[[rotation]]\nname = \"Backend-*\"\nmax_age = \"90d\"\n[revocations]\nids = [\"{id}\"]\n"),
    )
    .expect("write");
    let out = daemon.cli(&["policy", "check", &good.to_string_lossy()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("valid") && text.contains("rule 1: name Backend-*"),
        "{text}"
    );
    assert!(
        text.contains(&format!("{id}: rule 1")) && text.contains("REVOKED by this file"),
        "{text}"
    );

    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[defaults]\nmax_age = 5\n").expect("write");
    let out = daemon.cli(&["policy", "check", &bad.to_string_lossy()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 2"));
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/policy.example.toml");
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/keyd.example.toml");
    let out = daemon.cli(&[
        "policy",
        "check",
        &shipped.to_string_lossy(),
        "--config",
        &config.to_string_lossy(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A config that lets rotations write in the sink's directory.
fn sink_config(sink: &Path) -> String {
    let dir = sink.parent().expect("sink dir");
    format!("sink_dirs = [\"{}\"]\n", dir.display())
}

fn rotation_policy(sink: &Path, every: &str, overlap: &str) -> String {
    format!(
        "[[rotation]]\nname = \"Rotated-*\"\nevery = \"{every}\"\noverlap = \"{overlap}\"\nsink = \"{}\"\n",
        sink.display()
    )
}

fn read_sink(sink: &Path, limit: Duration, not: &str) -> String {
    let started = Instant::now();
    while started.elapsed() < limit {
        if let Ok(text) = std::fs::read_to_string(sink) {
            let token = text.trim().to_owned();
            if token != not {
                assert!(
                    text.ends_with('\n') && token.len() == 53,
                    "whole token: {text:?}"
                );
                return token;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("no new token in {} within {limit:?}", sink.display());
}

#[test]
fn a_scheduled_rotation_writes_the_sink_and_keeps_the_old_token_for_the_overlap_only() {
    let sinks = tempfile::tempdir().expect("tmp");
    let sink = sinks.path().join("token");
    let policy = rotation_policy(&sink, "3s", "2s");
    let mut daemon = Daemon::start_with(Some(&sink_config(&sink)), Some(&policy));
    let (id, old) = daemon.create("Rotated-Backend", "read", &[]);
    let (_, untouched) = daemon.create("Other", "read", &[]);
    assert!(daemon.show(&id)["rotate_by"].is_string());

    let new = read_sink(&sink, Duration::from_secs(6), "");
    let rotated_at = Instant::now();
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&sink).expect("meta").permissions(),
    );
    assert_eq!(mode & 0o777, 0o400);
    assert_eq!(code(&daemon, &new), VerifyCode::Valid);
    assert_eq!(code(&daemon, &old), VerifyCode::Valid, "inside the overlap");
    let key = daemon.show(&id);
    assert!(key["grace_until"].is_string() && key["rotated_at"].is_string());

    // A restart during the overlap changes nothing.
    assert!(daemon.stop().success());
    daemon.restart();
    assert!(
        rotated_at.elapsed() < Duration::from_millis(1_800),
        "restart was too slow to test the overlap"
    );
    assert_eq!(
        code(&daemon, &old),
        VerifyCode::Valid,
        "still inside the overlap after a restart"
    );
    assert_eq!(code(&daemon, &new), VerifyCode::Valid);
    assert_eq!(
        std::fs::read_to_string(&sink).expect("sink").trim(),
        new,
        "no extra rotation"
    );

    wait_for_code(&daemon, &old, VerifyCode::Revoked, Duration::from_secs(3));
    assert_eq!(code(&daemon, &new), VerifyCode::Valid);
    assert_eq!(code(&daemon, &untouched), VerifyCode::Valid);
    let leftovers: Vec<_> = std::fs::read_dir(sinks.path()).expect("dir").collect();
    assert_eq!(leftovers.len(), 1, "no temp files next to the sink");
    assert!(
        !daemon.log().contains(&new),
        "the rotated token is not logged"
    );
}

#[test]
fn a_rotation_missed_while_down_runs_at_start_up() {
    let sinks = tempfile::tempdir().expect("tmp");
    let sink = sinks.path().join("token");
    let policy = rotation_policy(&sink, "2s", "1s");
    let mut daemon = Daemon::start_with(Some(&sink_config(&sink)), Some(&policy));
    let (_, old) = daemon.create("Rotated-Backend", "read", &[]);
    assert!(daemon.stop().success());
    std::thread::sleep(Duration::from_millis(2_500));
    assert!(!sink.exists());
    daemon.restart();
    let new = read_sink(&sink, Duration::from_secs(2), "");
    assert_eq!(code(&daemon, &new), VerifyCode::Valid);
    let _ = old;
}

#[test]
fn a_failing_sink_is_reported_retried_and_never_half_written() {
    let sinks = tempfile::tempdir().expect("tmp");
    let sink = sinks.path().join("missing-dir/token");
    let text = rotation_policy(&sink, "1s", "0s");
    let daemon = Daemon::start_with(Some(&sink_config(&sink)), Some(&text));
    let (id, old) = daemon.create("Rotated-Backend", "read", &[]);
    let deadline = Instant::now() + Duration::from_secs(6);
    let mut status = serde_json::Value::Null;
    while Instant::now() < deadline {
        status = daemon.cli_json(&["policy", "status", "--json"]);
        if !status["rotation_failures"]
            .as_array()
            .expect("array")
            .is_empty()
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let failure = &status["rotation_failures"][0];
    assert_eq!(failure["key_id"], id.as_str(), "{status}");
    assert!(failure["message"]
        .as_str()
        .unwrap_or_default()
        .contains("cannot write sink"));
    assert_eq!(
        code(&daemon, &old),
        VerifyCode::Valid,
        "a failed rotation leaves the key alone"
    );
    assert_eq!(
        daemon.cli_json(&["status", "--json"])["rotation_failures"],
        1
    );

    // Make the directory, nudge the policy (any change retries at once), and it goes through.
    std::fs::create_dir(sinks.path().join("missing-dir")).expect("mkdir");
    std::fs::write(policy_path(&daemon), format!("# retry\n{text}")).expect("touch");
    let new = read_sink(&sink, Duration::from_secs(6), "");
    assert_eq!(code(&daemon, &new), VerifyCode::Valid);
    wait_for_code(&daemon, &old, VerifyCode::Revoked, Duration::from_secs(3));
}

/// Revocations are written in changes of at most 1,024 (each change's rollback journal is
/// held in memory): a file revoking more keys than that revokes every one, ids and token
/// hashes alike, and leaves the rest.
#[test]
fn a_policy_revoking_more_keys_than_one_change_holds_revokes_them_all() {
    let daemon = Daemon::start_with_policy(EMPTY);
    let mut client = authenta_client::Client::connect(&daemon.socket).expect("connect");
    let keys = common::create_pipelined(&mut client, 2_300);
    // 1,100 by id, 1,100 by token hash, 100 left alone.
    let (by_id, rest) = keys.split_at(1_100);
    let (by_hash, kept) = rest.split_at(1_100);
    let sha = |t: &str| hex::encode(ring::digest::digest(&ring::digest::SHA256, t.as_bytes()));
    let quoted = |items: Vec<String>| {
        items
            .iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let ids = quoted(by_id.iter().map(|(id, _)| id.clone()).collect());
    let hashes = quoted(by_hash.iter().map(|(_, token)| sha(token)).collect());
    write_then_rename(
        policy_path(&daemon),
        &format!("[revocations]\nids = [{ids}]\ntoken_sha256 = [{hashes}]\n"),
    );
    let last = &by_hash[by_hash.len() - 1].1;
    wait_for_code(&daemon, last, VerifyCode::Revoked, Duration::from_secs(20));
    for (_, token) in by_id.iter().chain(by_hash) {
        assert_eq!(code(&daemon, token), VerifyCode::Revoked);
    }
    for (_, token) in kept {
        assert_eq!(code(&daemon, token), VerifyCode::Valid);
    }
    let status = daemon.cli_json(&["policy", "status", "--json"]);
    assert!(status["last_error"].is_null(), "{status}");
}
