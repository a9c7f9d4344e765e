//! The barrier, after HashiCorp Vault's: every record is sealed with AES-256-GCM under a
//! random data key, with a fresh 96-bit nonce per write and the table name and row id as
//! associated data, so a sealed row moved to another row (or table) does not open. The
//! 32-byte master key only wraps the data key (envelope encryption): changing the master key
//! re-wraps one value, not every row.

use crate::random::{Pool, RandomSource};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

/// First byte of every sealed value: the format, so a later one can be told apart.
const FORMAT_V1: u8 = 1;
const TAG_LEN: usize = 16;
/// Associated data of the wrapped data key.
const DATA_KEY_AAD: &[u8] = b"authenta-keyd/data-key/v1";

/// A 32-byte key held in memory that is wiped on drop.
pub type KeyBytes = Zeroizing<[u8; 32]>;

/// A sealed value did not open: wrong key, or the bytes were changed or moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("sealed value does not open (tampered, moved or corrupt)")]
pub struct Tampered;

/// Seals and opens rows with the data key.
pub struct Barrier {
    key: LessSafeKey,
    /// For row ids that must not show what they name (owner ids): derived from the data
    /// key, so every node of a fleet computes the same id.
    id_key: hmac::Key,
    /// Nonces: three for every key created, so drawn from a pool.
    nonces: Pool,
}

impl Barrier {
    /// A barrier over `data_key`.
    pub fn new(data_key: &KeyBytes) -> Self {
        let derive = hmac::Key::new(hmac::HMAC_SHA256, data_key.as_slice());
        let id_key = hmac::sign(&derive, b"authenta-keyd/row-id/v1");
        Barrier {
            key: aes_key(data_key),
            id_key: hmac::Key::new(hmac::HMAC_SHA256, id_key.as_ref()),
            nonces: Pool::new(),
        }
    }

    /// A row id for `name` in `table` that does not reveal `name` to a reader of the file:
    /// 128 bits of HMAC-SHA-256, in hex.
    pub fn row_id(&self, table: &str, name: &str) -> String {
        let tag = hmac::sign(&self.id_key, &row_aad(table, name));
        hex::encode(&tag.as_ref()[..16])
    }

    /// Forgets the nonce bytes drawn but not used yet.
    pub fn discard_unused_random(&self) {
        self.nonces.discard();
    }

    /// Seals `plaintext` as the value of `row` in `table`.
    pub fn seal(&self, table: &str, row: &str, plaintext: &[u8]) -> Vec<u8> {
        seal_with(&self.key, &self.nonces, &row_aad(table, row), plaintext)
    }

    /// Opens what [`Barrier::seal`] sealed for the same `table` and `row`.
    pub fn open(&self, table: &str, row: &str, sealed: &[u8]) -> Result<Vec<u8>, Tampered> {
        open_with(&self.key, &row_aad(table, row), sealed)
    }

    /// [`Barrier::open`] without a copy: the plaintext is returned as a part of `sealed`,
    /// opened where it lies.
    pub fn open_in_place<'s>(
        &self,
        table: &str,
        row: &str,
        sealed: &'s mut [u8],
    ) -> Result<&'s [u8], Tampered> {
        open_in_place_with(&self.key, &row_aad(table, row), sealed).map(|plain| &*plain)
    }
}

/// A fresh random 32-byte key.
pub fn random_key(rng: &SystemRandom) -> Result<KeyBytes, ring::error::Unspecified> {
    let mut key = Zeroizing::new([0u8; 32]);
    SecureRandom::fill(rng, key.as_mut())?;
    Ok(key)
}

/// Seals the data key under the master key.
pub fn wrap_data_key(master: &KeyBytes, data_key: &KeyBytes) -> Vec<u8> {
    seal_with(
        &aes_key(master),
        &SystemRandom::new(),
        DATA_KEY_AAD,
        data_key.as_ref(),
    )
}

/// Opens the wrapped data key; fails when `master` is not the key that wrapped it.
pub fn unwrap_data_key(master: &KeyBytes, wrapped: &[u8]) -> Result<KeyBytes, Tampered> {
    let plain = Zeroizing::new(open_with(&aes_key(master), DATA_KEY_AAD, wrapped)?);
    let mut key = Zeroizing::new([0u8; 32]);
    if plain.len() != key.len() {
        return Err(Tampered);
    }
    key.copy_from_slice(&plain);
    Ok(key)
}

fn aes_key(bytes: &KeyBytes) -> LessSafeKey {
    // AES-256 takes exactly 32 bytes, which KeyBytes always is.
    let unbound = UnboundKey::new(&AES_256_GCM, bytes.as_ref())
        .unwrap_or_else(|_| unreachable!("a 32-byte key is a valid AES-256 key"));
    LessSafeKey::new(unbound)
}

fn row_aad(table: &str, row: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(table.len() + row.len() + 1);
    aad.extend_from_slice(table.as_bytes());
    aad.push(0);
    aad.extend_from_slice(row.as_bytes());
    aad
}

/// `format || nonce || ciphertext || tag`.
fn seal_with<R: RandomSource + ?Sized>(
    key: &LessSafeKey,
    rng: &R,
    aad: &[u8],
    plaintext: &[u8],
) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    // The system CSPRNG does not fail on Linux once booted; if it ever did, sealing with a
    // zero nonce would be unsafe, so stop rather than continue.
    if rng.fill(&mut nonce).is_err() {
        panic!("the system random number generator failed");
    }
    let mut out = Vec::with_capacity(1 + NONCE_LEN + plaintext.len() + TAG_LEN);
    out.push(FORMAT_V1);
    out.extend_from_slice(&nonce);
    let mut body = plaintext.to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad),
        &mut body,
    )
    .unwrap_or_else(|_| unreachable!("AES-GCM seals any input below 64 GiB"));
    out.extend_from_slice(&body);
    out
}

fn open_with(key: &LessSafeKey, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, Tampered> {
    let nonce = nonce_of(sealed)?;
    let mut body = sealed[1 + NONCE_LEN..].to_vec();
    let plain_len = open_body(key, aad, nonce, &mut body)?.len();
    body.truncate(plain_len);
    Ok(body)
}

/// Opens `format || nonce || ciphertext || tag` where it lies.
fn open_in_place_with<'s>(
    key: &LessSafeKey,
    aad: &[u8],
    sealed: &'s mut [u8],
) -> Result<&'s mut [u8], Tampered> {
    let nonce = nonce_of(sealed)?;
    open_body(key, aad, nonce, &mut sealed[1 + NONCE_LEN..])
}

/// The nonce of a sealed value long enough to hold its tag, in the format this writes.
fn nonce_of(sealed: &[u8]) -> Result<[u8; NONCE_LEN], Tampered> {
    if sealed.len() < 1 + NONCE_LEN + TAG_LEN || sealed[0] != FORMAT_V1 {
        return Err(Tampered);
    }
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&sealed[1..1 + NONCE_LEN]);
    Ok(nonce)
}

/// Opens `ciphertext || tag` in place; the plaintext is its start.
fn open_body<'s>(
    key: &LessSafeKey,
    aad: &[u8],
    nonce: [u8; NONCE_LEN],
    body: &'s mut [u8],
) -> Result<&'s mut [u8], Tampered> {
    key.open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad), body)
        .map_err(|_| Tampered)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn barrier() -> Barrier {
        Barrier::new(&random_key(&SystemRandom::new()).expect("rng"))
    }

    #[test]
    fn seal_then_open_round_trips() {
        let b = barrier();
        let sealed = b.seal("keys", "key_1", b"secret name");
        assert_eq!(
            b.open("keys", "key_1", &sealed).expect("opens"),
            b"secret name"
        );
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let b = barrier();
        let sealed = b.seal("keys", "key_1", b"payload");
        for i in 0..sealed.len() * 8 {
            let mut bad = sealed.clone();
            bad[i / 8] ^= 1 << (i % 8);
            assert_eq!(b.open("keys", "key_1", &bad), Err(Tampered), "bit {i}");
        }
    }

    #[test]
    fn moved_rows_do_not_open() {
        let b = barrier();
        let sealed = b.seal("keys", "key_1", b"payload");
        assert_eq!(b.open("keys", "key_2", &sealed), Err(Tampered));
        assert_eq!(b.open("usage", "key_1", &sealed), Err(Tampered));
    }

    #[test]
    fn truncated_and_empty_values_do_not_open() {
        let b = barrier();
        let sealed = b.seal("keys", "key_1", b"payload");
        for len in 0..sealed.len() {
            assert_eq!(b.open("keys", "key_1", &sealed[..len]), Err(Tampered));
        }
    }

    #[test]
    fn nonces_are_fresh() {
        let b = barrier();
        assert_ne!(b.seal("t", "r", b"same"), b.seal("t", "r", b"same"));
    }

    #[test]
    fn data_key_unwraps_only_with_its_master_key() {
        let rng = SystemRandom::new();
        let master = random_key(&rng).expect("rng");
        let other = random_key(&rng).expect("rng");
        let data = random_key(&rng).expect("rng");
        let wrapped = wrap_data_key(&master, &data);
        assert_eq!(*unwrap_data_key(&master, &wrapped).expect("opens"), *data);
        assert_eq!(unwrap_data_key(&other, &wrapped), Err(Tampered));
    }
}
