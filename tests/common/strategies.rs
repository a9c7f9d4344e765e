//! Proptest strategies for the wire types (`authenta_client::proto`), shared by the property
//! tests (`tests/wire.rs`, `tests/seal.rs`, `tests/token.rs`), and the case count they run.

use authenta_client::proto::{
    Actor, AuditEntry, AuditReport, ChainCheck, CreateKey, ErrorAnswer, ErrorCode, HealthReport,
    Hello, HelloReply, KeyCounts, KeyInfo, KeyPage, KeyState, Meta, NewToken, OwnerInfo,
    OwnerUpdate, Permission, PolicyReport, RateLimit, RateLimitState, Refill, Request, RequestBody,
    Response, ResponseBody, RotationFailure, ScheduledRotation, StatusInfo, UpdateKey, Usage,
    VerifyAnswer, VerifyCode, VerifyRequest,
};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

/// `cases` unless `PROPTEST_CASES` asks for more (or fewer), so a long run needs no edit.
pub fn cases(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------
// Strategies for the wire types.
//
// Every enum has a `covers_*` function below with an exhaustive `match` (no wildcard): a new
// variant then fails to compile here until its strategy is added, so the round trips never
// silently stop covering part of the protocol.
// ---------------------------------------------------------------------------------------

/// Any text, including multi-byte and control characters, kept short so cases stay cheap.
pub fn text() -> impl Strategy<Value = String> {
    ".{0,24}"
}

pub fn opt_text() -> impl Strategy<Value = Option<String>> {
    option::of(text())
}

pub fn permission() -> impl Strategy<Value = Permission> {
    prop_oneof![
        Just(Permission::Read),
        Just(Permission::Write),
        Just(Permission::Delete)
    ]
}

/// Lists as a client may send them: empty, repeated, in any order.
pub fn permissions() -> impl Strategy<Value = Vec<Permission>> {
    vec(permission(), 0..5)
}

pub fn verify_code() -> impl Strategy<Value = VerifyCode> {
    prop_oneof![
        Just(VerifyCode::Valid),
        Just(VerifyCode::Malformed),
        Just(VerifyCode::Unknown),
        Just(VerifyCode::Revoked),
        Just(VerifyCode::Expired),
        Just(VerifyCode::WrongEnvironment),
        Just(VerifyCode::InsufficientPermissions),
        Just(VerifyCode::RateLimited),
        Just(VerifyCode::UsageExceeded),
    ]
}

pub fn meta() -> impl Strategy<Value = Meta> {
    proptest::collection::btree_map(text(), text(), 0..3)
}

pub fn ratelimit() -> impl Strategy<Value = RateLimit> {
    (any::<u32>(), any::<u64>()).prop_map(|(limit, window_ms)| RateLimit { limit, window_ms })
}

pub fn refill() -> impl Strategy<Value = Refill> {
    (any::<u64>(), any::<u64>()).prop_map(|(amount, interval_ms)| Refill {
        amount,
        interval_ms,
    })
}

pub fn ratelimit_state() -> impl Strategy<Value = RateLimitState> {
    (any::<u32>(), any::<u32>(), any::<i64>(), any::<i64>()).prop_map(
        |(limit, remaining, reset_at, retry_at)| RateLimitState {
            limit,
            remaining,
            reset_at,
            retry_at,
        },
    )
}

fn change<T: std::fmt::Debug + Clone>(
    inner: impl Strategy<Value = T>,
) -> impl Strategy<Value = Option<Option<T>>> {
    option::of(option::of(inner))
}

pub fn update_key() -> impl Strategy<Value = UpdateKey> {
    let fields = (
        text(),
        opt_text(),
        option::of(permissions()),
        change(text()),
        change(any::<u64>()),
        change(text()),
    );
    let more = (
        meta(),
        vec(text(), 0..3),
        change(ratelimit()),
        change(any::<u64>()),
        change(refill()),
    );
    (fields, more).prop_map(
        |(
            (id, name, permissions, environment, expires_in_secs, owner_id),
            (set_meta, unset_meta, ratelimit, remaining, refill),
        )| UpdateKey {
            id,
            name,
            permissions,
            environment,
            expires_in_secs,
            owner_id,
            set_meta,
            unset_meta,
            ratelimit,
            remaining,
            refill,
        },
    )
}

pub fn owner_update() -> impl Strategy<Value = OwnerUpdate> {
    (
        text(),
        change(ratelimit()),
        change(any::<u64>()),
        change(refill()),
    )
        .prop_map(|(id, ratelimit, remaining, refill)| OwnerUpdate {
            id,
            ratelimit,
            remaining,
            refill,
        })
}

pub fn owner_info() -> impl Strategy<Value = OwnerInfo> {
    (
        text(),
        option::of(ratelimit()),
        option::of(ratelimit_state()),
        option::of(any::<u64>()),
        option::of(refill()),
        any::<u64>(),
    )
        .prop_map(
            |(id, ratelimit, ratelimit_state, remaining, refill, keys)| OwnerInfo {
                id,
                ratelimit,
                ratelimit_state,
                remaining,
                refill,
                keys,
            },
        )
}

pub fn key_state() -> impl Strategy<Value = KeyState> {
    prop_oneof![
        Just(KeyState::Active),
        Just(KeyState::Revoked),
        Just(KeyState::Expired)
    ]
}

pub fn error_code() -> impl Strategy<Value = ErrorCode> {
    prop_oneof![
        Just(ErrorCode::BadRequest),
        Just(ErrorCode::NotFound),
        Just(ErrorCode::PermissionDenied),
        Just(ErrorCode::Busy),
        Just(ErrorCode::Storage),
        Just(ErrorCode::BadFrame),
        Just(ErrorCode::Internal),
    ]
}

pub fn actor() -> impl Strategy<Value = Actor> {
    prop_oneof![
        (any::<u32>(), option::of(any::<i32>())).prop_map(|(uid, pid)| Actor::Peer { uid, pid }),
        Just(Actor::Policy),
        Just(Actor::Daemon),
    ]
}

pub fn hello() -> impl Strategy<Value = Hello> {
    (any::<u16>(), text()).prop_map(|(version, agent)| Hello { version, agent })
}

pub fn hello_reply() -> impl Strategy<Value = HelloReply> {
    prop_oneof![
        (any::<u16>(), text())
            .prop_map(|(version, server)| HelloReply::Welcome { version, server }),
        (any::<u16>(), text())
            .prop_map(|(supported, message)| HelloReply::Refused { supported, message }),
        text().prop_map(|message| HelloReply::Busy { message }),
    ]
}

pub fn request_body() -> impl Strategy<Value = RequestBody> {
    prop_oneof![
        (text(), permissions(), opt_text(), option::of(any::<u32>())).prop_map(
            |(token, permissions, environment, cost)| {
                RequestBody::Verify(VerifyRequest {
                    token,
                    permissions,
                    environment,
                    cost,
                })
            }
        ),
        (
            (text(), permissions(), opt_text(), option::of(any::<u64>())),
            (opt_text(), meta(), option::of(ratelimit())),
            (option::of(any::<u64>()), option::of(refill()))
        )
            .prop_map(
                |(
                    (name, permissions, environment, expires_in_secs),
                    (owner_id, meta, ratelimit),
                    (remaining, refill),
                )| {
                    RequestBody::CreateKey(CreateKey {
                        name,
                        permissions,
                        environment,
                        expires_in_secs,
                        owner_id,
                        meta,
                        ratelimit,
                        remaining,
                        refill,
                    })
                }
            ),
        (opt_text(), opt_text())
            .prop_map(|(after, owner_id)| RequestBody::ListKeys { after, owner_id }),
        text().prop_map(|id| RequestBody::ShowKey { id }),
        (text(), option::of(any::<u64>()), option::of(any::<u64>())).prop_map(
            |(id, grace_secs, expires_in_secs)| RequestBody::Regenerate {
                id,
                grace_secs,
                expires_in_secs,
            }
        ),
        update_key().prop_map(RequestBody::UpdateKey),
        owner_update().prop_map(RequestBody::SetOwner),
        text().prop_map(|id| RequestBody::ShowOwner { id }),
        (text(), opt_text()).prop_map(|(id, reason)| RequestBody::Revoke { id, reason }),
        Just(RequestBody::Status),
        Just(RequestBody::Health),
        (any::<bool>(), any::<u64>())
            .prop_map(|(verify, after)| RequestBody::Audit { verify, after }),
        vec(any::<u8>(), 0..40).prop_map(|bytes| RequestBody::Rekey {
            new_master_key: authenta_client::proto::SecretBytes(bytes)
        }),
    ]
}

pub fn request() -> impl Strategy<Value = Request> {
    (any::<u64>(), request_body()).prop_map(|(id, body)| Request { id, body })
}

pub fn usage() -> impl Strategy<Value = Usage> {
    (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(verifications, allowed, denied)| Usage {
        verifications,
        allowed,
        denied,
    })
}

pub fn key_info() -> impl Strategy<Value = KeyInfo> {
    let names = (
        text(),
        text(),
        text(),
        permissions(),
        opt_text(),
        key_state(),
    );
    let times = (
        any::<i64>(),
        option::of(any::<i64>()),
        option::of(any::<i64>()),
        option::of(any::<i64>()),
        option::of(any::<i64>()),
        option::of(any::<i64>()),
        option::of(any::<i64>()),
    );
    let lifecycle = (
        opt_text(),
        meta(),
        option::of(ratelimit()),
        option::of(any::<u64>()),
        option::of(refill()),
    );
    (names, times, usage(), any::<bool>(), lifecycle).prop_map(
        |(
            (id, name, start, permissions, environment, state),
            (created_at, rotated_at, last_used_at, expires_at, rotate_by, revoked_at, grace_until),
            usage,
            rotation_due,
            (owner_id, meta, ratelimit, remaining, refill),
        )| KeyInfo {
            id,
            name,
            start,
            permissions,
            environment,
            state,
            created_at,
            rotated_at,
            last_used_at,
            expires_at,
            rotate_by,
            rotation_due,
            revoked_at,
            grace_until,
            usage,
            owner_id,
            meta,
            ratelimit,
            remaining,
            refill,
        },
    )
}

pub fn status_info() -> impl Strategy<Value = StatusInfo> {
    (
        (text(), any::<u64>(), text(), text()),
        (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()),
        vec(text(), 0..4),
        (any::<u64>(), any::<u64>(), opt_text(), any::<u64>()),
    )
        .prop_map(
            |(
                (version, uptime_secs, socket, data_dir),
                (total, active, revoked, expired),
                corrupt_keys,
                (connections, verifications, policy_error, rotation_failures),
            )| StatusInfo {
                version,
                uptime_secs,
                socket,
                data_dir,
                keys: KeyCounts {
                    total,
                    active,
                    revoked,
                    expired,
                },
                corrupt_keys,
                connections,
                verifications,
                policy_error,
                rotation_failures,
                fleet: None,
                development_key: false,
                newest_audit_at: None,
                corrupt_total: 0,
            },
        )
}

pub fn audit_report() -> impl Strategy<Value = AuditReport> {
    let entry = (
        any::<u64>(),
        any::<i64>(),
        actor(),
        text(),
        opt_text(),
        opt_text(),
    )
        .prop_map(|(seq, at, actor, action, key_id, detail)| AuditEntry {
            seq,
            at,
            actor,
            action,
            key_id,
            detail,
        });
    let chain =
        (any::<bool>(), any::<u64>(), opt_text()).prop_map(|(ok, checked, problem)| ChainCheck {
            ok,
            checked,
            problem,
        });
    (
        vec(entry, 0..4),
        option::of(chain),
        option::of(any::<u64>()),
    )
        .prop_map(|(entries, chain, next)| AuditReport {
            entries,
            chain,
            next,
        })
}

pub fn policy_report() -> impl Strategy<Value = PolicyReport> {
    (
        (opt_text(), opt_text(), option::of(any::<i64>())),
        (opt_text(), option::of(any::<i64>())),
        (any::<u32>(), any::<u32>(), any::<u32>()),
        vec((text(), any::<i64>()), 0..3),
        vec((text(), text(), any::<i64>()), 0..3),
    )
        .prop_map(
            |(
                (file, content_sha256, loaded_at),
                (last_error, last_error_at),
                (rules, revoked_ids, revoked_hashes),
                next,
                failures,
            )| PolicyReport {
                file,
                content_sha256,
                loaded_at,
                last_error,
                last_error_at,
                rules,
                revoked_ids,
                revoked_hashes,
                next_rotations: next
                    .into_iter()
                    .map(|(key_id, at)| ScheduledRotation { key_id, at })
                    .collect(),
                rotation_failures: failures
                    .into_iter()
                    .map(|(key_id, message, retry_at)| RotationFailure {
                        key_id,
                        message,
                        retry_at,
                    })
                    .collect(),
            },
        )
}

pub fn response_body() -> impl Strategy<Value = ResponseBody> {
    prop_oneof![
        (
            (
                verify_code(),
                opt_text(),
                permissions(),
                opt_text(),
                option::of(any::<i64>()),
                any::<bool>()
            ),
            (opt_text(), opt_text(), meta(), option::of(any::<i64>())),
            (option::of(ratelimit_state()), option::of(any::<u64>()))
        )
            .prop_map(
                |(
                    (code, key_id, permissions, environment, rotate_by, rotation_due),
                    (name, owner_id, meta, expires_at),
                    (ratelimit, remaining),
                )| {
                    ResponseBody::Verify(VerifyAnswer {
                        code,
                        key_id,
                        permissions,
                        environment,
                        rotate_by,
                        rotation_due,
                        name,
                        owner_id,
                        meta,
                        expires_at,
                        ratelimit,
                        remaining,
                    })
                }
            ),
        owner_info().prop_map(ResponseBody::Owner),
        policy_report().prop_map(ResponseBody::Policy),
        (
            any::<bool>(),
            any::<bool>(),
            text(),
            option::of(any::<bool>()),
            vec(text(), 0..3)
        )
            .prop_map(|(ready, store, policy, fleet_connected, problems)| {
                ResponseBody::Health(HealthReport {
                    ready,
                    store,
                    policy,
                    fleet_connected,
                    problems,
                })
            }),
        (key_info(), text())
            .prop_map(|(key, token)| ResponseBody::Created(NewToken { key, token })),
        (vec(key_info(), 0..3), opt_text())
            .prop_map(|(keys, next)| ResponseBody::Keys(KeyPage { keys, next })),
        text().prop_map(ResponseBody::Done),
        key_info().prop_map(ResponseBody::Key),
        status_info().prop_map(ResponseBody::Status),
        audit_report().prop_map(ResponseBody::Audit),
        (error_code(), text())
            .prop_map(|(code, message)| ResponseBody::Error(ErrorAnswer { code, message })),
    ]
}

pub fn response() -> impl Strategy<Value = Response> {
    (any::<u64>(), response_body()).prop_map(|(id, body)| Response { id, body })
}

#[allow(dead_code)]
pub fn covers_request_body(body: &RequestBody) {
    match body {
        RequestBody::Verify(_)
        | RequestBody::CreateKey(_)
        | RequestBody::ListKeys { .. }
        | RequestBody::Rekey { .. }
        | RequestBody::PolicyStatus
        | RequestBody::ShowKey { .. }
        | RequestBody::Regenerate { .. }
        | RequestBody::Revoke { .. }
        | RequestBody::Status
        | RequestBody::Audit { .. }
        | RequestBody::UpdateKey(_)
        | RequestBody::SetOwner(_)
        | RequestBody::ShowOwner { .. }
        | RequestBody::Health => {}
    }
}

#[allow(dead_code)]
pub fn covers_response_body(body: &ResponseBody) {
    match body {
        ResponseBody::Verify(_)
        | ResponseBody::Created(_)
        | ResponseBody::Keys(_)
        | ResponseBody::Key(_)
        | ResponseBody::Status(_)
        | ResponseBody::Audit(_)
        | ResponseBody::Error(_)
        | ResponseBody::Done(_)
        | ResponseBody::Policy(_)
        | ResponseBody::Owner(_)
        | ResponseBody::Health(_) => {}
    }
}

#[allow(dead_code)]
pub fn covers_hello_reply(reply: &HelloReply) {
    match reply {
        HelloReply::Welcome { .. } | HelloReply::Refused { .. } | HelloReply::Busy { .. } => {}
    }
}

#[allow(dead_code)]
pub fn covers_codes(code: VerifyCode, error: ErrorCode, state: KeyState, actor: &Actor) {
    match code {
        VerifyCode::Valid
        | VerifyCode::Malformed
        | VerifyCode::Unknown
        | VerifyCode::Revoked
        | VerifyCode::Expired
        | VerifyCode::WrongEnvironment
        | VerifyCode::InsufficientPermissions
        | VerifyCode::RateLimited
        | VerifyCode::UsageExceeded => {}
    }
    match error {
        ErrorCode::BadRequest
        | ErrorCode::NotFound
        | ErrorCode::PermissionDenied
        | ErrorCode::Busy
        | ErrorCode::Storage
        | ErrorCode::BadFrame
        | ErrorCode::Internal
        | ErrorCode::Conflict
        | ErrorCode::FleetUnavailable => {}
    }
    match state {
        KeyState::Active | KeyState::Revoked | KeyState::Expired => {}
    }
    match actor {
        Actor::Peer { .. } | Actor::Policy | Actor::Daemon => {}
    }
}
