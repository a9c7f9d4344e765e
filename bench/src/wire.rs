//! Raw frames on a Unix socket: a 4-byte big-endian length, then a bincode payload; and the
//! buffered reader the load clients cut answers with, whatever their framing.
//!
//! The load driver and the echo server both speak the protocol at this level rather than
//! through `authenta_client::Client`, so that requests can be encoded once before a run and
//! the client side of a measurement costs a `memcpy`, a `write` and a `read`.

use anyhow::{bail, Context, Result};
use authenta_client::proto::{self, Hello, HelloReply, MAX_FRAME_LEN, PROTOCOL_VERSION};
use std::io::{self, Read, Write};
use std::marker::PhantomData;
use std::os::unix::net::UnixStream;

/// Appends a length-prefixed frame holding `payload` to `out`.
pub fn push_frame(out: &mut Vec<u8>, payload: &[u8]) {
    // Payloads come from `proto::encode`, which refuses anything over MAX_FRAME_LEN.
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
}

/// A bincode-2 varint at the front of `bytes` (`< 251` in one byte, else a marker byte
/// 251 / 252 / 253 followed by a little-endian u16 / u32 / u64) and the bytes after it.
pub fn split_varint(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let (&first, rest) = bytes.split_first()?;
    let len = match first {
        0..=250 => return Some((u64::from(first), rest)),
        251 => 2,
        252 => 4,
        253 => 8,
        _ => return None,
    };
    let mut buf = [0u8; 8];
    buf[..len].copy_from_slice(rest.get(..len)?);
    Some((u64::from_le_bytes(buf), &rest[len..]))
}

/// How a stream of answers is cut into answers: the one thing [`Reader`] does not know.
pub trait Framing {
    /// Most bytes one answer may take (framing included); also the reader's buffer size.
    const MAX_ANSWER: usize;

    /// The first answer in `bytes`, once it is all there: `(from, to)`, where `bytes[from..to]`
    /// is what is compared with the expected answer and `to` is where the next one begins.
    /// An error when the bytes cannot be an answer (then the stream cannot be cut further).
    fn cut(bytes: &[u8]) -> io::Result<Option<(usize, usize)>>;
}

/// The daemon's framing: a 4-byte big-endian length, then that many bytes of payload; the
/// payload is what is compared.
pub struct LengthPrefixed;

impl Framing for LengthPrefixed {
    const MAX_ANSWER: usize = MAX_FRAME_LEN + 4;

    #[inline]
    fn cut(bytes: &[u8]) -> io::Result<Option<(usize, usize)>> {
        let Some(prefix) = bytes.first_chunk::<4>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(*prefix) as usize;
        if len > MAX_FRAME_LEN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("frame of {len} bytes exceeds the limit of {MAX_FRAME_LEN}"),
            ));
        }
        Ok((bytes.len() >= 4 + len).then_some((4, 4 + len)))
    }
}

/// Reads the daemon's frames.
pub type FrameReader = Reader<LengthPrefixed>;

/// Reads answers through one buffer, so that answers arriving together cost one `read`.
pub struct Reader<F> {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    framing: PhantomData<F>,
}

impl<F: Framing> Default for Reader<F> {
    fn default() -> Self {
        Reader {
            // Room for the largest answer, so an answer never needs a bigger buffer.
            buf: vec![0; F::MAX_ANSWER],
            start: 0,
            end: 0,
            framing: PhantomData,
        }
    }
}

impl<F: Framing> Reader<F> {
    /// Where the answer at the front of the buffer is, if it is all there.
    #[inline]
    fn front(&self) -> io::Result<Option<(usize, usize)>> {
        F::cut(&self.buf[self.start..self.end])
    }

    /// Whether a whole answer is already buffered (so reading it will not block).
    pub fn has_frame(&self) -> bool {
        matches!(self.front(), Ok(Some(_)))
    }

    /// The next answer (a frame's payload), reading from `stream` as needed.
    pub fn next(&mut self, stream: &mut impl Read) -> io::Result<&[u8]> {
        // `front` first, so that bytes that cannot be an answer fail here instead of
        // reading forever.
        while self.front()?.is_none() {
            self.fill(stream)?;
        }
        self.buffered()
            .transpose()
            .unwrap_or_else(|| Err(io::ErrorKind::UnexpectedEof.into()))
    }

    /// The next answer if it is already buffered; never reads.
    #[inline]
    pub fn buffered(&mut self) -> io::Result<Option<&[u8]>> {
        let Some((from, to)) = self.front()? else {
            return Ok(None);
        };
        let answer = self.start + from..self.start + to;
        self.start += to;
        if self.start == self.end {
            // The answer is still in place: resetting the cursors moves nothing.
            self.start = 0;
            self.end = 0;
        }
        Ok(Some(&self.buf[answer]))
    }

    /// Moves a partial answer to the front when needed; the room left for the next `read`.
    /// A read shorter than this drained the socket.
    pub fn make_room(&mut self) -> usize {
        if self.start > 0 && self.buf.len() - self.end < F::MAX_ANSWER {
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
