//! The token format: `api_` + 43 base62 characters of randomness (256 bits) + 6 base62
//! characters of CRC32 over everything before them, like GitHub's checksummed `ghp_` tokens.
//!
//! The checksum lets the daemon reject a mistyped or truncated token before any lookup, and
//! lets secret scanners tell a real token from random text. Key ids (`key_` + 16 base62) are
//! public and are what every admin command takes: 8 characters of the creation time, then
//! 8 random ones (see [`generate_key_id`]).

use crate::random::RandomSource;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Every token starts with this.
pub const TOKEN_PREFIX: &str = "api_";
/// Every key id starts with this.
pub const KEY_ID_PREFIX: &str = "key_";
const RANDOM_CHARS: usize = 43;
const CHECKSUM_CHARS: usize = 6;
/// Length of every well-formed token.
pub const TOKEN_LEN: usize = TOKEN_PREFIX.len() + RANDOM_CHARS + CHECKSUM_CHARS;
/// A key id's characters after its prefix: the creation time's, then random ones.
const KEY_ID_CHARS: usize = 16;
/// Milliseconds since the Unix epoch in base62: 62^8 ms is about 6,900 years.
const KEY_ID_TIME_CHARS: usize = 8;
/// Length of every key id.
pub const KEY_ID_LEN: usize = KEY_ID_PREFIX.len() + KEY_ID_CHARS;
/// Characters of the token shown in lists to help a person recognise a key.
pub const START_LEN: usize = 8;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// SHA-256 of a token: the only form in which the store keeps it. Tokens carry 256 random
/// bits, so a fast hash is right (no password stretching needed), and a secret scanner's
/// report of a leaked token's hash can be matched against it.
pub type TokenHash = [u8; 32];

/// Why a string is not a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("does not start with api_")]
    Prefix,
    #[error("has the wrong length")]
    Length,
    #[error("has a character outside base62")]
    Alphabet,
    #[error("checksum does not match")]
    Checksum,
}

/// Generates a fresh token from the system's CSPRNG.
pub fn generate_token<R: RandomSource + ?Sized>(
    rng: &R,
) -> Result<Zeroizing<String>, ring::error::Unspecified> {
    let mut token = Zeroizing::new(String::with_capacity(TOKEN_LEN));
    token.push_str(TOKEN_PREFIX);
    push_random_base62(rng, &mut token, RANDOM_CHARS)?;
    let checksum = crc32fast::hash(token.as_bytes());
    push_base62::<CHECKSUM_CHARS>(&mut token, u64::from(checksum));
    Ok(token)
}

/// Generates a fresh key id for a key created at `now` (unix ms): the time in 8 base62
/// characters, most significant first, then 8 random ones (47 bits).
///
/// Ids therefore sort by creation, and every index of the store keyed by id (the keys',
/// the usage rows', the audit chain's) takes a new key at its end: with random ids each
/// create wrote a page of each of those indexes somewhere in the middle, and the pages a
/// create writes to the WAL are what bounds durable creates per second. Ids are public
/// (admin commands and verify answers carry them), as is a key's creation time; what must
/// be unguessable is the token. Two keys made in the same millisecond differ by their
/// random part; the store draws again for an id in use.
pub fn generate_key_id<R: RandomSource + ?Sized>(
    rng: &R,
    now: i64,
) -> Result<String, ring::error::Unspecified> {
    let mut id = String::with_capacity(KEY_ID_LEN);
    id.push_str(KEY_ID_PREFIX);
    push_base62::<KEY_ID_TIME_CHARS>(&mut id, u64::try_from(now).unwrap_or(0));
    push_random_base62(rng, &mut id, KEY_ID_CHARS - KEY_ID_TIME_CHARS)?;
    Ok(id)
}

/// Checks prefix, length, alphabet and checksum, in that order, without any lookup.
pub fn check_token(token: &str) -> Result<(), Malformed> {
    let bytes = token.as_bytes();
    if !bytes.starts_with(TOKEN_PREFIX.as_bytes()) {
        return Err(Malformed::Prefix);
    }
    if bytes.len() != TOKEN_LEN {
        return Err(Malformed::Length);
    }
    if !all_alphanumeric(&bytes[TOKEN_PREFIX.len()..]) {
        return Err(Malformed::Alphabet);
    }
    let (body, checksum) = bytes.split_at(TOKEN_LEN - CHECKSUM_CHARS);
    let mut expected = [0u8; CHECKSUM_CHARS];
    encode_base62(u64::from(crc32fast::hash(body)), &mut expected);
    if checksum != expected {
        return Err(Malformed::Checksum);
    }
    Ok(())
}

/// Whether every byte is an ASCII letter or digit. Every verify checks ~50 bytes, and the
/// early-exit loop of `Iterator::all` (two compares and a branch per byte) was a tenth of a
/// pipelined verify's time; folded with `&` and no branches, the compiler vectorizes it.
fn all_alphanumeric(bytes: &[u8]) -> bool {
    bytes.iter().fold(true, |ok, &b| {
        let digit = b.wrapping_sub(b'0') < 10;
        let letter = (b | 0x20).wrapping_sub(b'a') < 26;
        ok & (digit | letter)
    })
}

/// Whether `id` has the shape of a key id (prefix, length, alphabet).
pub fn is_key_id(id: &str) -> bool {
    id.len() == KEY_ID_LEN
        && id.starts_with(KEY_ID_PREFIX)
        && id.as_bytes()[KEY_ID_PREFIX.len()..]
            .iter()
            .all(u8::is_ascii_alphanumeric)
}

/// SHA-256 of the token's bytes.
pub fn hash_token(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

/// The part of a well-formed token shown in lists.
pub fn start_of(token: &str) -> String {
    token
        .get(TOKEN_PREFIX.len()..TOKEN_PREFIX.len() + START_LEN)
        .unwrap_or_default()
        .to_owned()
}

/// Appends `count` uniformly random base62 characters. Bytes of 248 and above are drawn
/// again, so every character is equally likely (248 = 4 × 62).
fn push_random_base62<R: RandomSource + ?Sized>(
    rng: &R,
    out: &mut String,
    count: usize,
) -> Result<(), ring::error::Unspecified> {
    let mut pushed = 0;
    let mut buf = Zeroizing::new([0u8; 64]);
    // Room for the bytes drawn again (1 in 32 on average); the loop covers a rare shortfall.
    let draw = (count + count / 8 + 8).min(buf.len());
    while pushed < count {
        rng.fill(&mut buf[..draw])?;
        for &byte in buf[..draw].iter() {
            if byte < 248 && pushed < count {
                out.push(BASE62[(byte % 62) as usize] as char);
                pushed += 1;
            }
        }
    }
    Ok(())
}

/// `value` in base62 in all of `out`, most significant digit first; higher digits that do
/// not fit are dropped.
fn encode_base62(mut value: u64, out: &mut [u8]) {
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(value % 62) as usize];
        value /= 62;
    }
}

/// Appends `value` as `N` base62 digits ([`encode_base62`]).
fn push_base62<const N: usize>(out: &mut String, value: u64) {
    let mut digits = [0u8; N];
    encode_base62(value, &mut digits);
    out.extend(digits.iter().map(|&b| b as char));
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;

    #[test]
    fn a_token_hash_is_its_sha256_as_every_store_holds_it() {
        // FIPS 180-2's "abc" vector, and ring's digest (which wrote the stores before).
        let abc = hash_token("abc");
        assert_eq!(
            abc[..8],
            [0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea],
            "SHA-256(abc)"
        );
        let token = token();
        let ring = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        assert_eq!(hash_token(&token)[..], *ring.as_ref());
    }

    #[test]
    fn key_ids_sort_by_creation_and_differ_within_a_millisecond() {
        let rng = SystemRandom::new();
        let times = [
            0,
            61,
            62,
            1_765_000_000_000,
            1_765_000_000_001,
            62_i64.pow(8) - 1,
        ];
        let ids: Vec<String> = times
            .iter()
            .map(|&at| generate_key_id(&rng, at).expect("rng"))
            .collect();
        for pair in ids.windows(2) {
            assert!(pair[0] < pair[1], "{} !< {}", pair[0], pair[1]);
        }
        for id in &ids {
            assert_eq!(id.len(), KEY_ID_LEN);
            assert!(is_key_id(id), "{id}");
        }
        assert_eq!(&ids[0][4..12], "00000000");
        assert_eq!(&ids[2][4..12], "00000010");
        let same_ms: std::collections::HashSet<String> = (0..1000)
            .map(|_| generate_key_id(&rng, 1_765_000_000_000).expect("rng"))
            .collect();
        assert_eq!(same_ms.len(), 1000);
    }

    fn token() -> String {
        generate_token(&SystemRandom::new())
            .expect("rng")
            .to_string()
    }

    #[test]
    fn the_branchless_alphabet_check_agrees_with_the_standard_one_on_every_byte() {
        for byte in 0..=u8::MAX {
            for at in [0, 1, 17, 48] {
                let mut body = [b'a'; 49];
                body[at] = byte;
                assert_eq!(
                    all_alphanumeric(&body),
                    byte.is_ascii_alphanumeric(),
                    "byte {byte} at {at}"
                );
            }
        }
        assert!(all_alphanumeric(b""));
    }

    #[test]
    fn generated_tokens_are_well_formed_and_distinct() {
        let a = token();
        let b = token();
        assert_eq!(a.len(), TOKEN_LEN);
        assert!(a.starts_with("api_"));
        assert_eq!(check_token(&a), Ok(()));
        assert_ne!(a, b);
    }

    #[test]
    fn every_single_character_change_is_caught() {
        let good = token();
        for i in TOKEN_PREFIX.len()..TOKEN_LEN {
            let mut bytes = good.clone().into_bytes();
            bytes[i] = if bytes[i] == b'a' { b'b' } else { b'a' };
            let mutated = String::from_utf8(bytes).expect("ascii");
            assert_eq!(
                check_token(&mutated),
                Err(Malformed::Checksum),
                "position {i}"
            );
        }
    }

    #[test]
    fn shape_errors_are_named() {
        let good = token();
        assert_eq!(
            check_token(&good.replacen("api_", "apx_", 1)),
            Err(Malformed::Prefix)
        );
        assert_eq!(check_token(&good[..TOKEN_LEN - 1]), Err(Malformed::Length));
        assert_eq!(check_token(&format!("{good}0")), Err(Malformed::Length));
        assert_eq!(check_token(""), Err(Malformed::Prefix));
        let mut bytes = good.into_bytes();
        bytes[10] = b'-';
        assert_eq!(
            check_token(&String::from_utf8(bytes).expect("ascii")),
            Err(Malformed::Alphabet)
        );
        // A multi-byte character must not panic on slicing.
        assert!(check_token("api_é").is_err());
        assert!(check_token(&format!("api_{}", "é".repeat(24))).is_err());
    }

    #[test]
    fn checksum_is_fixed_width_base62() {
        let mut out = [0u8; CHECKSUM_CHARS];
        encode_base62(0, &mut out);
        assert_eq!(&out, b"000000");
        encode_base62(u64::from(u32::MAX), &mut out);
        assert_eq!(&out, b"4gfFC3");
    }

    #[test]
    fn key_ids_have_their_shape() {
        let id = generate_key_id(&SystemRandom::new(), 1_765_000_000_000).expect("rng");
        assert!(is_key_id(&id));
        assert!(!is_key_id("key_short"));
        assert!(!is_key_id("api_0123456789abcdef"));
    }

    #[test]
    fn random_characters_cover_the_alphabet() {
        let rng = SystemRandom::new();
        let mut seen = std::collections::HashSet::new();
        let mut s = String::new();
        push_random_base62(&rng, &mut s, 10_000).expect("rng");
        seen.extend(s.chars());
        assert_eq!(seen.len(), 62);
    }

    #[test]
    fn start_is_eight_characters_after_prefix() {
        let t = token();
        assert_eq!(start_of(&t), &t[4..12]);
    }
}
