//! Property tests of the token parser (`authenta_keyd::token`), checked against an oracle
//! written from the README's description of the format rather than from `token.rs`:
//! `api_` + 43 base62 + 6 base62 digits of CRC32 over what precedes. Any string gets the
//! oracle's answer, well-formed tokens pass and hash stably, and a single changed character
//! is always caught. The `token` fuzz target goes deeper; these run in every `cargo test`
//! and stay fast (a few hundred cases each; raise with `PROPTEST_CASES=N`).

mod common;

use authenta_keyd::token::{check_token, hash_token, start_of, Malformed, TOKEN_LEN, TOKEN_PREFIX};
use common::strategies::cases;
use proptest::prelude::*;
use proptest::sample::Index;

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
