//! The default load client: one thread running one epoll loop (mio) over every connection of
//! a shape, the way `redis-benchmark` drives Redis with its `ae` loop.
//!
//! Why it matters: with a thread per connection, every answer the server writes wakes a
//! different sleeping thread, usually on the other core; on a VM that inter-processor wake-up
//! costs more than the verify itself, and it is charged to the server. One loop thread is
//! mostly awake when answers land, as with Redis's client, so the comparison is like for like.
//!
//! The loop is generic over a [`Protocol`]: the requests to send and how answers are cut from
//! the stream and checked. The daemon's is the [`Workload`]; `--redis` drives Redis with
//! RESP `GET`s through the very same loop ([`crate::redis::GetWorkload`]). Both are static
//! dispatch, so each loop is compiled for its protocol and neither pays for the other.
//!
//! The HTTP client ([`crate::http_load`]) parses its answers on connections of its own, but
//! runs them on the same epoll loop ([`serve`]) with the same writability rule ([`Socket`]),
//! so that its figures and the socket's are driven alike.

use crate::load::{Shape, Tally, MEASURE, STOP};
use crate::stats::nanos;
use crate::wire::{self, Framing, LengthPrefixed, Reader};
use crate::workload::Workload;
use anyhow::{Context, Result};
use mio::event::Source;
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

/// What the loop needs to know of a server's protocol: every request encoded beforehand, and
/// the answer each must get, byte for byte.
pub trait Protocol: Sync {
    /// How answers are cut from the stream.
    type Framing: Framing;

    /// Opens one connection (blocking, handshake done): the stream, and the reader holding
    /// whatever was read past the handshake.
    fn connect(
        &self,
        socket: &Path,
    ) -> Result<(std::os::unix::net::UnixStream, Reader<Self::Framing>)>;

    /// Number of requests in the mix; the loop walks it round and round.
    fn len(&self) -> usize;

    /// Request `i`'s bytes, as written to the socket.
    fn request(&self, i: usize) -> &[u8];

    /// What [`Framing::cut`] must give for the answer to request `i`.
    fn answer(&self, i: usize) -> &[u8];

    /// Whether `got` rightly answers request `i`: by default, when it is the very bytes of
    /// [`Protocol::answer`]. `--limits` lets the live state of a key's limits vary.
    #[inline]
    fn accepts(&self, i: usize, got: &[u8]) -> bool {
        got == self.answer(i)
    }

    /// Says how a wrong answer differs from the expected one (kept for the first only).
    fn describe_wrong(&self, got: &[u8], expected: &[u8]) -> String;
}

impl Protocol for Workload {
    type Framing = LengthPrefixed;

    fn connect(
        &self,
        socket: &Path,
    ) -> Result<(std::os::unix::net::UnixStream, Reader<LengthPrefixed>)> {
        wire::connect(socket)
    }

    #[inline]
    fn len(&self) -> usize {
        Workload::len(self)
    }

    #[inline]
    fn request(&self, i: usize) -> &[u8] {
        Workload::request(self, i)
    }

    #[inline]
    fn answer(&self, i: usize) -> &[u8] {
        Workload::answer(self, i)
    }

    fn describe_wrong(&self, got: &[u8], expected: &[u8]) -> String {
        crate::load::describe_wrong(got, expected)
    }
}

/// What every connection of one run shares.
struct Run<'a, P> {
    protocol: &'a P,
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
struct Connection<F> {
    socket: Socket<UnixStream>,
    reader: Reader<F>,
    /// The batch's encoded requests, and how much of it is written.
    out: Vec<u8>,
    written: usize,
    /// The mix indexes of the batch, and how many are answered.
    batch: Vec<usize>,
    answered: usize,
    sent: Instant,
    measuring: bool,
}

impl<P: Protocol> ClosedLoop<Run<'_, P>> for Connection<P::Framing> {
    /// Encodes the next batch and writes what the socket takes.
    fn send(&mut self, run: &mut Run<'_, P>) -> Result<bool> {
        let now = run.phase.load(Ordering::Acquire);
        if now == STOP {
            return Ok(false);
        }
        self.measuring = now == MEASURE;
        self.out.clear();
        self.batch.clear();
        for _ in 0..run.depth {
            self.out.extend_from_slice(run.protocol.request(run.cursor));
            self.batch.push(run.cursor);
            run.cursor = (run.cursor + 1) % run.protocol.len();
        }
        self.written = 0;
        self.answered = 0;
        self.sent = Instant::now();
        self.write(run)?;
        Ok(true)
    }

    fn write(&mut self, run: &mut Run<'_, P>) -> Result<()> {
        let all_written = self
            .socket
            .write(&self.out, &mut self.written)
            .context("cannot send requests")?;
        self.socket.want_writable(run.registry, !all_written)
    }

    /// Starts the next batch once one is all answered.
    fn read(&mut self, run: &mut Run<'_, P>, tally: &mut Tally) -> Result<bool> {
        loop {
            let free = self.reader.make_room();
            let read = match self.reader.fill(&mut self.socket.stream) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e).context("cannot read answers"),
            };
            let done = Instant::now();
            while let Some(answer) = self.reader.buffered()? {
                let Some(&i) = self.batch.get(self.answered) else {
                    anyhow::bail!("the server sent an answer to no request");
                };
                if !run.protocol.accepts(i, answer) {
                    let expected = run.protocol.answer(i);
                    tally.count_wrong(|| run.protocol.describe_wrong(answer, expected));
                }
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
                    if !self.send(run)? {
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
pub fn run<P: Protocol>(
    socket: &Path,
    protocol: &P,
    shape: Shape,
    ready: &Barrier,
    phase: &AtomicU8,
) -> Result<Tally> {
    let connected: Result<Vec<_>> = (0..shape.connections)
        .map(|_| protocol.connect(socket))
        .collect();
    ready.wait();
    let (mut poll, registry) = epoll()?;
    let mut connections = Vec::with_capacity(shape.connections);
    for (c, (stream, reader)) in connected?.into_iter().enumerate() {
        stream.set_nonblocking(true)?;
        let stream = UnixStream::from_std(stream);
        connections.push(Connection {
            socket: Socket::register(stream, Token(c), &registry)?,
            reader,
            out: Vec::with_capacity(shape.depth * 128),
            written: 0,
            batch: Vec::with_capacity(shape.depth),
            answered: 0,
            sent: Instant::now(),
            measuring: false,
        });
    }
    let mut run = Run {
        protocol,
        depth: shape.depth,
        phase,
        registry: &registry,
        cursor: 0,
    };
    serve(shape.name, &mut poll, &mut connections, &mut run, phase)
}

/// One connection of a closed-loop client on [`serve`]'s thread: requests out, their
/// answers in, the next requests out. `R` is what every connection of the run shares.
/// Generic, not a trait object, so that each client's loop is compiled for it and calls
/// its connections directly.
pub trait ClosedLoop<R> {
    /// Sends the next request(s); false at the end of the run.
    fn send(&mut self, run: &mut R) -> Result<bool>;

    /// Writes what the socket has not taken yet of the request(s) in flight; asks epoll for
    /// writability only while some is left.
    fn write(&mut self, run: &mut R) -> Result<()>;

    /// Reads what has arrived, checks and counts each whole answer, and sends what follows;
    /// false at the end of the run.
    fn read(&mut self, run: &mut R, tally: &mut Tally) -> Result<bool>;
}

/// An epoll instance, and a second handle on it through which connections change what they
/// are registered for while the loop holds the first in `poll`.
pub fn epoll() -> Result<(Poll, Registry)> {
    let poll = Poll::new().context("cannot create an epoll instance")?;
    let registry = poll
        .registry()
        .try_clone()
        .context("cannot clone the epoll handle")?;
    Ok((poll, registry))
}

/// Sends every connection's first request(s), then serves epoll events until a connection
/// sees the end of the run, or `phase` says stop while nothing arrives; `name` is the run's,
/// for the error of a server that stopped answering.
pub fn serve<R, C: ClosedLoop<R>>(
    name: &str,
    poll: &mut Poll,
    connections: &mut [C],
    run: &mut R,
    phase: &AtomicU8,
) -> Result<Tally> {
    let mut tally = Tally::default();
    for connection in connections.iter_mut() {
        if !connection.send(run)? {
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
                "{name}: no answer in {} s",
                STALL_LIMIT.as_secs()
            );
            continue;
        }
        for event in events.iter() {
            let Some(connection) = connections.get_mut(event.token().0) else {
                continue;
            };
            if event.is_writable() {
                connection.write(run)?;
            }
            if event.is_readable() || event.is_read_closed() {
                last_answer = Instant::now();
                if !connection.read(run, &mut tally)? {
                    return Ok(tally);
                }
            }
        }
    }
}

/// A connection's stream as [`serve`]'s epoll has it: registered for readability always,
/// and for writability only while a write waits for socket space. Asked for all along
/// (edge-triggered), every read the server made of a request woke the loop's thread with a
/// writable event; on a VM that wake-up (an inter-processor interrupt) was half the
/// server's CPU time in `sync-1`, charged to its `read`. `redis-benchmark` asks for
/// writability the same way, only while it has to.
pub struct Socket<S> {
    pub stream: S,
    token: Token,
    wants_writable: bool,
}

impl<S: Source + Write> Socket<S> {
    /// Registers `stream` for readability, as connection `token`.
    pub fn register(mut stream: S, token: Token, registry: &Registry) -> io::Result<Socket<S>> {
        registry.register(&mut stream, token, Interest::READABLE)?;
        Ok(Socket {
            stream,
            token,
            wants_writable: false,
        })
    }

    /// Writes `bytes[*written..]` until all is written (true) or the socket is full (false).
    pub fn write(&mut self, bytes: &[u8], written: &mut usize) -> io::Result<bool> {
        while *written < bytes.len() {
            match self.stream.write(&bytes[*written..]) {
                Ok(n) => *written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Asks epoll for writability, or stops asking, when that changes.
    pub fn want_writable(&mut self, registry: &Registry, wanted: bool) -> Result<()> {
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
}
