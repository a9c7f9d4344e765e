//! The in-memory verify index: every key by token hash and by id, with live usage counters.
//!
//! Verify reads it under a read lock held for a few hash-map operations, never across I/O.
//! Only the writer thread takes the write lock, after a commit, so once an admin write is
//! acknowledged every later verify sees it.

use crate::key::{KeyRecord, RetiredHashes, UsageRecord};
use crate::policy::{KeyTimes, Policy};
use crate::token::TokenHash;
use authenta_client::proto::{KeyInfo, KeyState, Usage};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Live verify counts of one key; shared by every version of its record.
#[derive(Debug, Default)]
pub struct UsageCounters {
    verifications: AtomicU64,
    allowed: AtomicU64,
    denied: AtomicU64,
    /// Unix milliseconds; 0 when never used.
    last_used_at: AtomicI64,
    /// Changed since the last flush to the store.
    dirty: AtomicBool,
}

impl UsageCounters {
    fn from_record(record: &UsageRecord) -> Self {
        UsageCounters {
            verifications: AtomicU64::new(record.verifications),
            allowed: AtomicU64::new(record.allowed),
            denied: AtomicU64::new(record.denied),
            last_used_at: AtomicI64::new(record.last_used_at.unwrap_or(0)),
            dirty: AtomicBool::new(false),
        }
    }

    /// Counts one verify of this key; true when the key just became dirty (so the caller
    /// queues it for the next flush).
    pub fn record(&self, allowed: bool, now: i64) -> bool {
        self.verifications.fetch_add(1, Ordering::Relaxed);
        if allowed {
            self.allowed.fetch_add(1, Ordering::Relaxed);
        } else {
            self.denied.fetch_add(1, Ordering::Relaxed);
        }
        self.last_used_at.fetch_max(now, Ordering::Relaxed);
        !self.dirty.load(Ordering::Relaxed) && !self.dirty.swap(true, Ordering::AcqRel)
    }

    /// The counts now.
    pub fn snapshot(&self) -> UsageRecord {
        let last = self.last_used_at.load(Ordering::Relaxed);
        UsageRecord {
            verifications: self.verifications.load(Ordering::Relaxed),
            allowed: self.allowed.load(Ordering::Relaxed),
            denied: self.denied.load(Ordering::Relaxed),
            last_used_at: (last > 0).then_some(last),
        }
    }
}

/// What the policy in force means for one key; updated in place when the policy changes,
/// so verify reads it without another lookup. `NONE` means "not set".
#[derive(Debug)]
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

/// One key as the index holds it.
#[derive(Debug)]
pub struct Entry {
    pub record: KeyRecord,
    pub usage: Arc<UsageCounters>,
    pub policy: PolicyCell,
}

impl Entry {
    /// The key's state at `now`, counting the policy's maximum age.
    pub fn state(&self, now: i64) -> KeyState {
        match self.record.state(now) {
            KeyState::Active if self.policy.expires_at().is_some_and(|at| at <= now) => {
                KeyState::Expired
            }
            state => state,
        }
    }

    /// The key as listed: live usage, never the token.
    pub fn info(&self, now: i64) -> KeyInfo {
        let usage = self.usage.snapshot();
        let r = &self.record;
        KeyInfo {
            id: r.id.clone(),
            name: r.name.clone(),
            start: r.start.clone(),
            permissions: r.permissions.to_list(),
            environment: r.environment.clone(),
            state: self.state(now),
            created_at: r.created_at,
            rotated_at: r.rotated_at,
            last_used_at: usage.last_used_at,
            expires_at: r.expires_at,
            rotate_by: self.policy.rotate_by(),
            rotation_due: self.policy.rotation_due(now),
            revoked_at: r.revoked_at,
            grace_until: r
                .grace
                .as_ref()
                .map(|g| g.until)
                .filter(|&until| until > now),
            usage: Usage {
                verifications: usage.verifications,
                allowed: usage.allowed,
                denied: usage.denied,
            },
        }
    }
}

/// Which of a key's tokens a hash is.
#[derive(Debug, Clone)]
pub enum Hit {
    /// The key's current token.
    Current(Arc<Entry>),
    /// The token a regenerate replaced, valid until the entry's grace ends.
    Previous(Arc<Entry>),
    /// A token that must never verify again: replaced, or revoked by its hash. The key it
    /// belonged to, when known.
    Retired(Option<String>),
}

#[derive(Default)]
pub struct Maps {
    /// The policy in force: every entry's `PolicyCell` reflects it.
    policy: Arc<Policy>,
    /// Keyed with a per-process random seed (foldhash), so a client grinding tokens cannot
    /// aim their SHA-256 at one bucket; several times cheaper than SipHash per lookup.
    by_hash: HashMap<TokenHash, Hit, foldhash::quality::RandomState>,
    /// Ordered, so that listing can page by key id.
    by_id: BTreeMap<String, Arc<Entry>>,
}

impl Maps {
    /// The key a token hash belongs to.
    pub fn by_hash(&self, hash: &TokenHash) -> Option<&Hit> {
        self.by_hash.get(hash)
    }

    /// The key with this id.
    pub fn by_id(&self, id: &str) -> Option<&Arc<Entry>> {
        self.by_id.get(id)
    }

    /// Every key, in key-id order.
    pub fn entries(&self) -> impl Iterator<Item = &Arc<Entry>> {
        self.by_id.values()
    }

    /// Keys with ids after `after` (all when `None`), in key-id order.
    pub fn entries_after(&self, after: Option<&str>) -> impl Iterator<Item = &Arc<Entry>> {
        use std::ops::Bound;
        let start = match after {
            Some(id) => Bound::Excluded(id.to_owned()),
            None => Bound::Unbounded,
        };
        self.by_id
            .range::<String, _>((start, Bound::Unbounded))
            .map(|(_, entry)| entry)
    }

    /// Puts in a new version of a key, keeping its usage counters.
    pub fn upsert(&mut self, record: KeyRecord) {
        let usage = match self.by_id.get(&record.id) {
            Some(old) => {
                let old = old.clone();
                self.forget_hashes(&old.record);
                old.usage.clone()
            }
            None => Arc::new(UsageCounters::default()),
        };
        self.insert(record, usage);
    }

    /// Marks a token hash as never valid again.
    pub fn retire(&mut self, hash: TokenHash, key_id: Option<String>) {
        self.by_hash.insert(hash, Hit::Retired(key_id));
    }

    fn insert(&mut self, record: KeyRecord, usage: Arc<UsageCounters>) {
        let entry = self.insert_hashes(record, usage);
        self.by_id.insert(entry.record.id.clone(), entry);
    }

    /// Makes the entry and puts its token hashes in; the caller files it by id.
    fn insert_hashes(&mut self, record: KeyRecord, usage: Arc<UsageCounters>) -> Arc<Entry> {
        let policy = PolicyCell::new(self.policy.times(&record));
        let entry = Arc::new(Entry {
            record,
            usage,
            policy,
        });
        self.by_hash
            .insert(entry.record.token_hash, Hit::Current(entry.clone()));
        if let Some(grace) = &entry.record.grace {
            self.by_hash
                .insert(grace.token_hash, Hit::Previous(entry.clone()));
        }
        entry
    }

    fn forget_hashes(&mut self, record: &KeyRecord) {
        self.by_hash.remove(&record.token_hash);
        if let Some(grace) = &record.grace {
            self.by_hash.remove(&grace.token_hash);
        }
    }
}

/// The shared index.
#[derive(Default)]
pub struct Index {
    maps: RwLock<Maps>,
    /// Keys used since the last usage flush, queued by the verify that made them dirty, so a
    /// flush visits only those rather than every key under the read lock.
    dirty: Mutex<Vec<Arc<Entry>>>,
    /// Keys read at start-up, waiting to be filed by id.
    loading: Vec<(String, Arc<Entry>)>,
    /// Notified after every committed change, so the scheduler sees new and changed keys.
    pub changed: tokio::sync::Notify,
}

impl Index {
    /// An empty index with room for `keys` keys, filled by [`Index::add_loaded`].
    pub fn with_capacity(keys: usize) -> Self {
        let mut maps = Maps::default();
        maps.by_hash.reserve(keys);
        Index {
            maps: RwLock::new(maps),
            dirty: Mutex::default(),
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

    /// Adds a key read from the store at start-up.
    /// Call [`Index::finish_loading`] after the last one.
    pub fn add_loaded(&mut self, record: KeyRecord, usage: UsageRecord) {
        let maps = self.maps.get_mut().unwrap_or_else(|e| e.into_inner());
        let entry = maps.insert_hashes(record, Arc::new(UsageCounters::from_record(&usage)));
        self.loading.push((entry.record.id.clone(), entry));
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
        maps.by_hash.reserve(retired.len());
        for (hash, key_id) in retired {
            maps.retire(hash, key_id);
        }
    }

    /// An index of the keys loaded at start-up.
    pub fn from_loaded(keys: Vec<(KeyRecord, UsageRecord)>, retired: RetiredHashes) -> Self {
        let mut index = Index::with_capacity(keys.len());
        for (record, usage) in keys {
            index.add_loaded(record, usage);
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

    /// Queues a key whose usage just changed for the next flush.
    pub fn queue_dirty(&self, entry: &Arc<Entry>) {
        self.dirty
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(entry.clone());
    }

    /// Usage of every key changed since the last call, marked clean. A verify after the
    /// key is marked clean dirties and queues it again, so no count is missed.
    pub fn take_dirty_usage(&self) -> Vec<(String, UsageRecord)> {
        let queued = std::mem::take(&mut *self.dirty.lock().unwrap_or_else(|e| e.into_inner()));
        queued
            .iter()
            .map(|entry| {
                entry.usage.dirty.store(false, Ordering::Release);
                (entry.record.id.clone(), entry.usage.snapshot())
            })
            .collect()
    }

    /// Marks usage dirty again after a flush that failed.
    pub fn mark_dirty(&self, ids: &[String]) {
        let maps = self.read();
        for id in ids {
            if let Some(entry) = maps.by_id(id) {
                if !entry.usage.dirty.swap(true, Ordering::AcqRel) {
                    self.queue_dirty(entry);
                }
            }
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
            entry.policy.set(policy.times(&entry.record));
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
