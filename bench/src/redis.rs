//! Redis as the other server of `--redis`: `redis-server` started by the bench on a Unix
//! socket in a temporary directory (no TCP port, no snapshots, no AOF), filled with one entry
//! per seeded key, and asked RESP `GET`s through the same event loop that drives the daemon.
//!
//! The questions are the daemon's mix in the same order: request `i` asks Redis for the
//! entry of the key verify request `i` asks about, under that key's token, so that a request
//! carries about as many bytes as a verify. The mix's unknown tokens are left out (Redis
//! would answer them with a 5-byte nil). Every value is padded so that a reply
//! (`$N\r\n` + value + `\r\n`) has the size of the daemon's mean answer frame, length prefix
//! included, and each value names its key, so a reply for another key is a wrong answer.

use crate::event_loop::Protocol;
use crate::packed::Packed;
use crate::seed::SeededKey;
use crate::wire::{Framing, Reader};
use crate::workload::Workload;
use anyhow::{bail, Context, Result};
use authenta_client::proto::MAX_FRAME_LEN;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::io::{self, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long Redis may take to answer its first PING, and to exit after SIGTERM.
const START_LIMIT: Duration = Duration::from_secs(10);
const STOP_LIMIT: Duration = Duration::from_secs(10);
/// SETs sent in one write while loading.
const LOAD_BATCH: usize = 1000;
/// The longest status or error line taken for a reply.
const MAX_LINE: usize = 4096;

/// RESP replies, as Redis sends them to a RESP2 client: a status (`+`), error (`-`) or
/// integer (`:`) line, or a bulk string (`$N\r\n`, N bytes, `\r\n`; `$-1\r\n` is nil). The
/// whole reply is compared.
pub struct Resp;

impl Framing for Resp {
    /// The daemon reader's buffer size, so both loops read the same way.
    const MAX_ANSWER: usize = MAX_FRAME_LEN + 4;

    #[inline]
    fn cut(bytes: &[u8]) -> io::Result<Option<(usize, usize)>> {
        let Some(&kind) = bytes.first() else {
            return Ok(None);
        };
        let Some(eol) = line_end(bytes)? else {
            return Ok(None);
        };
        match kind {
            b'+' | b'-' | b':' => Ok(Some((0, eol + 2))),
            b'$' => {
                let header = &bytes[1..eol];
                if header == b"-1" {
                    return Ok(Some((0, eol + 2)));
                }
                let len = parse_len(header)
                    .filter(|&n| n <= MAX_FRAME_LEN)
                    .ok_or_else(|| {
                        invalid(format!(
                            "a bulk reply header `${}`",
                            String::from_utf8_lossy(header)
                        ))
                    })?;
                let end = eol + 2 + len + 2;
                if bytes.len() < end {
                    return Ok(None);
                }
                if &bytes[end - 2..end] != b"\r\n" {
                    return Err(invalid("a bulk reply not ended by CRLF".into()));
                }
                Ok(Some((0, end)))
            }
            other => Err(invalid(format!(
                "a reply of RESP type {:?}, which GET, SET and DBSIZE never send",
                char::from(other)
            ))),
        }
    }
}

/// Where the first line's `\r\n` starts, once it is there.
#[inline]
fn line_end(bytes: &[u8]) -> io::Result<Option<usize>> {
    let scanned = &bytes[..bytes.len().min(MAX_LINE)];
    match scanned.windows(2).position(|w| w == b"\r\n") {
        Some(at) => Ok(Some(at)),
        None if bytes.len() >= MAX_LINE => Err(invalid(format!(
            "a reply line longer than {MAX_LINE} bytes"
        ))),
        None => Ok(None),
    }
}

/// A bulk length: decimal digits only.
fn parse_len(digits: &[u8]) -> Option<usize> {
    if digits.is_empty() || digits.len() > 9 {
        return None;
    }
    digits.iter().try_fold(0usize, |n, &d| {
        d.is_ascii_digit().then(|| n * 10 + usize::from(d - b'0'))
    })
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("Redis sent {what}"))
}

/// Appends one RESP command (an array of bulk strings) to `out`.
pub fn push_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// Bytes of a bulk reply holding `n` bytes: `$n\r\n`, the bytes, `\r\n`.
fn bulk_reply_len(n: usize) -> usize {
    1 + n.to_string().len() + 2 + n + 2
}

/// The value length whose bulk reply is closest to `target` bytes (the shorter one of two
/// equally close), and at least `at_least`.
fn value_len_for(target: usize, at_least: usize) -> usize {
    (at_least..=target.max(at_least))
        .min_by_key(|&n| bulk_reply_len(n).abs_diff(target))
        .unwrap_or(at_least)
}

/// The daemon's mix as pre-encoded `GET`s, with the exact reply each must get.
pub struct GetWorkload {
    requests: Packed,
    answers: Packed,
    /// Bytes of every value.
    pub value_bytes: usize,
}

impl GetWorkload {
    /// The `GET`s asking what `workload` (built over `keys`) asks, in its order, less its
    /// unknown tokens; values sized so that a reply has the daemon's mean answer size.
    pub fn from_mix(workload: &Workload, keys: &[SeededKey]) -> Result<GetWorkload> {
        let (_, answer_bytes) = workload.mean_frame_sizes();
        // A value holds its key's number, so it is never shorter than that.
        let digits = keys.len().max(1).to_string().len();
        let value_bytes = value_len_for(answer_bytes.round() as usize, digits);
        let mut get = GetWorkload {
            requests: Packed::with_capacity(workload.len(), 80),
            answers: Packed::with_capacity(workload.len(), value_bytes + 8),
            value_bytes,
        };
        for i in 0..workload.len() {
            let Some(k) = workload.key_asked(i) else {
                continue;
            };
            let key = keys
                .get(k)
                .context("the mix asks about a key it was not built over")?;
            push_command(get.requests.buf(), &[b"GET", key.token.as_bytes()]);
            get.requests.end_item();
            let value = value(k, value_bytes);
            let reply = get.answers.buf();
            reply.extend_from_slice(format!("${}\r\n", value.len()).as_bytes());
            reply.extend_from_slice(&value);
            reply.extend_from_slice(b"\r\n");
            get.answers.end_item();
        }
        if get.requests.is_empty() {
            bail!("the mix asks about no seeded key");
        }
        Ok(get)
    }

    /// Mean sizes of a request and of a reply, in bytes.
    pub fn mean_sizes(&self) -> (f64, f64) {
        let n = self.requests.len().max(1) as f64;
        (
            self.requests.total_bytes() as f64 / n,
            self.answers.total_bytes() as f64 / n,
        )
    }
}

/// Key `k`'s value: its number, zero-padded to `len` bytes.
fn value(k: usize, len: usize) -> Vec<u8> {
    format!("{k:0len$}").into_bytes()
}

impl Protocol for GetWorkload {
    type Framing = Resp;

    fn connect(&self, socket: &Path) -> Result<(UnixStream, Reader<Resp>)> {
        connect(socket)
    }

    #[inline]
    fn len(&self) -> usize {
        self.requests.len()
    }

    #[inline]
    fn request(&self, i: usize) -> &[u8] {
        self.requests.get(i)
    }

    #[inline]
    fn answer(&self, i: usize) -> &[u8] {
        self.answers.get(i)
    }

    fn describe_wrong(&self, got: &[u8], expected: &[u8]) -> String {
        format!("expected {} but got {}", escaped(expected), escaped(got))
    }
}

/// A reply as text, CRLFs shown.
fn escaped(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

/// A connection to Redis (RESP needs no handshake).
fn connect(socket: &Path) -> Result<(UnixStream, Reader<Resp>)> {
    let stream = UnixStream::connect(socket)
        .with_context(|| format!("cannot connect to Redis at {}", socket.display()))?;
    // A server that stops answering must fail the run, not hang it.
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    Ok((stream, Reader::default()))
}

/// Sends one command and reads its reply.
fn call(stream: &mut UnixStream, reader: &mut Reader<Resp>, args: &[&[u8]]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    push_command(&mut out, args);
    stream.write_all(&out)?;
    Ok(reader.next(stream)?.to_vec())
}

/// `redis-server --version`'s version, e.g. "7.0.15".
pub fn version(bin: &Path) -> Result<String> {
    let out = Command::new(bin)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {} --version", bin.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .split_whitespace()
        .find_map(|w| w.strip_prefix("v="))
        .unwrap_or("unknown")
        .to_owned())
}

/// The `redis-server` binary: `--redis-server`, else the first on the PATH.
pub fn find_binary(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = explicit {
        return Ok(path.to_path_buf());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("redis-server"))
        .find(|candidate| candidate.is_file())
        .context(
            "no redis-server on the PATH: install Debian's redis-server package \
             (bench/vs-redis.sh does), or pass --redis-server PATH",
        )
}

/// One `redis-server` on a temporary directory; stopped when dropped.
pub struct RedisServer {
    dir: tempfile::TempDir,
    socket: PathBuf,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts `bin` as an in-memory cache on a Unix socket, and waits for its PING.
    pub fn start(bin: &Path) -> Result<RedisServer> {
        let dir = tempfile::Builder::new()
            .prefix("authenta-bench-redis-")
            .tempdir()
            .context("cannot make a temporary directory")?;
        let socket = dir.path().join("redis.sock");
        let log = dir.path().join("redis.log");
        let child = Command::new(bin)
            .arg("--port")
            .arg("0")
            .arg("--unixsocket")
            .arg(&socket)
            .arg("--unixsocketperm")
            .arg("700")
            .arg("--save")
            .arg("")
            .arg("--appendonly")
            .arg("no")
            .arg("--dir")
            .arg(dir.path())
            .arg("--logfile")
            .arg(&log)
            .arg("--daemonize")
            .arg("no")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let mut redis = RedisServer {
            dir,
            socket,
            child: Some(child),
        };
        let started = Instant::now();
        loop {
            if let Some(child) = redis.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    redis.child = None;
                    bail!(
                        "redis-server exited at start with {status}:\n{}",
                        redis.log()
                    );
                }
            }
            if let Ok((mut stream, mut reader)) = connect(&redis.socket) {
                let pong = call(&mut stream, &mut reader, &[b"PING"])?;
                if pong == b"+PONG\r\n" {
                    return Ok(redis);
                }
                bail!("redis-server answered PING with {}", escaped(&pong));
            }
            if started.elapsed() > START_LIMIT {
                bail!(
                    "redis-server did not answer within {START_LIMIT:?}:\n{}",
                    redis.log()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Where Redis listens.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Redis's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sets one entry per key of `keys` (its token, and the value `workload` expects), with
    /// pipelined SETs, and checks that Redis holds exactly that many.
    pub fn load(&self, keys: &[SeededKey], workload: &GetWorkload) -> Result<()> {
        let (mut stream, mut reader) = connect(&self.socket)?;
        let mut out = Vec::with_capacity(LOAD_BATCH * 128);
        for (first, batch) in keys.chunks(LOAD_BATCH).enumerate() {
            out.clear();
            for (k, key) in batch.iter().enumerate() {
                let value = value(first * LOAD_BATCH + k, workload.value_bytes);
                push_command(&mut out, &[b"SET", key.token.as_bytes(), &value]);
            }
            stream.write_all(&out).context("loading Redis")?;
            for _ in batch {
                let reply = reader.next(&mut stream).context("loading Redis")?;
                if reply != b"+OK\r\n" {
                    bail!("Redis answered a SET with {}", escaped(reply));
                }
            }
        }
        let size = call(&mut stream, &mut reader, &[b"DBSIZE"])?;
        let expected = format!(":{}\r\n", keys.len());
        if size != expected.as_bytes() {
            bail!(
                "Redis holds {} entries after loading {}",
                escaped(&size),
                keys.len()
            );
        }
        Ok(())
    }

    /// Redis's log so far.
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SIGTERM lets Redis remove its socket; with persistence off it exits at once.
        if kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).is_ok() {
            let asked = Instant::now();
            while asked.elapsed() < STOP_LIMIT {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(bytes: &[u8]) -> Option<(usize, usize)> {
        Resp::cut(bytes).expect("valid RESP")
    }

    #[test]
    fn cuts_each_kind_of_reply_once_it_is_whole() {
        assert_eq!(cut(b"$5\r\nhello\r\n$1"), Some((0, 11)));
        assert_eq!(cut(b"$5\r\nhell"), None);
        assert_eq!(cut(b"$5\r\nhello\r"), None);
        assert_eq!(cut(b"$5"), None);
        assert_eq!(cut(b""), None);
        assert_eq!(cut(b"$-1\r\n"), Some((0, 5)));
        assert_eq!(cut(b"$0\r\n\r\n"), Some((0, 6)));
        assert_eq!(cut(b"+OK\r\n+OK"), Some((0, 5)));
        assert_eq!(cut(b"-ERR wrong\r\n"), Some((0, 12)));
        assert_eq!(cut(b":10000\r\n"), Some((0, 8)));
    }

    #[test]
    fn refuses_what_is_not_a_reply() {
        for bad in [
            &b"*2\r\n"[..],
            b"hello\r\n",
            b"$x\r\n",
            b"$-2\r\n",
            b"$99999999\r\n",
            b"$2\r\nabcd",
        ] {
            assert!(Resp::cut(bad).is_err(), "{}", escaped(bad));
        }
        assert!(Resp::cut(&[b'+'; MAX_LINE]).is_err());
    }

    #[test]
    fn values_are_padded_to_the_answer_size() {
        for target in [20, 42, 43, 99, 100, 101, 1000] {
            let n = value_len_for(target, 5);
            assert_eq!(bulk_reply_len(n), target, "{target}");
        }
        // "$9\r\n" + 9 + 2 is 15 bytes, "$10\r\n" + 10 + 2 is 17: 16 cannot be made.
        assert_eq!(bulk_reply_len(value_len_for(16, 1)), 15);
        assert_eq!(value_len_for(3, 5), 5);
        assert_eq!(value(42, 6), b"000042");
    }

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        push_command(&mut out, &[b"GET", b"key"]);
        assert_eq!(out, b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n");
    }
}
