//! The fuzz targets' seed corpus (`fuzz/corpus/<target>/`), made from the real types.
//!
//! A fuzzer starting from real messages, tokens and sealed rows reaches deep code paths in
//! seconds instead of hours. But seeds go stale silently when a type changes: a stale seed
//! still runs, it just stops reaching anything. So this test checks, in every `cargo test`,
//! that each seed still is what it claims to be (a stream of frames that decode, a token
//! that passes or fails as named, a row that opens under the fuzz key). After a deliberate
//! change to the wire or record types, rewrite them with
//! `FUZZ_SEEDS_WRITE=1 cargo test --test fuzz_seeds` and commit the result.

use authenta_client::proto::{
    self, Actor, AuditEntry, AuditReport, ChainCheck, CreateKey, ErrorAnswer, ErrorCode, Hello,
    HelloReply, KeyCounts, KeyInfo, KeyPage, KeyState, NewToken, Permission, Request, RequestBody,
    Response, ResponseBody, StatusInfo, Usage, VerifyAnswer, VerifyCode, VerifyRequest,
    MAX_FRAME_LEN, PROTOCOL_VERSION,
};
use authenta_keyd::key::{Grace, KeyRecord, Permissions, UsageRecord};
use authenta_keyd::store::audit::{AuditRecord, ChainHead};
use authenta_keyd::store::barrier::{unwrap_data_key, wrap_data_key, Barrier};
use authenta_keyd::store::record_codec::{from_bytes, to_bytes};
use authenta_keyd::token::{check_token, generate_key_id, generate_token};
use ring::rand::SystemRandom;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// Must match `DATA_KEY` in `fuzz/fuzz_targets/sealed_row.rs`, which opens the seed rows.
const FUZZ_DATA_KEY: [u8; 32] = *b"authenta-keyd fuzz data key 0001";
/// Must match `MASTER_KEY` in `fuzz/fuzz_targets/sealed_row.rs`.
const FUZZ_MASTER_KEY: [u8; 32] = *b"authenta-keyd fuzz master key 01";
/// Must match `KEY_ID` in `fuzz/fuzz_targets/sealed_row.rs`.
const FUZZ_KEY_ID: &str = "key_fuzzseed00000001";

fn writing() -> bool {
    std::env::var_os("FUZZ_SEEDS_WRITE").is_some()
}

fn corpus(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

fn read_seed(target: &str, name: &str) -> Vec<u8> {
    let path = corpus(target).join(name);
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "seed {} is missing ({e}): run FUZZ_SEEDS_WRITE=1 cargo test --test fuzz_seeds",
            path.display()
        )
    })
}

fn write_seed(target: &str, name: &str, bytes: &[u8]) {
    let dir = corpus(target);
    std::fs::create_dir_all(&dir).expect("corpus dir");
    std::fs::write(dir.join(name), bytes).expect("write seed");
}

/// Deterministic seeds must equal what the current types encode to.
fn check_or_write_exact(target: &str, name: &str, bytes: &[u8]) {
    if writing() {
        write_seed(target, name, bytes);
    }
    assert!(
        read_seed(target, name) == bytes,
        "seed {target}/{name} is stale (a wire or record type changed?): run \
         FUZZ_SEEDS_WRITE=1 cargo test --test fuzz_seeds and commit fuzz/corpus"
    );
}

// ---------------------------------------------------------------------------------------
// frame_decode: byte streams as they cross the socket.
// ---------------------------------------------------------------------------------------

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
    }
}

fn hello() -> Vec<u8> {
    enc(&Hello {
        version: PROTOCOL_VERSION,
        agent: authenta_client::AGENT.into(),
    })
}

/// What a client sends: a hello, then one request of every kind.
fn client_session() -> Vec<u8> {
    let id = "key_AbCdEf0123456789".to_owned();
    frames(&[
        hello(),
        request(
            1,
            RequestBody::Verify(VerifyRequest {
                token: "api_notarealtokenbutthelengthisrightforthisseed0000000".into(),
                permissions: vec![Permission::Read],
                environment: Some("production".into()),
            }),
        ),
        request(
            2,
            RequestBody::CreateKey(CreateKey {
                name: "Mobile-App-Key".into(),
                permissions: vec![Permission::Read, Permission::Write, Permission::Delete],
                environment: Some("staging".into()),
                expires_in_secs: Some(90 * 86_400),
            }),
        ),
        request(3, RequestBody::ListKeys { after: None }),
        request(4, RequestBody::ShowKey { id: id.clone() }),
        request(
            5,
            RequestBody::Regenerate {
                id: id.clone(),
                grace_secs: Some(3600),
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
    ])
}

/// What an app sends: a hello, then pipelined verifies.
fn verify_pipeline() -> Vec<u8> {
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
            }),
        ));
    }
    frames(&messages)
}

/// What the daemon sends back: a welcome, then one answer of every kind.
fn daemon_answers() -> Vec<u8> {
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
    ])
}

/// The daemon turning a client away.
fn refusals() -> Vec<u8> {
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
fn oversized() -> Vec<u8> {
    let mut out = frames(&[hello()]);
    out.extend_from_slice(&(MAX_FRAME_LEN as u32 + 1).to_be_bytes());
    out.extend_from_slice(b"more than a frame");
    out
}

/// A hello whose last byte never arrived.
fn cut_short() -> Vec<u8> {
    let mut out = frames(&[hello()]);
    out.pop();
    out
}

/// Splits a stream as the protocol says; `None` when it does not end on a frame boundary
/// or a length is over the limit.
fn split(mut rest: &[u8]) -> Option<Vec<&[u8]>> {
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

#[test]
fn frame_seeds_are_current_message_streams() {
    let target = "frame_decode";
    for (name, bytes) in [
        ("client_session.bin", client_session()),
        ("verify_pipeline.bin", verify_pipeline()),
        ("daemon_answers.bin", daemon_answers()),
        ("refusals.bin", refusals()),
        ("oversized_length.bin", oversized()),
        ("cut_short.bin", cut_short()),
    ] {
        check_or_write_exact(target, name, &bytes);
    }
    // The streams are what they are named for.
    let client = client_session();
    let frames = split(&client).expect("whole frames");
    assert_eq!(frames.len(), 9);
    proto::decode::<Hello>(frames[0]).expect("hello");
    for frame in &frames[1..] {
        proto::decode::<Request>(frame).expect("request");
    }
    let answers = daemon_answers();
    let frames = split(&answers).expect("whole frames");
    proto::decode::<HelloReply>(frames[0]).expect("reply");
    for frame in &frames[1..] {
        proto::decode::<Response>(frame).expect("response");
    }
    assert!(split(&oversized()).is_none());
    assert!(split(&cut_short()).is_none());
}

// ---------------------------------------------------------------------------------------
// token: real tokens and near misses. Random, so checked by what they are, not byte-equal.
// ---------------------------------------------------------------------------------------

#[test]
fn token_seeds_pass_or_fail_as_named() {
    let target = "token";
    if writing() {
        let rng = SystemRandom::new();
        let token = || generate_token(&rng).expect("rng").to_string();
        write_seed(target, "valid_1.txt", token().as_bytes());
        write_seed(target, "valid_2.txt", token().as_bytes());
        let good = token();
        let mut bad = good.clone().into_bytes();
        let last = bad.len() - 1;
        bad[last] = if bad[last] == b'0' { b'1' } else { b'0' };
        write_seed(target, "bad_checksum.txt", &bad);
        write_seed(target, "truncated.txt", &good.as_bytes()[..good.len() - 1]);
        write_seed(
            target,
            "multibyte.txt",
            format!("api_{}", "é".repeat(24)).as_bytes(),
        );
        write_seed(
            target,
            "key_id.txt",
            generate_key_id(&rng).expect("rng").as_bytes(),
        );
    }
    let mut names: Vec<String> = std::fs::read_dir(corpus(target))
        .expect("token corpus")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(names.len() >= 6, "token seeds missing: {names:?}");
    for name in names {
        let text = String::from_utf8(read_seed(target, &name)).expect("utf8 seed");
        let ok = check_token(&text).is_ok();
        assert_eq!(
            ok,
            name.starts_with("valid_"),
            "token seed {name} passes: {ok}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// sealed_row: rows as the store writes them, sealed under the fuzz target's fixed keys.
// ---------------------------------------------------------------------------------------

fn seed_key_record() -> KeyRecord {
    KeyRecord {
        id: FUZZ_KEY_ID.into(),
        token_hash: [7; 32],
        name: "Backend-Server-Key".into(),
        start: "AbCdEf12".into(),
        permissions: Permissions::from_list(&[Permission::Read, Permission::Write]),
        environment: Some("production".into()),
        created_at: 1_764_000_000_000,
        rotated_at: Some(1_764_000_100_000),
        expires_at: Some(1_771_776_000_000),
        revoked_at: None,
        revoke_reason: None,
        grace: Some(Grace {
            token_hash: [9; 32],
            until: 1_764_003_700_000,
        }),
    }
}

fn seed_usage() -> UsageRecord {
    UsageRecord {
        verifications: 12,
        allowed: 10,
        denied: 2,
        last_used_at: Some(1_764_000_200_000),
    }
}

fn seed_audit() -> AuditRecord {
    AuditRecord {
        at: 1_764_000_000_000,
        actor: Actor::Peer {
            uid: 1000,
            pid: Some(4242),
        },
        action: "create".into(),
        key_id: Some(FUZZ_KEY_ID.into()),
        detail: Some("permissions=read,write environment=production".into()),
    }
}

fn seed_head() -> ChainHead {
    ChainHead {
        seq: 1,
        link: [3; 32],
    }
}

#[test]
fn sealed_row_seeds_open_under_the_fuzz_keys() {
    let target = "sealed_row";
    let barrier = Barrier::new(&Zeroizing::new(FUZZ_DATA_KEY));
    let master = Zeroizing::new(FUZZ_MASTER_KEY);
    if writing() {
        let seal = |table: &str, row: &str, plain: Vec<u8>| barrier.seal(table, row, &plain);
        write_seed(
            target,
            "key_row.bin",
            &seal("keys", FUZZ_KEY_ID, to_bytes(&seed_key_record())),
        );
        write_seed(
            target,
            "usage_row.bin",
            &seal("usage", FUZZ_KEY_ID, to_bytes(&seed_usage())),
        );
        write_seed(
            target,
            "audit_row.bin",
            &seal("audit", "1", to_bytes(&seed_audit())),
        );
        write_seed(
            target,
            "audit_head.bin",
            &seal("meta", "audit_head", to_bytes(&seed_head())),
        );
        write_seed(
            target,
            "wrapped_data_key.bin",
            &wrap_data_key(&master, &Zeroizing::new(FUZZ_DATA_KEY)),
        );
    }
    let open = |name: &str, table: &str, row: &str| {
        barrier
            .open(table, row, &read_seed(target, name))
            .unwrap_or_else(|_| panic!("seed {name} does not open under the fuzz key"))
    };
    assert_eq!(
        from_bytes::<KeyRecord>(&open("key_row.bin", "keys", FUZZ_KEY_ID)),
        Some(seed_key_record())
    );
    assert_eq!(
        from_bytes::<UsageRecord>(&open("usage_row.bin", "usage", FUZZ_KEY_ID)),
        Some(seed_usage())
    );
    assert_eq!(
        from_bytes::<AuditRecord>(&open("audit_row.bin", "audit", "1")),
        Some(seed_audit())
    );
    assert_eq!(
        from_bytes::<ChainHead>(&open("audit_head.bin", "meta", "audit_head")),
        Some(seed_head())
    );
    let unwrapped = unwrap_data_key(&master, &read_seed(target, "wrapped_data_key.bin"))
        .expect("wrapped seed opens under the fuzz master key");
    assert_eq!(*unwrapped, FUZZ_DATA_KEY);

    // The plaintext encodings, for the record decoders the fuzzer works on directly.
    check_or_write_exact(target, "key_record.bin", &to_bytes(&seed_key_record()));
    check_or_write_exact(target, "usage_record.bin", &to_bytes(&seed_usage()));
    check_or_write_exact(target, "audit_record.bin", &to_bytes(&seed_audit()));
    check_or_write_exact(target, "chain_head.bin", &to_bytes(&seed_head()));
}
