//! The audit entries that bind a key row, summed under a key that only the data key gives,
//! so that start-up can trust the entries' plaintext columns without reading the chain.
//!
//! Start-up checks each key row against the row digest of its key's last audit entry,
//! which it reads from the audit table's `key_id` and `row_digest` columns: an index covers
//! them, so the sealed entries need not be read. The chain's links cover those columns too,
//! but checking links means reading and hashing every entry. Alone, the columns are only
//! plaintext: whoever can write the file could write a revoked key's old row back and edit
//! (or delete) the entry that revoked it, and start-up would find the old row bound.
//!
//! So the chain's sealed head also carries the wrapping sum of SipHash-2-4 (128 bits) of
//! every such entry's sequence number, key id and row digest, under a key derived from the
//! data key. Without the master key nobody can compute one term, so an entry edited,
//! deleted, added or renumbered changes the sum, except by a 2^-128 chance; start-up sums
//! the columns as it reads them and refuses a store whose sum differs. A sum rather than an
//! exclusive or, so that an entry present twice does not cancel out.

use ring::hmac;
use siphasher::sip128::{Hasher128, SipHasher24};
use std::hash::Hasher;

/// Sums audit entries under the key derived from one store's data key.
#[derive(Clone)]
pub struct EntrySet {
    hasher: SipHasher24,
}

/// What the data key is stretched with, so that the sum's key is used for nothing else.
const LABEL: &[u8] = b"authenta-keyd audit entry set v1";

impl EntrySet {
    pub fn new(data_key: &[u8]) -> EntrySet {
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, data_key), LABEL);
        let mut key = [0u8; 16];
        key.copy_from_slice(&tag.as_ref()[..16]);
        EntrySet {
            hasher: SipHasher24::new_with_key(&key),
        }
    }

    /// The term of the entry `seq` that names `key_id` and binds the row digest `row` (none
    /// in entries from before rows were bound). Lengths are hashed too, so that no two
    /// entries' bytes run together alike.
    pub fn term(&self, seq: u64, key_id: &str, row: Option<&[u8]>) -> u128 {
        let mut hasher = self.hasher;
        hasher.write(&seq.to_be_bytes());
        hasher.write(&(key_id.len() as u64).to_be_bytes());
        hasher.write(key_id.as_bytes());
        match row {
            None => hasher.write(&[0]),
            Some(row) => {
                hasher.write(&[1]);
                hasher.write(&(row.len() as u64).to_be_bytes());
                hasher.write(row);
            }
        }
        hasher.finish128().into()
    }

    /// `sum` with the entry added.
    pub fn add(&self, sum: u128, seq: u64, key_id: &str, row: Option<&[u8]>) -> u128 {
        sum.wrapping_add(self.term(seq, key_id, row))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_part_of_an_entry_and_the_data_key_change_its_term() {
        let set = EntrySet::new(&[7; 32]);
        let term = set.term(5, "key_a", Some(&[1; 32]));
        assert_eq!(term, set.term(5, "key_a", Some(&[1; 32])));
        for other in [
            set.term(6, "key_a", Some(&[1; 32])),
            set.term(5, "key_b", Some(&[1; 32])),
            set.term(5, "key_a", Some(&[2; 32])),
            set.term(5, "key_a", None),
            EntrySet::new(&[8; 32]).term(5, "key_a", Some(&[1; 32])),
        ] {
            assert_ne!(term, other);
        }
    }

    #[test]
    fn the_sum_does_not_depend_on_order_and_counts_a_repeat() {
        let set = EntrySet::new(&[7; 32]);
        let a = set.add(0, 1, "key_a", Some(&[1; 32]));
        let ab = set.add(a, 2, "key_b", None);
        let b = set.add(0, 2, "key_b", None);
        assert_eq!(ab, set.add(b, 1, "key_a", Some(&[1; 32])));
        assert_ne!(set.add(ab, 2, "key_b", None), a);
    }
}
