//! The byte form of records inside sealed values: bincode, bounded like the wire protocol.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Largest record the store writes or reads back.
const MAX_RECORD_LEN: usize = 64 * 1024;

/// bincode's limit counts decoded (in-memory) sizes, so it is a multiple of the record size.
fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<{ 8 * MAX_RECORD_LEN }>()
}

/// Encodes a record (records are small structs; encoding them cannot fail).
pub fn to_bytes<T: Serialize>(value: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(value, config())
        .unwrap_or_else(|e| unreachable!("a record always encodes: {e}"))
}

/// Decodes a record, rejecting trailing bytes.
pub fn from_bytes<T: DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    match bincode::serde::decode_from_slice(bytes, config()) {
        Ok((value, used)) if used == bytes.len() => Some(value),
        _ => None,
    }
}
