//! A connection's input buffer, and the one `read` per wake-up that fills it.
//!
//! Why not tokio's `try_read_buf`: tokio learns that a socket is drained only from a read
//! that fails with `WouldBlock`, so a client with one request in flight costs the daemon
//! that extra `read` (and its syscall) per request. A Unix stream socket's `read` returns
//! less than asked only when it has handed over everything queued, so a short read is
//! taken as "drained" and tokio's readiness cleared then ([`Socket::try_read`] clears it
//! race-free: readiness that arrived meanwhile is kept). The buffer is initialised once, so
//! a read needs no zeroing and no unsafe code.

use crate::server::socket::Socket;
use authenta_client::proto::MAX_FRAME_LEN;
use std::io;
use std::os::fd::AsRawFd;

/// Bytes asked of the socket per read, at least.
pub const READ_CHUNK: usize = 16 * 1024;

/// What one read brought.
pub enum Filled {
    /// Bytes arrived.
    Bytes,
    /// Nothing to read now: wait for the socket to become readable.
    Nothing,
    /// The client closed its end.
    End,
}

/// Most the buffer grows to: one whole frame of the largest size plus one read.
const MAX_CAPACITY: usize = MAX_FRAME_LEN + 4 + READ_CHUNK;

/// Received bytes not yet consumed: `buf[start..end]`. Starts at one read's size and grows
/// only while a large frame arrives, to at most [`MAX_CAPACITY`]: whole frames are consumed
/// before the next read, so it never holds more than one partial frame plus one read.
pub struct Input {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Bytes consumed since the connection began.
    consumed: u64,
}

impl Input {
    /// A buffer starting with `leftover` (bytes read along with the handshake).
    pub fn new(leftover: &[u8]) -> Self {
        let mut buf = vec![0; READ_CHUNK.max(leftover.len())];
        buf[..leftover.len()].copy_from_slice(leftover);
        Input {
            buf,
            start: 0,
            end: leftover.len(),
            consumed: 0,
        }
    }

    /// The bytes received and not yet consumed.
    pub fn bytes(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Drops the first `n` bytes (a whole frame).
    pub fn consume(&mut self, n: usize) {
        let n = n.min(self.end - self.start);
        self.consumed += n as u64;
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Bytes consumed since the connection began: it moved, so a frame was answered.
    pub fn consumed(&self) -> u64 {
        self.consumed
    }

    /// One `read` from `socket` if tokio saw it readable.
    pub fn fill(&mut self, socket: &Socket) -> io::Result<Filled> {
        if self.buf.len() - self.end < READ_CHUNK {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() - self.end < READ_CHUNK && self.buf.len() < MAX_CAPACITY {
            let grown = (self.buf.len() * 2).max(self.end + READ_CHUNK);
            self.buf.resize(grown.min(MAX_CAPACITY), 0);
        }
        let space = self.buf.len() - self.end;
        let mut got = 0;
        let tail = &mut self.buf[self.end..];
        let result = socket.try_read(|stream| {
            let fd = stream.as_raw_fd();
            got = nix::unistd::read(fd, tail).map_err(io::Error::from)?;
            if got > 0 && got < space {
                // Drained: have tokio clear readiness now rather than after one more read.
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(got)
        });
        match result {
            Ok(0) => Ok(Filled::End),
            Ok(n) => {
                self.end += n;
                Ok(Filled::Bytes)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && got > 0 => {
                self.end += got;
                Ok(Filled::Bytes)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Filled::Nothing),
            Err(e) => Err(e),
        }
    }
}
