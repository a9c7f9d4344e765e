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

/// How many places back a key read at start-up may go (see [`IdOrder::push_loaded`]).
const NEAR: usize = 256;

#[derive(Debug, Default)]
pub struct IdOrder {
    slots: Vec<u32>,
}

impl IdOrder {
    /// Room for `keys` slots.
    pub fn with_capacity(keys: usize) -> Self {
        IdOrder {
            slots: Vec::with_capacity(keys),
        }
    }

    /// Files a key read at start-up, whose slot follows every slot filed so far. Rows are
    /// read in the order they were written, and ids begin with their creation time, so a
    /// key's place is at the end or a few places before it; false when it is not among
    /// the last [`NEAR`] places (ids from an older store are random): the key is then
    /// appended out of order, and [`IdOrder::sort`] must put the order right.
    pub fn push_loaded(&mut self, entries: &[Entry], slot: u32) -> bool {
        let id = |slot: u32| entries.get(slot as usize).map(|e| &e.id);
        let new = id(slot);
        let end = self.slots.len();
        let mut at = end;
        while at > 0 && id(self.slots[at - 1]) > new {
            if end - at == NEAR {
                self.slots.push(slot);
                return false;
            }
            at -= 1;
        }
        self.slots.insert(at, slot);
        true
    }

    /// Appends a slot out of order, for [`IdOrder::sort`] to place.
    pub fn push_unsorted(&mut self, slot: u32) {
        self.slots.push(slot);
    }

    /// Puts the slots in id order, whatever order they are in. By (id, slot) pairs, whose
    /// ids compare as numbers and are read from the entries once, rather than reading two
    /// entries at random for each of some 20 million comparisons (a million keys: 70 ms
    /// against 250, for 24 MB held while it sorts).
    pub fn sort(&mut self, entries: &[Entry]) {
        let mut pairs: Vec<Pair> = self
            .slots
            .iter()
            .filter_map(|&slot| Some(Pair::new(&entries.get(slot as usize)?.id, slot)))
            .collect();
        pairs.sort_unstable_by_key(Pair::order);
        self.slots.clear();
        self.slots.extend(pairs.iter().map(|pair| pair.slot));
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

/// A slot and its key id as numbers that order as the id's bytes do, in 24 bytes.
struct Pair {
    high: u64,
    low: u64,
    head: u32,
    slot: u32,
}

impl Pair {
    fn new(id: &KeyId, slot: u32) -> Self {
        const _: () = assert!(crate::token::KEY_ID_LEN == 4 + 16, "a key id is 20 bytes");
        const _: () = assert!(std::mem::size_of::<Pair>() == 24);
        let number = |bytes: &[u8]| {
            let mut be = [0u8; 8];
            be.copy_from_slice(bytes);
            u64::from_be_bytes(be)
        };
        let mut head = [0u8; 4];
        head.copy_from_slice(&id[..4]);
        Pair {
            head: u32::from_be_bytes(head),
            high: number(&id[4..12]),
            low: number(&id[12..20]),
            slot,
        }
    }

    fn order(&self) -> (u32, u64, u64) {
        (self.head, self.high, self.low)
    }
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
                assert_eq!(
                    Pair::new(a, 0).order().cmp(&Pair::new(b, 0).order()),
                    a.cmp(b)
                );
            }
        }
    }
}
