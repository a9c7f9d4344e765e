//! Hostile clients of the HTTP side: oversized heads, garbage, a slowloris, and ten
//! thousand idle keep-alive connections. Each is bounded, and a good client is still served.

mod common;

use common::http;
use common::Daemon;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn connect(daemon: &Daemon) -> TcpStream {
    let stream = TcpStream::connect(daemon.http_address()).expect("connect");
    http::with_timeouts(&stream);
    stream
}

/// A good client's verify, answered.
fn good_client_is_served(daemon: &Daemon, token: &str) {
    let started = Instant::now();
    let reply = http::tcp(
        &daemon.http_address(),
        "GET",
        "/v1/auth",
        &[("x-api-key", token)],
    );
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "served, but after {:?}",
        started.elapsed()
    );
}

/// Sends `bytes` and reads the answer to the end of the connection.
fn send_raw(daemon: &Daemon, bytes: &[u8]) -> http::Reply {
    let mut stream = connect(daemon);
    stream.write_all(bytes).expect("send");
    http::read_reply(&mut stream)
}

#[test]
fn an_oversized_head_gets_431_and_garbage_gets_400() {
    let daemon = Daemon::start_http(None, None);
    let (_, token) = daemon.create("app", "read", &[]);
    let huge = format!(
        "GET /v1/auth HTTP/1.1\r\nhost: x\r\nx-api-key: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let reply = send_raw(&daemon, huge.as_bytes());
    assert_eq!(reply.status, 431, "{reply:?}");
    let many: String = (0..200).map(|n| format!("x-h{n}: v\r\n")).collect();
    let reply = send_raw(
        &daemon,
        format!("GET /v1/auth HTTP/1.1\r\n{many}\r\n").as_bytes(),
    );
    assert_eq!(reply.status, 431, "{reply:?}");
    for garbage in [
        &b"\x00\x01\x02\x03 not http\r\n\r\n"[..],
        b"GET / HTTP/9.9\r\n\r\n",
    ] {
        let reply = send_raw(&daemon, garbage);
        assert_eq!(reply.status, 400, "{reply:?}");
    }
    good_client_is_served(&daemon, &token);
    assert!(!daemon.log().contains(&token), "the token reached the log");
}

#[test]
fn a_slowloris_is_cut_off_while_others_are_served() {
    let daemon = Daemon::start_http(None, None);
    let (_, token) = daemon.create("app", "read", &[]);
    let mut slow = connect(&daemon);
    let started = Instant::now();
    slow.write_all(b"GET /v1/auth HTTP/1.1\r\n")
        .expect("start a request");
    let mut closed_after = None;
    while started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(500));
        if slow.write_all(b"x-drip: 1\r\n").is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
        good_client_is_served(&daemon, &token);
    }
    let mut rest = Vec::new();
    let _ = slow.read_to_end(&mut rest);
    let closed_after = closed_after.expect("a slowloris must not hold its connection for 20 s");
    assert!(
        closed_after < Duration::from_secs(15),
        "closed after {closed_after:?}"
    );
}

/// Lifts this test process's open-files limit so it can hold ten thousand connections.
fn allow_open_files(wanted: u64) -> bool {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    if hard < wanted {
        eprintln!("the hard open-files limit is {hard}: cannot open {wanted} connections here");
        return false;
    }
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("setrlimit");
    true
}

/// Reads an answer's head and its (small) body from a keep-alive connection, leaving it open.
fn read_head(stream: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => got.push(byte[0]),
            _ => break,
        }
    }
    let head = String::from_utf8_lossy(&got).into_owned();
    let length = http::parse(&head)
        .header("content-length")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    let _ = stream.read_exact(&mut body);
    head
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fd dir")
        .count()
}

#[test]
fn ten_thousand_idle_connections_cannot_lock_a_good_client_out() {
    const IDLE: usize = 10_000;
    assert!(
        allow_open_files(IDLE as u64 + 512),
        "this test needs 10,512 open files"
    );
    let daemon = Daemon::start_http(Some("http_max_connections = 1000\n"), None);
    let (_, token) = daemon.create("app", "read", &[]);
    // Each connection makes one request and keeps its connection open, as a proxy's pool
    // of keep-alive connections does.
    let mut idle = Vec::with_capacity(IDLE);
    for n in 0..IDLE {
        let mut stream = TcpStream::connect(daemon.http_address())
            .unwrap_or_else(|e| panic!("connection {n} refused by the kernel: {e}"));
        http::with_timeouts(&stream);
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            .expect("send");
        assert!(
            read_head(&mut stream).starts_with("HTTP/1.1 200"),
            "connection {n}"
        );
        idle.push(stream);
    }
    good_client_is_served(&daemon, &token);
    // The daemon holds at most its cap (plus connections it is closing), never all of them.
    common::wait_for("the daemon to close the oldest idle connections", || {
        open_fds(daemon.pid()) < 1000 + 100
    });
    good_client_is_served(&daemon, &token);
    let metrics = http::tcp(&daemon.http_address(), "GET", "/metrics", &[]);
    assert!(
        metrics
            .body
            .contains("authenta_connections_refused_total{reason=\"http_oldest_closed\"}"),
        "{}",
        metrics.body
    );
    drop(idle);
}
