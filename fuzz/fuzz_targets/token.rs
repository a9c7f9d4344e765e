//! The token parser, the first thing a verify does with attacker-chosen text.
//!
//! `check_token` must never panic, and must accept only the documented shape: `api_` + 49
//! base62 characters (the checksum itself is CMP-traced by libFuzzer, so it can be solved, and
//! the seed corpus holds real tokens). What it accepts is then hashed and cut to its `start`,
//! exactly as the daemon does next; those must not panic either, on any input.
#![no_main]

use authenta_keyd::token::{
    check_token, hash_token, is_key_id, start_of, START_LEN, TOKEN_LEN, TOKEN_PREFIX,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Tokens arrive as `String`s (the wire decoder checks UTF-8); the lossy form turns any
    // input into one, and is the input itself when that is valid UTF-8.
    let text = String::from_utf8_lossy(data);
    let s: &str = &text;
    let hash = hash_token(s);
    let start = start_of(s);
    if check_token(s).is_ok() {
        assert_eq!(s.len(), TOKEN_LEN);
        assert!(s.starts_with(TOKEN_PREFIX));
        assert!(s
            .bytes()
            .skip(TOKEN_PREFIX.len())
            .all(|b| b.is_ascii_alphanumeric()));
        assert_eq!(start.len(), START_LEN);
        assert_eq!(
            start,
            &s[TOKEN_PREFIX.len()..TOKEN_PREFIX.len() + START_LEN]
        );
        assert_eq!(hash, hash_token(s), "hashing is deterministic");
    }
    if is_key_id(s) {
        assert!(s.starts_with("key_") && s.is_ascii());
    }
});
