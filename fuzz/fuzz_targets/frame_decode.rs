//! The first thing a hostile peer reaches: the frame splitter and the message decoder.
//!
//! The input is a byte stream as it would arrive on the socket. It is split into frames by
//! the daemon's own codec (`authenta_keyd::server::codec`, tokio-util's
//! `LengthDelimitedCodec`) three ways — all at once, one byte at a time, and in chunks of a
//! size taken from the input — and by a reference splitter written from `docs/protocol.md`;
//! all four must agree, so neither a partial read nor a codec setting can change what the
//! daemon sees. Every frame is then decoded as each message type either end reads; whatever
//! decodes must re-encode (within a frame), decode to the same value, and refuse a trailing
//! byte.
#![no_main]

use authenta_client::proto::{
    self, Hello, HelloReply, ProtoError, Request, Response, MAX_FRAME_LEN,
};
use authenta_keyd::server::codec;
use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Debug;
use tokio_util::bytes::BytesMut;
use tokio_util::codec::Decoder;

/// How a stream ended after its last whole frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Nothing left over.
    Clean,
    /// An incomplete length or payload was left when the stream closed.
    CutShort,
    /// The stream closed right after a whole length prefix announcing a non-empty payload.
    /// tokio-util has consumed the prefix by then and, finding its buffer empty at end of
    /// stream, reports a clean end: the daemon sees the peer leave rather than a cut frame.
    /// Only the end is reported differently; no frame is, and the connection closes either way.
    CutAfterLength,
    /// A length prefix over the limit: the daemon answers `bad_frame` and closes.
    TooLong,
}

/// The protocol as documented: 4-byte big-endian length (at most 64 KiB), then the payload.
fn reference(mut rest: &[u8]) -> (Vec<&[u8]>, End) {
    let mut frames = Vec::new();
    loop {
        if rest.is_empty() {
            return (frames, End::Clean);
        }
        let Some(prefix) = rest.get(..4) else {
            return (frames, End::CutShort);
        };
        let len = u32::from_be_bytes(prefix.try_into().expect("4 bytes")) as usize;
        if len > MAX_FRAME_LEN {
            return (frames, End::TooLong);
        }
        let Some(payload) = rest.get(4..4 + len) else {
            let end = if rest.len() == 4 {
                End::CutAfterLength
            } else {
                End::CutShort
            };
            return (frames, end);
        };
        frames.push(payload);
        rest = &rest[4 + len..];
    }
}

/// The daemon's codec fed `chunk` bytes at a time, then end of stream, as `Framed` does.
fn daemon_codec(data: &[u8], chunk: usize) -> (Vec<Vec<u8>>, End) {
    let mut codec = codec();
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for piece in data.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => frames.push(frame.to_vec()),
                Ok(None) => break,
                Err(_) => return (frames, End::TooLong),
            }
        }
    }
    match codec.decode_eof(&mut buf) {
        Ok(None) => (frames, End::Clean),
        Ok(Some(_)) => panic!("a whole frame was left undecoded until end of stream"),
        Err(_) => (frames, End::CutShort),
    }
}

fn check<T>(payload: &[u8])
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let Ok(value) = proto::decode::<T>(payload) else {
        return;
    };
    let bytes = proto::encode(&value).expect("what decodes from one frame encodes into one");
    assert!(bytes.len() <= payload.len(), "re-encoding grew");
    let back: T = proto::decode(&bytes).expect("re-encoded message decodes");
    assert_eq!(back, value);
    assert_eq!(
        proto::encode(&back).expect("encodes"),
        bytes,
        "encoding is not canonical"
    );
    let mut longer = payload.to_vec();
    longer.push(0);
    assert_eq!(
        proto::decode::<T>(&longer).err(),
        Some(ProtoError::TrailingBytes(1))
    );
}

fuzz_target!(|data: &[u8]| {
    let (frames, end) = reference(data);
    let frames: Vec<Vec<u8>> = frames.into_iter().map(<[u8]>::to_vec).collect();
    let chunk = data.first().map_or(1, |&b| usize::from(b % 64) + 1);
    for size in [data.len(), 1, chunk] {
        let (got, got_end) = daemon_codec(data, size);
        let expected_end = match end {
            End::CutAfterLength => End::Clean,
            other => other,
        };
        assert_eq!(
            got_end, expected_end,
            "codec fed {size} bytes at a time ended differently"
        );
        assert_eq!(
            got, frames,
            "codec fed {size} bytes at a time split differently"
        );
    }
    for frame in &frames {
        check::<Hello>(frame);
        check::<HelloReply>(frame);
        check::<Request>(frame);
        check::<Response>(frame);
    }
});
