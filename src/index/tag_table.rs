//! The token-hash table of the index: a 64-bit hash of a token hash → a 32-bit tag (see
//! `index::Tag`), in open addressing with linear probing over 8-byte buckets.
//!
//! Why not `hashbrown`: with a million keys none of the table
//! is in cache, and a lookup's cost is its cache misses. `hashbrown` keeps control bytes
//! and values in two arrays, so a lookup misses twice before it even reaches the key's
//! entry, and it does not tell where a probe will land, so a run of lookups cannot ask the
//! CPU for those lines ahead of time. Here a bucket holds the tag together with 32 bits of
//! the hash (which also say where the bucket's probe starts): one line per lookup, whose
//! address [`TagTable::prefetch`] knows before any load. Matching the 32 bits is a
//! filter, not a proof: the caller's `eq` still compares the full token hash.
//!
//! The table stays at most half full, so probes are short; removal shifts the following
//! buckets back (no tombstones), so lookups never slow down after churn.

/// A bucket: the hash's upper 32 bits (the fingerprint) and the tag. No real bucket is all
/// ones: tags never use kind 3.
const EMPTY: u64 = u64::MAX;
const SMALLEST: usize = 16;

#[derive(Debug)]
pub struct TagTable {
    buckets: Box<[u64]>,
    len: usize,
}

impl Default for TagTable {
    fn default() -> Self {
        TagTable::with_capacity(0)
    }
}

fn fingerprint(hash: u64) -> u32 {
    (hash >> 32) as u32
}

fn bucket(fingerprint: u32, tag: u32) -> u64 {
    (u64::from(fingerprint) << 32) | u64::from(tag)
}

fn tag_of(bucket: u64) -> u32 {
    bucket as u32
}

impl TagTable {
    /// Room for `items` without growing.
    pub fn with_capacity(items: usize) -> Self {
        TagTable {
            buckets: empty_buckets(buckets_for(items)),
            len: 0,
        }
    }

    fn mask(&self) -> usize {
        self.buckets.len() - 1
    }

    fn home(&self, fingerprint: u32) -> usize {
        fingerprint as usize & self.mask()
    }

    /// Asks the CPU to fetch the bucket where the probe for `hash` starts, without waiting.
    pub fn prefetch(&self, hash: u64) {
        prefetch(&self.buckets[self.home(fingerprint(hash))]);
    }

    /// The first tag whose fingerprint matches `hash`, unconfirmed: what a lookup will most
    /// likely find, for prefetching what it names.
    pub fn candidate(&self, hash: u64) -> Option<u32> {
        self.find(hash, |_| true)
    }

    /// The tag stored for `hash` for which `eq` holds.
    pub fn find(&self, hash: u64, mut eq: impl FnMut(u32) -> bool) -> Option<u32> {
        self.position(hash, &mut eq)
            .map(|at| tag_of(self.buckets[at]))
    }

    fn position(&self, hash: u64, eq: &mut impl FnMut(u32) -> bool) -> Option<usize> {
        let print = fingerprint(hash);
        let mask = self.mask();
        let mut at = self.home(print);
        loop {
            let found = self.buckets[at];
            if found == EMPTY {
                return None;
            }
            if fingerprint_of(found) == print && eq(tag_of(found)) {
                return Some(at);
            }
            at = (at + 1) & mask;
        }
    }

    /// Replaces the tag for which `eq` holds with `tag`, or adds `tag` if there is none.
    pub fn set(&mut self, hash: u64, mut eq: impl FnMut(u32) -> bool, tag: u32) {
        debug_assert_ne!(tag, u32::MAX, "kind 3 marks empty buckets");
        match self.position(hash, &mut eq) {
            Some(at) => self.buckets[at] = bucket(fingerprint(hash), tag),
            None => {
                self.reserve(1);
                self.place(bucket(fingerprint(hash), tag));
                self.len += 1;
            }
        }
    }

    /// Removes the tag for which `eq` holds; false if there is none.
    pub fn remove(&mut self, hash: u64, mut eq: impl FnMut(u32) -> bool) -> bool {
        let Some(mut hole) = self.position(hash, &mut eq) else {
            return false;
        };
        // Backward shift: a later bucket of the same run moves into the hole unless the hole
        // lies before its home (cyclically), where its probe would no longer pass.
        let mask = self.mask();
        let mut at = (hole + 1) & mask;
        loop {
            let moving = self.buckets[at];
            if moving == EMPTY {
                break;
            }
            let home = self.home(fingerprint_of(moving));
            if at.wrapping_sub(home) & mask >= at.wrapping_sub(hole) & mask {
                self.buckets[hole] = moving;
                hole = at;
            }
            at = (at + 1) & mask;
        }
        self.buckets[hole] = EMPTY;
        self.len -= 1;
        true
    }

    /// Makes room for `more` items without another growth.
    pub fn reserve(&mut self, more: usize) {
        let wanted = buckets_for(self.len + more);
        if wanted <= self.buckets.len() {
            return;
        }
        let old = std::mem::replace(&mut self.buckets, vec![EMPTY; wanted].into_boxed_slice());
        for &moving in old.iter().filter(|&&b| b != EMPTY) {
            self.place(moving);
        }
    }

    /// Puts a bucket in the first free place of its probe.
    fn place(&mut self, new: u64) {
        let mask = self.mask();
        let mut at = self.home(fingerprint_of(new));
        while self.buckets[at] != EMPTY {
            at = (at + 1) & mask;
        }
        self.buckets[at] = new;
    }
}

fn fingerprint_of(bucket: u64) -> u32 {
    (bucket >> 32) as u32
}

fn empty_buckets(n: usize) -> Box<[u64]> {
    vec![EMPTY; n].into_boxed_slice()
}

/// Buckets for `items` at most half full: a power of two, so a probe wraps with a mask.
fn buckets_for(items: usize) -> usize {
    items
        .saturating_mul(2)
        .checked_next_power_of_two()
        .unwrap_or(1 << (usize::BITS - 1))
        .max(SMALLEST)
}

/// Asks the CPU to bring the cache line holding `value` in, without waiting for it. A hint
/// only: no effect on what the program computes.
pub fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `_mm_prefetch` needs SSE, which every x86_64 CPU has; a prefetch is a hint that
    // never faults and changes nothing the program computes, and the address is a live
    // reference's.
    #[allow(unsafe_code)]
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
            (value as *const T).cast::<i8>(),
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

/// [`prefetch`] for the two cache lines from `value`'s first byte and 64 bytes on.
pub fn prefetch_two_lines<T>(value: &T) {
    prefetch(value);
    prefetch_from(value, 64);
}

/// [`prefetch`] for the line `offset` bytes into `value`.
fn prefetch_from<T>(value: &T, offset: usize) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: as in `prefetch`; the address is inside `value` for the offsets the callers
    // give (it spans that many lines), and a prefetch of any address never faults anyway.
    #[allow(unsafe_code)]
    unsafe {
        let line = (value as *const T).cast::<i8>().wrapping_add(offset);
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(line);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (value, offset);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A deterministic stand-in for the index's seeded hash, with crowded homes: the
    /// fingerprints of `i` and `i + 16` share their low bits.
    fn hash_of(i: u32) -> u64 {
        (u64::from(i % 16) | (u64::from(i) << 8)) << 32 | u64::from(i)
    }

    #[test]
    fn finds_replaces_and_removes_through_growth_and_crowded_probes() {
        let mut table = TagTable::default();
        let mut model = HashMap::new();
        for i in 0..5_000u32 {
            table.set(hash_of(i), |t| t >> 16 == i, (i << 16) | 1);
            model.insert(i, (i << 16) | 1);
        }
        assert_eq!(table.len, 5_000);
        assert!(table.buckets.len() >= 10_000);
        // Replace every third, remove every fifth (removal shifts the crowded runs back).
        for i in (0..5_000u32).step_by(3) {
            table.set(hash_of(i), |t| t >> 16 == i, (i << 16) | 2);
            model.insert(i, (i << 16) | 2);
        }
        for i in (0..5_000u32).step_by(5) {
            assert!(table.remove(hash_of(i), |t| t >> 16 == i));
            assert!(!table.remove(hash_of(i), |t| t >> 16 == i));
            model.remove(&i);
        }
        assert_eq!(table.len, model.len());
        for i in 0..5_000u32 {
            assert_eq!(
                table.find(hash_of(i), |t| t >> 16 == i),
                model.get(&i).copied(),
                "{i}"
            );
        }
        assert_eq!(table.find(hash_of(9_999), |_| true), None);
    }

    #[test]
    fn two_tags_under_one_hash_are_told_apart_by_eq() {
        let mut table = TagTable::with_capacity(4);
        table.set(7 << 32, |t| t == 1, 1);
        table.set(7 << 32, |t| t == 2, 2);
        assert_eq!(table.len, 2);
        assert_eq!(table.candidate(7 << 32), Some(1));
        assert_eq!(table.find(7 << 32, |t| t == 2), Some(2));
        assert!(table.remove(7 << 32, |t| t == 1));
        assert_eq!(table.find(7 << 32, |t| t == 2), Some(2));
        assert_eq!(table.find(7 << 32, |t| t == 1), None);
    }

    #[test]
    fn wraps_around_the_end_of_the_buckets() {
        let mut table = TagTable::with_capacity(4);
        let last = (table.buckets.len() as u64 - 1) << 32;
        for tag in 0..4 {
            table.set(last, |t| t == tag, tag);
        }
        assert_eq!(table.buckets[0], bucket(fingerprint(last), 1));
        assert!(table.remove(last, |t| t == 0));
        for tag in 1..4 {
            assert_eq!(table.find(last, |t| t == tag), Some(tag));
        }
        assert_eq!(table.buckets[table.mask()], bucket(fingerprint(last), 1));
    }
}
