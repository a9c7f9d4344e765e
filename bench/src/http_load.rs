//! The HTTP load client: forward-auth requests (`GET /v1/auth`) on keep-alive HTTP/1.1
//! connections over loopback TCP or the HTTP side's Unix socket (the transport the docs
//! recommend for nginx and Caddy), one request in flight on each, driven by the socket
//! shapes' loop ([`crate::event_loop::serve`]): one thread, one epoll loop over every
//! connection, writability asked for only while a request waits for socket space. The
//! connections are generic over their stream, so each transport's loop is compiled for it:
//! the transport is chosen once, when the connections are opened, never per request.
//!
//! The requests are the socket mix's, in the same order, each encoded once as the bytes a
//! reverse proxy sends; each answer is checked by its status against the verify code the
//! mix expects (200, 401, 403), and its `content-length` body is read past.

use crate::event_loop::{self, ClosedLoop, Socket};
use crate::load::{self, Measured, Tally, Timing, MEASURE, STOP};
use crate::stats::nanos;
use crate::workload::Workload;
use anyhow::{bail, Context, Result};
use authenta_client::proto::{self, Permission, Request, RequestBody, Response, ResponseBody};
use mio::event::Source;
use mio::net::{TcpStream, UnixStream};
use mio::{Registry, Token};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Barrier;
use std::time::Instant;

/// Connections, each with one request in flight: the socket's `sync-50`.
pub const CONNECTIONS: usize = 50;
/// Most bytes of one answer (head and body); the daemon's are under 1 KiB.
const MAX_ANSWER: usize = 16 * 1024;

/// The mix as HTTP requests, with the status each must be answered with.
pub struct HttpWorkload {
    /// Every request, back to back.
    requests: Vec<u8>,
    ends: Vec<usize>,
    statuses: Vec<u16>,
}

impl HttpWorkload {
    /// The socket mix's requests as forward-auth requests, decoded from its frames so that
    /// both protocols ask the same questions in the same order.
    pub fn from_mix(workload: &Workload) -> Result<HttpWorkload> {
        let mut http = HttpWorkload {
            requests: Vec::with_capacity(workload.len() * 128),
            ends: Vec::with_capacity(workload.len()),
            statuses: Vec::with_capacity(workload.len()),
        };
        for i in 0..workload.len() {
            // A frame is a 4-byte length, then the payload.
            let frame = workload
                .request(i)
                .get(4..)
                .context("a short request frame")?;
            let Request {
                body: RequestBody::Verify(ask),
                ..
            } = proto::decode::<Request>(frame).context("decoding the mix")?
            else {
                bail!("the mix holds a request other than verify");
            };
            let Response {
                body: ResponseBody::Verify(answer),
                ..
            } = proto::decode::<Response>(workload.answer(i)).context("decoding the mix")?
            else {
                bail!("the mix expects an answer other than verify");
            };
            push_request(&mut http.requests, &ask)?;
            http.ends.push(http.requests.len());
            http.statuses.push(answer.code.status());
        }
        Ok(http)
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Request `i`'s bytes.
    fn request(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.requests[start..self.ends[i]]
    }
}

/// Appends the request a proxy sends to ask `ask`. A GET asks read; another permission is
/// asked the way Traefik and Caddy ask it, with the original method in
/// `X-Forwarded-Method`; several, with `X-Authenta-Permission`.
fn push_request(out: &mut Vec<u8>, ask: &proto::VerifyRequest) -> Result<()> {
    out.extend_from_slice(b"GET /v1/auth HTTP/1.1\r\nHost: keyd\r\nX-API-Key: ");
    out.extend_from_slice(ask.token.as_bytes());
    out.extend_from_slice(b"\r\n");
    match ask.permissions.as_slice() {
        [] => bail!("a verify asking no permission has no HTTP form"),
        [Permission::Read] => {}
        [one] => {
            let method = match one {
                Permission::Write => "POST",
                _ => "DELETE",
            };
            out.extend_from_slice(format!("X-Forwarded-Method: {method}\r\n").as_bytes());
        }
        several => {
            let names: Vec<&str> = several.iter().map(|p| p.as_str()).collect();
            let line = format!("X-Authenta-Permission: {}\r\n", names.join(","));
            out.extend_from_slice(line.as_bytes());
        }
    }
    if let Some(environment) = &ask.environment {
        out.extend_from_slice(format!("X-Authenta-Environment: {environment}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    Ok(())
}

/// Where the HTTP side listens, as a reverse proxy reaches it.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// A loopback port.
    Tcp(SocketAddr),
    /// A Unix socket (`http_listen = ["unix:/PATH"]`).
    Unix(&'a Path),
}

impl Target<'_> {
    /// The run's name, in its errors.
    fn name(self) -> &'static str {
        match self {
            Target::Tcp(_) => "http-50",
            Target::Unix(_) => "http-unix-50",
        }
    }
}

impl fmt::Display for Target<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Tcp(address) => write!(f, "http://{address}"),
            Target::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// Runs [`CONNECTIONS`] keep-alive connections to `target` for `timing`; when the server
/// is process `server`, also what CPU it used.
pub fn drive(
    target: Target<'_>,
    workload: &HttpWorkload,
    timing: Timing,
    server: Option<u32>,
) -> Result<Measured> {
    let name = target.name();
    load::measure(name, 1, timing, server, |_, ready, phase| match target {
        Target::Tcp(address) => run(name, || connect_tcp(address), workload, ready, phase),
        Target::Unix(path) => run(name, || connect_unix(path), workload, ready, phase),
    })
}

/// What every connection of one run shares.
struct Run<'a> {
    workload: &'a HttpWorkload,
    phase: &'a AtomicU8,
    registry: &'a Registry,
    /// One walk through the mix shared by every connection, as the socket client does.
    cursor: usize,
}

/// One keep-alive connection's closed loop: a request out, its answer in; `S` is its
/// stream (TCP or Unix).
struct Connection<S> {
    socket: Socket<S>,
    /// Answer bytes read and not yet consumed: `buf[start..end]`.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The mix index of the request in flight, and how much of it is written.
    asked: usize,
    written: usize,
    sent: Instant,
    measuring: bool,
}

impl<S: Source + Read + Write> ClosedLoop<Run<'_>> for Connection<S> {
    /// Sends the mix's next request.
    fn send(&mut self, run: &mut Run<'_>) -> Result<bool> {
        let now = run.phase.load(Ordering::Acquire);
        if now == STOP {
            return Ok(false);
        }
        self.measuring = now == MEASURE;
        self.asked = run.cursor;
        run.cursor = (run.cursor + 1) % run.workload.len();
        self.written = 0;
        self.sent = Instant::now();
        self.write(run)?;
        Ok(true)
    }

    /// Writes from the mix itself: a request is written whole or resumed, never copied.
    fn write(&mut self, run: &mut Run<'_>) -> Result<()> {
        let request = run.workload.request(self.asked);
        let all_written = self
            .socket
            .write(request, &mut self.written)
            .context("cannot send a request")?;
        self.socket.want_writable(run.registry, !all_written)
    }

    /// Sends the next request once the answer is whole.
    fn read(&mut self, run: &mut Run<'_>, tally: &mut Tally) -> Result<bool> {
        loop {
            self.make_room()?;
            let free = self.buf.len() - self.end;
            let read = match self.socket.stream.read(&mut self.buf[self.end..]) {
                Ok(0) => bail!("the daemon closed a keep-alive connection"),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e).context("cannot read answers"),
            };
            self.end += read;
            let done = Instant::now();
            while let Some((status, len)) = parse_answer(&self.buf[self.start..self.end])? {
                self.start += len;
                self.answered(status, done, run.workload, tally);
                if !self.send(run)? {
                    return Ok(false);
                }
            }
            // A short read drained the socket: epoll reports the next arrival.
            if read < free {
                return Ok(true);
            }
        }
    }
}

impl<S> Connection<S> {
    fn new(socket: Socket<S>) -> Connection<S> {
        Connection {
            socket,
            buf: vec![0; MAX_ANSWER],
            start: 0,
            end: 0,
            asked: 0,
            written: 0,
            sent: Instant::now(),
            measuring: false,
        }
    }

    /// Checks and counts one answer.
    fn answered(&self, status: u16, done: Instant, workload: &HttpWorkload, tally: &mut Tally) {
        let expected = workload.statuses[self.asked];
        if status != expected {
            tally.count_wrong(|| format!("expected status {expected} but got {status}"));
        }
        if self.measuring {
            tally.samples.push(nanos(done - self.sent));
            tally.ops += 1;
            tally.first.get_or_insert(self.sent);
            tally.last = Some(done);
        }
    }

    /// Moves unread bytes to the front when the buffer's end is reached.
    fn make_room(&mut self) -> Result<()> {
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        }
        if self.end == self.buf.len() {
            if self.start == 0 {
                bail!("an answer of more than {MAX_ANSWER} bytes");
            }
            self.buf.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
        }
        Ok(())
    }
}

/// The status and length of the whole answer at the front of `buf`, once it is all there.
/// Only what the daemon sends is understood: a `content-length` body, no chunking.
fn parse_answer(buf: &[u8]) -> Result<Option<(u16, usize)>> {
    let Some(head_len) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..head_len]).context("an answer head not in ASCII")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse::<u16>().ok())
        .with_context(|| format!("not an HTTP/1.1 status line: {status_line:?}"))?;
    let mut body_len = None;
    for line in lines {
        let (name, value) = line.split_once(':').unwrap_or((line, ""));
        if name.eq_ignore_ascii_case("content-length") {
            body_len = Some(
                value
                    .trim()
                    .parse::<usize>()
                    .context("a bad content-length")?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            bail!("a chunked answer: the bench reads content-length bodies only");
        }
    }
    let body_len = body_len.context("an answer without content-length")?;
    let len = head_len + 4 + body_len;
    Ok((buf.len() >= len).then_some((status, len)))
}

/// Opens [`CONNECTIONS`] connections with `connect`, waits on `ready`, and runs them on
/// this thread until `phase` says stop; `name` is the run's.
fn run<S: Source + Read + Write>(
    name: &str,
    connect: impl Fn() -> Result<S>,
    workload: &HttpWorkload,
    ready: &Barrier,
    phase: &AtomicU8,
) -> Result<Tally> {
    let connected: Result<Vec<_>> = (0..CONNECTIONS).map(|_| connect()).collect();
    ready.wait();
    let (mut poll, registry) = event_loop::epoll()?;
    let mut connections = Vec::with_capacity(CONNECTIONS);
    for (c, stream) in connected?.into_iter().enumerate() {
        let socket = Socket::register(stream, Token(c), &registry)?;
        connections.push(Connection::new(socket));
    }
    let mut run = Run {
        workload,
        phase,
        registry: &registry,
        cursor: 0,
    };
    event_loop::serve(name, &mut poll, &mut connections, &mut run, phase)
}

/// One TCP connection as a reverse proxy keeps it: no Nagle delay, as the daemon sets too.
fn connect_tcp(address: SocketAddr) -> Result<TcpStream> {
    let stream = std::net::TcpStream::connect(address)
        .with_context(|| format!("cannot connect to http://{address}"))?;
    stream.set_nodelay(true)?;
    stream.set_nonblocking(true)?;
    Ok(TcpStream::from_std(stream))
}

/// One connection to the HTTP side's Unix socket.
fn connect_unix(path: &Path) -> Result<UnixStream> {
    let stream = std::os::unix::net::UnixStream::connect(path)
        .with_context(|| format!("cannot connect to unix:{}", path.display()))?;
    stream.set_nonblocking(true)?;
    Ok(UnixStream::from_std(stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_whole_once_its_body_is_there() {
        let answer = b"HTTP/1.1 403 Forbidden\r\ncontent-type: application/json\r\n\
                       Content-Length: 5\r\n\r\n{\"a\":";
        assert_eq!(parse_answer(&answer[..20]).ok(), Some(None));
        assert_eq!(parse_answer(&answer[..answer.len() - 1]).ok(), Some(None));
        assert_eq!(parse_answer(answer).ok(), Some(Some((403, answer.len()))));
        assert!(
            parse_answer(b"HTTP/1.1 200 OK\r\n\r\n").is_err(),
            "no length"
        );
        assert!(parse_answer(b"SSH-2.0\r\n\r\n").is_err());
    }

    #[test]
    fn permissions_are_asked_as_a_proxy_asks_them() {
        let ask = |permissions: Vec<Permission>| {
            let mut out = Vec::new();
            push_request(
                &mut out,
                &proto::VerifyRequest {
                    token: "tok".into(),
                    permissions,
                    environment: None,
                    cost: None,
                },
            )
            .map(|()| String::from_utf8_lossy(&out).into_owned())
        };
        let read = ask(vec![Permission::Read]).expect("read");
        assert_eq!(
            read,
            "GET /v1/auth HTTP/1.1\r\nHost: keyd\r\nX-API-Key: tok\r\n\r\n"
        );
        let delete = ask(vec![Permission::Delete]).expect("delete");
        assert!(delete.contains("\r\nX-Forwarded-Method: DELETE\r\n\r\n"));
        let both = ask(vec![Permission::Read, Permission::Write]).expect("two");
        assert!(both.contains("\r\nX-Authenta-Permission: read,write\r\n"));
        assert!(ask(vec![]).is_err());
    }
}
