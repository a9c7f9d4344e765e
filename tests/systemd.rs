//! The daemon under systemd, through the real binary: serving a socket passed by socket
//! activation, sd_notify readiness, reloading and stopping on its own `NOTIFY_SOCKET`,
//! watchdog pings when `WATCHDOG_USEC` asks for them, and plain log lines under journald.

mod common;

use common::{wait_for, wait_timeout, Daemon, BIN, MASTER_HEX};
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `serve` under `systemd-socket-activate`, listening on `socket` and on `extra` (arguments
/// to the activator, such as more `-l` and `--fdname`), its log in `dir/log`. Returns once
/// the activation socket exists.
fn activated(
    dir: &std::path::Path,
    socket: &std::path::Path,
    extra: &[String],
) -> std::process::Child {
    let key = dir.join("master.hex");
    std::fs::write(&key, MASTER_HEX).expect("key");
    let log = std::fs::File::create(dir.join("log")).expect("log");
    let activator = Command::new("systemd-socket-activate")
        .arg("-l")
        .arg(socket)
        .args(extra)
        .arg("-E")
        .arg("RUST_LOG=debug")
        .arg(BIN)
        .arg("serve")
        .arg("--socket")
        .arg(socket)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--master-key-file")
        .arg(&key)
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("systemd-socket-activate (package systemd) must be installed");
    wait_for("the activation socket", || socket.exists());
    activator
}

#[test]
fn serves_through_a_socket_passed_by_systemd_socket_activate() {
    let dir = tempfile::tempdir().expect("tmp");
    let socket = dir.path().join("activated.sock");
    let mut activator = activated(dir.path(), &socket, &[]);

    // The first connection starts the daemon, which takes over the listening socket.
    let mut client = authenta_client::Client::new(&socket);
    let created = client
        .create_key(authenta_client::proto::CreateKey {
            name: "Activated".into(),
            permissions: vec![authenta_client::Permission::Read],
            environment: None,
            expires_in_secs: None,
            ..Default::default()
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

#[test]
fn serves_http_on_a_loopback_port_passed_by_systemd() {
    // The unit's way to a loopback port without the host's network in the service: the
    // port comes from a .socket unit with FileDescriptorName=http.
    let dir = tempfile::tempdir().expect("tmp");
    let socket = dir.path().join("activated.sock");
    let port = common::free_port();
    let extra = [
        "-l".to_string(),
        format!("127.0.0.1:{port}"),
        "--fdname=keyd:http".to_string(),
    ];
    let mut activator = activated(dir.path(), &socket, &extra);
    let mut client = authenta_client::Client::new(&socket);
    let created = client
        .create_key(authenta_client::proto::CreateKey {
            name: "Proxied".into(),
            permissions: vec![authenta_client::Permission::Read],
            environment: None,
            expires_in_secs: None,
            ..Default::default()
        })
        .expect("create through the inherited socket");
    let address = format!("127.0.0.1:{port}");
    let reply = common::http::tcp(
        &address,
        "GET",
        "/v1/auth",
        &[("x-api-key", &created.token)],
    );
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(
        reply.header("x-authenta-key-id"),
        Some(created.key.id.as_str())
    );
    common::signal(&activator, libc::SIGTERM);
    let status = wait_timeout(&mut activator, Duration::from_secs(15)).expect("stops");
    assert!(status.success(), "{status}");
}

#[test]
fn an_http_port_other_hosts_can_reach_is_refused_when_systemd_passes_it() {
    let dir = tempfile::tempdir().expect("tmp");
    let socket = dir.path().join("activated.sock");
    let extra = [
        "-l".to_string(),
        format!("0.0.0.0:{}", common::free_port()),
        "--fdname=keyd:http".to_string(),
    ];
    let mut activator = activated(dir.path(), &socket, &extra);
    // The first connection starts the daemon, which refuses the port and exits.
    let _ = std::os::unix::net::UnixStream::connect(&socket);
    wait_for("the daemon to refuse the port", || {
        std::fs::read_to_string(dir.path().join("log"))
            .is_ok_and(|log| log.contains("http_allow_remote"))
    });
    common::signal(&activator, libc::SIGTERM);
    let _ = wait_timeout(&mut activator, Duration::from_secs(15));
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
