//! Start-up's index: from the sealed snapshot the last clean stop wrote, when it copies the
//! store as it is, else from every key row, each checked against the audit chain.

use crate::index::Index;
use crate::key::{KeyRecord, UsageRecord, UsageRow};
use crate::store::{self, KeySink, RowCheck, Store};
use anyhow::{Context, Result};
use std::path::Path;
use std::sync::Arc;

/// The index start-up built, how many keys it holds, and the ids of those refused.
pub(super) type LoadedIndex = (Arc<Index>, usize, Vec<String>);

/// Reads every key from the store into a new index: the keys, how many, and the ids of
/// those whose rows did not open; and whether they came from the index snapshot the last
/// stop wrote. Without a snapshot that copies the store as it is, the rows are checked
/// against the audit chain as a whole first; only when some row differs are they read
/// again, one by one, to refuse that one.
pub(super) fn load_index(
    store: &Store,
    at_rest: store::index_snapshot::AtRest,
    policy_path: Option<&Path>,
    sinks: &crate::policy::SinkRules,
) -> Result<(LoadedIndex, bool)> {
    // Evaluate keys against the policy as they load; it is put in force (revocations
    // written, errors reported) once the daemon runs, without evaluating every key again.
    let policy = policy_path
        .and_then(|p| crate::daemon::policy_reload::read(p).ok())
        .filter(|p| sinks.check(p).is_ok())
        .map(Arc::new);
    let taken = match store.take_index_snapshot() {
        Ok(taken) => taken,
        Err(e) => {
            tracing::warn!(reason = %e, "the index snapshot was not read: reading every key row");
            store.warm_page_cache();
            None
        }
    };
    if let Some(taken) = taken {
        match load_index_from_snapshot(store, taken, at_rest, policy.clone()) {
            Ok(loaded) => {
                tracing::info!(
                    keys = loaded.1,
                    "index read from the snapshot the last stop wrote"
                );
                return Ok((loaded, true));
            }
            Err(e) => {
                tracing::warn!(
                    reason = %e,
                    "the index snapshot does not copy the store as it is: reading every key row"
                );
                // Not warmed before: the snapshot was to be read instead.
                store.warm_page_cache();
            }
        }
    }
    if let Some(loaded) = load_index_checked(store, policy.clone(), RowCheck::Whole)? {
        return Ok((loaded, false));
    }
    let loaded = load_index_checked(store, policy, RowCheck::EachRow)?
        .context("the key rows were read twice and still differ as a whole")?;
    Ok((loaded, false))
}

/// [`load_index`] with one way of checking rows; `None` when checking them as a whole
/// found that some row differs.
fn load_index_checked(
    store: &Store,
    policy: Option<Arc<crate::policy::Policy>>,
    check: RowCheck,
) -> Result<Option<LoadedIndex>> {
    // Keys go straight from the store into the index: no second copy of a large store.
    let mut index = Index::with_capacity(store.key_count_hint()?);
    if let Some(policy) = policy {
        index.use_policy_while_loading(policy);
    }
    // Owners before the keys that name them, so each key shares its owner's limits.
    index.add_owners(store.load_owners()?);
    let mut loader = Loader {
        index: &mut index,
        keys: 0,
    };
    let Some((corrupt, retired)) = store.load_each(check, &mut loader)? else {
        return Ok(None);
    };
    let key_count = loader.keys;
    index.finish_loading();
    index.add_retired(retired);
    Ok(Some((Arc::new(index), key_count, corrupt)))
}

/// Builds the index from the snapshot the last clean stop wrote
/// ([`store::index_snapshot`]); an error when it does not copy the store as it is now.
fn load_index_from_snapshot(
    store: &Store,
    taken: store::index_snapshot::TakenSnapshot,
    at_rest: store::index_snapshot::AtRest,
    policy: Option<Arc<crate::policy::Policy>>,
) -> Result<LoadedIndex> {
    let mut index = Index::with_capacity(store.key_count_hint()?);
    if let Some(policy) = policy {
        index.use_policy_while_loading(policy);
    }
    let mut filer = SnapshotFiler {
        index: &mut index,
        owners: Some(Vec::new()),
        keys: 0,
        retired: Vec::new(),
        refused: Vec::new(),
    };
    store.read_index_snapshot(taken, at_rest, |batch| {
        filer.file(batch);
        Ok(())
    })?;
    let SnapshotFiler {
        owners,
        keys,
        retired,
        refused,
        ..
    } = filer;
    if let Some(owners) = owners {
        index.add_owners(owners);
    }
    index.finish_loading();
    index.add_retired(retired);
    for id in &refused {
        tracing::error!(key_id = %id, "the key is refused until its row is restored (its row differed at an earlier start)");
    }
    Ok((Arc::new(index), keys, refused))
}

/// Files a snapshot's items into the index as they come.
struct SnapshotFiler<'a> {
    index: &'a mut Index,
    /// Owners come first; added before the first key that may name one.
    owners: Option<Vec<(crate::key::OwnerRecord, crate::key::OwnerUsage)>>,
    keys: usize,
    retired: crate::key::RetiredHashes,
    refused: Vec<String>,
}

impl SnapshotFiler<'_> {
    /// Keys this far ahead have their token-hash table bucket fetched before they are
    /// filed, as a start-up from the rows does.
    const AHEAD: usize = 4;

    /// Files a frame's items, taking out of them what the index keeps.
    fn file(&mut self, batch: &mut [store::index_snapshot::Item]) {
        use store::index_snapshot::Item;
        for n in 0..batch.len() {
            if let Some(Item::Key(ahead, ..)) = batch.get(n + Self::AHEAD) {
                self.index.prefetch_loading(&ahead.token_hash);
            }
            match &mut batch[n] {
                Item::Owner(owner, usage) => {
                    if let Some(owners) = &mut self.owners {
                        owners.push((owner.clone(), *usage));
                    }
                }
                Item::Key(record, usage, row) => {
                    if let Some(owners) = self.owners.take() {
                        self.index.add_owners(owners);
                    }
                    if self
                        .index
                        .add_loaded_from(record, usage, UsageRow::from_bits(*row))
                    {
                        self.keys += 1;
                    } else {
                        tracing::error!("a stored key without a key id's shape was skipped");
                    }
                }
                Item::Retired(hash, key_id) => self.retired.push((*hash, key_id.take())),
                Item::Refused(id) => self.refused.push(std::mem::take(id)),
                Item::End(_) => {}
            }
        }
    }
}

/// Files the keys start-up reads into the index, and counts them.
struct Loader<'a> {
    index: &'a mut Index,
    keys: usize,
}

impl KeySink for &mut Loader<'_> {
    fn coming(&mut self, token_hash: &[u8]) {
        self.index.prefetch_loading(token_hash);
    }

    fn add(&mut self, record: KeyRecord, usage: UsageRecord, row: UsageRow) {
        if self.index.add_loaded(record, usage, row) {
            self.keys += 1;
        } else {
            tracing::error!("a stored key without a key id's shape was skipped");
        }
    }
}
