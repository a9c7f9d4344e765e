//! Borrowing twins of the verify request and answer, for the daemon's hot path.
//!
//! A verify arrives and leaves as `Request { id, body: RequestBody::Verify(..) }` and
//! `Response { id, body: ResponseBody::Verify(..) }`. Decoding those into the owned types
//! allocates the token, the permission list and the environment; encoding an answer from the
//! index would allocate the key id, permissions and environment again. These twins have the
//! same bincode layout (the tests below hold them to it byte for byte) but borrow from the
//! frame or from the index, and carry permissions as a bit set.

use crate::proto::{Meta, Permission, RateLimitState, VerifyCode};
use serde::de::{SeqAccess, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// A set of permissions, one [`Permission::bit`] each; on the wire, a list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PermissionBits(pub u8);

impl PermissionBits {
    /// Whether `p` is in the set.
    pub fn contains(self, p: Permission) -> bool {
        self.0 & p.bit() != 0
    }
}

impl Serialize for PermissionBits {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let held = Permission::ALL.into_iter().filter(|&p| self.contains(p));
        let mut seq = serializer.serialize_seq(Some(held.clone().count()))?;
        for p in held {
            seq.serialize_element(&p)?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for PermissionBits {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Bits;
        impl<'de> Visitor<'de> for Bits {
            type Value = PermissionBits;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of permissions")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<PermissionBits, A::Error> {
                let mut bits = 0;
                while let Some(p) = seq.next_element::<Permission>()? {
                    bits |= p.bit();
                }
                Ok(PermissionBits(bits))
            }
        }
        deserializer.deserialize_seq(Bits)
    }
}

/// `Request { id, body: RequestBody::Verify(VerifyRequest) }`, borrowing from the frame.
/// Decoding any other request fails (its variant is not `Verify`): decode it as a
/// [`crate::proto::Request`] then.
#[derive(Debug, Deserialize)]
#[serde(rename = "Request")]
pub struct VerifyRequestRef<'a> {
    pub id: u64,
    #[serde(borrow)]
    pub body: VerifyBodyRef<'a>,
}

/// `RequestBody` with only its first variant, `Verify`.
#[derive(Debug, Deserialize)]
#[serde(rename = "RequestBody")]
pub enum VerifyBodyRef<'a> {
    Verify(#[serde(borrow)] VerifyQuestion<'a>),
}

/// `VerifyRequest`, borrowing.
#[derive(Debug, Deserialize)]
#[serde(rename = "VerifyRequest")]
pub struct VerifyQuestion<'a> {
    pub token: &'a str,
    pub permissions: PermissionBits,
    pub environment: Option<&'a str>,
    pub cost: Option<u32>,
}

impl<'a> VerifyRequestRef<'a> {
    /// The question asked.
    pub fn question(&self) -> &VerifyQuestion<'a> {
        let VerifyBodyRef::Verify(question) = &self.body;
        question
    }
}

/// `Response { id, body: ResponseBody::Verify(VerifyAnswer) }`, borrowing.
#[derive(Debug, Serialize)]
#[serde(rename = "Response")]
pub struct VerifyResponseRef<'a> {
    pub id: u64,
    pub body: VerifyAnswerBodyRef<'a>,
}

/// `ResponseBody` with only its first variant, `Verify`.
#[derive(Debug, Serialize)]
#[serde(rename = "ResponseBody")]
pub enum VerifyAnswerBodyRef<'a> {
    Verify(VerifyAnswerRef<'a>),
}

/// `VerifyAnswer`, borrowing.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename = "VerifyAnswer")]
pub struct VerifyAnswerRef<'a> {
    pub code: VerifyCode,
    pub key_id: Option<&'a str>,
    pub permissions: PermissionBits,
    pub environment: Option<&'a str>,
    pub rotate_by: Option<i64>,
    pub rotation_due: bool,
    pub name: Option<&'a str>,
    pub owner_id: Option<&'a str>,
    pub meta: &'a Meta,
    pub expires_at: Option<i64>,
    pub ratelimit: Option<RateLimitState>,
    pub remaining: Option<u64>,
}

/// No metadata, for answers about keys without any.
pub static NO_META: Meta = Meta::new();

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{
        decode, decode_borrowed, encode, Request, RequestBody, Response, ResponseBody,
        VerifyAnswer, VerifyRequest,
    };

    fn bits(list: &[Permission]) -> PermissionBits {
        PermissionBits(list.iter().fold(0, |acc, p| acc | p.bit()))
    }

    #[test]
    fn a_verify_request_decodes_the_same_borrowed() {
        for (permissions, environment) in [
            (vec![], None),
            (vec![Permission::Read], Some("production")),
            (Permission::ALL.to_vec(), Some("")),
            (vec![Permission::Delete, Permission::Read], None),
        ] {
            let owned = Request {
                id: u64::MAX - 3,
                body: RequestBody::Verify(VerifyRequest {
                    token: "api_whatever".into(),
                    permissions: permissions.clone(),
                    environment: environment.map(Into::into),
                    cost: Some(7),
                }),
            };
            let bytes = encode(&owned).expect("encodes");
            let borrowed: VerifyRequestRef = decode_borrowed(&bytes).expect("decodes");
            let q = borrowed.question();
            assert_eq!(borrowed.id, owned.id);
            assert_eq!(q.token, "api_whatever");
            assert_eq!(q.permissions, bits(&permissions));
            assert_eq!(q.environment, environment);
            assert_eq!(q.cost, Some(7));
        }
    }

    #[test]
    fn other_requests_do_not_decode_as_verify() {
        let bytes = encode(&Request {
            id: 1,
            body: RequestBody::Status,
        })
        .expect("encodes");
        assert!(decode_borrowed::<VerifyRequestRef>(&bytes).is_err());
        assert!(decode::<Request>(&bytes).is_ok());
    }

    #[test]
    fn a_verify_answer_encodes_the_same_borrowed() {
        let meta: Meta = [("plan".to_string(), "pro".to_string())].into();
        let limited = RateLimitState {
            limit: 100,
            remaining: 0,
            reset_at: 1_700_000_001_000,
            retry_at: 1_700_000_000_010,
        };
        for (code, key_id, permissions, environment, rotate_by, rotation_due) in [
            (VerifyCode::Unknown, None, vec![], None, None, false),
            (
                VerifyCode::Valid,
                Some("key_0123456789abcdef"),
                vec![Permission::Read, Permission::Delete],
                Some("production"),
                Some(1_700_000_000_000),
                true,
            ),
            (
                VerifyCode::InsufficientPermissions,
                Some("key_x"),
                Permission::ALL.to_vec(),
                None,
                Some(-5),
                false,
            ),
        ] {
            let owned = Response {
                id: 300,
                body: ResponseBody::Verify(VerifyAnswer {
                    code,
                    key_id: key_id.map(Into::into),
                    permissions: permissions.clone(),
                    environment: environment.map(Into::into),
                    rotate_by,
                    rotation_due,
                    name: key_id.map(|_| "Backend".into()),
                    owner_id: key_id.map(|_| "acme".into()),
                    meta: meta.clone(),
                    expires_at: rotate_by,
                    ratelimit: key_id.map(|_| limited),
                    remaining: key_id.map(|_| 41),
                }),
            };
            let borrowed = VerifyResponseRef {
                id: 300,
                body: VerifyAnswerBodyRef::Verify(VerifyAnswerRef {
                    code,
                    key_id,
                    permissions: bits(&permissions),
                    environment,
                    rotate_by,
                    rotation_due,
                    name: key_id.map(|_| "Backend"),
                    owner_id: key_id.map(|_| "acme"),
                    meta: &meta,
                    expires_at: rotate_by,
                    ratelimit: key_id.map(|_| limited),
                    remaining: key_id.map(|_| 41),
                }),
            };
            assert_eq!(encode(&borrowed).ok(), encode(&owned).ok());
        }
    }
}
