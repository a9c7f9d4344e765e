//! A client connection's socket after the handshake, which asks epoll for writability only
//! while an answer waits for room.
//!
//! Why not tokio's `UnixStream`: it registers for readability and writability together,
//! edge-triggered, for the connection's whole life. A Unix socket signals writability each
//! time the peer reads what was sent, so every answer a client read woke this connection's
//! thread from `epoll_wait` for nothing, and the client paid for that wake-up inside its
//! `read`: on a VM, an inter-processor interrupt through the hypervisor. perf showed the
//! same wake-up as half the daemon's CPU time in the mirror case (a client registered the
//! same way). Answers almost always fit the socket buffer, so here writability is asked for
//! only while a write is blocked, as Redis does.

use std::io::{self, Write};
use std::os::unix::net::UnixStream;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

pub struct Socket {
    /// `None` only if re-registering failed, which ends the connection.
    fd: Option<AsyncFd<UnixStream>>,
    wants_writable: bool,
}

fn gone() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "the socket could not be re-registered",
    )
}

impl Socket {
    /// Takes over a connection from tokio's `UnixStream` (which it deregisters).
    pub fn new(stream: tokio::net::UnixStream) -> io::Result<Socket> {
        let stream = stream.into_std()?;
        Ok(Socket {
            fd: Some(register(stream, Interest::READABLE)?),
            wants_writable: false,
        })
    }

    fn fd(&self) -> io::Result<&AsyncFd<UnixStream>> {
        self.fd.as_ref().ok_or_else(gone)
    }

    /// Runs `read` if the socket may be readable; `WouldBlock` from it clears the readiness
    /// (see `AsyncFd::try_io`).
    pub fn try_read<R>(&self, read: impl FnOnce(&UnixStream) -> io::Result<R>) -> io::Result<R> {
        self.fd()?.try_io(Interest::READABLE, read)
    }

    /// Waits until the socket may be readable.
    pub async fn readable(&self) -> io::Result<()> {
        self.fd()?.readable().await.map(drop)
    }

    /// Writes all of `bytes`, waiting for room when the client is slow to read.
    pub async fn write_all(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            let attempt = Write::write(&mut self.fd()?.get_ref(), bytes);
            let written = match attempt {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.write_when_room(bytes).await?
                }
                Err(e) => return Err(e),
            };
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            bytes = &bytes[written..];
        }
        self.want_writable(false)
    }

    /// One write once epoll says there is room; asks epoll for writability first.
    async fn write_when_room(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.want_writable(true)?;
        let fd = self.fd()?;
        loop {
            let mut ready = fd.writable().await?;
            match ready.try_io(|inner| Write::write(&mut inner.get_ref(), bytes)) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    /// Registers again with or without writability. `AsyncFd` cannot change its interest,
    /// so the stream is taken out and registered anew; adding it reports the readiness the
    /// socket already has, so no arrival is missed.
    fn want_writable(&mut self, wanted: bool) -> io::Result<()> {
        if self.wants_writable == wanted {
            return Ok(());
        }
        let stream = self.fd.take().ok_or_else(gone)?.into_inner();
        let interest = if wanted {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        self.fd = Some(register(stream, interest)?);
        self.wants_writable = wanted;
        Ok(())
    }
}

/// Registers `stream` with this thread's tokio reactor for `interest`.
#[allow(unsafe_code)]
fn register(stream: UnixStream, interest: Interest) -> io::Result<AsyncFd<UnixStream>> {
    // SAFETY: `AsyncFd` needs the descriptor to stay open and the same for as long as it
    // holds it. A `UnixStream` owns its descriptor, closes it only when dropped, and its
    // `as_raw_fd` always returns it; the `AsyncFd` owns the stream until it is dropped or
    // gives it back with `into_inner`.
    unsafe { AsyncFd::register_with_interest(stream, interest) }.map_err(io::Error::from)
}
