//! Trust boundaries, attacked from outside as another local user would: each test sets up
//! what an unprivileged user could, and shows the daemon refuses to be fooled by it. Tests
//! run as root so that they can act as other uids (`daemon` is the victim, uid 1, and
//! `nobody` the attacker, uid 65534).

mod common;

use common::{can_drop_privileges, BIN, MASTER_HEX};
use std::os::unix::fs::{chown, lchown, PermissionsExt};
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

/// A directory in `tmp` that the attacker made and left open to everyone.
fn dir_another_user_made(tmp: &Path, name: &str) -> std::path::PathBuf {
    let dir = tmp.join(name);
    std::fs::create_dir(&dir).expect("dir");
    chown(&dir, Some(ATTACKER), Some(ATTACKER)).expect("chown");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    dir
}

/// `serve` as the victim on its default socket (no XDG_RUNTIME_DIR: the fallback in
/// `tmp`), stopped after `wait` if it is still running; (still running, stderr).
fn serve_as_victim(tmp: &Path, wait: Duration) -> (bool, String) {
    serve_as_victim_with(tmp, wait, &[])
}

/// [`serve_as_victim`] with more arguments for `serve`.
fn serve_as_victim_with(tmp: &Path, wait: Duration, args: &[&std::ffi::OsStr]) -> (bool, String) {
    let mut command = Command::new(tmp.join("authenta-keyd"));
    command.args(["serve", "--data-dir"]).arg(tmp.join("data"));
    if !args.iter().any(|&arg| arg == "--master-key-file") {
        command.arg("--master-key-file").arg(tmp.join("master.hex"));
    }
    command
        .args(args)
        .env_clear()
        .env("TMPDIR", tmp)
        .env("HOME", "/")
        .uid(VICTIM)
        .gid(VICTIM)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = common::retry_busy_text(|| command.spawn()).expect("start serve");
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

/// Starts `serve` as the victim with `args` for 2 s; asserts it refused, saying each of
/// `reasons` (`attempt` says what it must not have done).
fn assert_refused(tmp: &Path, args: &[&std::ffi::OsStr], attempt: &str, reasons: &[&str]) {
    let (running, stderr) = serve_as_victim_with(tmp, Duration::from_secs(2), args);
    assert!(!running, "{attempt}");
    for reason in reasons {
        assert!(stderr.contains(reason), "{stderr}");
    }
}

/// Starts `serve` as the victim with `args` for 2 s; asserts it serves.
fn assert_serves(tmp: &Path, args: &[&std::ffi::OsStr], attempt: &str) {
    let (running, stderr) = serve_as_victim_with(tmp, Duration::from_secs(2), args);
    assert!(running, "{attempt}: {stderr}");
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

/// `--log-file` in a directory others can write (such as /tmp): another user makes the
/// file first, theirs and open to all, and reads what the daemon logs (key ids, peers); a
/// FIFO there made the daemon hang at start, waiting for a reader. Refused, saying
/// why; a file of the daemon's own that only it may write is used.
#[test]
fn a_log_file_another_user_made_is_refused() {
    if !can_drop_privileges() {
        return;
    }
    let tmp = shared_tmp();
    let log = tmp.path().join("keyd.log");
    let args = [std::ffi::OsStr::new("--log-file"), log.as_os_str()];
    std::fs::write(&log, "").expect("plant");
    chown(&log, Some(ATTACKER), Some(ATTACKER)).expect("chown");
    std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let (running, stderr) = serve_as_victim_with(tmp.path(), Duration::from_secs(5), &args);
    assert!(!running, "the daemon must not log into the attacker's file");
    // With fs.protected_regular, the kernel refuses the open itself.
    assert!(
        stderr.contains("belongs to uid 65534") || stderr.contains("Permission denied"),
        "{stderr}"
    );
    assert_eq!(std::fs::metadata(&log).expect("still there").len(), 0);

    // A FIFO, even the daemon's user's own (the kernel's protected_fifos may refuse
    // another user's in a sticky directory before the daemon sees it).
    std::fs::remove_file(&log).expect("remove");
    nix::unistd::mkfifo(&log, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("fifo");
    chown(&log, Some(VICTIM), Some(VICTIM)).expect("chown");
    let (running, stderr) = serve_as_victim_with(tmp.path(), Duration::from_secs(5), &args);
    assert!(!running, "refused, not hanging: {stderr}");
    assert!(stderr.contains("not a regular file"), "{stderr}");

    // A hard link to another file of the victim's (made here as root: where the kernel's
    // protected_hardlinks is off, or for a file of a group they are in, another user
    // can): the log would be appended to that file.
    std::fs::remove_file(&log).expect("remove");
    let other = tmp.path().join("victims-file");
    std::fs::write(&other, "precious\n").expect("the victim's other file");
    chown(&other, Some(VICTIM), Some(VICTIM)).expect("chown");
    std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    std::fs::hard_link(&other, &log).expect("link");
    let (running, stderr) = serve_as_victim_with(tmp.path(), Duration::from_secs(5), &args);
    assert!(!running, "the daemon must not log into a hard link");
    assert!(stderr.contains("hard links"), "{stderr}");
    let kept = std::fs::read_to_string(&other).expect("read");
    assert_eq!(kept, "precious\n", "nothing appended to the linked file");

    // The victim's own file, writable by it alone: used.
    std::fs::remove_file(&log).expect("remove");
    std::fs::write(&log, "").expect("the victim's");
    chown(&log, Some(VICTIM), Some(VICTIM)).expect("chown");
    std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let (running, stderr) = serve_as_victim_with(tmp.path(), Duration::from_secs(3), &args);
    assert!(running, "{stderr}");
    let logged = std::fs::read_to_string(&log).expect("read");
    assert!(logged.contains("ready"), "{logged}");
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

/// Whoever can write the data directory can put a store and a development key of their own
/// in it, whose tokens then verify: the daemon used a data directory others could write, and
/// store files that another user owned, without a word.
#[test]
fn a_data_directory_or_store_file_others_could_write_is_refused() {
    if !can_drop_privileges() {
        return;
    }
    let tmp = shared_tmp();
    let data = tmp.path().join("data");

    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    assert_refused(
        tmp.path(),
        &[],
        "served from a data directory everyone can write",
        &["the data directory", "writable by everyone"],
    );

    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let planted = data.join("keys.db");
    std::fs::write(&planted, b"").expect("planted");
    chown(&planted, Some(ATTACKER), Some(ATTACKER)).expect("chown");
    assert_refused(
        tmp.path(),
        &[],
        "served a store another user owns",
        &["belongs to uid 65534"],
    );
    std::fs::remove_file(&planted).expect("removed");

    std::os::unix::fs::symlink(tmp.path().join("master.hex"), data.join("master.key"))
        .expect("linked");
    assert_refused(
        tmp.path(),
        &[],
        "served with a linked key file",
        &["master.key is not a regular file"],
    );
    std::fs::remove_file(data.join("master.key")).expect("removed");

    assert_serves(tmp.path(), &[], "refused its own private data directory");
}

/// A master key file (`--master-key-file`) that others could write: before a store exists
/// they could give the daemon a key they know, and any time after, a key that locks its
/// owner out.
#[test]
fn a_master_key_file_others_could_write_is_refused() {
    if !can_drop_privileges() {
        return;
    }
    let tmp = shared_tmp();
    let key = tmp.path().join("master.hex");

    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    assert_refused(
        tmp.path(),
        &[],
        "served with a master key everyone can write",
        &["the master key file", "writable by everyone"],
    );

    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    chown(&key, Some(ATTACKER), Some(ATTACKER)).expect("chown");
    assert_refused(
        tmp.path(),
        &[],
        "served with a master key another user owns",
        &["belongs to uid 65534"],
    );

    // The victim's own file, reached through a directory the attacker made: they can
    // swap it for another at will.
    chown(&key, Some(VICTIM), Some(VICTIM)).expect("chown key");
    let planted = dir_another_user_made(tmp.path(), "planted");
    std::fs::rename(&key, planted.join("master.hex")).expect("move");
    std::os::unix::fs::symlink(planted.join("master.hex"), &key).expect("link");
    assert_refused(
        tmp.path(),
        &[],
        "served with a master key in a directory another user made",
        &["its directory"],
    );
    std::fs::remove_file(&key).expect("unlink");
    std::fs::rename(planted.join("master.hex"), &key).expect("move back");

    assert_serves(tmp.path(), &[], "refused its own private key file");
}

/// `rekey` wraps the store under the key it is given: one another user wrote (here in a
/// directory they made in /tmp) would hand them the store, online or offline. Held to
/// `serve`'s rule, before anything is sent or changed.
#[test]
fn rekey_refuses_a_new_master_key_another_user_could_write() {
    if !can_drop_privileges() {
        return;
    }
    let mut daemon = common::Daemon::start();
    let (_, token) = daemon.create("app", "read", &[]);
    let tmp = shared_tmp();
    let planted = dir_another_user_made(tmp.path(), "att").join("new.hex");
    std::fs::write(&planted, "07".repeat(32)).expect("key");
    chown(&planted, Some(ATTACKER), Some(ATTACKER)).expect("chown");
    let planted = planted.to_string_lossy().to_string();

    let online = daemon.cli(&["rekey", "--new-master-key-file", &planted]);
    let stderr = String::from_utf8_lossy(&online.stderr);
    assert!(
        !online.status.success(),
        "online rekey took the planted key"
    );
    assert!(stderr.contains("the new master key file"), "{stderr}");
    assert!(stderr.contains("belongs to uid 65534"), "{stderr}");

    assert!(daemon.stop().success());
    let data_dir = daemon.data_dir.to_string_lossy().to_string();
    let old_key = daemon.master_key.to_string_lossy().to_string();
    let offline = daemon.cli(&[
        "rekey",
        "--offline",
        "--new-master-key-file",
        &planted,
        "--data-dir",
        &data_dir,
        "--master-key-file",
        &old_key,
    ]);
    let stderr = String::from_utf8_lossy(&offline.stderr);
    assert!(
        !offline.status.success(),
        "offline rekey took the planted key"
    );
    assert!(stderr.contains("the new master key file"), "{stderr}");
    daemon.restart();
    assert_eq!(
        daemon.verify_code(&token, &[]),
        "valid",
        "the old key still opens it"
    );
}

/// A client sends a token (`verify`) or a master key (`rekey`) to whatever answers on the
/// socket it is given. Another user who made the socket's directory in /tmp, or put a
/// socket of theirs in /tmp itself, would receive it: the client refuses before it
/// connects.
#[test]
fn a_client_refuses_a_socket_another_user_could_have_put_there() {
    if !can_drop_privileges() {
        return;
    }
    let tmp = shared_tmp();
    let planted_dir = tmp.path().join("authenta");
    std::fs::create_dir(&planted_dir).expect("dir");
    chown(&planted_dir, Some(ATTACKER), Some(ATTACKER)).expect("chown");
    let in_their_dir = planted_dir.join("keyd.sock");
    let in_tmp = tmp.path().join("keyd.sock");
    for socket in [&in_their_dir, &in_tmp] {
        let listener = std::os::unix::net::UnixListener::bind(socket).expect("bind");
        lchown(socket, Some(ATTACKER), Some(ATTACKER)).expect("chown the socket");
        listener.set_nonblocking(true).expect("nonblocking");
        let out = Command::new(BIN)
            .arg("--socket")
            .arg(socket)
            .arg("verify")
            .env("AUTHENTA_KEY", "api_not-sent-anywhere")
            .output()
            .expect("run verify");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{}: {stderr}", socket.display());
        assert!(stderr.contains("is not trusted"), "{stderr}");
        assert!(
            listener.accept().is_err(),
            "{}: the client connected to the other user's socket",
            socket.display()
        );
    }
}

/// The NATS credentials and TLS roots a fleet node obeys: whoever could write the token
/// file could make the node log in as someone else, and whoever could write the root
/// certificates could pose as the fleet's servers, feeding every host the keys they like.
#[test]
fn fleet_files_others_could_write_are_refused() {
    if !can_drop_privileges() {
        return;
    }
    let tmp = shared_tmp();
    let victims_file = |name: &str, text: &str, mode: u32| {
        let path = tmp.path().join(name);
        std::fs::write(&path, text).expect("write");
        chown(&path, Some(VICTIM), Some(VICTIM)).expect("chown");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        path
    };
    let token = victims_file("nats.token", "s3cret\n", 0o600);
    let ca = victims_file("nats-ca.pem", "not read before the check\n", 0o644);
    // No NATS server listens there: a node that got past its files would keep retrying,
    // and so still be running when the test looks.
    let config = victims_file(
        "keyd.toml",
        &format!(
            "[fleet]\nservers = [\"nats://127.0.0.1:9\"]\nname = \"trust\"\nnode = \"n1\"\n\
             replicas = 1\ntoken_file = \"{}\"\ntls_ca = \"{}\"\n",
            token.display(),
            ca.display()
        ),
        0o600,
    );
    let args = [std::ffi::OsStr::new("--config"), config.as_os_str()];

    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    assert_refused(
        tmp.path(),
        &args,
        "served with a NATS token file everyone can write",
        &["[fleet] token_file", "writable by everyone"],
    );
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).expect("chmod");

    chown(&ca, Some(ATTACKER), Some(ATTACKER)).expect("chown");
    assert_refused(
        tmp.path(),
        &args,
        "served trusting root certificates another user owns",
        &["[fleet] tls_ca", "belongs to uid 65534"],
    );
    chown(&ca, Some(VICTIM), Some(VICTIM)).expect("chown");

    let (running, stderr) = serve_as_victim_with(tmp.path(), Duration::from_secs(2), &args);
    assert!(
        !stderr.contains("[fleet] token_file") && !stderr.contains("[fleet] tls_ca"),
        "its own files must pass the check (running: {running}): {stderr}"
    );
}

/// A link another user made in a sticky directory (where anyone may create entries) that
/// leads to a trusted file: its owner can point it elsewhere at any time, between the
/// daemon's check and its read.
#[test]
fn a_link_another_user_owns_on_the_way_to_a_trusted_file_is_refused() {
    if !can_drop_privileges() {
        return;
    }
    let tmp = shared_tmp();
    let private = tmp.path().join("private");
    std::fs::create_dir(&private).expect("dir");
    chown(&private, Some(VICTIM), Some(VICTIM)).expect("chown");
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    std::fs::rename(tmp.path().join("master.hex"), private.join("master.hex")).expect("move");
    let link = tmp.path().join("keys");
    std::os::unix::fs::symlink(&private, &link).expect("link");
    lchown(&link, Some(ATTACKER), Some(ATTACKER)).expect("lchown");
    let key = link.join("master.hex");
    let args = ["--master-key-file".as_ref(), key.as_os_str()];

    assert_refused(
        tmp.path(),
        &args,
        "served through a link another user can repoint",
        &["a link that uid 65534 owns"],
    );
    lchown(&link, Some(VICTIM), Some(VICTIM)).expect("lchown");
    assert_serves(tmp.path(), &args, "refused its own link");
}

/// A directory the daemon is to make inside one another user can write: they could swap it
/// for a link (to `/etc`, say) between its making and the daemon setting its mode and group
/// by name. The daemon must refuse before it makes anything there.
#[test]
fn no_directory_is_made_inside_one_another_user_can_write() {
    if !can_drop_privileges() {
        return;
    }
    let tmp = shared_tmp();
    let planted = dir_another_user_made(tmp.path(), "planted");
    let socket = planted.join("sub").join("keyd.sock");
    assert_refused(
        tmp.path(),
        &["--socket".as_ref(), socket.as_os_str()],
        "served in a directory made inside another user's",
        &["cannot make the socket directory"],
    );
    assert!(!planted.join("sub").exists(), "made the directory first");
}

/// A socket directory named with `--socket` that another user made: they could put their
/// own socket there once the daemon's is gone and collect the tokens apps send, and the
/// daemon gave its group to whatever directory held the socket (`/run` with
/// `--socket /run/keyd.sock`).
#[test]
fn a_socket_directory_another_user_made_is_refused_and_one_it_did_not_make_keeps_its_group() {
    if !can_drop_privileges() {
        return;
    }
    let tmp = shared_tmp();
    let planted = dir_another_user_made(tmp.path(), "planted");
    let socket = planted.join("keyd.sock");
    let (running, stderr) = serve_as_victim_with(
        tmp.path(),
        Duration::from_secs(2),
        &["--socket".as_ref(), socket.as_os_str()],
    );
    assert!(!running, "served in a directory another user made");
    assert!(
        stderr.contains("another user could put their own socket there"),
        "{stderr}"
    );

    let existing = tmp.path().join("existing");
    std::fs::create_dir(&existing).expect("dir");
    chown(&existing, Some(VICTIM), Some(0)).expect("chown");
    std::fs::set_permissions(&existing, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let config = tmp.path().join("keyd.toml");
    std::fs::write(&config, format!("socket_group = \"{VICTIM}\"\n")).expect("config");
    let socket = existing.join("keyd.sock");
    let (running, stderr) = serve_as_victim_with(
        tmp.path(),
        Duration::from_secs(2),
        &[
            "--socket".as_ref(),
            socket.as_os_str(),
            "--config".as_ref(),
            config.as_os_str(),
        ],
    );
    assert!(running, "{stderr}");
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&existing).expect("dir");
    assert_eq!(meta.gid(), 0, "a directory it did not make keeps its group");
}

/// The pidfile is opened following links and its pid is what `kill` and logrotate signal:
/// in a directory another user made, they could point it at a file the daemon's user may
/// write, or put another process's pid in it. It was used whoever had made the directory.
#[test]
fn a_pidfile_in_a_directory_another_user_made_is_refused() {
    if !can_drop_privileges() {
        return;
    }
    let tmp = shared_tmp();
    let planted = dir_another_user_made(tmp.path(), "planted-run");
    let socket = tmp.path().join("own").join("keyd.sock");
    let daemonized = |pidfile: &Path| {
        serve_as_victim_with(
            tmp.path(),
            Duration::from_secs(2),
            &[
                "--daemonize".as_ref(),
                "--pidfile".as_ref(),
                pidfile.as_os_str(),
                "--socket".as_ref(),
                socket.as_os_str(),
            ],
        )
    };
    let (running, stderr) = daemonized(&planted.join("keyd.pid"));
    assert!(!running);
    assert!(stderr.contains("the pidfile's directory"), "{stderr}");
    assert!(stderr.contains("belongs to uid 65534"), "{stderr}");
    assert!(
        !planted.join("keyd.pid").exists(),
        "the pidfile was written"
    );

    let (_, stderr) = daemonized(&tmp.path().join("missing").join("keyd.pid"));
    assert!(stderr.contains("does not exist: make it first"), "{stderr}");
}
