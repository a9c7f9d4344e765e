//! The default load client: one thread running one epoll loop (mio) over every connection of
//! a shape, the way `redis-benchmark` drives Redis with its `ae` loop.
//!
//! Why it matters: with a thread per connection, every answer the server writes wakes a
//! different sleeping thread, usually on the other core; on a VM that inter-processor wake-up
//! costs more than the verify itself, and it is charged to the server. One loop thread is
//! mostly awake when answers land, as with Redis's client, so the comparison is like for like.

use crate::load::{Shape, Tally, MEASURE, STOP};
use crate::stats::nanos;
use crate::wire::{self, FrameReader};
use crate::workload::Workload;
use anyhow::{Context, Result};
use mio::net::UnixStream;
use mio::{Events, Interest, Poll, Registry, Token};
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

/// How long one `epoll_wait` may block, so that the end of the run is noticed even if a
/// server stops answering.
const POLL_TIMEOUT: Duration = Duration::from_millis(50);
/// With nothing answered for this long, the server is taken to be stuck.
const STALL_LIMIT: Duration = Duration::from_secs(30);

/// What every connection of one run shares.
struct Run<'a> {
    workload: &'a Workload,
    depth: usize,
    phase: &'a AtomicU8,
    registry: &'a Registry,
    /// One walk through the mix, shared by every connection: each batch takes the next
    /// requests. The mix is shuffled, so the server still sees keys in random order, while
    /// this client reads its requests and expected answers as one sequential stream. With
    /// a cursor per connection, a million-key mix was 50 streams through ~150 MB, more
    /// than the prefetcher follows, and the client's own cache misses were charged to the
    /// server.
    cursor: usize,
}

/// One connection's closed loop: a batch of `depth` requests out, then its answers in.
struct Connection {
    stream: UnixStream,
    token: Token,
    reader: FrameReader,
    /// The batch's encoded requests, and how much of it is written.
    out: Vec<u8>,
    written: usize,
    /// Whether epoll is asked for writability: only while a batch waits for socket space.
    /// Asked for all along (edge-triggered), every read the server made of a request woke
    /// this thread with a writable event; on a VM that wake-up (an inter-processor
    /// interrupt) was half the server's CPU time in `sync-1`, charged to its `read`.
    /// `redis-benchmark` asks for writability the same way, only while it has to.
    wants_writable: bool,
    /// The mix indexes of the batch, and how many are answered.
    batch: Vec<usize>,
    answered: usize,
    sent: Instant,
    measuring: bool,
}

impl Connection {
    /// Encodes the next batch and writes what the socket takes; false at the end of the
    /// run.
    fn send_batch(&mut self, run: &mut Run<'_>) -> Result<bool> {
        let now = run.phase.load(Ordering::Acquire);
        if now == STOP {
            return Ok(false);
        }
        self.measuring = now == MEASURE;
        self.out.clear();
        self.batch.clear();
        for _ in 0..run.depth {
            self.out.extend_from_slice(run.workload.request(run.cursor));
            self.batch.push(run.cursor);
            run.cursor = (run.cursor + 1) % run.workload.len();
        }
        self.written = 0;
        self.answered = 0;
        self.sent = Instant::now();
        self.write(run.registry)?;
        Ok(true)
    }

    /// Writes the rest of the batch until done or the socket is full; then asks epoll for
    /// the writable event that resumes it, and stops asking once the batch is out.
    fn write(&mut self, registry: &Registry) -> Result<()> {
        while self.written < self.out.len() {
            match self.stream.write(&self.out[self.written..]) {
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return self.want_writable(registry, true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e).context("cannot send requests"),
            }
        }
        self.want_writable(registry, false)
    }

    fn want_writable(&mut self, registry: &Registry, wanted: bool) -> Result<()> {
        if self.wants_writable != wanted {
            let interest = if wanted {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            registry
                .reregister(&mut self.stream, self.token, interest)
                .context("epoll_ctl failed")?;
            self.wants_writable = wanted;
        }
        Ok(())
    }

    /// Reads what has arrived, checks each answer, and starts the next batch when one is
    /// complete; false at the end of the run.
    fn read(&mut self, run: &mut Run<'_>, tally: &mut Tally) -> Result<bool> {
        loop {
            let free = self.reader.make_room();
            let read = match self.reader.fill(&mut self.stream) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e).context("cannot read answers"),
            };
            let done = Instant::now();
            while let Some(answer) = self.reader.buffered()? {
                let i = self.batch[self.answered];
                tally.check(answer, run.workload.answer(i));
                if self.measuring {
                    tally.samples.push(nanos(done - self.sent));
                }
                self.answered += 1;
                if self.answered == run.depth {
                    if self.measuring {
                        tally.ops += run.depth as u64;
                        tally.first.get_or_insert(self.sent);
                        tally.last = Some(done);
                    }
                    if !self.send_batch(run)? {
                        return Ok(false);
                    }
                }
            }
            // A short read drained the socket: epoll reports the next arrival (as tokio
            // does, this saves a read that would only say `WouldBlock`).
            if read < free {
                return Ok(true);
            }
        }
    }
}

/// Runs `shape` with every connection on this thread until `phase` says stop. Waits on
/// `ready` once connected, so that the caller starts the clock with every connection open.
pub fn run(
    socket: &Path,
    workload: &Workload,
    shape: Shape,
    ready: &Barrier,
    phase: &AtomicU8,
) -> Result<Tally> {
    let connected: Result<Vec<_>> = (0..shape.connections)
        .map(|_| wire::connect(socket))
        .collect();
    ready.wait();
    let mut poll = Poll::new().context("cannot create an epoll instance")?;
    let mut connections = Vec::with_capacity(shape.connections);
    for (c, (stream, reader)) in connected?.into_iter().enumerate() {
        stream.set_nonblocking(true)?;
        let mut stream = UnixStream::from_std(stream);
        let token = Token(c);
        poll.registry()
            .register(&mut stream, token, Interest::READABLE)?;
        connections.push(Connection {
            stream,
            token,
            reader,
            out: Vec::with_capacity(shape.depth * 128),
            written: 0,
            wants_writable: false,
            batch: Vec::with_capacity(shape.depth),
            answered: 0,
            sent: Instant::now(),
            measuring: false,
        });
    }
    let registry = poll
        .registry()
        .try_clone()
        .context("cannot clone the epoll handle")?;
    let mut run = Run {
        workload,
        depth: shape.depth,
        phase,
        registry: &registry,
        cursor: 0,
    };
    let mut tally = Tally::default();
    for connection in &mut connections {
        if !connection.send_batch(&mut run)? {
            return Ok(tally);
        }
    }
    let mut events = Events::with_capacity(connections.len().max(1));
    let mut last_answer = Instant::now();
    loop {
        poll.poll(&mut events, Some(POLL_TIMEOUT))
            .or_else(|e| match e.kind() {
                io::ErrorKind::Interrupted => Ok(()),
                _ => Err(e),
            })
            .context("epoll_wait failed")?;
        if events.is_empty() {
            if phase.load(Ordering::Acquire) == STOP {
                return Ok(tally);
            }
            anyhow::ensure!(
                last_answer.elapsed() < STALL_LIMIT,
                "{}: no answer in {} s",
                shape.name,
                STALL_LIMIT.as_secs()
            );
            continue;
        }
        for event in events.iter() {
            let Some(connection) = connections.get_mut(event.token().0) else {
                continue;
            };
            if event.is_writable() {
                connection.write(run.registry)?;
            }
            if event.is_readable() || event.is_read_closed() {
                last_answer = Instant::now();
                if !connection.read(&mut run, &mut tally)? {
                    return Ok(tally);
                }
            }
        }
    }
}
