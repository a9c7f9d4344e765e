//! Blocking frame I/O: a 4-byte big-endian length, then the payload.

use crate::proto::MAX_FRAME_LEN;
use std::io::{self, Read, Write};

/// Appends a length-prefixed frame holding `payload` to `out`.
pub(crate) fn push_frame(out: &mut Vec<u8>, payload: &[u8]) {
    // Callers encode with `proto::encode`, which refuses payloads over MAX_FRAME_LEN.
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
}

/// Reads one frame's payload into `buf`, refusing a length over [`MAX_FRAME_LEN`].
pub(crate) fn read_frame(reader: &mut impl Read, buf: &mut Vec<u8>) -> io::Result<()> {
    let mut len = [0u8; 4];
    reader.read_exact(&mut len)?;
    let len = frame_len(len)?;
    buf.resize(len, 0);
    reader.read_exact(buf)
}

/// Checks a length prefix.
pub(crate) fn frame_len(prefix: [u8; 4]) -> io::Result<usize> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len > MAX_FRAME_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds the limit of {MAX_FRAME_LEN}"),
        ));
    }
    Ok(len)
}

/// Writes all of `bytes` and flushes.
pub(crate) fn write_all(writer: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    writer.write_all(bytes)?;
    writer.flush()
}
