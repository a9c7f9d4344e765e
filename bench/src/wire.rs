//! Raw frames on a Unix socket: a 4-byte big-endian length, then a bincode payload.
//!
//! The load driver and the echo server both speak the protocol at this level rather than
//! through `authenta_client::Client`, so that requests can be encoded once before a run and
//! the client side of a measurement costs a `memcpy`, a `write` and a `read`.

use anyhow::{bail, Context, Result};
use authenta_client::proto::{self, Hello, HelloReply, MAX_FRAME_LEN, PROTOCOL_VERSION};
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;

/// Appends a length-prefixed frame holding `payload` to `out`.
pub fn push_frame(out: &mut Vec<u8>, payload: &[u8]) {
    // Payloads come from `proto::encode`, which refuses anything over MAX_FRAME_LEN.
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
}

/// Reads frames through one buffer, so that answers arriving together cost one `read`.
pub struct FrameReader {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Default for FrameReader {
    fn default() -> Self {
        FrameReader {
            // Room for the largest frame plus its prefix, so a frame never needs a bigger buffer.
            buf: vec![0; MAX_FRAME_LEN + 4],
            start: 0,
            end: 0,
        }
    }
}

impl FrameReader {
    /// The length of the frame at the front of the buffer, if its prefix is there.
    fn front_len(&self) -> io::Result<Option<usize>> {
        if self.end - self.start < 4 {
            return Ok(None);
        }
        let mut prefix = [0u8; 4];
        prefix.copy_from_slice(&self.buf[self.start..self.start + 4]);
        let len = u32::from_be_bytes(prefix) as usize;
        if len > MAX_FRAME_LEN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("frame of {len} bytes exceeds the limit of {MAX_FRAME_LEN}"),
            ));
        }
        Ok(Some(len))
    }

    /// Whether a whole frame is already buffered (so reading it will not block).
    pub fn has_frame(&self) -> bool {
        matches!(self.front_len(), Ok(Some(len)) if self.end - self.start >= 4 + len)
    }

    /// The next frame's payload, reading from `stream` as needed.
    pub fn next(&mut self, stream: &mut impl Read) -> io::Result<&[u8]> {
        // `front_len` first, so an oversized prefix fails here instead of reading forever.
        while self
            .front_len()?
            .is_none_or(|len| self.end - self.start < 4 + len)
        {
            self.fill(stream)?;
        }
        self.buffered()
            .transpose()
            .unwrap_or_else(|| Err(io::ErrorKind::UnexpectedEof.into()))
    }

    /// The next frame's payload if it is already buffered; never reads.
    pub fn buffered(&mut self) -> io::Result<Option<&[u8]>> {
        let Some(len) = self.front_len()? else {
            return Ok(None);
        };
        if self.end - self.start < 4 + len {
            return Ok(None);
        }
        let payload = self.start + 4;
        self.start = payload + len;
        if self.start == self.end {
            // The payload is still in place: resetting the cursors moves nothing.
            self.start = 0;
            self.end = 0;
        }
        Ok(Some(&self.buf[payload..payload + len]))
    }

    /// Moves a partial frame to the front when needed; the room left for the next `read`.
    /// A read shorter than this drained the socket.
    pub fn make_room(&mut self) -> usize {
        if self.start > 0 && self.buf.len() - self.end < MAX_FRAME_LEN + 4 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        self.buf.len() - self.end
    }

    /// One `read` from `stream` into the buffer (making room first); the bytes read. A
    /// non-blocking stream with nothing to read gives `WouldBlock`; end of stream is an error.
    pub fn fill(&mut self, stream: &mut impl Read) -> io::Result<usize> {
        self.make_room();
        let read = stream.read(&mut self.buf[self.end..])?;
        if read == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.end += read;
        Ok(read)
    }
}

/// Opens a connection: sends a [`Hello`] and expects a `Welcome`.
pub fn connect(path: &std::path::Path) -> Result<(UnixStream, FrameReader)> {
    let mut stream = UnixStream::connect(path)
        .with_context(|| format!("cannot connect to {}", path.display()))?;
    // A daemon that stops answering must fail the run, not hang it.
    stream.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
    let hello = Hello {
        version: PROTOCOL_VERSION,
        agent: concat!("authenta-bench/", env!("CARGO_PKG_VERSION")).into(),
    };
    let mut out = Vec::new();
    push_frame(&mut out, &proto::encode(&hello)?);
    stream.write_all(&out)?;
    let mut reader = FrameReader::default();
    let reply: HelloReply = proto::decode(reader.next(&mut stream)?)?;
    match reply {
        HelloReply::Welcome { .. } => Ok((stream, reader)),
        other => bail!("{} refused the connection: {other:?}", path.display()),
    }
}
