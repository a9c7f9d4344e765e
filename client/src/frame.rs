//! Blocking frame I/O: a 4-byte big-endian length, then the payload.

use crate::proto::{self, Request, RequestBody, Response, ResponseBody, MAX_FRAME_LEN};
use crate::Error;
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

/// Encodes `bodies` as frames of requests with consecutive ids from `*next_id` into `out`
/// (cleared first); returns the range of ids used, for [`decode_answer`].
pub(crate) fn encode_requests(
    bodies: Vec<RequestBody>,
    next_id: &mut u64,
    payload: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> Result<std::ops::Range<u64>, Error> {
    let first = *next_id;
    out.clear();
    for body in bodies {
        let request = Request { id: *next_id, body };
        *next_id += 1;
        payload.clear();
        proto::encode_into(&request, payload)?;
        push_frame(out, payload);
    }
    Ok(first..*next_id)
}

/// Decodes the answer that is due (`id`); an answer with id 0 is the daemon's word on a
/// broken connection and is passed on.
pub(crate) fn decode_answer(frame: &[u8], id: u64) -> Result<ResponseBody, Error> {
    let response: Response = proto::decode(frame)?;
    if response.id != id && response.id != 0 {
        return Err(Error::Unexpected(format!(
            "answer for request {} where {id} was due",
            response.id
        )));
    }
    Ok(response.body)
}
