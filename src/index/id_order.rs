//! Key ids in order: the slots of every key, sorted by the id in their entry.
//!
//! Four bytes a key, where an ordered map of 20-byte ids to slots took about 26 (a
//! million keys: 4 MiB against 26). The ids are read from the entries, so a lookup is a
//! binary search that reads one entry per step: about 20 cache misses with a million
//! keys, for the id lookups of admin changes, retired tokens and fleet usage, never for
//! a verify of a current token. Key ids begin with their creation time, so a new key's
//! slot goes at the end and inserting moves nothing; a key from an older store with random
//! ids moves the slots after it (4 MB at most).

use super::entry::{Entry, KeyId};
use std::ops::Bound;

#[derive(Debug, Default)]
pub struct IdOrder {
    slots: Vec<u32>,
}

impl IdOrder {
    /// The order of `loaded` (id, slot) pairs, which may come in any order.
    pub fn from_loaded(mut loaded: Vec<(KeyId, u32)>) -> Self {
        // Sorted by numbers, which compare without a call per pair. Unstable is enough:
        // the row check lets no id through twice.
        loaded.sort_unstable_by_key(|(id, _)| id_order(id));
        // A new vector: collected from `loaded` itself, the slots would keep its buffer,
        // six times their size.
        let mut slots = Vec::with_capacity(loaded.len());
        slots.extend(loaded.iter().map(|&(_, slot)| slot));
        IdOrder { slots }
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Where `id` is, or would go, in the order.
    fn search(&self, entries: &[Entry], id: &KeyId) -> Result<usize, usize> {
        self.slots.binary_search_by(|&slot| {
            // Every slot here names an entry; one that did not would sort first.
            entries.get(slot as usize).map(|e| &e.id).cmp(&Some(id))
        })
    }

    /// The slot of the key with this id.
    pub fn get(&self, entries: &[Entry], id: &KeyId) -> Option<u32> {
        self.search(entries, id).ok().map(|at| self.slots[at])
    }

    /// Files `slot`, whose entry holds `id`, which no other key has.
    pub fn insert(&mut self, entries: &[Entry], id: &KeyId, slot: u32) {
        match self.search(entries, id) {
            Ok(at) => self.slots[at] = slot,
            Err(at) => self.slots.insert(at, slot),
        }
    }

    /// Adds `loaded` (id, slot) pairs to an order that already has keys.
    pub fn extend(&mut self, entries: &[Entry], loaded: Vec<(KeyId, u32)>) {
        for (id, slot) in loaded {
            self.insert(entries, &id, slot);
        }
    }

    /// The slots of the keys whose ids are within `start` and up, in id order.
    pub fn from(&self, entries: &[Entry], start: Bound<KeyId>) -> &[u32] {
        let at = match start {
            Bound::Unbounded => 0,
            Bound::Included(id) => self.search(entries, &id).unwrap_or_else(|at| at),
            Bound::Excluded(id) => match self.search(entries, &id) {
                Ok(at) => at + 1,
                Err(at) => at,
            },
        };
        &self.slots[at..]
    }
}

/// A key id as numbers that order as its bytes do.
pub(super) fn id_order(id: &KeyId) -> (u32, u128) {
    const _: () = assert!(crate::token::KEY_ID_LEN == 4 + 16, "a key id is 20 bytes");
    let (head, tail) = id.split_at(4);
    let mut high = [0u8; 4];
    let mut low = [0u8; 16];
    high.copy_from_slice(head);
    low.copy_from_slice(tail);
    (u32::from_be_bytes(high), u128::from_be_bytes(low))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::entry::key_id;

    #[test]
    fn key_ids_order_as_numbers_as_they_do_as_bytes() {
        let ids: Vec<KeyId> = [
            "key_0000000000000000",
            "key_000000000000000z",
            "key_0A00000000000000",
            "key_a000000000000000",
            "kez_0000000000000000",
        ]
        .iter()
        .map(|id| key_id(id).expect("a key id"))
        .collect();
        for a in &ids {
            for b in &ids {
                assert_eq!(id_order(a).cmp(&id_order(b)), a.cmp(b));
            }
        }
    }
}
