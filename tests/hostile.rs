//! Hostile and broken clients against the real daemon. Each attack gets a bounded, clear
//! outcome, while a well-behaved client keeps verifying; its p99 under each attack is
//! printed, and the daemon's memory stays bounded.

mod common;

use authenta_client::proto::{
    self, Hello, HelloReply, Request, RequestBody, VerifyRequest, PROTOCOL_VERSION,
};
use authenta_client::{Client, Permission};
use common::Daemon;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CAP: usize = 48;

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

fn hello_frame(version: u16) -> Vec<u8> {
    frame(
        &proto::encode(&Hello {
            version,
            agent: "hostile".into(),
        })
        .expect("encode"),
    )
}

fn connect(daemon: &Daemon) -> UnixStream {
    let stream = UnixStream::connect(&daemon.socket).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    stream
}

fn handshaken(daemon: &Daemon) -> UnixStream {
    let mut stream = connect(daemon);
    stream
        .write_all(&hello_frame(PROTOCOL_VERSION))
        .expect("hello");
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).expect("reply length");
    let mut reply = vec![0u8; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut reply).expect("reply");
    assert!(matches!(
        proto::decode::<HelloReply>(&reply),
        Ok(HelloReply::Welcome { .. })
    ));
    stream
}

/// Reads until the daemon closes the connection; returns how long that took.
fn closed_within(mut stream: UnixStream, limit: Duration) -> Duration {
    let started = Instant::now();
    stream.set_read_timeout(Some(limit)).expect("timeout");
    let mut sink = [0u8; 4096];
    loop {
        match stream.read(&mut sink) {
            Ok(0) => return started.elapsed(),
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return started.elapsed(),
            Err(e) => panic!("not closed within {limit:?}: {e}"),
        }
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

/// A well-behaved client verifying in a loop; its latencies go into the current bucket.
struct GoodClient {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Duration>>>,
    failures: Arc<Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl GoodClient {
    fn start(daemon: &Daemon, token: String) -> GoodClient {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let mut client = Client::connect(&daemon.socket).expect("good client connects");
        let (s, m, f) = (stop.clone(), samples.clone(), failures.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let started = Instant::now();
                match client.verify(&token, &[Permission::Read]) {
                    Ok(_) => m.lock().expect("lock").push(started.elapsed()),
                    Err(e) => f.lock().expect("lock").push(e.to_string()),
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        GoodClient {
            stop,
            samples,
            failures,
            thread: Some(thread),
        }
    }

    /// The p99 since the last call, printed under `attack`; asserts every verify succeeded.
    fn p99(&self, attack: &str) -> Duration {
        // Let it run a little past the attack, so every phase has enough samples.
        let started = Instant::now();
        while self.samples.lock().expect("lock").len() < 50
            && started.elapsed() < Duration::from_secs(3)
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut samples = std::mem::take(&mut *self.samples.lock().expect("lock"));
        let failures = std::mem::take(&mut *self.failures.lock().expect("lock"));
        assert!(
            failures.is_empty(),
            "{attack}: good client failed: {failures:?}"
        );
        assert!(
            samples.len() > 10,
            "{attack}: good client barely ran ({})",
            samples.len()
        );
        samples.sort();
        let p99 = samples[(samples.len() * 99 / 100).min(samples.len() - 1)];
        eprintln!(
            "good client under {attack:<34} {:>6} verifies, p50 {:>8.3?}, p99 {:>8.3?}",
            samples.len(),
            samples[samples.len() / 2],
            p99
        );
        p99
    }
}

impl Drop for GoodClient {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn hostile_clients_get_bounded_outcomes_while_a_good_client_keeps_verifying() {
    // The global cap, from one uid: its per-uid share is the whole cap here (tests/trust.rs
    // holds the per-uid limit).
    let daemon = Daemon::start_with_config(Some(&format!(
        "max_connections = {CAP}\nmax_connections_per_uid = {CAP}\n"
    )));
    let (_, token) = daemon.create("Backend-Server-Key", "read", &[]);
    let good = GoodClient::start(&daemon, token.clone());
    std::thread::sleep(Duration::from_millis(300));
    good.p99("no attack");
    let rss_before = rss_kib(daemon.pid());
    let bound = Duration::from_secs(1);

    // Random garbage, with and without a plausible length prefix.
    let mut seed = 0x9e3779b97f4a7c15u64;
    for i in 0..40 {
        let mut stream = connect(&daemon);
        let mut bytes = vec![0u8; 64 + i * 97];
        for b in bytes.iter_mut() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            *b = seed as u8;
        }
        if i % 2 == 0 {
            bytes.splice(0..0, ((bytes.len() as u32).to_be_bytes()).iter().copied());
        }
        let _ = stream.write_all(&bytes);
        closed_within(stream, Duration::from_secs(7));
    }
    assert!(good.p99("random garbage (40 connections)") < bound);

    // A 4 GiB length prefix, before and after the hello.
    for handshake in [false, true] {
        let mut stream = if handshake {
            handshaken(&daemon)
        } else {
            connect(&daemon)
        };
        stream.write_all(&u32::MAX.to_be_bytes()).expect("write");
        assert!(closed_within(stream, Duration::from_secs(2)) < Duration::from_secs(2));
    }
    // A wrong protocol version.
    let mut stream = connect(&daemon);
    stream
        .write_all(&hello_frame(PROTOCOL_VERSION + 1))
        .expect("write");
    closed_within(stream, Duration::from_secs(2));
    assert!(good.p99("4 GiB prefixes, wrong version") < bound);

    // At once: a frame cut mid-way and left hanging, a client sending one byte a second,
    // and one that pipelines 10,000 requests without ever reading an answer.
    let cut = std::thread::spawn({
        let mut stream = handshaken(&daemon);
        move || {
            stream.write_all(&100u32.to_be_bytes()).expect("write");
            stream.write_all(&[1u8; 10]).expect("write");
            closed_within(stream, Duration::from_secs(10))
        }
    });
    let slow = std::thread::spawn({
        let mut stream = handshaken(&daemon);
        // Long enough (about 60 bytes) that it cannot arrive whole within the deadline.
        let request = frame(
            &proto::encode(&Request {
                id: 1,
                body: RequestBody::Verify(VerifyRequest {
                    token: token.clone(),
                    permissions: vec![Permission::Read],
                    environment: None,
                    cost: None,
                }),
            })
            .expect("encode"),
        );
        move || {
            let started = Instant::now();
            for byte in request {
                if stream.write_all(&[byte]).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_secs(1));
                if started.elapsed() > Duration::from_secs(12) {
                    break;
                }
            }
            // The daemon must have given up on this frame, and said so.
            let mut rest = Vec::new();
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            let _ = stream.read_to_end(&mut rest);
            (started.elapsed(), rest.len())
        }
    });
    let flood = std::thread::spawn({
        let stream = handshaken(&daemon);
        let token = token.clone();
        move || {
            let bytes = common::verify_frames(&token, 0..10_000);
            let started = Instant::now();
            stream
                .set_write_timeout(Some(Duration::from_secs(20)))
                .expect("timeout");
            let mut writer = &stream;
            let written = match writer.write_all(&bytes) {
                Ok(()) => bytes.len(),
                Err(_) => 0,
            };
            // Never read: the daemon must stop waiting on us and close.
            let shut = closed_within_no_read(&stream, Duration::from_secs(25));
            (written, started.elapsed(), shut)
        }
    });
    let cut_after = cut.join().expect("cut thread");
    let (slow_after, slow_answer) = slow.join().expect("slow thread");
    let (_, _, flood_closed) = flood.join().expect("flood thread");
    assert!(
        cut_after <= Duration::from_secs(8),
        "a cut frame is dropped after the 5 s deadline: {cut_after:?}"
    );
    assert!(
        slow_after <= Duration::from_secs(10),
        "the byte-a-second client is dropped: {slow_after:?}"
    );
    assert!(slow_answer > 0, "the slow client was told why");
    assert!(flood_closed, "a client that never reads is closed");
    assert!(good.p99("cut frame + slow client + 10k unread") < bound);

    // Connections up to the cap and beyond: the extra ones are told busy.
    let mut held = Vec::new();
    let mut busy = 0;
    for _ in 0..CAP + 10 {
        match Client::connect(&daemon.socket) {
            Ok(client) => held.push(client),
            Err(authenta_client::Error::Refused { .. }) => busy += 1,
            Err(e) => panic!("over the cap: {e}"),
        }
    }
    assert_eq!(held.len(), CAP - 1, "the good client holds one slot");
    assert_eq!(busy, 11);
    assert!(good.p99("connections up to the cap and beyond") < bound);
    drop(held);

    let rss_after = rss_kib(daemon.pid());
    eprintln!("daemon resident memory: {rss_before} KiB before the attacks, {rss_after} KiB after");
    assert!(
        rss_after < rss_before + 64 * 1024,
        "memory stays bounded: {rss_before} -> {rss_after} KiB"
    );
    drop(good);
    assert!(!daemon.log().contains("panicked"));
}

/// Waits, without reading, until the daemon closes its end (seen as a write failing).
fn closed_within_no_read(stream: &UnixStream, limit: Duration) -> bool {
    let started = Instant::now();
    let mut writer = stream;
    stream
        .set_write_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    while started.elapsed() < limit {
        match writer.write(&[0u8; 1]) {
            Err(e)
                if e.kind() == std::io::ErrorKind::BrokenPipe
                    || e.kind() == std::io::ErrorKind::ConnectionReset =>
            {
                return true
            }
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    false
}
