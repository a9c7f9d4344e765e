//! The index's tables under its lock: the entry slab and the extras beside it, the token-hash
//! table, the id map, retired hashes and dirty bits; lookups, prefetches, counting and changes.

use super::entry::{
    id_str, key_id, Cold, Entry, Extra, Facts, Found, Hit, KeyId, KeyUse, Millis, RuleCell,
    UsageCounters,
};
use super::id_order::IdOrder;
use super::limits::{carry_balance, carry_bucket, Owner};
use super::tag_table::{prefetch, prefetch_two_lines, TagTable};
use crate::key::{KeyRecord, LimitUsage, OwnerRecord, OwnerUsage, UsageRow};
use crate::policy::Policy;
use crate::token::{TokenHash, KEY_ID_LEN, START_LEN};
use compact_str::CompactString;
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::ops::Bound;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

/// A token hash and where the token-hash table files it (its seeded 64-bit hash).
#[derive(Debug, Clone, Copy)]
pub struct LookupKey {
    pub(super) token_hash: TokenHash,
    pub(super) table: u64,
}

/// A token-hash table value: a slot number (of `entries`, or of `retired`) and, in the top
/// two bits, which kind of token it is.
pub(super) type Tag = u32;
pub(super) const KIND_SHIFT: u32 = 30;
pub(super) const SLOT_MASK: u32 = (1 << KIND_SHIFT) - 1;
pub(super) const CURRENT: u32 = 0;
pub(super) const PREVIOUS: u32 = 1;
pub(super) const RETIRED: u32 = 2;
/// Most pipelined verifies looked up together (see [`Maps::prefetch_entry`]).
pub const RUN_MAX: usize = 32;
/// Most keys (and, separately, retired hashes) the tags can number.
pub(super) const MAX_SLOTS: usize = 1 << KIND_SHIFT;

pub(super) fn tag(kind: u32, slot: usize) -> Tag {
    (kind << KIND_SHIFT) | (slot as u32 & SLOT_MASK)
}

/// What a token-hash table probe compares against and rehashes by.
pub(super) struct Hashes<'a> {
    pub(super) entries: &'a [Entry],
    pub(super) extras: &'a [Option<Box<Extra>>],
    pub(super) retired: &'a [(TokenHash, Option<KeyId>)],
}

impl Hashes<'_> {
    /// The token hash a tag stands for. Every tag in the table names a live slot.
    pub(super) fn of(&self, tag: Tag) -> Option<&TokenHash> {
        let slot = (tag & SLOT_MASK) as usize;
        match tag >> KIND_SHIFT {
            CURRENT => self.entries.get(slot).map(|e| &e.token_hash),
            PREVIOUS => self
                .extras
                .get(slot)
                .and_then(|e| e.as_deref()?.grace.as_ref())
                .map(|g| &g.token_hash),
            _ => self.retired.get(slot).map(|(hash, _)| hash),
        }
    }
}

#[derive(Default)]
pub struct Maps {
    /// The policy in force.
    pub(super) policy: Arc<Policy>,
    /// Counts policy changes (cycling below `RuleCell::GENERATIONS`), so that an entry's
    /// `RuleCell` tells whether it was chosen under the policy in force.
    pub(super) policy_generation: u16,
    /// Every key; a key's slot never changes.
    pub(super) entries: Vec<Entry>,
    /// Each slot's cold part: what a verify reads only when the policy counts times for
    /// the key. Kept out of the entry so that the entry is two cache lines, not three.
    pub(super) cold: Vec<Cold>,
    /// Each slot's extras (owner, metadata, limits, revoke reason, grace), `None` for a
    /// plain key. Kept beside the entries, by slot, rather than behind a pointer in the
    /// entry: a verify then asks for a limited key's extras as soon as the table names its
    /// slot, together with the entry, where a pointer in the entry could only be followed
    /// once the entry had arrived, one cache miss after the other. Only as long as the
    /// last slot that has had extras needs: a store of plain keys spends nothing on it.
    pub(super) extras: Vec<Option<Box<Extra>>>,
    /// One bit per slot: the key has extras. Read before `extras`, so that a verify of a
    /// plain key never reads its slot there: with a million keys `extras` can be 8 MB read at
    /// random, a cache miss each time, where these bits are 128 KB.
    pub(super) with_extras: Vec<u64>,
    /// Hashes of tokens that must never verify again, with the key they belonged to.
    pub(super) retired: Vec<(TokenHash, Option<KeyId>)>,
    /// Token hash → tag. Hashed with a per-process random seed (foldhash), so a client
    /// grinding tokens cannot aim their SHA-256 at one bucket.
    pub(super) by_hash: TagTable,
    /// Slots in key-id order, so that listing can page by key id.
    pub(super) by_id: IdOrder,
    /// One bit per slot: usage changed since the last flush. A bit set is one atomic OR on
    /// a word shared by 64 keys, where a queue of dirty keys behind a mutex was contended by
    /// every connection thread while a million keys turned dirty after a flush.
    pub(super) dirty: Vec<AtomicU64>,
    /// Per slot, where the key's usage row is in the store ([`UsageRow`] bits; 0 unknown),
    /// so a flush rewrites it by rowid. Atomic so the flush can learn rows under the read
    /// lock. 4 MB per million keys.
    pub(super) usage_rows: Vec<AtomicU32>,
    /// Environment labels, one allocation each however many keys carry them.
    pub(super) environments: HashSet<Arc<String>>,
    /// Every owner a key names or `owners set` made, with its shared limits.
    pub(super) owners: HashMap<Box<str>, Arc<Owner>>,
    pub(super) seed: foldhash::quality::RandomState,
}

impl Maps {
    pub(super) fn hash(&self, hash: &TokenHash) -> u64 {
        self.seed.hash_one(hash)
    }

    pub(super) fn find(&self, key: &LookupKey) -> Option<Tag> {
        let hashes = Hashes {
            entries: &self.entries,
            extras: &self.extras,
            retired: &self.retired,
        };
        self.by_hash
            .find(key.table, |t| hashes.of(t) == Some(&key.token_hash))
    }

    /// `hash` with its table hash, so that a verify computes that once for the prefetches
    /// and the lookup.
    pub fn lookup_key(&self, hash: TokenHash) -> LookupKey {
        LookupKey {
            table: self.hash(&hash),
            token_hash: hash,
        }
    }

    pub(super) fn found(&self, slot: usize) -> Option<Found<'_>> {
        let entry = self.entries.get(slot)?;
        let cold = self.cold.get(slot)?;
        Some(Found {
            slot: slot as u32,
            entry,
            cold,
            extra: self.extra_at(slot),
            policy: &self.policy,
            policy_generation: self.policy_generation,
        })
    }

    /// The extras of the key in `slot`, if it has any.
    fn extra_at(&self, slot: usize) -> Option<&Extra> {
        let word = self.with_extras.get(slot / 64)?;
        if word & (1 << (slot % 64)) == 0 {
            return None;
        }
        self.extras.get(slot)?.as_deref()
    }

    /// Puts in the extras of the key in `slot`, growing `extras` to it if it needs to.
    fn set_extra(&mut self, slot: usize, extra: Option<Box<Extra>>) {
        if self.with_extras.len() <= slot / 64 {
            self.with_extras.resize(slot / 64 + 1, 0);
        }
        let bit = 1 << (slot % 64);
        if extra.is_some() {
            self.with_extras[slot / 64] |= bit;
        } else {
            self.with_extras[slot / 64] &= !bit;
        }
        match self.extras.get_mut(slot) {
            Some(place) => *place = extra,
            None if extra.is_some() => {
                self.extras.resize_with(slot + 1, || None);
                self.extras[slot] = extra;
            }
            None => {}
        }
    }

    /// The key a token hash belongs to.
    pub fn by_hash(&self, hash: &TokenHash) -> Option<Hit<'_>> {
        self.by_key(&self.lookup_key(*hash))
    }

    /// [`Maps::by_hash`] with the table hash already computed.
    pub fn by_key(&self, key: &LookupKey) -> Option<Hit<'_>> {
        let tag = self.find(key)?;
        let slot = (tag & SLOT_MASK) as usize;
        match tag >> KIND_SHIFT {
            CURRENT => self.found(slot).map(Hit::Current),
            PREVIOUS => self.found(slot).map(Hit::Previous),
            _ => self
                .retired
                .get(slot)
                .map(|(_, id)| Hit::Retired(id.as_ref().map(id_str))),
        }
    }

    /// Asks the CPU for the bucket the lookup of `key` starts at: the first half of a
    /// lookup ahead of time, for runs of lookups (see [`Maps::prefetch_entry`]).
    pub fn prefetch_bucket(&self, key: &LookupKey) {
        self.by_hash.prefetch(key.table);
    }

    /// Asks the CPU for the two cache lines of the entry the lookup of `key` will
    /// most likely land on (the first bucket whose fingerprint matches; a wrong guess costs
    /// only a wasted fetch), and for the first two lines of its extras if it has any (owner,
    /// metadata and limits: `Extra`'s layout). Call it once the bucket asked for by
    /// [`Maps::prefetch_bucket`] has had time to arrive.
    ///
    /// With a million keys neither the table nor the entries are in cache, and the misses
    /// are most of a lookup's cost; asked for ahead and together, they overlap each other,
    /// where lookups in turn would wait for each (see `VerifyBatch::answer_run`). The
    /// extras' address comes from `extras`, by slot, not from the entry, so that even a
    /// single verify has them on the way while its entry is.
    pub fn prefetch_entry(&self, key: &LookupKey) {
        let Some(tag) = self.by_hash.candidate(key.table) else {
            return;
        };
        let slot = (tag & SLOT_MASK) as usize;
        match tag >> KIND_SHIFT {
            CURRENT | PREVIOUS => {
                if let Some(entry) = self.entries.get(slot) {
                    prefetch_two_lines(entry);
                }
                // A verify reads the cold part only for a key the policy counts times for.
                if self.policy.may_count_times() {
                    if let Some(cold) = self.cold.get(slot) {
                        prefetch(cold);
                    }
                }
                if let Some(extra) = self.extra_at(slot) {
                    prefetch_two_lines(extra);
                }
            }
            _ => {
                if let Some(retired) = self.retired.get(slot) {
                    prefetch(retired);
                }
            }
        }
    }

    /// Asks the CPU for a name longer than fits in the entry, for the entry the lookup of
    /// `key` will most likely land on, for a run of lookups after [`Maps::prefetch_entry`]:
    /// reading the name's pointer waits for the entry's line, but the lines of the run's
    /// other entries are on their way meanwhile, and these misses then overlap too.
    pub fn prefetch_heap(&self, key: &LookupKey) {
        let Some(tag) = self.by_hash.candidate(key.table) else {
            return;
        };
        if tag >> KIND_SHIFT != CURRENT {
            return;
        }
        let Some(entry) = self.entries.get((tag & SLOT_MASK) as usize) else {
            return;
        };
        if entry.name.is_heap_allocated() {
            if let Some(first) = entry.name.as_bytes().first() {
                prefetch(first);
            }
        }
    }

    /// Counts verifies against their keys (`None`: a verify that matched no key) and marks
    /// the keys' usage as changed since the last flush: every count first, then one fence,
    /// then every dirty bit.
    ///
    /// The fence orders each count before the check of its key's dirty bit. A flush clears
    /// the bits and then reads the counts; without the fence a verify could see its key's
    /// bit still set (and skip setting it) while the flush reads the count from before the
    /// add, and that add would never be flushed. Paired with the fence in
    /// `Index::take_dirty`. One fence per run rather than one per verify: a fence waits for
    /// every earlier access, and between two verifies it would keep the next one's reads
    /// from starting early. Counted per run, the decisions are reads only.
    pub fn count_uses(&self, uses: &[Option<KeyUse<'_>>], now: i64) {
        let mut counted = false;
        for used in uses.iter().flatten() {
            used.key.usage.record(used.allowed, now);
            counted = true;
        }
        if !counted {
            return;
        }
        std::sync::atomic::fence(Ordering::SeqCst);
        for used in uses.iter().flatten() {
            self.set_dirty_bit(used.key.slot);
        }
    }

    /// Sets a slot's dirty bit; the caller has fenced after the count it marks.
    pub(super) fn set_dirty_bit(&self, slot: u32) {
        if let Some(word) = self.dirty.get(slot as usize / 64) {
            let bit = 1u64 << (slot % 64);
            // Only a clean key pays for the atomic write (and the cache line's ownership).
            if word.load(Ordering::Relaxed) & bit == 0 {
                word.fetch_or(bit, Ordering::AcqRel);
            }
        }
    }

    /// The key with this id.
    pub fn by_id(&self, id: &str) -> Option<Found<'_>> {
        let slot = self.by_id.get(&self.entries, &key_id(id)?)?;
        self.found(slot as usize)
    }

    /// Every key, in no particular order.
    pub fn entries(&self) -> impl Iterator<Item = Found<'_>> {
        (0..self.entries.len()).filter_map(|slot| self.found(slot))
    }

    /// Keys with ids after `after` (all when `None`; it need not be an existing id), in
    /// key-id order.
    pub fn entries_after(&self, after: Option<&str>) -> impl Iterator<Item = Found<'_>> {
        let start = match after.map(str::as_bytes) {
            None => Bound::Unbounded,
            Some(after) => {
                // Ids all have KEY_ID_LEN bytes. Above a shorter `after` means at or above it
                // padded with zero bytes; above a longer one, above its first KEY_ID_LEN.
                let mut bound = [0u8; KEY_ID_LEN];
                let n = after.len().min(KEY_ID_LEN);
                bound[..n].copy_from_slice(&after[..n]);
                if after.len() < KEY_ID_LEN {
                    Bound::Included(bound)
                } else {
                    Bound::Excluded(bound)
                }
            }
        };
        self.by_id
            .from(&self.entries, start)
            .iter()
            .filter_map(|&slot| self.found(slot as usize))
    }

    /// Puts in a new version of a key, keeping its usage counters.
    pub fn upsert(&mut self, mut record: KeyRecord) {
        let Some(id) = key_id(&record.id) else {
            tracing::error!("a key without a key id's shape was not indexed");
            return;
        };
        match self.by_id.get(&self.entries, &id).map(|slot| slot as usize) {
            Some(slot) => {
                self.forget_hashes(slot);
                let usage = std::mem::take(&mut self.entries[slot].usage);
                let old = self.extras.get_mut(slot).and_then(Option::take);
                let (entry, cold, extra) =
                    self.entry(id, &mut record, usage, old, LimitUsage::default());
                self.entries[slot] = entry;
                self.cold[slot] = cold;
                self.set_extra(slot, extra);
                self.insert_hashes(slot);
            }
            None => {
                let usage = UsageCounters::default();
                if let Some(slot) = self.push(id, &mut record, usage, None, LimitUsage::default()) {
                    self.by_id.insert(&self.entries, &id, slot as u32);
                }
            }
        }
    }

    /// Marks a token hash as never valid again.
    pub fn retire(&mut self, hash: TokenHash, key_id_owned: Option<String>) {
        if self.retired.len() >= MAX_SLOTS {
            tracing::error!("too many retired token hashes to index another");
            return;
        }
        let slot = self.retired.len();
        self.retired
            .push((hash, key_id_owned.as_deref().and_then(key_id)));
        self.set_hash(&hash, tag(RETIRED, slot));
    }

    /// Makes the entry and the extras for `record`, its times under the policy in force,
    /// its limits taking over where `old` (its previous version) stood, or else where
    /// `restored` (its stored usage) says. Takes what the extras keep out of `record`; its
    /// strings are copied and left for the caller to drop, on the thread that made them.
    pub(super) fn entry(
        &mut self,
        id: KeyId,
        record: &mut KeyRecord,
        usage: UsageCounters,
        old: Option<Box<Extra>>,
        restored: LimitUsage,
    ) -> (Entry, Cold, Option<Box<Extra>>) {
        let mut start = [0u8; START_LEN];
        let start_len = record.start.len().min(START_LEN);
        start[..start_len].copy_from_slice(&record.start.as_bytes()[..start_len]);
        let environment = record
            .environment
            .as_ref()
            .map(|label| self.environment(label));
        let details = std::mem::take(&mut record.details);
        let owner = details.owner_id.as_deref().map(|id| self.owner(id));
        let old = old.as_deref();
        let extra = Extra {
            revoke_reason: record.revoke_reason.take(),
            grace: record.grace.take(),
            meta: (!details.meta.is_empty()).then(|| Box::new(details.meta)),
            ratelimit: carry_bucket(details.ratelimit, old.and_then(|o| o.ratelimit.as_ref()))
                .inspect(|b| {
                    if restored.ratelimit.rule == Some(b.rule) {
                        b.raise_to(restored.ratelimit.tat);
                    }
                }),
            credits: carry_balance(details.credits, old.and_then(|o| o.credits.as_ref()))
                .inspect(|b| b.resume(&restored.credits)),
            owner,
        };
        let entry = Entry {
            id,
            token_hash: record.token_hash,
            name: CompactString::new(&record.name),
            start_len: start_len as u8,
            permissions: record.permissions,
            revoked: record.revoked_at.is_some(),
            environment,
            expires_at: Millis::from(record.expires_at),
            usage,
            rule: RuleCell::unknown(),
        };
        let cold = Cold {
            created_at: record.created_at,
            rotated_at: Millis::from(record.rotated_at),
            revoked_at: Millis::from(record.revoked_at),
            start,
        };
        let facts = Facts {
            entry: &entry,
            cold: &cold,
        };
        let rule = self.policy.rule_index(&facts);
        entry.rule.set(self.policy_generation, rule);
        (entry, cold, extra.boxed())
    }

    /// Puts `policy` in force under a new generation: every key's rule filed so far is
    /// looked up afresh until it is filed again under this one.
    pub(super) fn put_policy(&mut self, policy: Arc<Policy>) {
        self.policy = policy;
        self.policy_generation = (self.policy_generation + 1) % RuleCell::GENERATIONS;
    }

    /// The owner named `id`, made without limits if no key or record named it before.
    pub(super) fn owner(&mut self, id: &str) -> Arc<Owner> {
        if let Some(owner) = self.owners.get(id) {
            return owner.clone();
        }
        let owner = Arc::new(Owner::bare(id));
        self.owners.insert(id.into(), owner.clone());
        owner
    }

    /// The owner by id, if any key or record names it.
    pub fn owner_by_id(&self, id: &str) -> Option<&Arc<Owner>> {
        self.owners.get(id)
    }

    /// Puts in a new version of an owner's limits, keeping where the old ones stood when
    /// the rules are the same (else where `stored` says, at start-up), and points every key
    /// of the owner at it.
    pub fn upsert_owner(&mut self, record: &OwnerRecord, stored: &OwnerUsage) {
        let old = self.owners.get(record.id.as_str()).cloned();
        let owner = Arc::new(Owner::new(record, old.as_deref(), stored));
        self.owners.insert(record.id.as_str().into(), owner.clone());
        let Some(old) = old else {
            return;
        };
        for extra in &mut self.extras {
            if let Some(extra) = extra.as_deref_mut() {
                if extra.owner.as_ref().is_some_and(|o| Arc::ptr_eq(o, &old)) {
                    extra.owner = Some(owner.clone());
                }
            }
        }
    }

    /// The shared copy of an environment label.
    pub(super) fn environment(&mut self, label: &String) -> Arc<String> {
        if let Some(shared) = self.environments.get(label) {
            return shared.clone();
        }
        let shared = Arc::new(label.clone());
        self.environments.insert(shared.clone());
        shared
    }

    /// Appends a key and puts its token hashes in; the caller files it by id.
    pub(super) fn push(
        &mut self,
        id: KeyId,
        record: &mut KeyRecord,
        usage: UsageCounters,
        old: Option<Box<Extra>>,
        restored: LimitUsage,
    ) -> Option<usize> {
        if self.entries.len() >= MAX_SLOTS {
            tracing::error!("too many keys to index another");
            return None;
        }
        let (entry, cold, extra) = self.entry(id, record, usage, old, restored);
        self.entries.push(entry);
        self.cold.push(cold);
        let slot = self.entries.len() - 1;
        self.set_extra(slot, extra);
        if self.dirty.len() <= slot / 64 {
            self.dirty.push(AtomicU64::new(0));
        }
        self.usage_rows
            .push(AtomicU32::new(UsageRow::UNKNOWN.to_bits()));
        self.insert_hashes(slot);
        Some(slot)
    }

    pub(super) fn insert_hashes(&mut self, slot: usize) {
        let (current, previous) = self.hashes_of(slot);
        self.set_hash(&current, tag(CURRENT, slot));
        if let Some(previous) = previous {
            self.set_hash(&previous, tag(PREVIOUS, slot));
        }
    }

    pub(super) fn forget_hashes(&mut self, slot: usize) {
        let (current, previous) = self.hashes_of(slot);
        // Only this entry's own tags: a hash since taken over (retired) stays.
        self.remove_hash(&current, tag(CURRENT, slot));
        if let Some(previous) = previous {
            self.remove_hash(&previous, tag(PREVIOUS, slot));
        }
    }

    /// The hashes of a key's current token and of its previous one, if in grace.
    fn hashes_of(&self, slot: usize) -> (TokenHash, Option<TokenHash>) {
        let grace = self.extra_at(slot).and_then(|e| e.grace.as_ref());
        (self.entries[slot].token_hash, grace.map(|g| g.token_hash))
    }

    /// Points `hash` at `new`, replacing what it pointed at before.
    pub(super) fn set_hash(&mut self, hash: &TokenHash, new: Tag) {
        let h = self.hash(hash);
        let Maps {
            by_hash,
            entries,
            extras,
            retired,
            ..
        } = self;
        let hashes = Hashes {
            entries,
            extras,
            retired,
        };
        by_hash.set(h, |t| hashes.of(t) == Some(hash), new);
    }

    /// Takes `hash` out of the table if it still stands for `expected`.
    pub(super) fn remove_hash(&mut self, hash: &TokenHash, expected: Tag) {
        let h = self.hash(hash);
        self.by_hash.remove(h, |t| t == expected);
    }
}
