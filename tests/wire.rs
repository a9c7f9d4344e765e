//! Property tests of the wire codec (`authenta_client::proto`), the part that faces hostile
//! bytes first: every message round trips and encodes canonically, a message is exactly one
//! frame, arbitrary and mutated bytes never panic the decoder, and the 64 KiB frame limit
//! holds on both sides. The inputs are generated (`tests/common/strategies.rs`), so they
//! cover shapes nobody thought to write down (empty strings, multi-byte text, huge numbers,
//! every variant). The `frame_decode` fuzz target goes deeper; these run in every
//! `cargo test` and stay fast (a few hundred cases each; raise with `PROPTEST_CASES=N`).

mod common;

use authenta_client::proto::{
    self, Actor, AuditEntry, AuditReport, ChainCheck, Hello, HelloReply, KeyInfo, KeyPage,
    KeyState, Permission, ProtoError, Request, Response, ResponseBody, Usage, MAX_FRAME_LEN,
};
use common::strategies::{cases, hello, hello_reply, request, response};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Debug;

// ---------------------------------------------------------------------------------------
// Codec properties, shared by every message type.
// ---------------------------------------------------------------------------------------

/// Encoding then decoding gives the value back, and the encoding is canonical: encoding the
/// decoded value gives the same bytes.
fn check_round_trip<T>(value: &T) -> Result<(), TestCaseError>
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let bytes = proto::encode(value).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert!(bytes.len() <= MAX_FRAME_LEN);
    let back: T = proto::decode(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&back, value);
    prop_assert_eq!(proto::encode(&back).expect("re-encodes"), bytes);
    Ok(())
}

/// A valid encoding followed by anything is refused with the exact count of extra bytes, and
/// every strict prefix of it is refused: a message is exactly one frame, no more, no less.
fn check_framing_is_exact<T>(value: &T, extra: &[u8], cut: Index) -> Result<(), TestCaseError>
where
    T: Serialize + DeserializeOwned + Debug,
{
    let bytes = proto::encode(value).expect("encodes");
    let mut longer = bytes.clone();
    longer.extend_from_slice(extra);
    match proto::decode::<T>(&longer) {
        Err(ProtoError::TrailingBytes(n)) => prop_assert_eq!(n, extra.len()),
        other => prop_assert!(false, "{} trailing bytes gave {:?}", extra.len(), other),
    }
    let prefix = &bytes[..cut.index(bytes.len())];
    prop_assert!(
        matches!(proto::decode::<T>(prefix), Err(ProtoError::Decode(_))),
        "a {}-byte prefix of a {}-byte message decoded",
        prefix.len(),
        bytes.len()
    );
    Ok(())
}

/// Whatever the bytes, decoding returns (never panics); what it accepts re-encodes to a
/// message that decodes to the same value, and any byte after it is refused as trailing.
fn check_hostile_bytes<T>(bytes: &[u8]) -> Result<(), TestCaseError>
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    if let Ok(value) = proto::decode::<T>(bytes) {
        check_round_trip(&value)?;
        let again = proto::encode(&value).expect("encodes");
        prop_assert!(again.len() <= bytes.len(), "re-encoding grew");
        let mut longer = bytes.to_vec();
        longer.push(0);
        prop_assert_eq!(
            proto::decode::<T>(&longer).err(),
            Some(ProtoError::TrailingBytes(1))
        );
    }
    Ok(())
}

/// Bytes near real messages: a valid encoding with some bytes overwritten. Pure random bytes
/// rarely get past the first enum tag; these reach deep into every message type.
fn mutated<T: Serialize + Debug>(
    value: impl Strategy<Value = T>,
) -> impl Strategy<Value = Vec<u8>> {
    (value, vec((any::<Index>(), any::<u8>()), 1..4)).prop_map(|(value, edits)| {
        let mut bytes = proto::encode(&value).expect("encodes");
        for (at, byte) in edits {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        bytes
    })
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn hello_round_trips(value in hello()) {
        check_round_trip(&value)?;
    }

    #[test]
    fn hello_reply_round_trips(value in hello_reply()) {
        check_round_trip(&value)?;
    }

    #[test]
    fn request_round_trips(value in request()) {
        check_round_trip(&value)?;
    }

    #[test]
    fn response_round_trips(value in response()) {
        check_round_trip(&value)?;
    }

    #[test]
    fn messages_are_exactly_one_frame(
        request in request(),
        response in response(),
        hello in hello(),
        extra in vec(any::<u8>(), 1..16),
        cut in any::<Index>(),
    ) {
        check_framing_is_exact(&request, &extra, cut)?;
        check_framing_is_exact(&response, &extra, cut)?;
        check_framing_is_exact(&hello, &extra, cut)?;
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..256)) {
        check_hostile_bytes::<Hello>(&bytes)?;
        check_hostile_bytes::<HelloReply>(&bytes)?;
        check_hostile_bytes::<Request>(&bytes)?;
        check_hostile_bytes::<Response>(&bytes)?;
    }

    #[test]
    fn mutated_requests_never_panic(bytes in mutated(request())) {
        check_hostile_bytes::<Request>(&bytes)?;
        check_hostile_bytes::<Hello>(&bytes)?;
    }

    #[test]
    fn mutated_responses_never_panic(bytes in mutated(response())) {
        check_hostile_bytes::<Response>(&bytes)?;
        check_hostile_bytes::<HelloReply>(&bytes)?;
    }
}

/// The size limit holds at the boundary on both sides: the encoder refuses what no frame can
/// carry, and the decoder refuses a payload longer than a frame before looking at it.
#[test]
fn frame_limit_is_enforced_by_encode_and_decode() {
    let big = Hello {
        version: 1,
        agent: "x".repeat(MAX_FRAME_LEN),
    };
    assert!(matches!(proto::encode(&big), Err(ProtoError::TooLarge(n)) if n > MAX_FRAME_LEN));
    let mut out = vec![7u8];
    assert!(proto::encode_into(&big, &mut out).is_err());
    assert_eq!(
        out,
        vec![7u8],
        "a refused encode leaves the buffer as it was"
    );
    assert_eq!(
        proto::decode::<Hello>(&vec![0u8; MAX_FRAME_LEN + 1]),
        Err(ProtoError::TooLarge(MAX_FRAME_LEN + 1))
    );
}

// ---------------------------------------------------------------------------------------
// The frame limit, as both ends apply it.
// ---------------------------------------------------------------------------------------

/// A key as `keys list` shows a typical one.
fn typical_key(i: usize) -> KeyInfo {
    KeyInfo {
        id: format!("key_{i:016}"),
        name: format!("Backend-Server-Key-{i}"),
        start: "AbCdEf12".into(),
        permissions: vec![Permission::Read, Permission::Write],
        environment: Some("production".into()),
        state: KeyState::Active,
        created_at: 1_764_000_000_000,
        rotated_at: Some(1_764_000_100_000),
        last_used_at: Some(1_764_000_200_000),
        expires_at: None,
        rotate_by: None,
        rotation_due: false,
        revoked_at: None,
        grace_until: None,
        usage: Usage {
            verifications: 1000,
            allowed: 990,
            denied: 10,
        },
        owner_id: None,
        meta: Default::default(),
        ratelimit: None,
        remaining: None,
        refill: None,
    }
}

/// An audit entry as the daemon writes one for a create.
fn typical_entry(i: usize) -> AuditEntry {
    AuditEntry {
        seq: i as u64 + 1,
        at: 1_764_000_000_000,
        actor: Actor::Peer {
            uid: 1000,
            pid: Some(4242),
        },
        action: "create".into(),
        key_id: Some(format!("key_{i:016}")),
        detail: Some("permissions=read,write environment=production".into()),
    }
}

/// Whatever the sender's `encode` accepts as fitting a frame, the receiver's `decode` must
/// accept: otherwise the daemon sends answers that every client refuses.
///
/// `encode` measures the *encoded* size against 64 KiB, while bincode's `with_limit` counts
/// *claimed in-memory* bytes (8 for every varint-encoded u64/i64, ...); the decode limit is
/// therefore a multiple of the frame. This guards that the two stay in step.
#[test]
fn every_answer_that_fits_a_frame_decodes() {
    let mut refused = Vec::new();
    for n in (100..=2000).step_by(100) {
        let answers = [
            (
                "keys",
                ResponseBody::Keys(KeyPage {
                    keys: (0..n).map(typical_key).collect::<Vec<_>>(),
                    next: None,
                }),
            ),
            (
                "audit entries",
                ResponseBody::Audit(AuditReport {
                    entries: (0..n).map(typical_entry).collect(),
                    chain: Some(ChainCheck {
                        ok: true,
                        checked: n as u64,
                        problem: None,
                    }),
                    next: None,
                }),
            ),
        ];
        for (what, body) in answers {
            let Ok(bytes) = proto::encode(&Response { id: 1, body }) else {
                continue; // too large for a frame: refused at the sender, as documented
            };
            if let Err(e) = proto::decode::<Response>(&bytes) {
                refused.push(format!("{n} {what} ({} bytes): {e}", bytes.len()));
            }
        }
    }
    assert!(
        refused.is_empty(),
        "answers that fit a frame but do not decode:\n{}",
        refused.join("\n")
    );
}
