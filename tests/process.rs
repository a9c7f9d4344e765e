//! The daemon as an operating-system process, through the real binary: `--daemonize`
//! returns once the daemon is ready, holds the pidfile and refuses a second instance; the
//! process is not dumpable and has no core dumps; busy polling stops when requests stop.

mod common;

use common::{wait_for, Daemon, BIN, MASTER_HEX};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

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
    // The log names key ids and peers: for the daemon's user only.
    let log_mode = std::fs::metadata(dir.path().join("first.log"))
        .expect("log file")
        .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&log_mode) & 0o777,
        0o600
    );
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
    let child = Command::new(common::bin_for_others())
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

#[test]
fn the_log_file_is_reopened_on_sighup_for_logrotate() {
    let dir = tempfile::tempdir().expect("tmp");
    let socket = dir.path().join("k.sock");
    let log = dir.path().join("keyd.log");
    let key = dir.path().join("master.hex");
    std::fs::write(&key, MASTER_HEX).expect("key");
    let mut child = common::serve_at(dir.path(), &socket, &key)
        .arg("--log-file")
        .arg(&log)
        .stdin(Stdio::null())
        .spawn()
        .expect("serve");
    wait_for("the daemon's socket", || socket.exists());
    assert!(std::fs::read_to_string(&log)
        .expect("log")
        .contains("ready"));
    let mode = std::fs::metadata(&log).expect("log").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the log names key ids and peers");
    // What logrotate does: move the file away, then SIGHUP.
    let rotated = dir.path().join("keyd.log.1");
    std::fs::rename(&log, &rotated).expect("rotate");
    common::signal(&child, libc::SIGHUP);
    wait_for("a new log file", || {
        std::fs::read_to_string(&log).is_ok_and(|text| text.contains("reloaded"))
    });
    assert!(!std::fs::read_to_string(&rotated)
        .expect("old log")
        .contains("reloaded"));
    common::signal(&child, libc::SIGTERM);
    assert!(
        common::wait_timeout(&mut child, std::time::Duration::from_secs(15))
            .expect("stops")
            .success()
    );
    assert!(std::fs::read_to_string(&log)
        .expect("log")
        .contains("stopped"));
}
