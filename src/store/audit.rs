//! The audit log: one sealed entry per admin change, hash-chained so that a removed,
//! reordered or altered entry is detected. Each link is
//! `SHA-256(previous link || seq || sealed entry)`; the newest link is kept (sealed) in the
//! store's meta table and written in the same transaction, so a cut-off tail shows too.

use authenta_client::proto::Actor;
use ring::digest;
use serde::{Deserialize, Serialize};

/// The link before the first entry.
pub const GENESIS: [u8; 32] = [0; 32];

/// What is sealed for one entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub at: i64,
    pub actor: Actor,
    pub action: String,
    pub key_id: Option<String>,
    pub detail: Option<String>,
}

/// The newest link of the chain, and the keyed sum of the entries that bind key rows
/// ([`crate::store::entry_set`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainHead {
    pub seq: u64,
    pub link: [u8; 32],
    pub bound_entries: u128,
}

impl ChainHead {
    pub const EMPTY: ChainHead = ChainHead {
        seq: 0,
        link: GENESIS,
        bound_entries: 0,
    };
}

/// A head as stores wrote it before it summed their entries.
#[derive(Debug, Deserialize)]
pub struct ChainHeadV1 {
    pub seq: u64,
    pub link: [u8; 32],
}

/// The link of entry `seq` whose sealed bytes are `sealed`, after `previous`.
pub fn link(previous: &[u8; 32], seq: u64, sealed: &[u8]) -> [u8; 32] {
    bound_link(previous, seq, sealed, None)
}

/// The link of an entry that also binds the sealed row its change wrote: the key's id and a
/// digest of that row, so that a row written back from an older copy no longer matches the
/// last entry of its key. Entries that bind nothing link as [`link`].
pub fn bound_link(
    previous: &[u8; 32],
    seq: u64,
    sealed: &[u8],
    bound: Option<(&str, &[u8; 32])>,
) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(previous);
    ctx.update(&seq.to_be_bytes());
    ctx.update(sealed);
    if let Some((key_id, row)) = bound {
        ctx.update(b"row");
        ctx.update(key_id.as_bytes());
        ctx.update(row);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// The digest a bound entry records of a key's sealed row.
pub fn row_digest(sealed: &[u8]) -> [u8; 32] {
    // sha2's one-shot digest: start-up takes one of every key row.
    use sha2::Digest;
    sha2::Sha256::digest(sealed).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_depend_on_everything() {
        let a = link(&GENESIS, 1, b"x");
        assert_ne!(a, link(&GENESIS, 2, b"x"));
        assert_ne!(a, link(&GENESIS, 1, b"y"));
        assert_ne!(a, link(&[1; 32], 1, b"x"));
        assert_eq!(a, link(&GENESIS, 1, b"x"));
    }

    #[test]
    fn row_digests_are_the_sha256_that_stores_already_hold() {
        let row = b"a sealed row".repeat(40);
        let ring = digest::digest(&digest::SHA256, &row);
        assert_eq!(row_digest(&row).as_slice(), ring.as_ref());
    }
}
