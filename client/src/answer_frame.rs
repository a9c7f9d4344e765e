//! The verify answer's frame written byte by byte: the daemon's hottest encode.
//!
//! Through serde, bincode visits the answer's twelve fields one call at a time and writes
//! each through its writer; here each field is a few bytes appended to the buffer. The
//! bytes are bincode 2's `standard` encoding of `Response { id, body: Verify(answer) }`
//! exactly, which `the_frame_is_bincodes_byte_for_byte` holds against serde for answers of
//! every shape.

use crate::proto::{ProtoError, MAX_FRAME_LEN};
use crate::verify_wire::VerifyAnswerRef;
use crate::Permission;

/// Appends `Response { id, body: Verify(answer) }` as one frame (length prefix and
/// payload) to `out`; on error `out` is left as it was.
pub fn push_verify_answer(
    id: u64,
    answer: &VerifyAnswerRef<'_>,
    out: &mut Vec<u8>,
) -> Result<(), ProtoError> {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    varint(out, id);
    varint(out, 0); // ResponseBody::Verify
    varint(out, answer.code as u64);
    opt_str(out, answer.key_id);
    let held = Permission::ALL
        .into_iter()
        .filter(|&p| answer.permissions.contains(p));
    varint(out, held.clone().count() as u64);
    for permission in held {
        varint(out, permission as u64);
    }
    opt_str(out, answer.environment);
    opt_i64(out, answer.rotate_by);
    out.push(u8::from(answer.rotation_due));
    opt_str(out, answer.name);
    opt_str(out, answer.owner_id);
    varint(out, answer.meta.len() as u64);
    for (key, value) in answer.meta {
        str(out, key);
        str(out, value);
    }
    opt_i64(out, answer.expires_at);
    match &answer.ratelimit {
        None => out.push(0),
        Some(state) => {
            out.push(1);
            varint(out, u64::from(state.limit));
            varint(out, u64::from(state.remaining));
            signed(out, state.reset_at);
            signed(out, state.retry_at);
        }
    }
    match answer.remaining {
        None => out.push(0),
        Some(left) => {
            out.push(1);
            varint(out, left);
        }
    }
    let len = out.len() - at - 4;
    if len > MAX_FRAME_LEN {
        out.truncate(at);
        return Err(ProtoError::TooLarge(len));
    }
    out[at..at + 4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

/// bincode's varint: one byte up to 250, else a marker and 2, 4 or 8 little-endian bytes.
#[inline(always)]
fn varint(out: &mut Vec<u8>, v: u64) {
    if v <= 250 {
        out.push(v as u8);
    } else if v <= u64::from(u16::MAX) {
        out.push(251);
        out.extend_from_slice(&(v as u16).to_le_bytes());
    } else if v <= u64::from(u32::MAX) {
        out.push(252);
        out.extend_from_slice(&(v as u32).to_le_bytes());
    } else {
        out.push(253);
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// A signed integer: zigzag, then [`varint`].
#[inline(always)]
fn signed(out: &mut Vec<u8>, v: i64) {
    varint(out, ((v << 1) ^ (v >> 63)) as u64);
}

#[inline(always)]
fn str(out: &mut Vec<u8>, s: &str) {
    varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

#[inline(always)]
fn opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            str(out, s);
        }
    }
}

#[inline(always)]
fn opt_i64(out: &mut Vec<u8>, v: Option<i64>) {
    match v {
        None => out.push(0),
        Some(v) => {
            out.push(1);
            signed(out, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{push_frame, Meta, RateLimitState, VerifyCode};
    use crate::verify_wire::{PermissionBits, VerifyAnswerBodyRef, VerifyResponseRef};

    #[test]
    fn the_frame_is_bincodes_byte_for_byte() {
        let meta: Meta = [
            ("plan".to_string(), "pro".to_string()),
            ("note".to_string(), "x".repeat(300)),
        ]
        .into();
        let empty = Meta::new();
        let long = "n".repeat(70_000);
        let numbers = [0u64, 1, 250, 251, 65_535, 65_536, u32::MAX as u64, u64::MAX];
        let times = [0i64, -1, 125, -126, 1_700_000_000_000, i64::MIN, i64::MAX];
        for (n, &number) in numbers.iter().enumerate() {
            let time = times[n % times.len()];
            let answer = VerifyAnswerRef {
                code: [
                    VerifyCode::Valid,
                    VerifyCode::RateLimited,
                    VerifyCode::Unknown,
                ][n % 3],
                key_id: (n % 2 == 0).then_some("key_0123456789abcdef"),
                permissions: PermissionBits(n as u8 & 7),
                environment: (n % 3 == 0).then_some("production"),
                rotate_by: (n % 2 == 1).then_some(time),
                rotation_due: n % 2 == 0,
                name: Some(if n == 7 { &long[..300] } else { "Backend" }),
                owner_id: (n % 2 == 0).then_some("acme"),
                meta: if n % 2 == 0 { &meta } else { &empty },
                expires_at: Some(time.wrapping_neg()),
                ratelimit: (n % 3 != 2).then_some(RateLimitState {
                    limit: number as u32,
                    remaining: (number >> 1) as u32,
                    reset_at: time,
                    retry_at: time.wrapping_neg(),
                }),
                remaining: (n % 2 == 1).then_some(number),
            };
            let mut by_hand = vec![9];
            push_verify_answer(number, &answer, &mut by_hand).expect("fits");
            let mut by_serde = vec![9];
            let response = VerifyResponseRef {
                id: number,
                body: VerifyAnswerBodyRef::Verify(answer),
            };
            push_frame(&response, &mut by_serde).expect("fits");
            assert_eq!(by_hand, by_serde, "answer {n}");
        }
        // Too large for a frame: refused, the buffer as it was.
        let too_long = VerifyAnswerRef {
            name: Some(&long),
            ..VerifyAnswerRef {
                code: VerifyCode::Valid,
                key_id: None,
                permissions: PermissionBits(0),
                environment: None,
                rotate_by: None,
                rotation_due: false,
                name: None,
                owner_id: None,
                meta: &empty,
                expires_at: None,
                ratelimit: None,
                remaining: None,
            }
        };
        let mut out = vec![1, 2];
        assert!(push_verify_answer(1, &too_long, &mut out).is_err());
        assert_eq!(out, vec![1, 2]);
    }
}
