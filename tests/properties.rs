//! Property tests of the parts that face hostile bytes: the wire codec, the token parser and
//! the barrier. Unlike the example-based tests beside the code, these generate their inputs,
//! so they cover shapes nobody thought to write down (empty strings, multi-byte text, huge
//! numbers, every variant). The fuzz targets in `fuzz/` go deeper; these run in every
//! `cargo test` and stay fast (a few hundred cases each; raise with `PROPTEST_CASES=N`).

use authenta_client::proto::{
    self, Actor, AuditEntry, AuditReport, ChainCheck, CreateKey, ErrorAnswer, ErrorCode, Hello,
    HelloReply, KeyCounts, KeyInfo, KeyPage, KeyState, NewToken, Permission, PolicyReport,
    ProtoError, Request, RequestBody, Response, ResponseBody, RotationFailure, ScheduledRotation,
    StatusInfo, Usage, VerifyAnswer, VerifyCode, VerifyRequest, MAX_FRAME_LEN,
};
use authenta_keyd::key::{Grace, KeyRecord, Permissions, UsageRecord};
use authenta_keyd::store::barrier::{unwrap_data_key, wrap_data_key, Barrier, Tampered};
use authenta_keyd::store::record_codec;
use authenta_keyd::token::{check_token, hash_token, start_of, Malformed, TOKEN_LEN, TOKEN_PREFIX};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::Index;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Debug;
use zeroize::Zeroizing;

/// `cases` unless `PROPTEST_CASES` asks for more (or fewer), so a long run needs no edit.
fn cases(default: u32) -> ProptestConfig {
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
fn text() -> impl Strategy<Value = String> {
    ".{0,24}"
}

fn opt_text() -> impl Strategy<Value = Option<String>> {
    option::of(text())
}

fn permission() -> impl Strategy<Value = Permission> {
    prop_oneof![
        Just(Permission::Read),
        Just(Permission::Write),
        Just(Permission::Delete)
    ]
}

/// Lists as a client may send them: empty, repeated, in any order.
fn permissions() -> impl Strategy<Value = Vec<Permission>> {
    vec(permission(), 0..5)
}

fn verify_code() -> impl Strategy<Value = VerifyCode> {
    prop_oneof![
        Just(VerifyCode::Valid),
        Just(VerifyCode::Malformed),
        Just(VerifyCode::Unknown),
        Just(VerifyCode::Revoked),
        Just(VerifyCode::Expired),
        Just(VerifyCode::WrongEnvironment),
        Just(VerifyCode::InsufficientPermissions),
    ]
}

fn key_state() -> impl Strategy<Value = KeyState> {
    prop_oneof![
        Just(KeyState::Active),
        Just(KeyState::Revoked),
        Just(KeyState::Expired)
    ]
}

fn error_code() -> impl Strategy<Value = ErrorCode> {
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

fn actor() -> impl Strategy<Value = Actor> {
    prop_oneof![
        (any::<u32>(), option::of(any::<i32>())).prop_map(|(uid, pid)| Actor::Peer { uid, pid }),
        Just(Actor::Policy),
        Just(Actor::Daemon),
    ]
}

fn hello() -> impl Strategy<Value = Hello> {
    (any::<u16>(), text()).prop_map(|(version, agent)| Hello { version, agent })
}

fn hello_reply() -> impl Strategy<Value = HelloReply> {
    prop_oneof![
        (any::<u16>(), text())
            .prop_map(|(version, server)| HelloReply::Welcome { version, server }),
        (any::<u16>(), text())
            .prop_map(|(supported, message)| HelloReply::Refused { supported, message }),
        text().prop_map(|message| HelloReply::Busy { message }),
    ]
}

fn request_body() -> impl Strategy<Value = RequestBody> {
    prop_oneof![
        (text(), permissions(), opt_text()).prop_map(|(token, permissions, environment)| {
            RequestBody::Verify(VerifyRequest {
                token,
                permissions,
                environment,
            })
        }),
        (text(), permissions(), opt_text(), option::of(any::<u64>())).prop_map(
            |(name, permissions, environment, expires_in_secs)| {
                RequestBody::CreateKey(CreateKey {
                    name,
                    permissions,
                    environment,
                    expires_in_secs,
                })
            }
        ),
        opt_text().prop_map(|after| RequestBody::ListKeys { after }),
        text().prop_map(|id| RequestBody::ShowKey { id }),
        (text(), option::of(any::<u64>()))
            .prop_map(|(id, grace_secs)| RequestBody::Regenerate { id, grace_secs }),
        (text(), opt_text()).prop_map(|(id, reason)| RequestBody::Revoke { id, reason }),
        Just(RequestBody::Status),
        (any::<bool>(), any::<u64>())
            .prop_map(|(verify, after)| RequestBody::Audit { verify, after }),
        vec(any::<u8>(), 0..40).prop_map(|bytes| RequestBody::Rekey {
            new_master_key: authenta_client::proto::SecretBytes(bytes)
        }),
    ]
}

fn request() -> impl Strategy<Value = Request> {
    (any::<u64>(), request_body()).prop_map(|(id, body)| Request { id, body })
}

fn usage() -> impl Strategy<Value = Usage> {
    (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(verifications, allowed, denied)| Usage {
        verifications,
        allowed,
        denied,
    })
}

fn key_info() -> impl Strategy<Value = KeyInfo> {
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
    (names, times, usage(), any::<bool>()).prop_map(
        |(
            (id, name, start, permissions, environment, state),
            (created_at, rotated_at, last_used_at, expires_at, rotate_by, revoked_at, grace_until),
            usage,
            rotation_due,
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
        },
    )
}

fn status_info() -> impl Strategy<Value = StatusInfo> {
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
            },
        )
}

fn audit_report() -> impl Strategy<Value = AuditReport> {
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

fn policy_report() -> impl Strategy<Value = PolicyReport> {
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

fn response_body() -> impl Strategy<Value = ResponseBody> {
    prop_oneof![
        (
            verify_code(),
            opt_text(),
            permissions(),
            opt_text(),
            option::of(any::<i64>()),
            any::<bool>()
        )
            .prop_map(
                |(code, key_id, permissions, environment, rotate_by, rotation_due)| {
                    ResponseBody::Verify(VerifyAnswer {
                        code,
                        key_id,
                        permissions,
                        environment,
                        rotate_by,
                        rotation_due,
                    })
                }
            ),
        policy_report().prop_map(ResponseBody::Policy),
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

fn response() -> impl Strategy<Value = Response> {
    (any::<u64>(), response_body()).prop_map(|(id, body)| Response { id, body })
}

#[allow(dead_code)]
fn covers_request_body(body: &RequestBody) {
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
        | RequestBody::Audit { .. } => {}
    }
}

#[allow(dead_code)]
fn covers_response_body(body: &ResponseBody) {
    match body {
        ResponseBody::Verify(_)
        | ResponseBody::Created(_)
        | ResponseBody::Keys(_)
        | ResponseBody::Key(_)
        | ResponseBody::Status(_)
        | ResponseBody::Audit(_)
        | ResponseBody::Error(_)
        | ResponseBody::Done(_)
        | ResponseBody::Policy(_) => {}
    }
}

#[allow(dead_code)]
fn covers_hello_reply(reply: &HelloReply) {
    match reply {
        HelloReply::Welcome { .. } | HelloReply::Refused { .. } | HelloReply::Busy { .. } => {}
    }
}

#[allow(dead_code)]
fn covers_codes(code: VerifyCode, error: ErrorCode, state: KeyState, actor: &Actor) {
    match code {
        VerifyCode::Valid
        | VerifyCode::Malformed
        | VerifyCode::Unknown
        | VerifyCode::Revoked
        | VerifyCode::Expired
        | VerifyCode::WrongEnvironment
        | VerifyCode::InsufficientPermissions => {}
    }
    match error {
        ErrorCode::BadRequest
        | ErrorCode::NotFound
        | ErrorCode::PermissionDenied
        | ErrorCode::Busy
        | ErrorCode::Storage
        | ErrorCode::BadFrame
        | ErrorCode::Internal => {}
    }
    match state {
        KeyState::Active | KeyState::Revoked | KeyState::Expired => {}
    }
    match actor {
        Actor::Peer { .. } | Actor::Policy | Actor::Daemon => {}
    }
}

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
// The token format, checked against an oracle written from the README's description rather
// than from `token.rs`: `api_` + 43 base62 + 6 base62 digits of CRC32 over what precedes.
// ---------------------------------------------------------------------------------------

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// CRC32 of `body` as 6 base62 digits, most significant first.
fn checksum_of(body: &str) -> String {
    let mut value = crc32fast::hash(body.as_bytes()) as u64;
    let mut digits = [0u8; 6];
    for slot in digits.iter_mut().rev() {
        *slot = BASE62[(value % 62) as usize];
        value /= 62;
    }
    String::from_utf8(digits.to_vec()).expect("ascii")
}

/// What `check_token` must answer, errors checked in the documented order.
fn token_oracle(s: &str) -> Result<(), Malformed> {
    if !s.starts_with("api_") {
        Err(Malformed::Prefix)
    } else if s.len() != 53 {
        Err(Malformed::Length)
    } else if !s.bytes().skip(4).all(|b| b.is_ascii_alphanumeric()) {
        Err(Malformed::Alphabet)
    } else if s[47..] != checksum_of(&s[..47]) {
        Err(Malformed::Checksum)
    } else {
        Ok(())
    }
}

/// A token with a correct checksum over a random body.
fn valid_token() -> impl Strategy<Value = String> {
    "api_[0-9A-Za-z]{43}".prop_map(|body| {
        let sum = checksum_of(&body);
        body + &sum
    })
}

/// Strings near the format: right prefix, lengths around 53, a few foreign characters.
fn near_token() -> impl Strategy<Value = String> {
    prop_oneof![
        "api_[0-9A-Za-z]{49}",
        "api_[0-9A-Za-z]{40,56}",
        "api_[0-9A-Za-z_\\-é€\u{0}]{47,51}",
        "[aA][pP][iI][_-][0-9A-Za-z]{49}",
    ]
}

proptest! {
    #![proptest_config(cases(512))]

    #[test]
    fn check_token_agrees_with_the_format_on_any_string(s in any::<String>()) {
        prop_assert_eq!(check_token(&s), token_oracle(&s));
    }

    #[test]
    fn check_token_agrees_with_the_format_near_it(s in near_token()) {
        prop_assert_eq!(check_token(&s), token_oracle(&s));
    }

    #[test]
    fn well_formed_tokens_pass_and_hash_stably(token in valid_token()) {
        prop_assert_eq!(check_token(&token), Ok(()));
        prop_assert_eq!(token.len(), TOKEN_LEN);
        prop_assert_eq!(hash_token(&token), hash_token(&token.clone()));
        prop_assert_eq!(start_of(&token), &token[TOKEN_PREFIX.len()..TOKEN_PREFIX.len() + 8]);
    }

    /// A single changed character anywhere is always caught: CRC32 detects every error burst
    /// of up to 32 bits, and the 6 base62 digits encode a u32 one-to-one.
    #[test]
    fn any_single_character_change_is_refused(
        token in valid_token(),
        at in any::<Index>(),
        replacement in any::<char>(),
    ) {
        let i = at.index(token.len());
        let original = token.as_bytes()[i] as char;
        prop_assume!(replacement != original);
        let mut changed = token[..i].to_owned();
        changed.push(replacement);
        changed.push_str(&token[i + 1..]);
        prop_assert!(check_token(&changed).is_err(), "{} accepted", changed);
        prop_assert_eq!(check_token(&changed), token_oracle(&changed));
    }

    /// Whatever check_token lets through, the code after it (hashing, the list's `start`)
    /// must handle; on anything else they must not panic either.
    #[test]
    fn hash_and_start_never_panic(s in any::<String>()) {
        let _ = hash_token(&s);
        let start = start_of(&s);
        prop_assert!(start.is_empty() || start.len() == 8);
    }
}

#[test]
fn checksum_oracle_matches_the_documented_extremes() {
    // The same fixed points `token.rs` tests, so the oracle's digit order is the real one.
    let mut value = u32::MAX as u64;
    let mut digits = [0u8; 6];
    for slot in digits.iter_mut().rev() {
        *slot = BASE62[(value % 62) as usize];
        value /= 62;
    }
    assert_eq!(&digits, b"4gfFC3");
    let real = authenta_keyd::token::generate_token(&ring::rand::SystemRandom::new())
        .expect("rng")
        .to_string();
    assert_eq!(token_oracle(&real), Ok(()));
}

// ---------------------------------------------------------------------------------------
// The barrier and the record codec.
// ---------------------------------------------------------------------------------------

/// Table names as the store uses them (fixed identifiers). They never hold a NUL byte: the
/// associated data is `table ‖ 0 ‖ row`, which is only unambiguous under that condition.
fn table() -> impl Strategy<Value = String> {
    "[a-z_]{1,12}"
}

/// Row ids: key ids, hex hashes, sequence numbers — and here any text without a NUL.
fn row() -> impl Strategy<Value = String> {
    "[^\u{0}]{0,32}"
}

fn key_bytes() -> impl Strategy<Value = Zeroizing<[u8; 32]>> {
    any::<[u8; 32]>().prop_map(Zeroizing::new)
}

proptest! {
    #![proptest_config(cases(128))]

    #[test]
    fn sealed_rows_open_to_their_plaintext(
        key in key_bytes(),
        table in table(),
        row in row(),
        plaintext in vec(any::<u8>(), 0..512),
    ) {
        let barrier = Barrier::new(&key);
        let sealed = barrier.seal(&table, &row, &plaintext);
        prop_assert_eq!(barrier.open(&table, &row, &sealed), Ok(plaintext.clone()));
        // The plaintext does not appear in the sealed bytes (beyond chance for tiny inputs).
        if plaintext.len() >= 16 {
            prop_assert!(!sealed.windows(plaintext.len()).any(|w| w == plaintext.as_slice()));
        }
    }

    #[test]
    fn any_single_bit_flip_is_detected(
        key in key_bytes(),
        table in table(),
        row in row(),
        plaintext in vec(any::<u8>(), 0..256),
        bit in any::<Index>(),
    ) {
        let barrier = Barrier::new(&key);
        let mut sealed = barrier.seal(&table, &row, &plaintext);
        let bit = bit.index(sealed.len() * 8);
        sealed[bit / 8] ^= 1 << (bit % 8);
        prop_assert_eq!(barrier.open(&table, &row, &sealed), Err(Tampered));
    }

    #[test]
    fn a_row_does_not_open_elsewhere_or_under_another_key(
        key in key_bytes(),
        other_key in key_bytes(),
        (table, other_table) in (table(), table()),
        (row, other_row) in (row(), row()),
        plaintext in vec(any::<u8>(), 0..64),
    ) {
        let barrier = Barrier::new(&key);
        let sealed = barrier.seal(&table, &row, &plaintext);
        if (&table, &row) != (&other_table, &other_row) {
            prop_assert_eq!(barrier.open(&other_table, &other_row, &sealed), Err(Tampered));
        }
        if *key != *other_key {
            prop_assert_eq!(Barrier::new(&other_key).open(&table, &row, &sealed), Err(Tampered));
        }
    }

    #[test]
    fn arbitrary_bytes_do_not_open(
        key in key_bytes(),
        table in table(),
        row in row(),
        bytes in vec(any::<u8>(), 0..128),
    ) {
        prop_assert_eq!(Barrier::new(&key).open(&table, &row, &bytes), Err(Tampered));
        prop_assert!(unwrap_data_key(&key, &bytes).is_err());
    }

    #[test]
    fn data_keys_unwrap_only_under_their_master(
        master in key_bytes(),
        other in key_bytes(),
        data in key_bytes(),
    ) {
        let wrapped = wrap_data_key(&master, &data);
        prop_assert_eq!(*unwrap_data_key(&master, &wrapped).expect("opens"), *data);
        if *master != *other {
            prop_assert!(unwrap_data_key(&other, &wrapped).is_err());
        }
    }

    #[test]
    fn key_records_round_trip_and_refuse_trailing_bytes(
        record in key_record(),
        usage in usage_record(),
        extra in any::<u8>(),
    ) {
        let bytes = record_codec::to_bytes(&record);
        prop_assert_eq!(record_codec::from_bytes::<KeyRecord>(&bytes), Some(record));
        let mut longer = bytes;
        longer.push(extra);
        prop_assert_eq!(record_codec::from_bytes::<KeyRecord>(&longer), None);

        let bytes = record_codec::to_bytes(&usage);
        prop_assert_eq!(record_codec::from_bytes::<UsageRecord>(&bytes), Some(usage));
        let mut longer = bytes;
        longer.push(extra);
        prop_assert_eq!(record_codec::from_bytes::<UsageRecord>(&longer), None);
    }

    #[test]
    fn record_decoding_never_panics(bytes in vec(any::<u8>(), 0..256)) {
        if let Some(record) = record_codec::from_bytes::<KeyRecord>(&bytes) {
            prop_assert_eq!(record_codec::from_bytes(&record_codec::to_bytes(&record)), Some(record));
        }
        if let Some(usage) = record_codec::from_bytes::<UsageRecord>(&bytes) {
            prop_assert_eq!(record_codec::from_bytes(&record_codec::to_bytes(&usage)), Some(usage));
        }
    }
}

fn key_record() -> impl Strategy<Value = KeyRecord> {
    let strings = (
        text(),
        any::<[u8; 32]>(),
        text(),
        text(),
        permissions(),
        opt_text(),
    );
    let times = (
        any::<i64>(),
        option::of(any::<i64>()),
        option::of(any::<i64>()),
        option::of(any::<i64>()),
        opt_text(),
        option::of((any::<[u8; 32]>(), any::<i64>())),
    );
    (strings, times).prop_map(
        |(
            (id, token_hash, name, start, permissions, environment),
            (created_at, rotated_at, expires_at, revoked_at, revoke_reason, grace),
        )| KeyRecord {
            id,
            token_hash,
            name,
            start,
            permissions: Permissions::from_list(&permissions),
            environment,
            created_at,
            rotated_at,
            expires_at,
            revoked_at,
            revoke_reason,
            grace: grace.map(|(token_hash, until)| Grace { token_hash, until }),
        },
    )
}

fn usage_record() -> impl Strategy<Value = UsageRecord> {
    (
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        option::of(any::<i64>()),
    )
        .prop_map(
            |(verifications, allowed, denied, last_used_at)| UsageRecord {
                verifications,
                allowed,
                denied,
                last_used_at,
            },
        )
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
