//! The `frame_decode` seeds: byte streams as they cross the socket, built from the real wire
//! types (a client session with one request of every kind, pipelined verifies, the daemon's
//! answers of every kind, its refusals, an oversized length, a frame cut short), and the
//! protocol's framing to split them again.

use authenta_client::proto::{
    self, Actor, AuditEntry, AuditReport, ChainCheck, CreateKey, ErrorAnswer, ErrorCode,
    HealthReport, Hello, HelloReply, KeyCounts, KeyInfo, KeyPage, KeyState, NewToken, OwnerUpdate,
    Permission, RateLimit, Refill, Request, RequestBody, Response, ResponseBody, StatusInfo,
    UpdateKey, Usage, VerifyAnswer, VerifyCode, VerifyRequest, MAX_FRAME_LEN, PROTOCOL_VERSION,
};

fn frames(messages: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for payload in messages {
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(payload);
    }
    out
}

fn enc<T: serde::Serialize>(message: &T) -> Vec<u8> {
    proto::encode(message).expect("encodes")
}

fn request(id: u64, body: RequestBody) -> Vec<u8> {
    enc(&Request { id, body })
}

fn response(id: u64, body: ResponseBody) -> Vec<u8> {
    enc(&Response { id, body })
}

fn key_info(id: &str, state: KeyState) -> KeyInfo {
    KeyInfo {
        id: id.into(),
        name: "Backend-Server-Key".into(),
        start: "AbCdEf12".into(),
        permissions: vec![Permission::Read, Permission::Write],
        environment: Some("production".into()),
        state,
        created_at: 1_764_000_000_000,
        rotated_at: Some(1_764_000_100_000),
        last_used_at: Some(1_764_000_200_000),
        expires_at: Some(1_771_776_000_000),
        rotate_by: None,
        rotation_due: false,
        revoked_at: (state == KeyState::Revoked).then_some(1_764_000_300_000),
        grace_until: None,
        usage: Usage {
            verifications: 12,
            allowed: 10,
            denied: 2,
        },
        owner_id: None,
        meta: Default::default(),
        ratelimit: None,
        remaining: None,
        refill: None,
    }
}

fn hello() -> Vec<u8> {
    enc(&Hello {
        version: PROTOCOL_VERSION,
        agent: authenta_client::AGENT.into(),
    })
}

/// What a client sends: a hello, then one request of every kind.
pub fn client_session() -> Vec<u8> {
    let id = "key_AbCdEf0123456789".to_owned();
    frames(&[
        hello(),
        request(
            1,
            RequestBody::Verify(VerifyRequest {
                token: "api_notarealtokenbutthelengthisrightforthisseed0000000".into(),
                permissions: vec![Permission::Read],
                environment: Some("production".into()),
                cost: None,
            }),
        ),
        request(
            2,
            RequestBody::CreateKey(CreateKey {
                name: "Mobile-App-Key".into(),
                permissions: vec![Permission::Read, Permission::Write, Permission::Delete],
                environment: Some("staging".into()),
                expires_in_secs: Some(90 * 86_400),
                owner_id: Some("acme".into()),
                meta: [("plan".to_string(), "pro".to_string())].into(),
                ratelimit: Some(RateLimit {
                    limit: 100,
                    window_ms: 1_000,
                }),
                remaining: Some(1_000),
                refill: Some(Refill {
                    amount: 1_000,
                    interval_ms: 86_400_000,
                }),
            }),
        ),
        request(
            3,
            RequestBody::ListKeys {
                after: None,
                owner_id: None,
            },
        ),
        request(4, RequestBody::ShowKey { id: id.clone() }),
        request(
            5,
            RequestBody::Regenerate {
                id: id.clone(),
                grace_secs: Some(3600),
                expires_in_secs: None,
            },
        ),
        request(
            6,
            RequestBody::Revoke {
                id,
                reason: Some("staff change".into()),
            },
        ),
        request(7, RequestBody::Status),
        request(
            8,
            RequestBody::Audit {
                verify: true,
                after: 0,
            },
        ),
        request(9, RequestBody::Health),
        request(
            10,
            RequestBody::UpdateKey(UpdateKey {
                id: "key_0123456789abcdef".into(),
                permissions: Some(vec![Permission::Read]),
                environment: Some(None),
                unset_meta: vec!["plan".into()],
                remaining: Some(Some(50)),
                ..UpdateKey::default()
            }),
        ),
        request(
            11,
            RequestBody::SetOwner(OwnerUpdate {
                id: "acme".into(),
                ratelimit: Some(Some(RateLimit {
                    limit: 1_000,
                    window_ms: 60_000,
                })),
                ..OwnerUpdate::default()
            }),
        ),
        request(12, RequestBody::ShowOwner { id: "acme".into() }),
    ])
}

/// What an app sends: a hello, then pipelined verifies.
pub fn verify_pipeline() -> Vec<u8> {
    let mut messages = vec![hello()];
    for (id, permissions) in [
        (1, vec![]),
        (2, vec![Permission::Write]),
        (u64::MAX, vec![Permission::Delete, Permission::Read]),
    ] {
        messages.push(request(
            id,
            RequestBody::Verify(VerifyRequest {
                token: "api_".into(),
                permissions,
                environment: None,
                cost: None,
            }),
        ));
    }
    frames(&messages)
}

/// What the daemon sends back: a welcome, then one answer of every kind.
pub fn daemon_answers() -> Vec<u8> {
    let active = key_info("key_AbCdEf0123456789", KeyState::Active);
    let revoked = key_info("key_ZyXwVu9876543210", KeyState::Revoked);
    frames(&[
        enc(&HelloReply::Welcome {
            version: PROTOCOL_VERSION,
            server: "0.1.0".into(),
        }),
        response(
            1,
            ResponseBody::Verify(VerifyAnswer {
                code: VerifyCode::InsufficientPermissions,
                key_id: Some(active.id.clone()),
                permissions: vec![Permission::Read],
                environment: Some("production".into()),
                rotate_by: Some(1_770_000_000_000),
                rotation_due: true,
                name: None,
                owner_id: None,
                meta: Default::default(),
                expires_at: None,
                ratelimit: None,
                remaining: None,
            }),
        ),
        response(
            2,
            ResponseBody::Created(NewToken {
                key: active.clone(),
                token: "api_notarealtokenbutthelengthisrightforthisseed0000000".into(),
            }),
        ),
        response(
            3,
            ResponseBody::Keys(KeyPage {
                keys: vec![active.clone(), revoked.clone()],
                next: None,
            }),
        ),
        response(4, ResponseBody::Key(revoked)),
        response(
            5,
            ResponseBody::Status(StatusInfo {
                version: "0.1.0".into(),
                uptime_secs: 3600,
                socket: "/run/authenta/keyd.sock".into(),
                data_dir: "/var/lib/authenta".into(),
                keys: KeyCounts {
                    total: 2,
                    active: 1,
                    revoked: 1,
                    expired: 0,
                },
                corrupt_keys: vec!["key_0000000000000000".into()],
                connections: 3,
                verifications: 12,
                policy_error: None,
                rotation_failures: 0,
                fleet: None,
                development_key: false,
                newest_audit_at: None,
                corrupt_total: 0,
            }),
        ),
        response(
            6,
            ResponseBody::Audit(AuditReport {
                entries: vec![
                    AuditEntry {
                        seq: 1,
                        at: 1_764_000_000_000,
                        actor: Actor::Peer {
                            uid: 1000,
                            pid: Some(4242),
                        },
                        action: "create".into(),
                        key_id: Some(active.id.clone()),
                        detail: Some("permissions=read,write".into()),
                    },
                    AuditEntry {
                        seq: 2,
                        at: 1_764_000_300_000,
                        actor: Actor::Policy,
                        action: "revoke".into(),
                        key_id: Some("key_ZyXwVu9876543210".into()),
                        detail: None,
                    },
                ],
                chain: Some(ChainCheck {
                    ok: true,
                    checked: 2,
                    problem: None,
                }),
                next: None,
            }),
        ),
        response(
            7,
            ResponseBody::Error(ErrorAnswer {
                code: ErrorCode::NotFound,
                message: "no key with id key_nope".into(),
            }),
        ),
        response(
            8,
            ResponseBody::Health(HealthReport {
                ready: false,
                store: true,
                policy: "stale".into(),
                fleet_connected: Some(false),
                problems: vec!["not connected to the fleet's NATS servers".into()],
            }),
        ),
    ])
}

/// The daemon turning a client away.
pub fn refusals() -> Vec<u8> {
    frames(&[
        enc(&HelloReply::Refused {
            supported: PROTOCOL_VERSION,
            message: "this daemon speaks protocol version 1, not 2".into(),
        }),
        enc(&HelloReply::Busy {
            message: "at its connection cap".into(),
        }),
        response(
            0,
            ResponseBody::Error(ErrorAnswer {
                code: ErrorCode::BadFrame,
                message: "request does not decode; closing".into(),
            }),
        ),
    ])
}

/// A hello, then a length prefix one byte over the limit.
pub fn oversized() -> Vec<u8> {
    let mut out = frames(&[hello()]);
    out.extend_from_slice(&(MAX_FRAME_LEN as u32 + 1).to_be_bytes());
    out.extend_from_slice(b"more than a frame");
    out
}

/// A hello whose last byte never arrived.
pub fn cut_short() -> Vec<u8> {
    let mut out = frames(&[hello()]);
    out.pop();
    out
}

/// Splits a stream as the protocol says; `None` when it does not end on a frame boundary
/// or a length is over the limit.
pub fn split(mut rest: &[u8]) -> Option<Vec<&[u8]>> {
    let mut out = Vec::new();
    while !rest.is_empty() {
        let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        if len > MAX_FRAME_LEN {
            return None;
        }
        out.push(rest.get(4..4 + len)?);
        rest = &rest[4 + len..];
    }
    Some(out)
}
