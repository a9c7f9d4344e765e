//! The fuzz targets' seed corpus (`fuzz/corpus/<target>/`), made from the real types.
//!
//! A fuzzer starting from real messages, tokens and sealed rows reaches deep code paths in
//! seconds instead of hours. But seeds go stale silently when a type changes: a stale seed
//! still runs, it just stops reaching anything. So this test checks, in every `cargo test`,
//! that each seed still is what it claims to be (a stream of frames that decode, a token
//! that passes or fails as named, a row that opens under the fuzz key). After a deliberate
//! change to the wire or record types, rewrite them with
//! `FUZZ_SEEDS_WRITE=1 cargo test --test fuzz_seeds` and commit the result.

#[path = "fuzz_seeds/streams.rs"]
mod streams;

use authenta_client::proto::{self, Actor, Hello, HelloReply, Permission, Request, Response};
use authenta_keyd::key::{Grace, KeyRecord, Permissions, UsageRecord};
use authenta_keyd::store::audit::{AuditRecord, ChainHead};
use authenta_keyd::store::barrier::{unwrap_data_key, wrap_data_key, Barrier};
use authenta_keyd::store::record_codec::{from_bytes, to_bytes};
use authenta_keyd::token::{check_token, generate_key_id, generate_token};
use ring::rand::SystemRandom;
use std::path::{Path, PathBuf};
use streams::{
    client_session, cut_short, daemon_answers, oversized, refusals, split, verify_pipeline,
};
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
// frame_decode: byte streams as they cross the socket, built in `fuzz_seeds/streams.rs`.
// ---------------------------------------------------------------------------------------

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
    assert_eq!(frames.len(), 13);
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
            generate_key_id(&rng, 1_765_000_000_000)
                .expect("rng")
                .as_bytes(),
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
        details: Default::default(),
    }
}

fn seed_usage() -> UsageRecord {
    UsageRecord {
        verifications: 12,
        allowed: 10,
        denied: 2,
        last_used_at: Some(1_764_000_200_000),
        limits: Default::default(),
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
        bound_entries: 5,
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
