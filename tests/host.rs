//! Host integration through the real binary: socket activation, sd_notify, access rules
//! with dropped privileges, SIGHUP reload, --daemonize, rekey, and busy polling that stops.

mod common;

use common::{wait_timeout, Daemon, BIN, MASTER_HEX};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if ready() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("timed out waiting for {what}");
}

#[test]
fn serves_through_a_socket_passed_by_systemd_socket_activate() {
    let dir = tempfile::tempdir().expect("tmp");
    let socket = dir.path().join("activated.sock");
    let key = dir.path().join("master.hex");
    std::fs::write(&key, MASTER_HEX).expect("key");
    let log = std::fs::File::create(dir.path().join("log")).expect("log");
    let mut activator = Command::new("systemd-socket-activate")
        .arg("-l")
        .arg(&socket)
        .arg("-E")
        .arg("RUST_LOG=debug")
        .arg(BIN)
        .arg("serve")
        .arg("--socket")
        .arg(&socket)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--master-key-file")
        .arg(&key)
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("systemd-socket-activate (package systemd) must be installed");
    wait_for("the activation socket", || socket.exists());

    // The first connection starts the daemon, which takes over the listening socket.
    let mut client = authenta_client::Client::new(&socket);
    let created = client
        .create_key(authenta_client::proto::CreateKey {
            name: "Activated".into(),
            permissions: vec![authenta_client::Permission::Read],
            environment: None,
            expires_in_secs: None,
        })
        .expect("create through the inherited socket");
    let verified = client
        .verify(&created.token, &[authenta_client::Permission::Read])
        .expect("valid through the inherited socket");
    assert_eq!(verified.key_id, created.key.id);
    let out = Command::new(BIN)
        .args(["verify", "--permission", "read"])
        .env("AUTHENTA_SOCKET", &socket)
        .env("AUTHENTA_KEY", &created.token)
        .output()
        .expect("verify");
    assert_eq!(out.status.code(), Some(0));
    let text = std::fs::read_to_string(dir.path().join("log")).expect("log");
    assert!(text.contains("socket_activated=true"), "{text}");

    common::signal(&activator, libc::SIGTERM);
    let status = wait_timeout(&mut activator, Duration::from_secs(15)).expect("stops");
    assert!(status.success(), "{status}");
    assert!(
        socket.exists(),
        "a socket systemd owns is not removed by the daemon"
    );
}

/// Reads notifications until one contains `wanted`; returns everything read.
fn read_until(notify: &UnixDatagram, wanted: &str) -> String {
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Ok(n) = notify.recv(&mut buf) {
            let message = String::from_utf8_lossy(&buf[..n]).to_string();
            seen.push_str(&message);
            seen.push('|');
            if message.lines().any(|l| l == wanted) {
                return seen;
            }
        }
    }
    panic!("no {wanted} notification; saw: {seen}");
}

#[test]
fn tells_its_own_notify_socket_ready_reloading_and_stopping() {
    let daemon_dirs = Daemon::start();
    let mut daemon = daemon_dirs;
    assert!(daemon.stop().success());
    let notify_path = daemon.dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).expect("bind notify socket");
    notify
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let mut child = daemon
        .serve_command(&daemon.master_key)
        .env("NOTIFY_SOCKET", &notify_path)
        .stderr(Stdio::null())
        .spawn()
        .expect("start");

    let seen = read_until(&notify, "READY=1");
    assert!(seen.contains("STATUS=serving 0 keys"), "{seen}");
    assert!(
        authenta_client::Client::connect(&daemon.socket).is_ok(),
        "ready means listening"
    );

    common::signal(&child, libc::SIGHUP);
    let seen = read_until(&notify, "RELOADING=1");
    assert!(seen.contains("MONOTONIC_USEC="), "{seen}");
    read_until(&notify, "READY=1");

    common::signal(&child, libc::SIGTERM);
    read_until(&notify, "STOPPING=1");
    let status = wait_timeout(&mut child, Duration::from_secs(15)).expect("stops");
    assert!(status.success());
}

#[test]
fn pings_the_watchdog_when_systemd_asks() {
    let mut daemon = Daemon::start();
    assert!(daemon.stop().success());
    let notify_path = daemon.dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).expect("bind");
    notify
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let mut command = daemon.serve_command(&daemon.master_key);
    command
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "400000")
        .stderr(Stdio::null());
    let mut child = command.spawn().expect("start");
    read_until(&notify, "READY=1");
    read_until(&notify, "WATCHDOG=1");
    read_until(&notify, "WATCHDOG=1");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn verify_gids_allow_and_refuse_exactly_as_configured_and_sighup_reloads_them() {
    if !common::can_drop_privileges() {
        return;
    }
    let daemon = Daemon::start_with_config(Some("socket_mode = \"0666\"\nverify_gids = [4242]\n"));
    let (_, token) = daemon.create("Backend-Server-Key", "read", &[]);

    let out = daemon.cli_as_nobody(&["verify"], Some(&token));
    assert_eq!(out.status.code(), Some(1), "nobody is not in verify_gids");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("may not verify") && stderr.contains("verify_gids"),
        "{stderr}"
    );
    assert!(!stderr.contains(&token));
    assert_eq!(
        daemon.verify_code(&token, &[]),
        "valid",
        "root (an admin) still verifies"
    );
    assert!(
        daemon.log().contains("uid=65534"),
        "refusal logged with the uid"
    );

    // Put nobody's group in, and reload.
    let config = daemon.config.clone().expect("config");
    std::fs::write(&config, "socket_mode = \"0666\"\nverify_gids = [65534]\n").expect("write");
    common::signal_pid(daemon.pid(), libc::SIGHUP);
    wait_for("the reload", || {
        daemon.log().contains("reloaded the access rules")
    });
    let out = daemon.cli_as_nobody(&["verify"], Some(&token));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = daemon.cli_as_nobody(&["keys", "list"], None);
    assert_eq!(
        out.status.code(),
        Some(1),
        "verify_gids grant verify, not admin"
    );

    // An invalid config on reload keeps the rules in force.
    std::fs::write(&config, "verify_gids = \"oops\"\n").expect("write");
    common::signal_pid(daemon.pid(), libc::SIGHUP);
    wait_for("the failed reload", || {
        daemon.log().contains("config reload failed")
    });
    let out = daemon.cli_as_nobody(&["verify"], Some(&token));
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn admin_gids_grant_admin_requests() {
    if !common::can_drop_privileges() {
        return;
    }
    let daemon = Daemon::start_with_config(Some("socket_mode = \"0666\"\nadmin_gids = [65534]\n"));
    let out = daemon.cli_as_nobody(&["keys", "list", "--json"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn daemonize_command(
    dir: &std::path::Path,
    name: &str,
    key: &std::path::Path,
    pidfile: &std::path::Path,
) -> Command {
    let mut command = Command::new(BIN);
    command
        .arg("serve")
        .arg("--daemonize")
        .arg("--pidfile")
        .arg(pidfile)
        .arg("--log-file")
        .arg(dir.join(format!("{name}.log")))
        .arg("--socket")
        .arg(dir.join(format!("{name}.sock")))
        .arg("--data-dir")
        .arg(dir.join(format!("{name}-data")))
        .arg("--master-key-file")
        .arg(key)
        .stdin(Stdio::null());
    command
}

#[test]
fn daemonize_returns_once_ready_holds_the_pidfile_and_refuses_a_second_instance() {
    let dir = tempfile::tempdir().expect("tmp");
    let key = dir.path().join("master.hex");
    std::fs::write(&key, MASTER_HEX).expect("key");
    let pidfile = dir.path().join("keyd.pid");

    let out = daemonize_command(dir.path(), "first", &key, &pidfile)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Ready means ready: the socket answers at once, with no retry.
    let socket = dir.path().join("first.sock");
    let mut client =
        authenta_client::Client::connect(&socket).expect("answers right after the parent exits");
    assert!(client.status().is_ok());
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .expect("pidfile")
        .trim()
        .parse()
        .expect("a pid");
    let pid = nix::unistd::Pid::from_raw(pid);
    assert!(
        nix::sys::signal::kill(pid, None).is_ok(),
        "the pidfile names a live process"
    );
    assert_ne!(pid.as_raw() as u32, std::process::id());

    let second = daemonize_command(dir.path(), "second", &key, &pidfile)
        .output()
        .expect("run");
    assert!(
        !second.status.success(),
        "a second instance on the same pidfile must refuse"
    );
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains("pidfile"), "{stderr}");

    // A start-up error reaches the waiting parent.
    let wrong = dir.path().join("wrong.hex");
    std::fs::write(&wrong, "ab".repeat(32)).expect("key");
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("stop the first");
    wait_for("the first daemon to exit", || {
        nix::sys::signal::kill(pid, None).is_err()
    });
    let failed = daemonize_command(dir.path(), "first", &wrong, &pidfile)
        .output()
        .expect("run");
    assert!(!failed.status.success());
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(stderr.contains("master key"), "{stderr}");
}

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

    let old = daemon
        .serve_command(&daemon.master_key)
        .output()
        .expect("run");
    assert!(
        !old.status.success(),
        "the old master key no longer opens the store"
    );
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

    let old = daemon
        .serve_command(&daemon.master_key)
        .output()
        .expect("run");
    assert!(
        !old.status.success(),
        "the old master key no longer opens the store"
    );
    daemon.master_key = new_key;
    daemon.restart();
    assert_eq!(daemon.verify_code(&token, &[]), "valid");
}

#[test]
fn the_process_is_not_dumpable_and_has_no_core_dumps() {
    if !common::can_drop_privileges() {
        return;
    }
    // Run the daemon as nobody: a non-dumpable process's /proc files belong to root rather
    // than to its own uid, which is how the kernel shows PR_SET_DUMPABLE 0 to others.
    let dir = tempfile::tempdir().expect("tmp");
    let home = dir.path().join("nobody");
    std::fs::create_dir(&home).expect("dir");
    nix::unistd::chown(
        &home,
        Some(nix::unistd::Uid::from_raw(65534)),
        Some(nix::unistd::Gid::from_raw(65534)),
    )
    .expect("chown");
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let key = home.join("master.hex");
    std::fs::write(&key, MASTER_HEX).expect("key");
    nix::unistd::chown(&key, Some(nix::unistd::Uid::from_raw(65534)), None).expect("chown");
    let socket = home.join("k.sock");
    let child = Command::new(BIN)
        .arg("serve")
        .arg("--socket")
        .arg(&socket)
        .arg("--data-dir")
        .arg(home.join("data"))
        .arg("--master-key-file")
        .arg(&key)
        .uid(65534)
        .gid(65534)
        .env("HOME", &home)
        .stderr(Stdio::null())
        .spawn()
        .expect("start as nobody");
    let child = KillOnDrop(child);
    wait_for("the socket", || {
        authenta_client::Client::connect(&socket).is_ok()
    });
    let pid = child.0.id();
    let status = std::fs::metadata(format!("/proc/{pid}/status")).expect("proc");
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&status),
        0,
        "non-dumpable: /proc files owned by root"
    );
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .expect("core line");
    assert_eq!(core.split_whitespace().nth(4), Some("0"), "{core}");
}

/// Kills a child when the test ends, also when an assertion fails.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn under_journald_log_lines_carry_no_timestamp_of_their_own() {
    let mut daemon = Daemon::start();
    assert!(daemon.stop().success());
    let log = daemon.dir.path().join("journal.log");
    let mut child = daemon
        .serve_command(&daemon.master_key)
        .env("JOURNAL_STREAM", "8:12345")
        .env("RUST_LOG", "info")
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("start");
    wait_for("the socket", || {
        authenta_client::Client::connect(&daemon.socket).is_ok()
    });
    common::signal(&child, libc::SIGTERM);
    assert!(wait_timeout(&mut child, Duration::from_secs(15)).is_some_and(|s| s.success()));
    let text = std::fs::read_to_string(&log).expect("log");
    let ready = text
        .lines()
        .find(|l| l.contains("authenta-keyd ready"))
        .expect("ready line");
    assert!(
        ready.trim_start().starts_with("INFO"),
        "no timestamp, no colour: {ready:?}"
    );
    assert!(
        !text.contains('\u{1b}'),
        "no ANSI colour codes under journald"
    );
}

/// CPU time the process has used so far, over all its threads (`/proc/PID/task/*/schedstat`).
fn cpu_time(pid: u32) -> Duration {
    let mut total = Duration::ZERO;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("daemon's threads") {
        let path = task.expect("thread entry").path().join("schedstat");
        // A thread may end between the listing and the read.
        if let Ok(text) = std::fs::read_to_string(&path) {
            let on_cpu_ns: u64 = text
                .split_whitespace()
                .next()
                .and_then(|ns| ns.parse().ok())
                .expect("schedstat starts with nanoseconds on a CPU");
            total += Duration::from_nanos(on_cpu_ns);
        }
    }
    // The main thread lives as long as the process: a total without it would be no
    // measurement at all.
    assert!(
        std::path::Path::new(&format!("/proc/{pid}/task/{pid}/schedstat")).exists(),
        "no schedstat for the daemon's main thread"
    );
    total
}

#[test]
fn busy_polling_stops_when_requests_stop() {
    let daemon = Daemon::start_with_config(Some("busy_poll = \"500us\"\n"));
    let (_, token) = daemon.create("poller", "read", &[]);
    let mut client = authenta_client::Client::new(&daemon.socket);
    // Back to back on one connection: the daemon's thread polls between requests.
    for _ in 0..3000 {
        let verified = client.verify(&token, &[authenta_client::Permission::Read]);
        assert!(verified.is_ok(), "{verified:?}");
    }
    std::thread::sleep(Duration::from_millis(200));
    let before = cpu_time(daemon.pid());
    let quiet = Duration::from_secs(1);
    std::thread::sleep(quiet);
    let used = cpu_time(daemon.pid()).saturating_sub(before);
    assert!(
        used < quiet / 10,
        "the daemon used {used:?} of CPU in {quiet:?} without requests"
    );
    // And it still answers at once after the quiet spell.
    assert!(client
        .verify(&token, &[authenta_client::Permission::Read])
        .is_ok());
}
