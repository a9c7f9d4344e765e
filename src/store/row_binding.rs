//! Start-up's check that every key row is the one the audit chain last bound for its key:
//! a row written back from an older copy, added from elsewhere or deleted fails closed.
//!
//! Two ways to run it. [`RowBinding::whole`] sums a keyed digest of every row and of every
//! chain entry and compares the two sums at the end: sequential work only, which is all a
//! healthy store needs. It can say only that some row differs; the store is then read again
//! with [`RowBinding::each_row`], which looks every row up to name the ones that differ.

use crate::store::audit;
use crate::token::{KEY_ID_LEN, KEY_ID_PREFIX};
use ring::rand::{SecureRandom, SystemRandom};
use siphasher::sip128::SipHasher24;

/// What a key row is checked against.
pub(super) enum RowBinding {
    /// The rows' set digest, and the chain's once read (on a thread of its own: it needs
    /// nothing from the rows).
    Whole {
        rows: RowSet,
        chain: Option<RowSet>,
    },
    EachRow(BoundRows),
}

/// How the rows compared with the chain once all were read.
pub(super) enum Verdict {
    /// Every row is the one the chain names, and the chain names no other.
    AllBound,
    /// Some row differs; which one is not known (read again with [`RowBinding::each_row`]).
    SomeRowDiffers,
    /// The chain names these keys but no row matched them: their rows were deleted.
    Deleted(Vec<String>),
}

impl RowBinding {
    /// Compares the set of rows as a whole; `None` when no secret for the digest can be
    /// drawn (check each row then).
    pub fn whole() -> Option<Self> {
        let mut key = [0u8; 16];
        SystemRandom::new().fill(&mut key).ok()?;
        Some(RowBinding::Whole {
            rows: RowSet::new(&key),
            chain: None,
        })
    }

    /// Looks each row up, to name the ones that differ: `bound` holds every key's last
    /// bound digest.
    pub fn each_row(mut bound: BoundRows) -> Self {
        bound.index();
        RowBinding::EachRow(bound)
    }

    /// For the whole-set check: an empty set under the same key, to add the chain's pairs
    /// to and hand back with [`RowBinding::chain_read`].
    pub fn chain_set(&self) -> Option<RowSet> {
        match self {
            RowBinding::Whole { rows, .. } => Some(RowSet::new_like(rows)),
            RowBinding::EachRow(_) => None,
        }
    }

    pub fn chain_read(&mut self, read: RowSet) {
        if let RowBinding::Whole { chain, .. } = self {
            *chain = Some(read);
        }
    }

    /// Why a key row does not match the chain, if that is known now. Checking the whole
    /// set answers `None` here and tells at [`RowBinding::verdict`].
    pub fn check(&mut self, id: &str, sealed: &[u8]) -> Option<&'static str> {
        match self {
            RowBinding::Whole { rows, .. } => {
                rows.add(id, &audit::row_digest(sealed));
                None
            }
            RowBinding::EachRow(bound) => bound.check(id, sealed),
        }
    }

    /// How the rows compared, once every row is checked.
    pub fn verdict(self) -> Verdict {
        match self {
            RowBinding::Whole {
                rows,
                chain: Some(chain),
            } if chain.same_as(&rows) => Verdict::AllBound,
            RowBinding::Whole { .. } => Verdict::SomeRowDiffers,
            RowBinding::EachRow(bound) => Verdict::Deleted(bound.unseen().collect()),
        }
    }
}

/// A keyed digest of a set of (key id, row digest) pairs: the wrapping sum of SipHash-2-4
/// (128 bits) of each pair under a key drawn at start-up, and how many pairs. Whoever wrote
/// the file knows every row digest but not the key, so no choice of older rows can make
/// the sums agree except by a 2^-128 chance. A sum, not an exclusive or, so that a pair
/// present twice does not cancel out.
#[derive(Clone)]
pub(super) struct RowSet {
    hasher: SipHasher24,
    sum: u128,
    pairs: u64,
    /// A pair no chain entry can bind (an id or digest of another shape) was added.
    foreign: bool,
}

impl RowSet {
    fn new(key: &[u8; 16]) -> Self {
        RowSet {
            hasher: SipHasher24::new_with_key(key),
            sum: 0,
            pairs: 0,
            foreign: false,
        }
    }

    /// An empty set under the same key as `other`.
    fn new_like(other: &RowSet) -> Self {
        RowSet {
            hasher: other.hasher,
            sum: 0,
            pairs: 0,
            foreign: false,
        }
    }

    pub fn add(&mut self, id: &str, digest: &[u8]) {
        let Some((id, digest)) = bound_pair(id, digest) else {
            self.foreign = true;
            return;
        };
        let mut pair = [0u8; KEY_ID_LEN + 32];
        pair[..KEY_ID_LEN].copy_from_slice(&id);
        pair[KEY_ID_LEN..].copy_from_slice(&digest);
        self.sum = self.sum.wrapping_add(self.hasher.hash(&pair).into());
        self.pairs += 1;
    }

    fn same_as(&self, other: &RowSet) -> bool {
        !self.foreign && !other.foreign && self.pairs == other.pairs && self.sum == other.sum
    }
}

/// A key id and row digest as the chain can bind them: an id of a key id's shape and a
/// SHA-256 digest. Anything else is no key's.
fn bound_pair(id: &str, digest: &[u8]) -> Option<([u8; KEY_ID_LEN], [u8; 32])> {
    let id = <[u8; KEY_ID_LEN]>::try_from(id.as_bytes()).ok()?;
    let digest = digest.try_into().ok()?;
    let shaped = id.starts_with(KEY_ID_PREFIX.as_bytes())
        && id[KEY_ID_PREFIX.len()..]
            .iter()
            .all(|&c| base62_rank(c).is_some());
    shaped.then_some((id, digest))
}

/// Each key's row digest as the chain last bound it, with a directory by the id's last
/// three characters (random in every id: new ids begin with their creation time, so their
/// first characters are shared by every key made within days), each slot's rows sorted by
/// id. A million keys take 52 MB, with no allocation each (a map of strings took three
/// times that), and a lookup reads one directory entry and then a run of about four rows:
/// a plain binary search cost a dozen cache misses per key, over a second of start-up at a
/// million keys.
#[derive(Default)]
pub(super) struct BoundRows {
    rows: Vec<([u8; KEY_ID_LEN], [u8; 32])>,
    /// Which rows a key row has matched, to find keys whose rows were deleted.
    seen: Vec<bool>,
    /// `starts[p]`: the first row whose slot is `p` or more (see [`slot`]).
    starts: Vec<u32>,
}

/// How many slots the directory has: three base62 characters.
const PREFIXES: usize = 62 * 62 * 62;

/// The directory slot of a key id: its last three characters, as a base62 number. Ids of
/// another shape are not a key's.
fn slot(id: &[u8; KEY_ID_LEN]) -> Option<usize> {
    id[KEY_ID_LEN - 3..]
        .iter()
        .try_fold(0usize, |acc, &c| Some(acc * 62 + base62_rank(c)?))
}

fn base62_rank(c: u8) -> Option<usize> {
    match c {
        b'0'..=b'9' => Some(usize::from(c - b'0')),
        b'A'..=b'Z' => Some(usize::from(c - b'A') + 10),
        b'a'..=b'z' => Some(usize::from(c - b'a') + 36),
        _ => None,
    }
}

impl BoundRows {
    /// Adds a key, in any order; an id or digest of another shape is no key's.
    pub fn push(&mut self, id: &str, digest: &[u8]) {
        if let Some(pair) = bound_pair(id, digest) {
            self.rows.push(pair);
        }
    }

    /// Builds the directory, once every key is pushed.
    fn index(&mut self) {
        // Every row pushed has a slot (`bound_pair`).
        self.rows
            .sort_unstable_by_key(|(id, _)| (slot(id).unwrap_or(0), *id));
        self.seen = vec![false; self.rows.len()];
        self.starts = vec![0; PREFIXES + 1];
        let mut row = 0;
        for (p, start) in self.starts.iter_mut().enumerate() {
            while row < self.rows.len() && slot(&self.rows[row].0).is_some_and(|q| q < p) {
                row += 1;
            }
            *start = u32::try_from(row).unwrap_or(u32::MAX);
        }
    }

    fn find(&self, id: &str) -> Option<usize> {
        let id = <[u8; KEY_ID_LEN]>::try_from(id.as_bytes()).ok()?;
        let p = slot(&id)?;
        let (from, to) = (self.starts[p] as usize, self.starts[p + 1] as usize);
        let run = self.rows.get(from..to)?;
        run.binary_search_by(|(bound, _)| bound.cmp(&id))
            .ok()
            .map(|at| from + at)
    }

    /// Why a key row does not match the audit chain, if it does not; marks it seen.
    /// Every write of a key row is bound by its audit entry (a store from before rows were
    /// bound had every row bound when it was upgraded).
    fn check(&mut self, id: &str, sealed: &[u8]) -> Option<&'static str> {
        let Some(at) = self.find(id).filter(|&at| !self.seen[at]) else {
            return Some(
                "its row is not in the audit chain (added from elsewhere, or the chain emptied?)",
            );
        };
        self.seen[at] = true;
        if self.rows[at].1 == audit::row_digest(sealed) {
            None
        } else {
            Some("its row is not the one the audit chain last recorded (written back from an older copy?)")
        }
    }

    /// Keys the chain names that no key row matched: their rows were deleted.
    fn unseen(&self) -> impl Iterator<Item = String> + '_ {
        self.rows
            .iter()
            .zip(&self.seen)
            .filter(|(_, seen)| !**seen)
            .map(|((id, _), _)| String::from_utf8_lossy(id).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "key_AAAAAAAAAAAAAAAA";
    const B: &str = "key_BBBBBBBBBBBBBBBB";

    #[test]
    fn keys_made_together_spread_over_the_directory() {
        let ids = [
            "key_0AbCdEfGxY12zz00",
            "key_0AbCdEfGQq93kk01",
            "key_0AbCdEfHaaaaaa02",
        ];
        let mut bound = BoundRows::default();
        for (n, id) in ids.iter().enumerate().rev() {
            bound.push(id, &audit::row_digest(&[n as u8]));
        }
        bound.index();
        let slots: std::collections::HashSet<usize> = ids
            .iter()
            .filter_map(|id| slot(&<[u8; KEY_ID_LEN]>::try_from(id.as_bytes()).ok()?))
            .collect();
        assert_eq!(
            slots.len(),
            ids.len(),
            "one slot each, though they share 8 characters"
        );
        for (n, id) in ids.iter().enumerate() {
            assert_eq!(bound.check(id, &[n as u8]), None, "{id}");
        }
    }

    #[test]
    fn bound_rows_find_keys_by_id_and_name_the_ones_never_seen() {
        let mut bound = BoundRows::default();
        bound.push(A, &audit::row_digest(b"row a"));
        bound.push(B, &audit::row_digest(b"row b"));
        bound.push("key_short", &[0; 32]);
        bound.push("key_CC!CCCCCCCCCCCCC", &[0; 32]);
        bound.index();
        assert_eq!(bound.check(A, b"row a"), None);
        assert!(bound.check(A, b"row a").is_some(), "a second row of one id");
        assert!(bound.check("key_CCCCCCCCCCCCCCCC", b"x").is_some());
        assert_eq!(bound.unseen().collect::<Vec<_>>(), vec![B.to_string()]);
        assert!(bound.check(B, b"row b, older").is_some());
    }

    /// A whole-set binding over the chain entries `bound`, after checking `rows`.
    fn whole(bound: &[(&str, &[u8])], rows: &[(&str, &[u8])]) -> Verdict {
        let mut binding = RowBinding::whole().expect("the system's random numbers");
        let mut chain = binding.chain_set().expect("a whole-set check");
        for (id, row) in bound {
            chain.add(id, &audit::row_digest(row));
        }
        binding.chain_read(chain);
        for (id, row) in rows {
            assert_eq!(binding.check(id, row), None, "told only at the end");
        }
        binding.verdict()
    }

    #[test]
    fn the_whole_set_agrees_only_when_every_row_is_the_bound_one() {
        let bound: &[(&str, &[u8])] = &[(A, b"row a"), (B, b"row b")];
        let same = whole(bound, &[(B, b"row b"), (A, b"row a")]);
        assert!(matches!(same, Verdict::AllBound), "in any order");
        for rows in [
            &[(A, b"row a".as_slice()), (B, b"row b, older")][..],
            &[(A, b"row a")],
            &[
                (A, b"row a"),
                (B, b"row b"),
                ("key_CCCCCCCCCCCCCCCC", b"new"),
            ],
            &[(A, b"row a"), (A, b"row a"), (B, b"row b")],
            &[(A, b"row b"), (B, b"row a")],
            &[(A, b"row a"), (B, b"row b"), ("not a key id", b"x")],
        ] {
            let verdict = whole(bound, rows);
            assert!(matches!(verdict, Verdict::SomeRowDiffers), "{rows:?}");
        }
    }

    #[test]
    fn a_pair_present_twice_does_not_cancel_out() {
        // As many pairs on each side, and with an exclusive or both would come to A ^ B.
        const C: &str = "key_CCCCCCCCCCCCCCCC";
        let bound: &[(&str, &[u8])] = &[(A, b"row a"), (B, b"row b"), (C, b"c"), (C, b"c")];
        let rows: &[(&str, &[u8])] = &[(A, b"row a"), (B, b"row b"), (C, b"d"), (C, b"d")];
        assert!(matches!(whole(bound, rows), Verdict::SomeRowDiffers));
    }
}
