//! The in-memory verify index: every key by token hash and by id, with live usage counters.
//!
//! Verify reads it under a read lock held for a few memory reads, never across I/O. Only the
//! writer thread takes the write lock, after a commit, so once an admin write is acknowledged
//! every later verify sees it.
//!
//! The layout is chosen for a million keys in well under 300 MiB and few cache misses per
//! verify. Every key is one fixed-size [`Entry`] in a slab (a `Vec`; keys are never removed,
//! a revoked key stays to answer `revoked`), with its usage counters and policy times inline
//! and its strings boxed to their length. The token-hash table holds 4-byte slot numbers
//! tagged with which token of the key they are; the hash itself is read from the entry when
//! a probe matches or the table grows. Key ids sit in an ordered map of fixed 20-byte ids, so
//! listing pages in id order.

pub(crate) mod tag_table;
pub(crate) mod verify;

use crate::key::{Grace, KeyRecord, Permissions, RetiredHashes, UsageRecord, UsageRow};
use crate::policy::{KeyFacts, KeyTimes, Policy};
use crate::token::{TokenHash, KEY_ID_LEN, START_LEN};
use authenta_client::proto::{KeyInfo, KeyState, Usage};
use std::collections::{BTreeMap, HashSet};
use std::hash::BuildHasher;
use std::ops::Bound;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use tag_table::{prefetch, TagTable};

/// A key id in fixed space: `key_` and 16 base62 characters.
type KeyId = [u8; KEY_ID_LEN];

fn key_id(id: &str) -> Option<KeyId> {
    id.as_bytes().try_into().ok()
}

fn id_str(id: &KeyId) -> &str {
    // Only ids that were `&str` are ever stored.
    std::str::from_utf8(id).unwrap_or_default()
}

/// One key's usage on its way to the store, from a flush.
#[derive(Debug, Clone)]
pub struct UsageWrite {
    pub slot: u32,
    pub id: String,
    pub usage: UsageRecord,
    /// Where the row is, if known.
    pub row: UsageRow,
}

/// Live verify counts of one key; kept across every version of its record.
#[derive(Debug, Default)]
#[repr(C)]
pub struct UsageCounters {
    allowed: AtomicU64,
    denied: AtomicU64,
    /// Unix milliseconds; 0 when never used.
    last_used_at: AtomicI64,
}

impl UsageCounters {
    fn from_record(record: &UsageRecord) -> Self {
        UsageCounters {
            allowed: AtomicU64::new(record.allowed),
            denied: AtomicU64::new(record.denied),
            last_used_at: AtomicI64::new(record.last_used_at.unwrap_or(0)),
        }
    }

    /// Counts one verify of this key (called by [`Maps::count_uses`], which also marks it
    /// dirty). One atomic add per verify: the total is the sum, and `last_used_at` is only
    /// written when it moves (two racing verifies may leave the earlier of their two times,
    /// never one older than both).
    pub fn record(&self, allowed: bool, now: i64) {
        let counter = if allowed { &self.allowed } else { &self.denied };
        counter.fetch_add(1, Ordering::Relaxed);
        if self.last_used_at.load(Ordering::Relaxed) < now {
            self.last_used_at.store(now, Ordering::Relaxed);
        }
    }

    /// The counts now.
    pub fn snapshot(&self) -> UsageRecord {
        let last = self.last_used_at.load(Ordering::Relaxed);
        let allowed = self.allowed.load(Ordering::Relaxed);
        let denied = self.denied.load(Ordering::Relaxed);
        UsageRecord {
            verifications: allowed + denied,
            allowed,
            denied,
            last_used_at: (last > 0).then_some(last),
        }
    }
}

/// What the policy in force means for one key; updated in place when the policy changes,
/// so verify reads it without another lookup. `NONE` means "not set".
#[derive(Debug)]
#[repr(C)]
pub struct PolicyCell {
    expires_at: AtomicI64,
    rotate_by: AtomicI64,
    warn_from: AtomicI64,
    scheduled_at: AtomicI64,
}

impl PolicyCell {
    const NONE: i64 = i64::MAX;

    fn new(times: KeyTimes) -> Self {
        let cell = PolicyCell {
            expires_at: AtomicI64::new(Self::NONE),
            rotate_by: AtomicI64::new(Self::NONE),
            warn_from: AtomicI64::new(Self::NONE),
            scheduled_at: AtomicI64::new(Self::NONE),
        };
        cell.set(times);
        cell
    }

    fn set(&self, times: KeyTimes) {
        let store = |cell: &AtomicI64, value: Option<i64>| {
            cell.store(value.unwrap_or(Self::NONE), Ordering::Relaxed)
        };
        store(&self.expires_at, times.expires_at);
        store(&self.rotate_by, times.rotate_by);
        store(&self.warn_from, times.warn_from);
        store(&self.scheduled_at, times.scheduled_at);
    }

    fn get(cell: &AtomicI64) -> Option<i64> {
        Some(cell.load(Ordering::Relaxed)).filter(|&v| v != Self::NONE)
    }

    /// When the policy's `max_age` runs out for this key.
    pub fn expires_at(&self) -> Option<i64> {
        Self::get(&self.expires_at)
    }

    /// When the key is due for rotation.
    pub fn rotate_by(&self) -> Option<i64> {
        Self::get(&self.rotate_by)
    }

    /// Whether the key is flagged as due for rotation at `now`.
    pub fn rotation_due(&self, now: i64) -> bool {
        Self::get(&self.warn_from).is_some_and(|from| from <= now)
    }

    /// When the scheduler regenerates it.
    pub fn scheduled_at(&self) -> Option<i64> {
        Self::get(&self.scheduled_at)
    }
}

/// An optional time (unix milliseconds) in 8 bytes rather than `Option<i64>`'s 16.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Millis(i64);

impl Millis {
    const NONE: i64 = i64::MIN;

    fn from(value: Option<i64>) -> Self {
        Millis(value.unwrap_or(Self::NONE))
    }

    fn get(self) -> Option<i64> {
        (self.0 != Self::NONE).then_some(self.0)
    }
}

/// One key as the index holds it: the record's fields in compact form, the live usage
/// counters and the policy's times for it.
///
/// Laid out by hand (`repr(C)`) and aligned to a cache line, so that a verify reads exactly
/// the first two of its three lines: with a million keys every verify misses the cache on
/// its entry, and each line more is one more miss. Unaligned and in the compiler's order, a
/// verify touched three or four lines. `an_entry_keeps_what_verify_reads_in_two_lines`
/// holds this.
#[derive(Debug)]
#[repr(C, align(64))]
pub struct Entry {
    // Line 0: what finds and names the key.
    token_hash: TokenHash,
    id: KeyId,
    pub permissions: Permissions,
    start_len: u8,
    /// Shared by every key with the same label (see `Maps::environments`). `Arc<String>`
    /// and `Box<String>` below, rather than `str`, for thin 8-byte pointers.
    environment: Option<Arc<String>>,
    // Line 1: what decides the answer, and the counters it bumps.
    pub usage: UsageCounters,
    expires_at: Millis,
    revoked_at: Millis,
    /// Its last field (`scheduled_at`, which verify does not read) begins line 2.
    pub policy: PolicyCell,
    // Line 2: what lists, rotations and grace periods read.
    name: Box<str>,
    created_at: i64,
    rotated_at: Millis,
    // A thin pointer: most keys have no reason, and a `Box<str>` would take 16 bytes.
    #[allow(clippy::box_collection)]
    revoke_reason: Option<Box<String>>,
    grace: Option<Box<Grace>>,
    start: [u8; START_LEN],
}

impl Entry {
    pub fn id(&self) -> &str {
        id_str(&self.id)
    }

    pub fn environment(&self) -> Option<&str> {
        self.environment.as_deref().map(String::as_str)
    }

    pub fn revoked_at(&self) -> Option<i64> {
        self.revoked_at.get()
    }

    /// The previous token's grace, if a regenerate left one.
    pub fn grace(&self) -> Option<&Grace> {
        self.grace.as_deref()
    }

    fn start(&self) -> &str {
        let len = usize::from(self.start_len).min(START_LEN);
        std::str::from_utf8(&self.start[..len]).unwrap_or_default()
    }

    /// The key's state at `now`, counting the policy's maximum age.
    pub fn state(&self, now: i64) -> KeyState {
        if self.revoked_at.get().is_some() {
            KeyState::Revoked
        } else if self.expires_at.get().is_some_and(|at| at <= now)
            || self.policy.expires_at().is_some_and(|at| at <= now)
        {
            KeyState::Expired
        } else {
            KeyState::Active
        }
    }

    /// The stored record this entry was made from.
    pub fn to_record(&self) -> KeyRecord {
        KeyRecord {
            id: self.id().to_owned(),
            token_hash: self.token_hash,
            name: self.name.to_string(),
            start: self.start().to_owned(),
            permissions: self.permissions,
            environment: self.environment().map(str::to_owned),
            created_at: self.created_at,
            rotated_at: self.rotated_at.get(),
            expires_at: self.expires_at.get(),
            revoked_at: self.revoked_at.get(),
            revoke_reason: self.revoke_reason.as_deref().cloned(),
            grace: self.grace().cloned(),
        }
    }

    /// The key as listed: live usage, never the token.
    pub fn info(&self, now: i64) -> KeyInfo {
        let usage = self.usage.snapshot();
        KeyInfo {
            id: self.id().to_owned(),
            name: self.name.to_string(),
            start: self.start().to_owned(),
            permissions: self.permissions.to_list(),
            environment: self.environment().map(str::to_owned),
            state: self.state(now),
            created_at: self.created_at,
            rotated_at: self.rotated_at.get(),
            last_used_at: usage.last_used_at,
            expires_at: self.expires_at.get(),
            rotate_by: self.policy.rotate_by(),
            rotation_due: self.policy.rotation_due(now),
            revoked_at: self.revoked_at.get(),
            grace_until: self.grace().map(|g| g.until).filter(|&until| until > now),
            usage: Usage {
                verifications: usage.verifications,
                allowed: usage.allowed,
                denied: usage.denied,
            },
        }
    }
}

impl KeyFacts for Entry {
    fn id(&self) -> &str {
        Entry::id(self)
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn environment(&self) -> Option<&str> {
        Entry::environment(self)
    }
    fn created_at(&self) -> i64 {
        self.created_at
    }
    fn rotated_at(&self) -> Option<i64> {
        self.rotated_at.get()
    }
}

/// A key found in the index: its entry, and its slot (to queue it for a usage flush).
#[derive(Debug, Clone, Copy)]
pub struct Found<'a> {
    slot: u32,
    entry: &'a Entry,
}

impl<'a> Found<'a> {
    /// The entry, for as long as the read it was found in.
    pub fn entry(self) -> &'a Entry {
        self.entry
    }
}

impl std::ops::Deref for Found<'_> {
    type Target = Entry;
    fn deref(&self) -> &Entry {
        self.entry
    }
}

/// One verify to count against the key it matched: allowed (valid) or denied.
#[derive(Debug, Clone, Copy)]
pub struct KeyUse<'a> {
    pub key: Found<'a>,
    pub allowed: bool,
}

/// Which of a key's tokens a hash is.
#[derive(Debug, Clone, Copy)]
pub enum Hit<'a> {
    /// The key's current token.
    Current(Found<'a>),
    /// The token a regenerate replaced, valid until the entry's grace ends.
    Previous(Found<'a>),
    /// A token that must never verify again: replaced, or revoked by its hash. The key it
    /// belonged to, when known.
    Retired(Option<&'a str>),
}

/// A token hash and where the token-hash table files it (its seeded 64-bit hash).
#[derive(Debug, Clone, Copy)]
pub struct LookupKey {
    token_hash: TokenHash,
    table: u64,
}

/// A token-hash table value: a slot number (of `entries`, or of `retired`) and, in the top
/// two bits, which kind of token it is.
type Tag = u32;
const KIND_SHIFT: u32 = 30;
const SLOT_MASK: u32 = (1 << KIND_SHIFT) - 1;
const CURRENT: u32 = 0;
const PREVIOUS: u32 = 1;
const RETIRED: u32 = 2;
/// Most pipelined verifies looked up together (see [`Maps::prefetch_entry`]).
pub const RUN_MAX: usize = 32;
/// Most keys (and, separately, retired hashes) the tags can number.
const MAX_SLOTS: usize = 1 << KIND_SHIFT;

fn tag(kind: u32, slot: usize) -> Tag {
    (kind << KIND_SHIFT) | (slot as u32 & SLOT_MASK)
}

/// What a token-hash table probe compares against and rehashes by.
struct Hashes<'a> {
    entries: &'a [Entry],
    retired: &'a [(TokenHash, Option<KeyId>)],
}

impl Hashes<'_> {
    /// The token hash a tag stands for. Every tag in the table names a live slot.
    fn of(&self, tag: Tag) -> Option<&TokenHash> {
        let slot = (tag & SLOT_MASK) as usize;
        match tag >> KIND_SHIFT {
            CURRENT => self.entries.get(slot).map(|e| &e.token_hash),
            PREVIOUS => self
                .entries
                .get(slot)
                .and_then(|e| e.grace())
                .map(|g| &g.token_hash),
            _ => self.retired.get(slot).map(|(hash, _)| hash),
        }
    }
}

#[derive(Default)]
pub struct Maps {
    /// The policy in force: every entry's `PolicyCell` reflects it.
    policy: Arc<Policy>,
    /// Every key; a key's slot never changes.
    entries: Vec<Entry>,
    /// Hashes of tokens that must never verify again, with the key they belonged to.
    retired: Vec<(TokenHash, Option<KeyId>)>,
    /// Token hash → tag. Hashed with a per-process random seed (foldhash), so a client
    /// grinding tokens cannot aim their SHA-256 at one bucket.
    by_hash: TagTable,
    /// Ordered, so that listing can page by key id.
    by_id: BTreeMap<KeyId, u32>,
    /// One bit per slot: usage changed since the last flush. A bit set is one atomic OR on
    /// a word shared by 64 keys, where a queue of dirty keys behind a mutex was contended by
    /// every connection thread while a million keys turned dirty after a flush.
    dirty: Vec<AtomicU64>,
    /// Per slot, where the key's usage row is in the store ([`UsageRow`] bits; 0 unknown),
    /// so a flush rewrites it by rowid. Atomic so the flush can learn rows under the read
    /// lock. 4 MB per million keys.
    usage_rows: Vec<AtomicU32>,
    /// Environment labels, one allocation each however many keys carry them.
    environments: HashSet<Arc<String>>,
    seed: foldhash::quality::RandomState,
}

impl Maps {
    fn hash(&self, hash: &TokenHash) -> u64 {
        self.seed.hash_one(hash)
    }

    fn find(&self, key: &LookupKey) -> Option<Tag> {
        let hashes = Hashes {
            entries: &self.entries,
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

    fn found(&self, slot: usize) -> Option<Found<'_>> {
        self.entries.get(slot).map(|entry| Found {
            slot: slot as u32,
            entry,
        })
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
    /// only a wasted fetch). Call it once the bucket asked for by
    /// [`Maps::prefetch_bucket`] has had time to arrive.
    ///
    /// With a million keys neither the table nor the entries are in cache, and the misses
    /// are most of a lookup's cost; asked for ahead and together, they overlap each other,
    /// where lookups in turn would wait for each (see `VerifyBatch::answer_run`).
    pub fn prefetch_entry(&self, key: &LookupKey) {
        let Some(tag) = self.by_hash.candidate(key.table) else {
            return;
        };
        let slot = (tag & SLOT_MASK) as usize;
        match tag >> KIND_SHIFT {
            CURRENT | PREVIOUS => {
                if let Some(entry) = self.entries.get(slot) {
                    prefetch(&entry.token_hash);
                    prefetch(&entry.usage);
                }
            }
            _ => {
                if let Some(retired) = self.retired.get(slot) {
                    prefetch(retired);
                }
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
    fn set_dirty_bit(&self, slot: u32) {
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
        let slot = *self.by_id.get(&key_id(id)?)?;
        self.found(slot as usize)
    }

    /// Every key, in no particular order.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
    }

    /// Keys with ids after `after` (all when `None`; it need not be an existing id), in
    /// key-id order.
    pub fn entries_after(&self, after: Option<&str>) -> impl Iterator<Item = &Entry> {
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
            .range((start, Bound::Unbounded))
            .filter_map(|(_, &slot)| self.entries.get(slot as usize))
    }

    /// Puts in a new version of a key, keeping its usage counters.
    pub fn upsert(&mut self, record: KeyRecord) {
        let Some(id) = key_id(&record.id) else {
            tracing::error!("a key without a key id's shape was not indexed");
            return;
        };
        match self.by_id.get(&id).map(|&slot| slot as usize) {
            Some(slot) => {
                self.forget_hashes(slot);
                let usage = std::mem::take(&mut self.entries[slot].usage);
                let entry = self.entry(id, record, usage);
                self.entries[slot] = entry;
                self.insert_hashes(slot);
            }
            None => {
                if let Some(slot) = self.push(id, record, UsageCounters::default()) {
                    self.by_id.insert(id, slot as u32);
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

    /// Makes the entry for `record`, its times under the policy in force.
    fn entry(&mut self, id: KeyId, record: KeyRecord, usage: UsageCounters) -> Entry {
        let mut start = [0u8; START_LEN];
        let start_len = record.start.len().min(START_LEN);
        start[..start_len].copy_from_slice(&record.start.as_bytes()[..start_len]);
        let environment = record.environment.map(|label| self.environment(label));
        let entry = Entry {
            id,
            token_hash: record.token_hash,
            name: record.name.into_boxed_str(),
            start,
            start_len: start_len as u8,
            permissions: record.permissions,
            environment,
            created_at: record.created_at,
            rotated_at: Millis::from(record.rotated_at),
            expires_at: Millis::from(record.expires_at),
            revoked_at: Millis::from(record.revoked_at),
            revoke_reason: record.revoke_reason.map(Box::new),
            grace: record.grace.map(Box::new),
            usage,
            policy: PolicyCell::new(KeyTimes::default()),
        };
        entry.policy.set(self.policy.times(&entry));
        entry
    }

    /// The shared copy of an environment label.
    fn environment(&mut self, label: String) -> Arc<String> {
        if let Some(shared) = self.environments.get(&label) {
            return shared.clone();
        }
        let shared = Arc::new(label);
        self.environments.insert(shared.clone());
        shared
    }

    /// Appends a key and puts its token hashes in; the caller files it by id.
    fn push(&mut self, id: KeyId, record: KeyRecord, usage: UsageCounters) -> Option<usize> {
        if self.entries.len() >= MAX_SLOTS {
            tracing::error!("too many keys to index another");
            return None;
        }
        let entry = self.entry(id, record, usage);
        self.entries.push(entry);
        let slot = self.entries.len() - 1;
        if self.dirty.len() <= slot / 64 {
            self.dirty.push(AtomicU64::new(0));
        }
        self.usage_rows
            .push(AtomicU32::new(UsageRow::UNKNOWN.to_bits()));
        self.insert_hashes(slot);
        Some(slot)
    }

    fn insert_hashes(&mut self, slot: usize) {
        let entry = &self.entries[slot];
        let (current, previous) = (entry.token_hash, entry.grace().map(|g| g.token_hash));
        self.set_hash(&current, tag(CURRENT, slot));
        if let Some(previous) = previous {
            self.set_hash(&previous, tag(PREVIOUS, slot));
        }
    }

    fn forget_hashes(&mut self, slot: usize) {
        let entry = &self.entries[slot];
        let (current, previous) = (entry.token_hash, entry.grace().map(|g| g.token_hash));
        // Only this entry's own tags: a hash since taken over (retired) stays.
        self.remove_hash(&current, tag(CURRENT, slot));
        if let Some(previous) = previous {
            self.remove_hash(&previous, tag(PREVIOUS, slot));
        }
    }

    /// Points `hash` at `new`, replacing what it pointed at before.
    fn set_hash(&mut self, hash: &TokenHash, new: Tag) {
        let h = self.hash(hash);
        let Maps {
            by_hash,
            entries,
            retired,
            ..
        } = self;
        let hashes = Hashes { entries, retired };
        by_hash.set(h, |t| hashes.of(t) == Some(hash), new);
    }

    /// Takes `hash` out of the table if it still stands for `expected`.
    fn remove_hash(&mut self, hash: &TokenHash, expected: Tag) {
        let h = self.hash(hash);
        self.by_hash.remove(h, |t| t == expected);
    }
}

/// The shared index.
#[derive(Default)]
pub struct Index {
    maps: RwLock<Maps>,
    /// Keys read at start-up, waiting to be filed by id.
    loading: Vec<(KeyId, u32)>,
    /// Notified after every committed change, so the scheduler sees new and changed keys.
    pub changed: tokio::sync::Notify,
}

impl Index {
    /// An empty index with room for `keys` keys, filled by [`Index::add_loaded`].
    pub fn with_capacity(keys: usize) -> Self {
        let mut maps = Maps::default();
        maps.entries.reserve_exact(keys);
        maps.usage_rows.reserve_exact(keys);
        maps.by_hash.reserve(keys);
        Index {
            maps: RwLock::new(maps),
            loading: Vec::with_capacity(keys),
            changed: tokio::sync::Notify::new(),
        }
    }

    /// The policy keys read at start-up are evaluated against, so that putting the same
    /// policy in force afterwards does not evaluate every key a second time.
    pub fn use_policy_while_loading(&mut self, policy: Arc<Policy>) {
        self.maps
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .policy = policy;
    }

    /// Adds a key read from the store at start-up; false (and not added) when its id does
    /// not have a key id's shape. Call [`Index::finish_loading`] after the last one.
    pub fn add_loaded(&mut self, record: KeyRecord, usage: UsageRecord, row: UsageRow) -> bool {
        let Some(id) = key_id(&record.id) else {
            return false;
        };
        let maps = self.maps.get_mut().unwrap_or_else(|e| e.into_inner());
        match maps.push(id, record, UsageCounters::from_record(&usage)) {
            Some(slot) => {
                maps.usage_rows[slot].store(row.to_bits(), Ordering::Relaxed);
                self.loading.push((id, slot as u32));
                true
            }
            None => false,
        }
    }

    /// Files the loaded keys by id. Building the ordered map once from all of them (sorted,
    /// then built in bulk) costs a fraction of inserting them one by one in random order.
    pub fn finish_loading(&mut self) {
        let loaded = std::mem::take(&mut self.loading);
        let maps = self.maps.get_mut().unwrap_or_else(|e| e.into_inner());
        if maps.by_id.is_empty() {
            maps.by_id = loaded.into_iter().collect();
        } else {
            maps.by_id.extend(loaded);
        }
    }

    /// Adds the retired token hashes read from the store at start-up.
    pub fn add_retired(&mut self, retired: RetiredHashes) {
        let maps = self.maps.get_mut().unwrap_or_else(|e| e.into_inner());
        maps.retired.reserve(retired.len());
        for (hash, key_id) in retired {
            maps.retire(hash, key_id);
        }
    }

    #[cfg(test)]
    /// An index of the keys loaded at start-up.
    pub fn from_loaded(keys: Vec<(KeyRecord, UsageRecord)>, retired: RetiredHashes) -> Self {
        let mut index = Index::with_capacity(keys.len());
        for (record, usage) in keys {
            index.add_loaded(record, usage, UsageRow::UNKNOWN);
        }
        index.finish_loading();
        index.add_retired(retired);
        index
    }

    /// For verify and listing: held only while the maps are read.
    pub fn read(&self) -> RwLockReadGuard<'_, Maps> {
        // A panic while holding the lock cannot leave the maps half-updated (each update
        // is a few infallible inserts), so a poisoned lock is still safe to use.
        self.maps.read().unwrap_or_else(|e| e.into_inner())
    }

    /// For the writer thread only, after a commit.
    pub fn write(&self) -> RwLockWriteGuard<'_, Maps> {
        self.maps.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The slots of every key whose usage changed since the last call, marked clean. A
    /// verify after that marks its key again, so no count is missed (at worst a key is
    /// written twice).
    ///
    /// In slot order, on purpose: that is the order keys were loaded in, the store's row
    /// order, so a flush rewrites neighbouring rows together. Sorted by id instead (the
    /// order of the store's id index, to spare its page reads), the rows written were
    /// scattered and a stop that wrote a million keys' usage took 24 s instead of 4.6 s.
    pub fn take_dirty(&self) -> Vec<u32> {
        let maps = self.read();
        let mut slots = Vec::new();
        for (n, word) in maps.dirty.iter().enumerate() {
            if word.load(Ordering::Relaxed) == 0 {
                continue;
            }
            let mut bits = word.swap(0, Ordering::AcqRel);
            while bits != 0 {
                slots.push((n * 64) as u32 + bits.trailing_zeros());
                bits &= bits - 1;
            }
        }
        // Counts are read (`usage_of`) only after every word was cleared: see
        // `Maps::count_uses`.
        std::sync::atomic::fence(Ordering::SeqCst);
        slots
    }

    /// The usage of these keys (from [`Index::take_dirty`]), with where each is stored.
    pub fn usage_of(&self, slots: &[u32]) -> Vec<UsageWrite> {
        let maps = self.read();
        slots
            .iter()
            .filter_map(|&slot| {
                let entry = maps.entries.get(slot as usize)?;
                let row = maps.usage_rows.get(slot as usize)?.load(Ordering::Relaxed);
                Some(UsageWrite {
                    slot,
                    id: entry.id().to_owned(),
                    usage: entry.usage.snapshot(),
                    row: UsageRow::from_bits(row),
                })
            })
            .collect()
    }

    /// Remembers where a key's usage row is, learned by writing it.
    pub fn remember_usage_row(&self, slot: u32, row: UsageRow) {
        if let Some(cell) = self.read().usage_rows.get(slot as usize) {
            cell.store(row.to_bits(), Ordering::Relaxed);
        }
    }

    /// Marks keys dirty again: their flush failed or was cut short.
    pub fn requeue(&self, slots: &[u32]) {
        let maps = self.read();
        for &slot in slots {
            maps.set_dirty_bit(slot);
        }
    }

    /// Puts a new policy in force: new and changed keys use it at once, and every existing
    /// key's times are recomputed under the read lock (verify is never stalled for it).
    pub fn set_policy(&self, policy: Arc<Policy>) {
        {
            let mut maps = self.write();
            if *maps.policy == *policy {
                // Same rules (a reload, or only comments changed): every key's times stand.
                return;
            }
            maps.policy = policy.clone();
        }
        let maps = self.read();
        for entry in maps.entries() {
            entry.policy.set(policy.times(entry));
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> Arc<Policy> {
        self.read().policy.clone()
    }

    /// Keys by state at `now`.
    pub fn counts(&self, now: i64) -> authenta_client::proto::KeyCounts {
        let maps = self.read();
        let mut counts = authenta_client::proto::KeyCounts::default();
        for entry in maps.entries() {
            counts.total += 1;
            match entry.state(now) {
                KeyState::Active => counts.active += 1,
                KeyState::Revoked => counts.revoked += 1,
                KeyState::Expired => counts.expired += 1,
            }
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::{generate_key_id, generate_token, hash_token, start_of};
    use ring::rand::SystemRandom;

    fn record(rng: &SystemRandom, n: usize) -> KeyRecord {
        let token = generate_token(rng).expect("rng").to_string();
        KeyRecord {
            id: generate_key_id(rng).expect("rng"),
            token_hash: hash_token(&token),
            name: format!("key-{n}"),
            start: start_of(&token),
            permissions: Permissions::default(),
            environment: Some(if n % 2 == 0 { "production" } else { "staging" }.into()),
            created_at: n as i64,
            rotated_at: None,
            expires_at: None,
            revoked_at: None,
            revoke_reason: None,
            grace: None,
        }
    }

    #[test]
    fn every_key_is_found_by_hash_and_id_after_the_table_grows() {
        let rng = SystemRandom::new();
        let records: Vec<KeyRecord> = (0..5_000).map(|n| record(&rng, n)).collect();
        // Start small, so that the tables grow (and rehash) many times.
        let index = Index::with_capacity(1);
        {
            let mut maps = index.write();
            for r in &records {
                maps.upsert(r.clone());
            }
        }
        let maps = index.read();
        for r in &records {
            let Some(Hit::Current(found)) = maps.by_hash(&r.token_hash) else {
                panic!("{} not found by hash", r.id);
            };
            assert_eq!(found.to_record(), *r);
            assert_eq!(maps.by_id(&r.id).map(|e| e.to_record()), Some(r.clone()));
        }
        assert!(maps.by_hash(&[7u8; 32]).is_none());
        // One shared copy per environment label.
        assert_eq!(maps.environments.len(), 2);
    }

    #[test]
    fn a_new_version_keeps_usage_and_moves_the_hashes() {
        let rng = SystemRandom::new();
        let old = record(&rng, 1);
        let index = Index::from_loaded(
            vec![(
                old.clone(),
                UsageRecord {
                    verifications: 3,
                    allowed: 2,
                    denied: 1,
                    last_used_at: Some(9),
                },
            )],
            vec![],
        );
        let mut new = record(&rng, 2);
        new.id = old.id.clone();
        new.grace = Some(Grace {
            token_hash: old.token_hash,
            until: 100,
        });
        index.write().upsert(new.clone());
        let maps = index.read();
        assert!(matches!(
            maps.by_hash(&new.token_hash),
            Some(Hit::Current(_))
        ));
        let Some(Hit::Previous(previous)) = maps.by_hash(&old.token_hash) else {
            panic!("the replaced token is not the previous one");
        };
        assert_eq!(previous.usage.snapshot().verifications, 3);
        assert_eq!(maps.entries().count(), 1);
        drop(maps);
        // Retiring a hash that is some key's token takes it over.
        index.write().retire(new.token_hash, Some(new.id.clone()));
        assert!(matches!(
            index.read().by_hash(&new.token_hash),
            Some(Hit::Retired(Some(id))) if id == new.id
        ));
    }

    #[test]
    fn a_flush_takes_each_used_key_once_and_failures_come_back() {
        let rng = SystemRandom::new();
        let records: Vec<_> = (0..200)
            .map(|n| (record(&rng, n), UsageRecord::default()))
            .collect();
        let hashes: Vec<TokenHash> = records.iter().map(|(r, _)| r.token_hash).collect();
        let index = Index::from_loaded(records, vec![]);
        let use_key = |n: usize| {
            let maps = index.read();
            let Some(Hit::Current(key)) = maps.by_hash(&hashes[n]) else {
                panic!("key {n} not found");
            };
            maps.count_uses(&[Some(KeyUse { key, allowed: true })], 5);
        };
        for n in [3, 64, 199, 3] {
            use_key(n);
        }
        let mut taken = index.take_dirty();
        taken.sort_unstable();
        assert_eq!(taken, vec![3, 64, 199]);
        assert!(index.take_dirty().is_empty());
        let usage = index.usage_of(&taken);
        assert_eq!(usage[0].usage.verifications, 2);
        index.requeue(&taken[1..]);
        use_key(7);
        let mut again = index.take_dirty();
        again.sort_unstable();
        assert_eq!(again, vec![7, 64, 199]);
    }

    #[test]
    fn an_entry_stays_small() {
        // A million of these, plus the tables, must stay well under 300 MiB.
        assert_eq!(std::mem::size_of::<Entry>(), 192);
    }

    #[test]
    fn an_entry_keeps_what_verify_reads_in_two_lines() {
        use std::mem::{align_of, offset_of, size_of};
        assert_eq!(align_of::<Entry>(), 64);
        let line = |offset: usize, size: usize| (offset / 64, (offset + size - 1) / 64);
        // Every field `verify::decide` and the answer read, and their extent.
        let read = [
            line(offset_of!(Entry, token_hash), size_of::<TokenHash>()),
            line(offset_of!(Entry, id), size_of::<KeyId>()),
            line(offset_of!(Entry, permissions), size_of::<Permissions>()),
            line(offset_of!(Entry, environment), 8),
            line(offset_of!(Entry, usage), size_of::<UsageCounters>()),
            line(offset_of!(Entry, expires_at), 8),
            line(offset_of!(Entry, revoked_at), 8),
            line(
                offset_of!(Entry, policy) + offset_of!(PolicyCell, expires_at),
                8,
            ),
            line(
                offset_of!(Entry, policy) + offset_of!(PolicyCell, rotate_by),
                8,
            ),
            line(
                offset_of!(Entry, policy) + offset_of!(PolicyCell, warn_from),
                8,
            ),
        ];
        for (first, last) in read {
            assert!(
                first <= 1 && last <= 1,
                "a field verify reads is past line 1"
            );
        }
        // And `Maps::prefetch_entry` asks for those two lines.
        assert_eq!(offset_of!(Entry, token_hash) / 64, 0);
        assert_eq!(offset_of!(Entry, usage) / 64, 1);
    }

    #[test]
    fn listing_pages_in_id_order_from_any_cursor() {
        let rng = SystemRandom::new();
        let records: Vec<_> = (0..50)
            .map(|n| (record(&rng, n), UsageRecord::default()))
            .collect();
        let mut ids: Vec<String> = records.iter().map(|(r, _)| r.id.clone()).collect();
        ids.sort();
        let index = Index::from_loaded(records, vec![]);
        let maps = index.read();
        let listed = |after: Option<&str>| -> Vec<String> {
            maps.entries_after(after)
                .map(|e| e.id().to_owned())
                .collect()
        };
        assert_eq!(listed(None), ids);
        assert_eq!(listed(Some(&ids[9])), ids[10..]);
        // A cursor that is no key's id, shorter or longer than ids.
        assert_eq!(listed(Some("key_")), ids);
        assert_eq!(listed(Some("")), ids);
        let longer = format!("{}z", ids[9]);
        assert_eq!(listed(Some(&longer)), ids[10..]);
        assert_eq!(listed(Some("zzz")), Vec::<String>::new());
    }
}
