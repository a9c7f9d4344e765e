//! The in-memory verify index: every key by token hash and by id, with live usage counters.
//!
//! Verify reads it under a read lock held for a few memory reads, never across I/O. Only the
//! writer thread takes the write lock, after a commit, so once an admin write is acknowledged
//! every later verify sees it.
//!
//! The layout is chosen for a million keys in under 200 MiB and few cache misses per
//! verify. Every key is one fixed-size `Entry` (`entry.rs`) in a slab (a `Vec`; keys are
//! never removed, a revoked key stays to answer `revoked`), with its usage counters and the
//! place of its policy rule inline (its policy times are derived from that at verify), its
//! name inline up to 24 bytes. What fewer keys have (owner, metadata, limits) is an `Extra`,
//! boxed, in a second `Vec` by the same slot, so that its address is known as soon as the
//! slot is. The token-hash table holds 4-byte slot numbers tagged with which token of the
//! key they are; the hash itself is read from the entry when a probe matches or the table
//! grows. Key ids are a sorted list of slots (`id_order.rs`), so listing pages in id order
//! and an id is found by binary search.

mod entry;
mod id_order;
pub(crate) mod limits;
mod maps;
pub(crate) mod remote_usage;
pub(crate) mod tag_table;
pub(crate) mod verify;

pub use entry::{Hit, KeyUse};
pub use maps::{LookupKey, Maps, RUN_MAX};

use crate::key::{KeyRecord, RetiredHashes, UsageRecord, UsageRow};
use crate::policy::Policy;
use crate::token::TokenHash;
use authenta_client::proto::KeyState;
use entry::{key_id, UsageCounters};
use id_order::IdOrder;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// One key's usage on its way to the store, from a flush.
#[derive(Debug, Clone)]
pub struct UsageWrite {
    pub slot: u32,
    pub id: String,
    pub usage: UsageRecord,
    /// Where the row is, if known.
    pub row: UsageRow,
}

/// The shared index.
#[derive(Default)]
pub struct Index {
    maps: RwLock<Maps>,
    /// A key read at start-up went out of id order: sort them all once the last is read.
    loaded_unsorted: bool,
    /// Notified after every committed change, so the scheduler sees new and changed keys.
    pub changed: tokio::sync::Notify,
    /// Fleet mode: the other nodes' usage of each key.
    pub remote_usage: remote_usage::RemoteUsage,
    /// When the newest audit entry was made (unix ms; 0: none), for `status`: a store
    /// rolled back whole shows an older time than the operator expects.
    pub newest_audit_at: std::sync::atomic::AtomicI64,
}

impl Index {
    /// An empty index with room for `keys` keys, filled by [`Index::add_loaded`].
    pub fn with_capacity(keys: usize) -> Self {
        let mut maps = Maps::default();
        maps.entries.reserve_exact(keys);
        maps.cold.reserve_exact(keys);
        maps.usage_rows.reserve_exact(keys);
        maps.by_hash.reserve(keys);
        maps.by_id = IdOrder::with_capacity(keys);
        Index {
            maps: RwLock::new(maps),
            loaded_unsorted: false,
            changed: tokio::sync::Notify::new(),
            remote_usage: Default::default(),
            newest_audit_at: Default::default(),
        }
    }

    /// The policy keys read at start-up are evaluated against, so that putting the same
    /// policy in force afterwards does not evaluate every key a second time.
    pub fn use_policy_while_loading(&mut self, policy: Arc<Policy>) {
        self.maps
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .put_policy(policy);
    }

    /// Adds a key read from the store at start-up; false (and not added) when its id does
    /// not have a key id's shape. Call [`Index::finish_loading`] after the last one.
    pub fn add_loaded(&mut self, mut record: KeyRecord, usage: UsageRecord, row: UsageRow) -> bool {
        self.add_loaded_from(&mut record, &usage, row)
    }

    /// [`Index::add_loaded`], taking out of `record` only what the index keeps: what is
    /// left (its strings) is the caller's to drop, on the thread that made it.
    pub fn add_loaded_from(
        &mut self,
        record: &mut KeyRecord,
        usage: &UsageRecord,
        row: UsageRow,
    ) -> bool {
        let Some(id) = key_id(&record.id) else {
            return false;
        };
        let maps = self.maps.get_mut().unwrap_or_else(|e| e.into_inner());
        let counters = UsageCounters::from_record(usage);
        let limited = record.details.ratelimit.is_some() || record.details.credits.is_some();
        match maps.push(id, record, counters, None, usage.limits) {
            Some(slot) => {
                maps.usage_rows[slot].store(row.to_bits(), Ordering::Relaxed);
                if limited && row == UsageRow::UNKNOWN {
                    // Its row is unknown, or missing (and its limits resumed spent): the
                    // first flush writes what it holds, so that a restart resumes that.
                    maps.set_dirty_bit(slot as u32);
                }
                if self.loaded_unsorted {
                    maps.by_id.push_unsorted(slot as u32);
                } else if !maps.by_id.push_loaded(&maps.entries, slot as u32) {
                    self.loaded_unsorted = true;
                }
                true
            }
            None => false,
        }
    }

    /// Asks the CPU for the token-hash table's bucket that adding the key of `token_hash`
    /// will write: at start-up a million inserts each miss the cache otherwise.
    pub fn prefetch_loading(&mut self, token_hash: &[u8]) {
        if let Ok(token_hash) = TokenHash::try_from(token_hash) {
            let maps = self.maps.get_mut().unwrap_or_else(|e| e.into_inner());
            maps.prefetch_bucket(&maps.lookup_key(token_hash));
        }
    }

    /// Puts the keys read at start-up in id order, if they did not come in it, once the
    /// last is loaded.
    pub fn finish_loading(&mut self) {
        if std::mem::take(&mut self.loaded_unsorted) {
            let maps = self.maps.get_mut().unwrap_or_else(|e| e.into_inner());
            maps.by_id.sort(&maps.entries);
        }
    }

    /// Adds the owners read from the store at start-up, before the keys that name them.
    pub fn add_owners(&mut self, owners: Vec<(crate::key::OwnerRecord, crate::key::OwnerUsage)>) {
        let maps = self.maps.get_mut().unwrap_or_else(|e| e.into_inner());
        for (owner, usage) in owners {
            maps.upsert_owner(&owner, &usage);
            // Written back at the first flush: an owner whose stored usage was lost (and
            // resumed spent) gets it again, so that a restart resumes where it stands. A
            // row each, for the few owners with limits.
            if let Some(loaded) = maps.owners.get(owner.id.as_str()) {
                if loaded.ratelimit.is_some() || loaded.credits.is_some() {
                    loaded.touch();
                }
            }
        }
    }

    /// Where the limits of every owner whose limits moved since the last call stand, for
    /// the usage flush; [`Index::requeue_owners`] if writing them fails.
    pub fn take_owner_usage(&self) -> Vec<(String, crate::key::OwnerUsage)> {
        let maps = self.read();
        maps.owners
            .values()
            .filter_map(|o| o.take_usage().map(|usage| (o.id.to_string(), usage)))
            .collect()
    }

    /// Marks owners' limits as moved again: their flush failed.
    pub fn requeue_owners(&self, ids: &[String]) {
        let maps = self.read();
        for id in ids {
            if let Some(owner) = maps.owners.get(id.as_str()) {
                owner.requeue();
            }
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

    /// Every key as the store holds it (its record, its usage, where its usage row is), in
    /// slot order, which is the order start-up filed them in.
    pub fn for_each_stored(
        &self,
        mut each: impl FnMut(KeyRecord, UsageRecord, UsageRow) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let maps = self.read();
        for key in maps.entries() {
            let row = maps
                .usage_rows
                .get(key.slot as usize)
                .map_or(0, |row| row.load(Ordering::Relaxed));
            each(
                key.to_record(),
                key.usage_record(),
                UsageRow::from_bits(row),
            )?;
        }
        Ok(())
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
                let entry = maps.found(slot as usize)?;
                let row = maps.usage_rows.get(slot as usize)?.load(Ordering::Relaxed);
                Some(UsageWrite {
                    slot,
                    id: entry.id().to_owned(),
                    usage: entry.usage_record(),
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
        let generation = {
            let mut maps = self.write();
            if *maps.policy == *policy {
                // Same rules (a reload, or only comments changed): every key's times stand.
                return;
            }
            maps.put_policy(policy.clone());
            maps.policy_generation
        };
        // Under the read lock, so verify goes on: until its cell is set here, a key's rule
        // is looked up afresh.
        let maps = self.read();
        if maps.policy_generation != generation || !Arc::ptr_eq(&maps.policy, &policy) {
            // Another change came in meanwhile: its own pass files every key.
            return;
        }
        // A policy reads nothing from a key's extras.
        for (entry, cold) in maps.entries.iter().zip(&maps.cold) {
            let facts = entry::Facts { entry, cold };
            entry.rule.set(generation, policy.rule_index(&facts));
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
        for key in maps.entries() {
            counts.total += 1;
            match key.state(now) {
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
    use super::entry::Entry;
    use super::*;
    use crate::key::{Grace, Permissions};
    use crate::token::TokenHash;
    use crate::token::{generate_key_id, generate_token, hash_token, start_of};
    use ring::rand::SystemRandom;

    fn record(rng: &SystemRandom, n: usize) -> KeyRecord {
        let token = generate_token(rng).expect("rng").to_string();
        KeyRecord {
            id: generate_key_id(rng, 1_765_000_000_000).expect("rng"),
            token_hash: hash_token(&token),
            name: format!("key-{n}"),
            start: start_of(&token),
            permissions: Permissions::default(),
            environment: Some(
                if n.is_multiple_of(2) {
                    "production"
                } else {
                    "staging"
                }
                .into(),
            ),
            created_at: n as i64,
            rotated_at: None,
            expires_at: None,
            revoked_at: None,
            revoke_reason: None,
            grace: None,
            details: Default::default(),
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
    fn extras_come_and_go_with_the_versions_of_a_key() {
        let rng = SystemRandom::new();
        // Keys on both sides of a 64-slot word of the extras' bits.
        let records: Vec<KeyRecord> = (0..130).map(|n| record(&rng, n)).collect();
        let index = Index::with_capacity(1);
        let owned = |r: &KeyRecord| {
            let mut r = r.clone();
            r.details.owner_id = Some(format!("owner-{}", r.name));
            r
        };
        {
            let mut maps = index.write();
            for (n, r) in records.iter().enumerate() {
                maps.upsert(if n % 3 == 0 { owned(r) } else { r.clone() });
            }
            // Every key changes its mind: those with an owner lose it, the others gain one.
            for (n, r) in records.iter().enumerate() {
                maps.upsert(if n % 3 == 0 { r.clone() } else { owned(r) });
            }
        }
        let maps = index.read();
        for (n, r) in records.iter().enumerate() {
            let found = maps.by_id(&r.id).expect("found");
            let by_hash = match maps.by_hash(&r.token_hash) {
                Some(Hit::Current(found)) => found,
                _ => panic!("{} not found by hash", r.id),
            };
            let expected = (n % 3 != 0).then(|| format!("owner-{}", r.name));
            assert_eq!(found.owner_id(), expected.as_deref(), "key {n}");
            assert_eq!(by_hash.owner_id(), expected.as_deref(), "key {n}");
            assert_eq!(found.extra().is_some(), n % 3 != 0, "key {n}");
        }
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
                    limits: Default::default(),
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
    fn an_extras_limits_and_owner_come_first() {
        use super::entry::Extra;
        use std::mem::{offset_of, size_of};
        let end_of_credits = offset_of!(Extra, credits) + size_of::<Option<limits::Balance>>();
        eprintln!(
            "extra {} bytes; limits and owner end at {end_of_credits}",
            size_of::<Extra>()
        );
        assert_eq!(offset_of!(Extra, owner), 0);
        assert_eq!(offset_of!(Extra, meta), 8);
        assert!(offset_of!(Extra, ratelimit) < 64);
        // The two lines `Maps::prefetch_heap` asks for.
        assert!(end_of_credits <= 2 * 64);
    }

    #[test]
    fn an_entry_and_its_cold_part_stay_small() {
        // A million of these, plus the tables, must stay well under 300 MiB.
        assert_eq!(std::mem::size_of::<Entry>(), 128);
        assert_eq!(std::mem::size_of::<entry::Cold>(), 32);
    }

    #[test]
    fn an_entry_is_two_lines_wherever_it_is() {
        use std::mem::{align_of, offset_of, size_of};
        // Aligned to a line and two lines long: the two addresses `prefetch_two_lines`
        // asks for (0 and 64 bytes in) are the entry's two lines, whatever its slot.
        assert_eq!(align_of::<Entry>(), 64);
        assert_eq!(size_of::<Entry>(), 2 * 64);
        // The first line finds the key and says what it may do; a verify's answer and its
        // counting read the second.
        assert!(offset_of!(Entry, rule) + 4 <= 64);
        assert_eq!(offset_of!(Entry, usage), 64);
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

    #[test]
    fn keys_loaded_near_or_far_from_id_order_are_filed_in_it() {
        let rng = SystemRandom::new();
        let with_id = |n: usize, id: String| {
            let mut r = record(&rng, n);
            r.id = id;
            (r, UsageRecord::default())
        };
        // Ids from many keys made in one millisecond (a few places out of order), then
        // an older store's (far out of order: the last is the smallest).
        let near: Vec<_> = (0..300)
            .map(|n| with_id(n, format!("key_00000001{:08}", n / 10 * 10 + 9 - n % 10)))
            .collect();
        let far: Vec<_> = (0..300)
            .map(|n| with_id(300 + n, format!("key_0000000{:09}", 300 - n)))
            .collect();
        for records in [near.clone(), [near, far].concat()] {
            let mut ids: Vec<String> = records.iter().map(|(r, _)| r.id.clone()).collect();
            ids.sort();
            let index = Index::from_loaded(records, vec![]);
            let maps = index.read();
            let listed: Vec<String> = maps
                .entries_after(None)
                .map(|e| e.id().to_owned())
                .collect();
            assert_eq!(listed, ids);
            assert!(ids
                .iter()
                .all(|id| maps.by_id(id).is_some_and(|e| e.id() == id)));
        }
    }

    #[test]
    fn keys_added_one_by_one_in_any_id_order_are_found_and_listed_in_id_order() {
        let rng = SystemRandom::new();
        let index = Index::from_loaded(vec![], vec![]);
        // Ids in random order (older stores), then the same ids changed in place.
        let mut records: Vec<_> = (0..64).map(|n| record(&rng, n)).collect();
        for r in records.iter_mut() {
            r.id = format!(
                "key_{}",
                &hash_token(&r.name)[..16]
                    .iter()
                    .map(|b| char::from(b'a' + b % 26))
                    .collect::<String>()
            );
            index.write().upsert(r.clone());
        }
        for r in &records {
            let mut renamed = r.clone();
            renamed.name = format!("{}-again", r.name);
            index.write().upsert(renamed);
        }
        let maps = index.read();
        let mut ids: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
        ids.sort();
        let listed: Vec<String> = maps
            .entries_after(None)
            .map(|e| e.id().to_owned())
            .collect();
        assert_eq!(listed, ids, "one entry per key, in id order");
        for r in &records {
            let found = maps.by_id(&r.id).expect("found by id");
            assert_eq!(found.name(), format!("{}-again", r.name));
        }
        assert!(maps.by_id("key_zzzzzzzzzzzzzzzz").is_none());
    }
}
