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
use mio::{Events, Interest, Poll, Token};
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

/// One connection's closed loop: a batch of `depth` requests out, then its answers in.
struct Connection {
    stream: UnixStream,
    reader: FrameReader,
    /// The batch's encoded requests, and how much of it is written.
    out: Vec<u8>,
    written: usize,
    /// The mix indexes of the batch, and how many are answered.
    batch: Vec<usize>,
    answered: usize,
    sent: Instant,
    measuring: bool,
}

impl Connection {
    /// Encodes the next batch, the requests at `cursor` on, and writes what the socket
    /// takes; false at the end of the run.
    fn send_batch(
        &mut self,
        workload: &Workload,
        cursor: &mut usize,
        depth: usize,
        phase: &AtomicU8,
    ) -> Result<bool> {
        let now = phase.load(Ordering::Acquire);
        if now == STOP {
            return Ok(false);
        }
        self.measuring = now == MEASURE;
        self.out.clear();
        self.batch.clear();
        for _ in 0..depth {
            self.out.extend_from_slice(workload.request(*cursor));
            self.batch.push(*cursor);
            *cursor = (*cursor + 1) % workload.len();
        }
        self.written = 0;
        self.answered = 0;
        self.sent = Instant::now();
        self.write()?;
        Ok(true)
    }

    /// Writes the rest of the batch until done or the socket is full (then the writable
    /// event resumes it).
    fn write(&mut self) -> Result<()> {
        while self.written < self.out.len() {
            match self.stream.write(&self.out[self.written..]) {
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e).context("cannot send requests"),
            }
        }
        Ok(())
    }

    /// Reads what has arrived, checks each answer, and starts the next batch when one is
    /// complete; false at the end of the run.
    fn read(
        &mut self,
        workload: &Workload,
        cursor: &mut usize,
        depth: usize,
        phase: &AtomicU8,
        tally: &mut Tally,
    ) -> Result<bool> {
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
                tally.check(answer, workload.answer(i));
                if self.measuring {
                    tally.samples.push(nanos(done - self.sent));
                }
                self.answered += 1;
                if self.answered == depth {
                    if self.measuring {
                        tally.ops += depth as u64;
                        tally.first.get_or_insert(self.sent);
                        tally.last = Some(done);
                    }
                    if !self.send_batch(workload, cursor, depth, phase)? {
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
    let poll = Poll::new().context("cannot create an epoll instance")?;
    let mut connections = Vec::with_capacity(shape.connections);
    for (c, (stream, reader)) in connected?.into_iter().enumerate() {
        stream.set_nonblocking(true)?;
        let mut stream = UnixStream::from_std(stream);
        poll.registry().register(
            &mut stream,
            Token(c),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        connections.push(Connection {
            stream,
            reader,
            out: Vec::with_capacity(shape.depth * 128),
            written: 0,
            batch: Vec::with_capacity(shape.depth),
            answered: 0,
            sent: Instant::now(),
            measuring: false,
        });
    }
    let mut poll = poll;
    let mut tally = Tally::default();
    // One walk through the mix, shared by every connection: each batch takes the next
    // requests. The mix is shuffled, so the server still sees keys in random order, while
    // this client reads its requests and expected answers as one sequential stream. With
    // a cursor per connection, a million-key mix was 50 streams through ~150 MB, more than
    // the prefetcher follows, and the client's own cache misses were charged to the server.
    let mut cursor = 0;
    for connection in &mut connections {
        if !connection.send_batch(workload, &mut cursor, shape.depth, phase)? {
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
                connection.write()?;
            }
            if event.is_readable() || event.is_read_closed() {
                last_answer = Instant::now();
                if !connection.read(workload, &mut cursor, shape.depth, phase, &mut tally)? {
                    return Ok(tally);
                }
            }
        }
    }
}
