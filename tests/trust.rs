//! Trust boundaries, attacked from outside as another local user would: each test sets up
//! what an unprivileged user could, and shows the daemon refuses to be fooled by it. Tests
//! run as root so that they can act as other uids (`daemon` is the victim, uid 1, and
//! `nobody` the attacker, uid 65534).

mod common;

use common::{can_drop_privileges, BIN, MASTER_HEX};
use std::os::unix::fs::{chown, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const VICTIM: u32 = 1;
const ATTACKER: u32 = 65534;

/// A world-writable sticky directory standing in for /tmp, with the daemon's binary, a data
/// directory and a master key for the victim uid.
fn shared_tmp() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).expect("chmod");
    std::fs::copy(BIN, dir.path().join("authenta-keyd")).expect("copy the binary");
    let data = dir.path().join("data");
    std::fs::create_dir(&data).expect("data dir");
    chown(&data, Some(VICTIM), Some(VICTIM)).expect("chown data");
    let key = dir.path().join("master.hex");
    std::fs::write(&key, MASTER_HEX).expect("key");
    chown(&key, Some(VICTIM), Some(VICTIM)).expect("chown key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    dir
}

/// `serve` as the victim on its default socket (no XDG_RUNTIME_DIR: the fallback in
/// `tmp`), stopped after `wait` if it is still running; (still running, stderr).
fn serve_as_victim(tmp: &Path, wait: Duration) -> (bool, String) {
    let mut child = Command::new(tmp.join("authenta-keyd"))
        .args(["serve", "--data-dir"])
        .arg(tmp.join("data"))
        .arg("--master-key-file")
        .arg(tmp.join("master.hex"))
        .env_clear()
        .env("TMPDIR", tmp)
        .env("HOME", "/")
        .uid(VICTIM)
        .gid(VICTIM)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start serve");
    let exited = common::wait_timeout(&mut child, wait);
    let running = exited.is_none();
    if running {
        common::signal(&child, libc::SIGTERM);
        let _ = common::wait_timeout(&mut child, Duration::from_secs(10));
    }
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        use std::io::Read;
        let _ = pipe.read_to_string(&mut stderr);
    }
    (running, stderr)
}

#[test]
fn a_fallback_socket_directory_another_user_made_is_refused() {
    if !can_drop_privileges() {
        return;
    }
    let tmp = shared_tmp();
    let planted = tmp.path().join(format!("authenta-{VICTIM}"));
    std::fs::create_dir(&planted).expect("plant");
    chown(&planted, Some(ATTACKER), Some(ATTACKER)).expect("chown");
    std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let (running, stderr) = serve_as_victim(tmp.path(), Duration::from_secs(5));
    assert!(
        !running,
        "the daemon must not serve from a directory the attacker owns"
    );
    assert!(stderr.contains("belongs to uid 65534"), "{stderr}");
    assert!(
        stderr.contains("--socket"),
        "the message says what to do: {stderr}"
    );

    // The victim's own directory, but open to others: refused too.
    chown(&planted, Some(VICTIM), Some(VICTIM)).expect("chown");
    let (running, stderr) = serve_as_victim(tmp.path(), Duration::from_secs(5));
    assert!(!running);
    assert!(stderr.contains("has mode 0777"), "{stderr}");

    // Gone: the daemon makes it, 0700, and serves.
    std::fs::remove_dir(&planted).expect("remove");
    let (running, stderr) = serve_as_victim(tmp.path(), Duration::from_secs(3));
    assert!(running, "a fresh directory is fine: {stderr}");
    let mode = std::fs::metadata(&planted)
        .expect("made")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
}

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
    assert_eq!(out.status.code(), Some(1), "a broken chain fails the check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("the log is empty but the store holds 2 keys"),
        "{stdout}"
    );
}

/// A policy file another user can write would make that user an admin of the root daemon
/// (it revokes keys, and its rotations write tokens where it says): not obeyed.
#[test]
fn a_policy_file_another_user_could_write_is_not_obeyed() {
    let daemon = common::Daemon::start_with_policy("[defaults]\n");
    let (id, token) = daemon.create("K", "read", &[]);
    let path = daemon.policy.clone().expect("policy file");
    let revoking = format!("[defaults]\n\n[revocations]\nids = [\"{id}\"]\n");
    let refused = |why: &str| {
        common::wait_for("the policy refused", || {
            let report = daemon.cli_json(&["policy", "status", "--json"]);
            report["last_error"]
                .as_str()
                .is_some_and(|e| e.contains(why))
        });
        assert_eq!(
            daemon.verify_code(&token, &[]),
            "valid",
            "the revocation was not obeyed"
        );
        let check = daemon.cli(&["policy", "check", path.to_str().expect("utf-8")]);
        assert_eq!(check.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&check.stderr);
        assert!(
            stderr.contains(why) && stderr.contains("not trusted"),
            "{stderr}"
        );
    };

    // The file is the attacker's.
    chown(&path, Some(ATTACKER), Some(ATTACKER)).expect("chown");
    std::fs::write(&path, &revoking).expect("write as the file's owner would");
    refused("belongs to uid 65534");

    // Root's file, in a directory everyone can write (so anyone could replace it).
    chown(&path, Some(0), Some(0)).expect("chown back");
    let dir = path.parent().expect("policy dir");
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    std::fs::write(&path, format!("{revoking}\n")).expect("write");
    refused("writable by everyone");

    // Put right: the revocation applies.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::write(&path, format!("{revoking}\n\n")).expect("write");
    common::wait_for("the revocation", || {
        daemon.verify_code(&token, &[]) == "revoked"
    });
}

fn rotating_into(sink: &Path, mode: &str) -> String {
    format!(
        "[[rotation]]\nname = \"Rotated-*\"\nevery = \"1s\"\noverlap = \"0s\"\nsink = \"{}\"\nsink_mode = \"{mode}\"\n",
        sink.display()
    )
}

/// Through `[[rotation]]` a policy writer chose where the root daemon writes live tokens (and
/// to whom it gives them). Now the config says where sinks may go, symlinked directories are
/// not followed, and the mode is exactly the one asked for.
#[test]
fn sinks_go_only_where_the_config_allows_and_never_through_a_link() {
    let place = tempfile::tempdir().expect("dir");
    let allowed = place.path().join("allowed");
    std::fs::create_dir(&allowed).expect("allowed dir");
    let elsewhere = place.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).expect("elsewhere");
    let config = format!("sink_dirs = [\"{}\"]\n", allowed.display());

    // Outside sink_dirs: the policy is refused, naming the setting.
    let outside = elsewhere.join("shadow");
    let daemon = common::Daemon::start_with(Some(&config), Some(&rotating_into(&outside, "0400")));
    let (_, _) = daemon.create("Rotated-1", "read", &[]);
    let report = daemon.cli_json(&["policy", "status", "--json"]);
    assert!(
        report["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("sink_dirs")),
        "{report}"
    );
    let policy = daemon.policy.clone().expect("policy");
    let config_path = daemon.config.clone().expect("config");
    let check = daemon.cli(&[
        "policy",
        "check",
        policy.to_str().expect("utf-8"),
        "--config",
        config_path.to_str().expect("utf-8"),
    ]);
    assert_eq!(check.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&check.stderr).contains("sink_dirs"));
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        !outside.exists(),
        "nothing written outside the allowed directories"
    );
    drop(daemon);

    // Allowed: written with exactly the mode asked for, whatever the umask.
    let sink = allowed.join("token");
    let daemon = common::Daemon::start_with(Some(&config), Some(&rotating_into(&sink, "0440")));
    daemon.create("Rotated-1", "read", &[]);
    common::wait_for("the sink", || sink.exists());
    let mode = std::fs::metadata(&sink).expect("sink").permissions().mode();
    assert_eq!(mode & 0o777, 0o440);
    drop(daemon);

    // The allowed directory swapped for a link to another place: not followed.
    std::fs::remove_file(&sink).expect("clean");
    std::fs::remove_dir(&allowed).expect("remove");
    std::os::unix::fs::symlink(&elsewhere, &allowed).expect("link");
    let daemon = common::Daemon::start_with(Some(&config), Some(&rotating_into(&sink, "0400")));
    daemon.create("Rotated-1", "read", &[]);
    common::wait_for("the rotation to fail", || {
        let report = daemon.cli_json(&["policy", "status", "--json"]);
        report["rotation_failures"]
            .as_array()
            .is_some_and(|f| !f.is_empty())
    });
    assert_eq!(
        std::fs::read_dir(&elsewhere).expect("dir").count(),
        0,
        "nothing written through the link"
    );
}

/// As `nobody`, opens `count` connections to `socket`, sends each a Hello, and holds them
/// for `hold` seconds; prints how many were welcomed (HelloReply variant 0).
fn hoard_as_nobody(socket: &Path, count: usize, hold: u32) -> std::process::Child {
    use authenta_client::proto::{encode, Hello, PROTOCOL_VERSION};
    let hello = encode(&Hello {
        version: PROTOCOL_VERSION,
        agent: String::new(),
    })
    .expect("hello");
    let mut frame = (hello.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&hello);
    let hex: String = frame.iter().map(|b| format!("{b:02x}")).collect();
    let script = r#"
import socket, sys, time
path, n, hello, hold = sys.argv[1], int(sys.argv[2]), bytes.fromhex(sys.argv[3]), float(sys.argv[4])
held, welcomed = [], 0
for _ in range(n):
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(path)
        s.sendall(hello)
        held.append(s)
    except OSError:
        s.close()
for s in held:
    s.settimeout(2)
    try:
        reply = s.recv(64)
        if len(reply) > 4 and reply[4] == 0:
            welcomed += 1
    except OSError:
        pass
print(welcomed, flush=True)
time.sleep(hold)
"#;
    Command::new("python3")
        .args(["-c", script])
        .arg(socket)
        .arg(count.to_string())
        .arg(hex)
        .arg(hold.to_string())
        .uid(ATTACKER)
        .gid(ATTACKER)
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3")
}

fn welcomed(child: &mut std::process::Child) -> usize {
    use std::io::BufRead;
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .expect("a line");
    line.trim().parse().expect("a count")
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// A uid that may not verify (outside verify_gids) held every slot, so the real app got
/// `busy`; a flood past the cap logged a line per refusal and kept the memory.
#[test]
fn connection_slots_cannot_be_hoarded() {
    if !can_drop_privileges() {
        return;
    }
    // Root (the app here) may verify; nobody may not.
    let config = "socket_mode = \"0666\"\nverify_gids = [0]\nmax_connections = 64\nmax_connections_per_uid = 16\n";
    let daemon = common::Daemon::start_with_config(Some(config));
    let (_, token) = daemon.create("App", "read", &[]);
    let mut hoarder = hoard_as_nobody(&daemon.socket, 200, 3);
    assert_eq!(
        welcomed(&mut hoarder),
        0,
        "a uid that may not verify gets no slot at all"
    );
    assert_eq!(
        daemon.verify_code(&token, &[]),
        "valid",
        "the app is still served"
    );
    let _ = hoarder.wait();

    // A uid that may verify holds at most its share.
    let open = "socket_mode = \"0666\"\nmax_connections = 64\nmax_connections_per_uid = 16\n";
    let daemon = common::Daemon::start_with_config(Some(open));
    let (_, token) = daemon.create("App", "read", &[]);
    let idle = rss_kib(daemon.pid());
    let mut hoarder = hoard_as_nobody(&daemon.socket, 2000, 3);
    assert_eq!(welcomed(&mut hoarder), 16, "max_connections_per_uid");
    assert_eq!(
        daemon.verify_code(&token, &[]),
        "valid",
        "another uid is still served"
    );
    let _ = hoarder.wait();
    std::thread::sleep(Duration::from_millis(500));
    let refusals = daemon
        .log()
        .lines()
        .filter(|l| l.contains("connections refused"))
        .count();
    assert!(
        refusals <= 10,
        "refusals are logged at most once a second: {refusals} lines"
    );
    let after = rss_kib(daemon.pid());
    assert!(
        after < idle + 32 * 1024,
        "memory returns near idle: {idle} KiB -> {after} KiB"
    );
}

/// The socket's group could not reach it when the daemon made its directory (root:root
/// 0750): the directory now gets the group too.
#[test]
fn the_socket_directory_the_daemon_makes_gets_the_socket_group() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let key = dir.path().join("master.hex");
    std::fs::write(&key, MASTER_HEX).expect("key");
    let config = dir.path().join("keyd.toml");
    std::fs::write(&config, "socket_group = \"65534\"\n").expect("config");
    let socket_dir = dir.path().join("made-by-the-daemon");
    let mut child = Command::new(BIN)
        .args(["serve", "--socket"])
        .arg(socket_dir.join("keyd.sock"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--master-key-file")
        .arg(&key)
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("serve");
    common::wait_for("the socket", || socket_dir.join("keyd.sock").exists());
    let meta = std::fs::metadata(&socket_dir).expect("socket dir");
    common::signal(&child, libc::SIGTERM);
    let _ = common::wait_timeout(&mut child, Duration::from_secs(10));
    use std::os::unix::fs::MetadataExt;
    assert_eq!(meta.gid(), 65534, "the directory belongs to socket_group");
    assert_eq!(meta.mode() & 0o777, 0o750);
}

/// The development master key sits beside the data, so every backup carries it: it was
/// announced once, at generation, and `status` did not show it.
#[test]
fn the_development_key_is_shown_in_status_and_warned_at_every_start() {
    let dir = tempfile::tempdir().expect("dir");
    let serve = || {
        Command::new(BIN)
            .args(["serve", "--socket"])
            .arg(dir.path().join("keyd.sock"))
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .env_remove("CREDENTIALS_DIRECTORY")
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("serve")
    };
    for start in 0..2 {
        let mut child = serve();
        common::wait_for("the socket", || {
            authenta_client::Client::connect(dir.path().join("keyd.sock")).is_ok()
        });
        let status = authenta_client::Client::connect(dir.path().join("keyd.sock"))
            .and_then(|mut c| c.status())
            .expect("status");
        assert!(status.development_key, "status shows the development key");
        common::signal(&child, libc::SIGTERM);
        let _ = common::wait_timeout(&mut child, Duration::from_secs(10));
        let mut stderr = String::new();
        use std::io::Read;
        let _ = child
            .stderr
            .take()
            .expect("stderr")
            .read_to_string(&mut stderr);
        assert!(
            stderr.contains("development master key"),
            "start {start} warns: {stderr}"
        );
    }
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
    assert!(daemon.log().contains("written back from an older copy"));
    let check = daemon.cli(&["audit", "--verify"]);
    assert_eq!(
        check.status.code(),
        Some(1),
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
         ALTER TABLE audit DROP COLUMN key_id; DROP TABLE fleet_keys; PRAGMA user_version = 1;",
    )
    .expect("back to schema 1");
    drop(db);
    daemon.restart();
    assert_eq!(daemon.verify_code(&token, &[]), "valid");
    assert!(daemon
        .log()
        .contains("bound every key row to the audit chain"));
    let status = daemon.cli_json(&["status", "--json"]);
    assert_eq!(status["corrupt_keys"], serde_json::json!([]), "{status}");
}

/// With `--daemonize` and no log file, the development key's warning went nowhere: it is
/// now said on the terminal before the daemon detaches.
#[test]
fn daemonize_with_the_development_key_warns_before_detaching() {
    let dir = tempfile::tempdir().expect("dir");
    let pidfile = dir.path().join("keyd.pid");
    let out = Command::new(BIN)
        .args(["serve", "--daemonize", "--pidfile"])
        .arg(&pidfile)
        .arg("--socket")
        .arg(dir.path().join("keyd.sock"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env_remove("CREDENTIALS_DIRECTORY")
        .stdin(Stdio::null())
        .output()
        .expect("serve --daemonize");
    let pid: u32 = std::fs::read_to_string(&pidfile)
        .ok()
        .and_then(|p| p.trim().parse().ok())
        .expect("the daemon's pid");
    common::signal_pid(pid, libc::SIGTERM);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("development master key"), "{stderr}");
}
