//! The three load shapes and the closed-loop drivers that run them against any socket that
//! speaks the protocol: the daemon, or the echo server.
//!
//! Every connection sends `depth` pre-encoded requests in one `write`, then reads their
//! `depth` answers, and checks each against the answer the mix expects. A request's latency
//! runs from the `write` of its batch to the `read` that completed its answer; at depth 1
//! that is the plain round trip, at depth 32 it includes waiting behind the batch's earlier
//! requests.
//!
//! Two clients do that: by default one thread with an epoll loop over every connection
//! ([`crate::event_loop`]), which is how `redis-benchmark` drives Redis, so the two servers
//! face the same kind of client; or (`--client threads`) one blocking thread per connection,
//! which makes the server wake a different sleeping thread for every answer.

use crate::cpu;
use crate::event_loop;
use crate::stats::{nanos, Latency};
use crate::wire;
use crate::workload::Workload;
use anyhow::{bail, Result};
use authenta_client::proto::{self, Response};
use serde::Serialize;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

/// How many connections, and how many requests each keeps in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Shape {
    pub name: &'static str,
    pub connections: usize,
    pub depth: usize,
}

/// The three shapes.
pub const SHAPES: [Shape; 3] = [
    Shape {
        name: "sync-1",
        connections: 1,
        depth: 1,
    },
    Shape {
        name: "sync-50",
        connections: 50,
        depth: 1,
    },
    Shape {
        name: "pipe-50x32",
        connections: 50,
        depth: 32,
    },
];

/// Warm-up (not measured), then the measured window; and which client drives the load.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub warmup: Duration,
    pub duration: Duration,
    pub client: ClientKind,
}

/// How the load is driven.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ClientKind {
    /// One thread, one epoll loop over every connection (as `redis-benchmark`).
    EventLoop,
    /// One blocking thread per connection.
    Threads,
}

/// What one shape measured against one server.
#[derive(Debug, Clone, Serialize)]
pub struct Measured {
    /// Answers received in the measured window.
    pub ops: u64,
    pub secs: f64,
    pub ops_per_sec: f64,
    pub latency: Latency,
    /// Answers that were not the bytes expected (each is a bug, not noise).
    pub wrong_answers: u64,
    /// What the server process spent, when the bench knows its process.
    pub server_cpu: Option<ServerCpu>,
    /// What the load client's threads spent: on a small machine client and server share
    /// the cores, so a client that costs more per request leaves the server less.
    pub client_cpu: Option<ServerCpu>,
}

/// CPU a server (or the load client) spent in the measured window.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ServerCpu {
    /// CPU seconds per second: 1.0 is one core kept busy.
    pub cores: f64,
    /// CPU microseconds per answer.
    pub us_per_op: f64,
}

pub const WARMUP: u8 = 0;
pub const MEASURE: u8 = 1;
pub const STOP: u8 = 2;

/// What a client counted in the measured window.
#[derive(Default)]
pub struct Tally {
    pub ops: u64,
    pub first: Option<Instant>,
    pub last: Option<Instant>,
    /// Per-request latencies in nanoseconds.
    pub samples: Vec<u32>,
    pub wrong: u64,
    pub first_wrong: Option<String>,
}

impl Tally {
    /// Checks one answer against the expected bytes, counting a mismatch.
    pub fn check(&mut self, got: &[u8], expected: &[u8]) {
        if got != expected {
            self.count_wrong(|| describe_wrong(got, expected));
        }
    }

    /// Counts one wrong answer; `describe` says what was wrong, kept for the first only.
    pub fn count_wrong(&mut self, describe: impl FnOnce() -> String) {
        self.wrong += 1;
        if self.first_wrong.is_none() {
            self.first_wrong = Some(describe());
        }
    }
}

/// Runs `shape` against the server at `socket` with the requests of `workload`; when the
/// server is process `server`, also what CPU it used.
pub fn drive(
    socket: &Path,
    workload: &Workload,
    shape: Shape,
    timing: Timing,
    server: Option<u32>,
) -> Result<Measured> {
    let clients = match timing.client {
        ClientKind::EventLoop => 1,
        ClientKind::Threads => shape.connections,
    };
    measure(shape.name, clients, timing, server, |c, ready, phase| {
        match timing.client {
            ClientKind::EventLoop => event_loop::run(socket, workload, shape, ready, phase),
            ClientKind::Threads => {
                // Connections start at spread-out points of the mix, so they do not ask for
                // the same keys in lockstep.
                let start = c * workload.len() / shape.connections;
                let connected = wire::connect(socket);
                ready.wait();
                let (stream, reader) = connected?;
                client(stream, reader, workload, start, shape.depth, phase)
            }
        }
    })
}

/// Runs `shape` against the server at `socket` with the requests of `protocol`, driven by
/// the event loop (the only client that speaks every protocol); when the server is process
/// `server`, also what CPU it used.
pub fn drive_event_loop<P: event_loop::Protocol>(
    socket: &Path,
    protocol: &P,
    shape: Shape,
    timing: Timing,
    server: Option<u32>,
) -> Result<Measured> {
    measure(shape.name, 1, timing, server, |_, ready, phase| {
        event_loop::run(socket, protocol, shape, ready, phase)
    })
}

/// Runs `clients` client threads, `client(c, ready, phase)` each, through the warm-up and
/// the measured window, and sums what they counted; when the server is process `server`,
/// also what CPU it used in the window. Every client must wait on `ready` exactly once, once
/// connected (or failed to), so that the clock starts with every connection open; and must
/// return once `phase` says [`STOP`]. Shared by every protocol the bench speaks, so that
/// their figures are measured alike.
pub fn measure<F>(
    name: &str,
    clients: usize,
    timing: Timing,
    server: Option<u32>,
    client: F,
) -> Result<Measured>
where
    F: Fn(usize, &Barrier, &AtomicU8) -> Result<Tally> + Sync,
{
    let phase = AtomicU8::new(WARMUP);
    let ready = Barrier::new(clients + 1);
    let tids = Mutex::new(Vec::with_capacity(clients));
    let mut cpu = Spent::default();
    let results: Vec<Result<Tally>> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..clients)
            .map(|c| {
                let (phase, ready, client, tids) = (&phase, &ready, &client, &tids);
                scope.spawn(move || {
                    if let (Some(tid), Ok(mut tids)) = (cpu::this_thread(), tids.lock()) {
                        tids.push(tid);
                    }
                    client(c, ready, phase)
                })
            })
            .collect();
        ready.wait();
        // Every client thread has registered itself before it waits on `ready`.
        let tids = tids.lock().map(|t| t.clone()).unwrap_or_default();
        let (server_cpu, client_cpu) = (
            || server.and_then(cpu::used),
            || cpu::threads_used(&tids).filter(|_| tids.len() == clients),
        );
        std::thread::sleep(timing.warmup);
        let before = (server_cpu(), client_cpu());
        phase.store(MEASURE, Ordering::Release);
        let measuring_since = Instant::now();
        std::thread::sleep(timing.duration);
        // Read while the clients still run: a client thread that has already returned has
        // no /proc entry left, and its CPU would read as unknown.
        let after = (server_cpu(), client_cpu());
        let wall = measuring_since.elapsed();
        phase.store(STOP, Ordering::Release);
        cpu = Spent {
            server: after.0.zip(before.0).map(|(a, b)| a.saturating_sub(b)),
            client: after.1.zip(before.1).map(|(a, b)| a.saturating_sub(b)),
            wall,
        };
        threads
            .into_iter()
            .map(|t| {
                t.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a client thread panicked")))
            })
            .collect()
    });
    summarise(name, results, cpu)
}

/// CPU time spent in the measured window, and how long the window was.
#[derive(Default)]
struct Spent {
    server: Option<Duration>,
    client: Option<Duration>,
    wall: Duration,
}

impl Spent {
    fn per_op(&self, spent: Option<Duration>, ops: u64) -> Option<ServerCpu> {
        spent.map(|spent| ServerCpu {
            cores: spent.as_secs_f64() / self.wall.as_secs_f64().max(1e-9),
            us_per_op: spent.as_secs_f64() * 1e6 / (ops as f64).max(1.0),
        })
    }
}

/// Adds up the clients' tallies into one run's figures.
fn summarise(name: &str, results: Vec<Result<Tally>>, cpu: Spent) -> Result<Measured> {
    let mut ops = 0;
    let mut wrong = 0;
    let mut first_wrong = None;
    let mut window: Option<(Instant, Instant)> = None;
    let mut samples = Vec::new();
    for result in results {
        let mut r = result?;
        ops += r.ops;
        wrong += r.wrong;
        first_wrong = first_wrong.or(r.first_wrong);
        if let (Some(first), Some(last)) = (r.first, r.last) {
            window = Some(match window {
                None => (first, last),
                Some((a, b)) => (a.min(first), b.max(last)),
            });
        }
        samples.append(&mut r.samples);
    }
    let Some((first, last)) = window else {
        bail!("{name}: no request completed in the measured window");
    };
    let secs = (last - first).as_secs_f64();
    if let Some(example) = first_wrong {
        eprintln!("{name}: {wrong} wrong answers, e.g. {example}");
    }
    Ok(Measured {
        ops,
        secs,
        ops_per_sec: ops as f64 / secs.max(1e-9),
        latency: Latency::from_nanos(&mut samples),
        wrong_answers: wrong,
        server_cpu: cpu.per_op(cpu.server, ops),
        client_cpu: cpu.per_op(cpu.client, ops),
    })
}

/// The run with the median throughput (the upper one of an even count); `runs` is not empty.
pub fn median(mut runs: Vec<Measured>) -> Measured {
    runs.sort_by(|a, b| a.ops_per_sec.total_cmp(&b.ops_per_sec));
    let middle = runs.len() / 2;
    runs.swap_remove(middle)
}

/// One connection's closed loop until the phase says stop.
fn client(
    mut stream: std::os::unix::net::UnixStream,
    mut reader: wire::FrameReader,
    workload: &Workload,
    mut next: usize,
    depth: usize,
    phase: &AtomicU8,
) -> Result<Tally> {
    let mut result = Tally::default();
    let mut out = Vec::with_capacity(depth * 128);
    let mut batch = Vec::with_capacity(depth);
    loop {
        let now = phase.load(Ordering::Acquire);
        if now == STOP {
            return Ok(result);
        }
        let measuring = now == MEASURE;
        out.clear();
        batch.clear();
        for _ in 0..depth {
            out.extend_from_slice(workload.request(next));
            batch.push(next);
            next = (next + 1) % workload.len();
        }
        let sent = Instant::now();
        stream.write_all(&out)?;
        let mut done = sent;
        for &i in &batch {
            let answer = reader.next(&mut stream)?;
            done = Instant::now();
            result.check(answer, workload.answer(i));
            if measuring {
                result.samples.push(nanos(done - sent));
            }
        }
        if measuring {
            result.ops += depth as u64;
            result.first.get_or_insert(sent);
            result.last = Some(done);
        }
    }
}

/// A wrong answer of the daemon next to the expected one, both decoded.
pub fn describe_wrong(got: &[u8], expected: &[u8]) -> String {
    let show = |bytes: &[u8]| match proto::decode::<Response>(bytes) {
        Ok(r) => format!("{r:?}"),
        Err(e) => format!("undecodable ({e})"),
    };
    format!("expected {} but got {}", show(expected), show(got))
}
