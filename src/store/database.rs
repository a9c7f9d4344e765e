//! The encrypted SQLite store: schema, migrations, and reading and writing sealed rows.
//!
//! Only what lookups need is plaintext: key ids and SHA-256 token hashes. Names,
//! permissions, timestamps, usage and the audit log are sealed by the [`Barrier`], each
//! with its table and row as associated data. WAL with `synchronous=FULL` makes every
//! acknowledged commit survive `kill -9` and power loss. Only the writer thread
//! ([`crate::store::writer`]) holds a `Store` after start-up.

use crate::index::{limits, Index};
use crate::key::{KeyRecord, OwnerRecord, OwnerUsage, RetiredHashes, UsageRecord, UsageRow};
use crate::store::audit::{self, AuditRecord, ChainHead, ChainHeadV1};
use crate::store::barrier::{unwrap_data_key, wrap_data_key, Barrier, KeyBytes};
use crate::store::entry_set::EntrySet;
use crate::store::index_snapshot::{
    self, AtRest, Counts, Item, OwnWrites, SnapshotWriter, StoreNow, TakenSnapshot,
};
use crate::store::legacy;
use crate::store::locked_key::LockedKey;
use crate::store::record_codec::{from_bytes, to_bytes};
use crate::store::row_batch::{KeyRow, RowBatch};
use crate::store::row_binding::{BoundRows, RowBinding, RowSet, Verdict};
use crate::store::store_files::StoreFiles;
use crate::token::TokenHash;
use anyhow::{anyhow, bail, Context, Result};
use authenta_client::proto::{AuditEntry, AuditReport, ChainCheck};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "keys.db";

/// Schema versions, in order: `MIGRATIONS[n]` takes `user_version` n to n + 1.
const MIGRATIONS: &[&str] = &[
    // 0 -> 1: the first schema.
    "CREATE TABLE meta (name TEXT PRIMARY KEY, value BLOB NOT NULL);
     CREATE TABLE keys (id TEXT PRIMARY KEY, token_hash BLOB NOT NULL UNIQUE, sealed BLOB NOT NULL);
     CREATE TABLE usage (id TEXT PRIMARY KEY, sealed BLOB NOT NULL);
     CREATE TABLE audit (seq INTEGER PRIMARY KEY, sealed BLOB NOT NULL, link BLOB NOT NULL);
     CREATE TABLE retired (token_hash BLOB PRIMARY KEY, sealed BLOB NOT NULL);",
    // 1 -> 2: a fleet replica's position: each key's last stream sequence (sealed); and
    // audit entries that bind the key row their change wrote (its id and a digest).
    "CREATE TABLE fleet_keys (id TEXT PRIMARY KEY, sealed BLOB NOT NULL);
     ALTER TABLE audit ADD COLUMN key_id TEXT;
     ALTER TABLE audit ADD COLUMN row_digest BLOB;
     CREATE INDEX audit_by_key ON audit (key_id, seq);",
    // 2 -> 3: the index also covers each entry's row digest, so start-up reads every key's
    // last digest in one pass over the index, without a lookup per entry.
    "DROP INDEX audit_by_key;
     CREATE INDEX audit_by_key ON audit (key_id, seq, row_digest);",
    // 3 -> 4: owners (tenants) and the limits their keys share, with where those stood at
    // the last usage flush; the row id is a keyed hash of the owner id, which is sealed
    // like a key's name.
    "CREATE TABLE owners (id TEXT PRIMARY KEY, sealed BLOB NOT NULL, usage BLOB);",
    // 4 -> 5: no index of token hashes. Nothing looks a key up by its token hash here
    // (verify uses the in-memory index), and a token hash is the SHA-256 of a token with
    // 256 random bits, so the UNIQUE constraint's index only cost every create a write to
    // a random page of it (docs/performance.md has the figures). SQLite cannot drop a
    // constraint, so the table is copied, rowids and all (keys load in rowid order,
    // read side by side with their usage rows, and the key count hint is the largest).
    "CREATE TABLE keys_v5 (id TEXT PRIMARY KEY, token_hash BLOB NOT NULL, sealed BLOB NOT NULL);
     INSERT INTO keys_v5 (rowid, id, token_hash, sealed)
         SELECT rowid, id, token_hash, sealed FROM keys ORDER BY rowid;
     DROP TABLE keys;
     ALTER TABLE keys_v5 RENAME TO keys;",
    // 5 -> 6: no change to the tables. The audit chain's sealed head gains the sum of its
    // binding entries (`entry_set`), which start-up computes once for an older head; the
    // version tells older builds, which cannot read such a head, to refuse the store.
    "",
    // 6 -> 7: no change to the tables. An owner's row gets its usage when it is made, so
    // one without was emptied from outside (its limits resume spent); rows made before
    // get theirs once, at the first start (`Store::give_owners_their_usage`).
    "",
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

const META_DATA_KEY: &str = "data_key";
const META_AUDIT_HEAD: &str = "audit_head";
/// The token of the index snapshot the last stop wrote, until the next start.
const META_INDEX_SNAPSHOT: &str = "index_snapshot";
/// In fleet mode: the last stream sequence applied, and the fleet's data key as this node
/// last saw it (wrapped by the master key), to restore it should the stream lose it.
const META_FLEET_APPLIED: &str = "fleet_applied";
const META_FLEET_BOUND_SINCE: &str = "fleet_bound_since";
const META_FLEET_DATA_KEY: &str = "fleet_data_key";
/// Budget for the sealed entries of one audit page: well inside a frame.
const AUDIT_PAGE_BYTES: usize = 48 * 1024;

/// A usage row as read: its sealed bytes and its rowid.
type SealedUsage = (Vec<u8>, i64);

/// Everything start-up needs from the store.
pub struct Loaded {
    pub keys: Vec<(KeyRecord, UsageRecord)>,
    pub owners: Vec<(OwnerRecord, OwnerUsage)>,
    /// Ids of keys whose sealed rows did not open: they fail closed.
    pub corrupt: Vec<String>,
    /// Token hashes that must never verify again, with the key they belonged to if known.
    pub retired: RetiredHashes,
}

/// What is sealed for a retired token hash.
#[derive(serde::Serialize, serde::Deserialize)]
struct RetiredRecord {
    key_id: Option<String>,
    at: i64,
}

/// Where start-up hands the keys it reads, on a thread of their own.
pub trait KeySink {
    /// The token hash of a key about to be handed over: a hint, to fetch ahead what adding
    /// it will touch.
    fn coming(&mut self, _token_hash: &[u8]) {}
    fn add(&mut self, record: KeyRecord, usage: UsageRecord, row: UsageRow);
}

impl<F: FnMut(KeyRecord, UsageRecord, UsageRow)> KeySink for F {
    fn add(&mut self, record: KeyRecord, usage: UsageRecord, row: UsageRow) {
        self(record, usage, row)
    }
}

/// How start-up checks key rows against the audit chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowCheck {
    /// All rows at once, as one keyed digest: fast, and says only whether some row differs.
    Whole,
    /// Each row looked up: names the rows that differ.
    EachRow,
}

/// An open store.
pub struct Store {
    conn: Connection,
    /// The database file, for start-up's second reader.
    path: PathBuf,
    barrier: Barrier,
    /// Kept (locked, wiped on drop) only so that a rekey can wrap it again.
    data_key: LockedKey,
    /// The audit chain's head as committed.
    audit_head: ChainHead,
    /// The head including the open transaction's appends.
    pending_head: ChainHead,
    /// Sums the entries that bind key rows, for the head.
    entry_set: EntrySet,
    /// The database file and WAL SQLite has open, to notice them moved from outside.
    files: StoreFiles,
    /// Whether copying a WAL out of place has been logged.
    wal_copy_logged: bool,
    /// Whether anyone else wrote the store while this connection had it open: an index
    /// snapshot is written only when no one did.
    own_writes: OwnWrites,
    /// An index snapshot was written: a later write removes it before it is made, since
    /// the snapshot would no longer copy the store.
    snapshot_written: bool,
}

/// Path of the database in `data_dir`.
pub fn db_path(data_dir: &Path) -> PathBuf {
    data_dir.join(DB_FILE)
}

/// Keeps SQLite's temporary files (a change's rollback journal past 64 KiB, sorts) in
/// memory. Otherwise SQLite writes them to `SQLITE_TMPDIR`, `TMPDIR` or `/var/tmp`: pages of
/// the store in a directory shared with every local user, outside the data directory whose
/// owner and mode the daemon checks, and a change fails while that directory is full. The
/// memory this takes is a copy of each page one change writes, freed as the change ends:
/// the writer's changes are small, and usage flushes and policy revocations go in chunks.
/// A schema migration that builds an index sorts its rows in memory too, once.
fn keep_temporary_data_in_memory(conn: &Connection) -> Result<()> {
    conn.execute_batch("PRAGMA temp_store=MEMORY;")
        .context("cannot keep SQLite's temporary data in memory")
}

/// Whether `data_dir` already holds a store.
pub fn exists(data_dir: &Path) -> bool {
    db_path(data_dir).exists()
}

impl Store {
    /// Opens (creating and migrating when needed) the store in `data_dir` with the master key.
    /// A master key that does not unwrap the data key is refused here.
    pub fn open(data_dir: &Path, master: &KeyBytes) -> Result<Store> {
        let path = db_path(data_dir);
        let conn = Connection::open(&path)
            .with_context(|| format!("cannot open the store {}", path.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |row| row.get(0))
            .with_context(|| {
                format!(
                    "{} is not a usable SQLite database (truncated or corrupt?)",
                    path.display()
                )
            })?;
        if !mode.eq_ignore_ascii_case("wal") {
            bail!("the store {} cannot use WAL journaling", path.display());
        }
        conn.execute_batch("PRAGMA synchronous=FULL; PRAGMA secure_delete=ON;")?;
        keep_temporary_data_in_memory(&conn)?;
        let had_schema = migrate(&conn, &path)?;
        let data_key = load_or_create_data_key(&conn, master)?;
        let barrier = Barrier::new(&data_key);
        let entry_set = EntrySet::new(data_key.as_slice());
        let data_key = LockedKey::new(data_key);
        let (audit_head, head_form) = read_audit_head(&conn, &barrier)?;
        // After the first reads: SQLite makes the WAL when a connection first reads in WAL
        // mode.
        let files = StoreFiles::new(Path::new(conn.path().unwrap_or_default()))
            .with_context(|| format!("cannot look at the files of {}", path.display()))?;
        let own_writes = OwnWrites::new(&conn, &path)?;
        let mut store = Store {
            conn,
            path,
            barrier,
            data_key,
            audit_head,
            pending_head: audit_head,
            entry_set,
            files,
            wal_copy_logged: false,
            own_writes,
            snapshot_written: false,
        };
        if had_schema == 1 {
            store.check_written_by_schema_1(head_form)?;
        }
        if head_form == HeadForm::BeforeEntrySums {
            store.sum_entries_of_an_older_store()?;
        }
        // Schema 1 bound no rows; a store of schema 2 whose chain binds none lost its entries,
        // and binding its rows now would launder whatever was written back.
        if had_schema == 1 {
            store.bind_rows_of_an_older_store()?;
        }
        if had_schema < 7 {
            store.give_owners_their_usage()?;
        }
        Ok(store)
    }

    /// A store of schema 1 has its rows bound as they are (below), so it must be one that
    /// version 0.1 wrote: its head, sealed, never summed entries, and with keys it has one.
    /// Anything else was set back to schema 1 outside the daemon, to have rows written back
    /// from an older copy bound.
    fn check_written_by_schema_1(&self, head: HeadForm) -> Result<()> {
        let written_by_0_1 = match head {
            HeadForm::BeforeEntrySums => true,
            HeadForm::Missing => self.key_count()? == 0,
            HeadForm::Current => false,
        };
        if !written_by_0_1 {
            bail!(
                "the store was changed outside the daemon: it says schema 1, which only \
                 version 0.1 wrote, but its audit log is not one 0.1 wrote. Restore {} \
                 from a backup (docs/operations.md, \"Backup and restore\")",
                self.path.display()
            );
        }
        Ok(())
    }

    /// A store from before audit entries bound key rows: binds every row as it is now, once,
    /// so that from here on a row written back from an older copy is caught.
    fn bind_rows_of_an_older_store(&mut self) -> Result<()> {
        if self.key_count()? == 0 {
            return Ok(());
        }
        let rows: Vec<(String, Vec<u8>)> = self
            .conn
            .prepare("SELECT id, sealed FROM keys ORDER BY rowid")?
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        self.begin()?;
        let at = crate::time::now_ms();
        for (id, sealed) in rows {
            let entry = AuditRecord {
                at,
                actor: authenta_client::proto::Actor::Daemon,
                action: "bind".into(),
                key_id: Some(id),
                detail: Some("row bound to the audit chain at upgrade".into()),
            };
            self.append_bound_audit(&entry, Some(audit::row_digest(&sealed)))?;
        }
        self.commit()?;
        tracing::info!("bound every key row to the audit chain (a store from an older version)");
        Ok(())
    }

    /// A store whose chain head does not sum its entries yet: sums them, once, so that from
    /// here on an entry edited or deleted outside the daemon is caught. The chain is checked
    /// link by link first, up to the head: a head of the older form put back from a copy
    /// would otherwise have the entries summed as someone left them.
    fn sum_entries_of_an_older_store(&mut self) -> Result<()> {
        let links = self.check_links()?;
        if let Some(problem) = links.problem {
            bail!(
                "the audit log was changed outside the daemon ({problem}), so its entries \
                 cannot be trusted to check key rows against. Restore {} from a backup \
                 (docs/operations.md, \"Backup and restore\")",
                self.path.display()
            );
        }
        // Summed from the rows just checked, not from the index start-up reads, which
        // could have been edited to leave an entry out.
        self.begin()?;
        self.pending_head.bound_entries = links.bound_entries;
        // Written even when the sum is what the head had: the head is in the old form.
        let head = self.pending_head;
        self.put_sealed_meta(META_AUDIT_HEAD, &head)?;
        self.commit()?;
        tracing::info!(
            "the audit chain's head now sums its entries (a store from an older version)"
        );
        Ok(())
    }

    /// Refuses the audit table's plaintext columns unless their entries sum to what the
    /// sealed head recorded.
    fn check_bound_entries(&self, sum: u128) -> Result<()> {
        if sum != self.audit_head.bound_entries {
            bail!(
                "the audit log was changed outside the daemon: its entries no longer add up \
                 to what its sealed head recorded, so no key row can be checked against them. \
                 Restore {} from a backup (docs/operations.md, \"Backup and restore\")",
                self.path.display()
            );
        }
        Ok(())
    }

    /// Reads every key and its usage. Rows that do not open are reported, not returned.
    pub fn load(&self) -> Result<Loaded> {
        let mut keys = Vec::new();
        let mut loaded = None;
        for check in [RowCheck::Whole, RowCheck::EachRow] {
            keys.clear();
            loaded = self.load_each(check, |record, usage, _| keys.push((record, usage)))?;
            if loaded.is_some() {
                break;
            }
        }
        let (corrupt, retired) = loaded.context("the key rows were read twice")?;
        Ok(Loaded {
            keys,
            owners: self.load_owners()?,
            corrupt,
            retired,
        })
    }

    /// About how many key rows the store holds, to size the index before loading, without
    /// counting them (which reads a whole index: 40–60 ms at a million keys). The daemon
    /// never deletes a key row, so the largest rowid is the count; a store edited to hold
    /// a larger one gets no more room than its file could hold rows for.
    pub fn key_count_hint(&self) -> Result<usize> {
        let largest: Option<i64> =
            self.conn
                .query_row("SELECT max(rowid) FROM keys", [], |row| row.get(0))?;
        // Rows not yet checkpointed are in the WAL.
        let wal = self.path.with_extension("db-wal");
        let file_bytes: u64 = [self.path.as_path(), wal.as_path()]
            .iter()
            .map(|path| std::fs::metadata(path).map_or(0, |m| m.len()))
            .sum();
        // A key takes far more than this in its row, usage row and audit entry.
        const LEAST_BYTES_A_KEY: u64 = 256;
        let most = usize::try_from(file_bytes / LEAST_BYTES_A_KEY).unwrap_or(usize::MAX);
        Ok(largest
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(0)
            .min(most))
    }

    /// How many key rows the store holds.
    pub fn key_count(&self) -> Result<usize> {
        let n: i64 = self
            .conn
            .query_row("SELECT count(*) FROM keys", [], |row| row.get(0))?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// Hands every key and its usage to `each` as it is read, without collecting them, and
    /// returns the ids of rows that do not open and the retired token hashes.
    ///
    /// Every key row is checked against the last digest the audit chain bound for its key
    /// (`check`). With [`RowCheck::Whole`], `None` means that some row differs: discard the
    /// keys handed over and read again with [`RowCheck::EachRow`], which refuses the rows
    /// that differ and hands over the rest.
    ///
    /// Keys and usage rows are written in the same transaction, so both tables are in the
    /// same rowid order: they are read side by side (two sequential scans), with a point
    /// lookup only where they differ. A join would look every usage row up by id instead,
    /// which at a million keys costs seconds of start-up.
    ///
    /// Each key comes with where its usage row is ([`UsageRow`]), so that flushes can
    /// rewrite the row without looking its id up again.
    pub fn load_each(
        &self,
        check: RowCheck,
        each: impl KeySink + Send,
    ) -> Result<Option<(Vec<String>, RetiredHashes)>> {
        // One snapshot for every read on this connection: checked row by row, the chain's
        // digests and the rows must be read as of one moment.
        self.conn.execute_batch("BEGIN")?;
        let loaded = self.load_each_in_snapshot(check, each);
        // Only reads were made.
        let ended = self.conn.execute_batch("ROLLBACK");
        let mut loaded = loaded?;
        ended?;
        if let Some((corrupt, _)) = &mut loaded {
            // The two threads each refuse rows: one order, whoever refused them.
            corrupt.sort_unstable();
            corrupt.dedup();
        }
        Ok(loaded)
    }

    fn load_each_in_snapshot(
        &self,
        check: RowCheck,
        each: impl KeySink + Send,
    ) -> Result<Option<(Vec<String>, RetiredHashes)>> {
        let mut bound = self.row_binding(check)?;
        // This thread reads SQLite (the connection stays here) and checks rows against the
        // chain; another opens them and hands them to `each`.
        let (to_open, batches) = mpsc::sync_channel(4);
        let (give_back, returned) = mpsc::channel();
        // A third reads the chain's side of a whole-set check.
        let barrier = &self.barrier;
        let chain = bound.chain_set();
        let (path, entry_set) = (&self.path, &self.entry_set);
        let (read, opened, chain) = std::thread::scope(|scope| {
            let opener = scope.spawn(move || open_batches(barrier, batches, give_back, each));
            let chain =
                chain.map(|chain| scope.spawn(move || Store::read_chain(path, entry_set, chain)));
            let read = self.read_key_rows(&mut bound, to_open, returned);
            (read, opener.join(), chain.map(|chain| chain.join()))
        });
        let mut corrupt = read?;
        corrupt.extend(opened.map_err(|_| anyhow!("the thread opening key rows panicked"))?);
        if let Some(joined) = chain {
            match joined.map_err(|_| anyhow!("the thread reading the chain panicked"))? {
                Ok((chain, sum)) => {
                    self.check_bound_entries(sum)?;
                    bound.chain_read(chain);
                }
                // The rows' sum is then compared with nothing, and they are read again,
                // each checked on this connection.
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the audit chain beside the key rows")
                }
            }
        }
        match bound.verdict() {
            Verdict::AllBound => {}
            Verdict::SomeRowDiffers => {
                tracing::warn!("a key row differs from what the audit chain recorded: reading every row again to find which");
                return Ok(None);
            }
            Verdict::Deleted(ids) => {
                for id in ids {
                    tracing::error!(key_id = %printable(&id), "the audit chain names this key but its row was deleted");
                    corrupt.push(printable(&id));
                }
            }
        }
        Ok(Some((corrupt, self.load_retired()?)))
    }

    /// Reads every key row with its usage row, checks it against the chain and sends it to
    /// be opened, in batches; returns the ids of the rows refused.
    fn read_key_rows(
        &self,
        bound: &mut RowBinding,
        to_open: SyncSender<RowBatch>,
        returned: Receiver<RowBatch>,
    ) -> Result<Vec<String>> {
        let mut corrupt = Vec::new();
        let mut keys = self
            .conn
            .prepare("SELECT id, token_hash, sealed FROM keys ORDER BY rowid")?;
        let mut usage = self
            .conn
            .prepare("SELECT id, sealed, rowid FROM usage ORDER BY rowid")?;
        let mut lookup = self
            .conn
            .prepare("SELECT sealed, rowid FROM usage WHERE id = ?1")?;
        let mut usage_rows = usage.query([])?;
        let mut next_usage = || -> Result<Option<(String, SealedUsage)>> {
            Ok(match usage_rows.next()? {
                Some(row) => Some((row.get(0)?, (row.get(1)?, row.get(2)?))),
                None => None,
            })
        };
        let mut pending = next_usage()?;
        let mut batch = RowBatch::default();
        let mut rows = keys.query([])?;
        while let Some(row) = rows.next()? {
            let id = row.get_ref(0)?.as_str()?;
            let sealed = row.get_ref(2)?.as_blob()?;
            if let Some(problem) = bound.check(id, sealed) {
                tracing::error!(key_id = %printable(id), problem, "the key is refused until its row is restored");
                corrupt.push(printable(id));
                continue;
            }
            let usage_found = match &pending {
                Some((usage_id, _)) if usage_id == id => {
                    let found = pending.take().map(|(_, found)| found);
                    pending = next_usage()?;
                    found
                }
                _ => lookup
                    .query_row([id], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?)))
                    .optional()?,
            };
            // The usage row is opened here, the key row on the other thread: that splits
            // the work of a start-up about evenly.
            let (usage, usage_row) = match usage_found {
                Some((sealed, rowid)) => match self.barrier.open("usage", id, &sealed) {
                    Ok(plain) => (Some(plain), UsageRow::from_rowid(rowid)),
                    Err(_) => {
                        tracing::error!(key_id = %printable(id), "sealed usage row does not open: the key is refused until the row is restored");
                        corrupt.push(printable(id));
                        continue;
                    }
                },
                None => (None, UsageRow::UNKNOWN),
            };
            batch.push(KeyRow {
                id,
                hash: row.get_ref(1)?.as_blob()?,
                sealed,
                usage: usage.as_deref(),
                usage_row,
            });
            if batch.is_full() {
                let next = returned.try_recv().unwrap_or_default();
                send_batch(&to_open, std::mem::replace(&mut batch, next))?;
            }
        }
        if !batch.is_empty() {
            send_batch(&to_open, batch)?;
        }
        Ok(corrupt)
    }

    /// Whether the database file SQLite writes is still the store's: changes are refused
    /// while it is not ([`crate::store::store_files`]).
    pub fn database_in_place(&mut self) -> std::result::Result<(), String> {
        self.files.database_in_place()
    }

    /// When the WAL SQLite writes is no longer the store's, copies it into the database
    /// file and sets aside the file that holds its name, so that what was committed is on
    /// disk after all ([`crate::store::store_files`]). Failures are logged: the commits
    /// were made, and answering them as failed would lose their tokens.
    pub fn secure_wal(&mut self) {
        if self.files.wal_in_place().is_ok() {
            return;
        }
        if let Err(e) = self.checkpoint() {
            tracing::error!(error = %e, "cannot copy the WAL, out of place, into the database file: changes since the last checkpoint are lost if the daemon is killed; stop it cleanly");
            return;
        }
        if !self.wal_copy_logged {
            tracing::warn!("the WAL, out of place, was copied into the database file; each commit will be, until the daemon is restarted");
            self.wal_copy_logged = true;
        }
        match self.files.set_foreign_wal_aside(crate::time::now_ms()) {
            Ok(Some(aside)) => {
                tracing::warn!(file = %aside.display(), "a file in the WAL's place, not the daemon's, was set aside")
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(error = %e, "cannot set aside the file in the WAL's place: a start after a crash would replay it")
            }
        }
    }

    /// When the newest audit entry was made, if there is one.
    pub fn newest_audit_at(&self) -> Result<Option<i64>> {
        let sealed: Option<Vec<u8>> = self
            .conn
            .query_row(
                "SELECT sealed FROM audit WHERE seq = ?1",
                [self.audit_head.seq as i64],
                |row| row.get(0),
            )
            .optional()?;
        Ok(sealed.and_then(|sealed| {
            let seq = self.audit_head.seq.to_string();
            let plain = self.barrier.open("audit", &seq, &sealed).ok()?;
            from_bytes::<AuditRecord>(&plain).map(|entry| entry.at)
        }))
    }

    /// The first key row that does not match the chain's last entry of its key, if any.
    fn first_unbound_row(&self) -> Result<Option<String>> {
        let mut bound = self.row_binding(RowCheck::EachRow)?;
        let mut statement = self
            .conn
            .prepare("SELECT id, sealed FROM keys ORDER BY rowid")?;
        let mut rows = statement.query([])?;
        while let Some(row) = rows.next()? {
            let id = row.get_ref(0)?.as_str()?;
            if let Some(problem) = bound.check(id, row.get_ref(1)?.as_blob()?) {
                return Ok(Some(format!("key {}: {problem}", printable(id))));
            }
        }
        let deleted = match bound.verdict() {
            Verdict::Deleted(ids) => ids.into_iter().next(),
            Verdict::AllBound | Verdict::SomeRowDiffers => None,
        };
        Ok(deleted.map(|id| {
            format!(
                "key {}: the chain names it but its row was deleted",
                printable(&id)
            )
        }))
    }

    /// What rows are checked against: for [`RowCheck::Whole`], nothing yet (see
    /// [`Store::read_chain`]); for [`RowCheck::EachRow`], or when no secret for the whole
    /// set can be drawn, every key's last bound digest, read now.
    fn row_binding(&self, check: RowCheck) -> Result<RowBinding> {
        let whole = match check {
            RowCheck::Whole => RowBinding::whole(),
            RowCheck::EachRow => None,
        };
        if let Some(whole) = whole {
            return Ok(whole);
        }
        let mut bound = BoundRows::default();
        let sum = bound_digests(&self.conn, &self.entry_set, |id, digest| {
            bound.push(id, digest)
        })?;
        self.check_bound_entries(sum)?;
        Ok(RowBinding::each_row(bound))
    }

    /// Adds every key's last bound digest to `chain`, over a connection of its own so that
    /// it runs beside the reading of the key rows; and the sum of the entries read.
    fn read_chain(path: &Path, entry_set: &EntrySet, mut chain: RowSet) -> Result<(RowSet, u128)> {
        let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .with_context(|| format!("cannot open the store {} to read", path.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        keep_temporary_data_in_memory(&conn)?;
        let sum = bound_digests(&conn, entry_set, |id, digest| chain.add(id, digest))?;
        Ok((chain, sum))
    }

    /// Writes a snapshot of `index` beside the store, for the next start to read instead of
    /// every row ([`crate::store::index_snapshot`]), after committing its token and
    /// emptying the WAL into the file. Only at the stop, after the final usage flush: it
    /// copies the store as it is then. Refused when anyone else wrote the store while the
    /// daemon ran, or moved its files. `refused` are the keys this start refused, so that
    /// the next one reports them too.
    pub fn write_index_snapshot(&mut self, index: &Index, refused: &[String]) -> Result<Counts> {
        self.database_in_place().map_err(|why| anyhow!(why))?;
        self.files.wal_in_place().map_err(|why| anyhow!(why))?;
        self.own_writes.before_writing(&self.conn, &self.path);
        if let Some(others) = self.own_writes.others() {
            bail!("{others}, so the next start reads and checks every row");
        }
        let token = index_snapshot::new_token()?;
        self.begin()?;
        if let Err(e) = self.put_sealed_meta(META_INDEX_SNAPSHOT, &token) {
            self.rollback();
            return Err(e);
        }
        self.commit()?;
        self.checkpoint()?;
        let written = self.write_snapshot_items(index, refused, token);
        if written.is_err() {
            // A disk that filled up gets its space back.
            index_snapshot::remove_unfinished(&self.path);
        }
        let counts = written?;
        // Someone else's write between the token's commit and the file's stamp, which the
        // checkpoint would have copied into the file, voids the snapshot.
        self.own_writes.before_writing(&self.conn, &self.path);
        if let Some(others) = self.own_writes.others() {
            index_snapshot::remove_written(&self.path)?;
            bail!("{others}, so the next start reads and checks every row");
        }
        self.snapshot_written = true;
        Ok(counts)
    }

    fn write_snapshot_items(
        &self,
        index: &Index,
        refused: &[String],
        token: String,
    ) -> Result<Counts> {
        let (path, head) = (&self.path, self.audit_head);
        let mut out = SnapshotWriter::create(path, SCHEMA_VERSION, head, token, &self.barrier)?;
        for (owner, usage) in self.load_owners()? {
            out.push(&Item::Owner(owner, usage))?;
        }
        index.for_each_stored(|record, usage, row| {
            out.push(&Item::Key(record, usage, row.to_bits()))
        })?;
        for (hash, key_id) in self.load_retired()? {
            out.push(&Item::Retired(hash, key_id))?;
        }
        // A refused key the fleet has since written again is served: no longer refused.
        let still_refused: Vec<&String> = {
            let maps = index.read();
            refused
                .iter()
                .filter(|id| maps.by_id(id).is_none())
                .collect()
        };
        for id in still_refused {
            out.push(&Item::Refused(id.clone()))?;
        }
        out.finish()
    }

    /// Takes the index snapshot out of the data directory, if one is there.
    pub fn take_index_snapshot(&self) -> Result<Option<TakenSnapshot>> {
        index_snapshot::take(&self.path)
    }

    /// Reads a snapshot [`Store::take_index_snapshot`] took, handing its items to `each`;
    /// an error when it does not copy this store as it is now, the file as it was
    /// `at_rest` before the store opened.
    pub fn read_index_snapshot(
        &self,
        taken: TakenSnapshot,
        at_rest: AtRest,
        each: impl FnMut(&mut [Item]) -> Result<()>,
    ) -> Result<Counts> {
        let now = StoreNow {
            schema: SCHEMA_VERSION,
            audit_head: self.audit_head,
            token: self.sealed_meta::<String>(META_INDEX_SNAPSHOT)?,
            at_rest,
        };
        taken.read(&self.path, &now, &self.barrier, each)
    }

    /// Removes the last stop's snapshot token, so that its snapshot, put back, is never
    /// used again. Every start does this, whatever it read.
    pub fn forget_index_snapshot(&mut self) -> Result<()> {
        let present: Option<i64> = self
            .conn
            .query_row(
                "SELECT 1 FROM meta WHERE name = ?1",
                [META_INDEX_SNAPSHOT],
                |row| row.get(0),
            )
            .optional()?;
        if present.is_none() {
            return Ok(());
        }
        self.begin()?;
        let deleted = self
            .conn
            .execute("DELETE FROM meta WHERE name = ?1", [META_INDEX_SNAPSHOT]);
        if let Err(e) = deleted {
            self.rollback();
            return Err(e.into());
        }
        self.commit()
    }

    /// Starts filling the page cache with the store's file (see [`crate::store::warm`]).
    pub fn warm_page_cache(&self) {
        super::warm::warm_page_cache(&self.path);
    }

    fn load_retired(&self) -> Result<RetiredHashes> {
        let mut statement = self
            .conn
            .prepare("SELECT token_hash, sealed FROM retired")?;
        let mut rows = statement.query([])?;
        let mut retired = Vec::new();
        while let Some(row) = rows.next()? {
            let hash: Vec<u8> = row.get(0)?;
            let sealed: Vec<u8> = row.get(1)?;
            let Ok(hash) = TokenHash::try_from(hash.as_slice()) else {
                tracing::error!("a retired token hash has the wrong length; ignored");
                continue;
            };
            // A retired hash whose row does not open is still retired: failing closed here
            // means keeping the token dead, whoever it belonged to.
            let key_id = self
                .barrier
                .open("retired", &hex::encode(hash), &sealed)
                .ok()
                .and_then(|plain| from_bytes::<RetiredRecord>(&plain))
                .and_then(|r| r.key_id);
            retired.push((hash, key_id));
        }
        Ok(retired)
    }

    /// Starts a transaction; writes until [`Store::commit`] are all-or-nothing.
    pub fn begin(&mut self) -> Result<()> {
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        // Inside the transaction, which already holds the locks: asking for the data
        // version outside one took them once more.
        if let Err(e) = self.before_writing() {
            self.rollback();
            return Err(e);
        }
        self.pending_head = self.audit_head;
        Ok(())
    }

    /// Commits the transaction durably, with the audit chain's head as the transaction
    /// left it: written once here, not with each entry, as no one reads it in between.
    pub fn commit(&mut self) -> Result<()> {
        // SQLite abandons a transaction itself on some errors (disk full, I/O): the head
        // written now would commit alone, naming entries that were rolled back.
        if self.conn.is_autocommit() {
            bail!("the transaction was rolled back by SQLite after an error; nothing of it was committed");
        }
        if self.pending_head != self.audit_head {
            let head = self.pending_head;
            self.put_sealed_meta(META_AUDIT_HEAD, &head)?;
        }
        self.conn.execute_batch("COMMIT")?;
        self.own_writes.after_writing(&self.path);
        self.audit_head = self.pending_head;
        Ok(())
    }

    /// Notes whether someone else wrote the store since the daemon last did, and takes back
    /// an index snapshot written before this write.
    fn before_writing(&mut self) -> Result<()> {
        self.own_writes.before_writing(&self.conn, &self.path);
        if self.snapshot_written {
            index_snapshot::remove_written(&self.path)?;
            self.snapshot_written = false;
        }
        Ok(())
    }

    /// Abandons the transaction.
    pub fn rollback(&mut self) {
        if let Err(e) = self.conn.execute_batch("ROLLBACK") {
            tracing::debug!(error = %e, "rollback after a failed transaction");
        }
        self.pending_head = self.audit_head;
    }

    /// Marks a point inside the transaction that one job's writes can be undone to.
    pub fn savepoint(&mut self) -> Result<ChainHead> {
        self.conn.execute_batch("SAVEPOINT job")?;
        Ok(self.pending_head)
    }

    /// Forgets the random bytes drawn for nonces but not used yet (see
    /// [`crate::random::Pool::discard`]).
    pub fn discard_unused_random(&self) {
        self.barrier.discard_unused_random();
    }

    /// Keeps the writes since the savepoint.
    pub fn release(&mut self) -> Result<()> {
        self.conn.execute_batch("RELEASE job")?;
        Ok(())
    }

    /// Undoes the writes since the savepoint.
    pub fn rollback_to(&mut self, head: ChainHead) -> Result<()> {
        self.conn.execute_batch("ROLLBACK TO job; RELEASE job")?;
        self.pending_head = head;
        Ok(())
    }

    /// Copies the WAL into the database file (synced) and empties it; an error if another
    /// connection's read kept part of it from being copied (one that only kept it from
    /// being emptied, such as an online backup, is not).
    pub fn checkpoint(&mut self) -> Result<()> {
        self.before_writing()?;
        let checkpointed = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            });
        self.own_writes.after_writing(&self.path);
        let (busy, frames, copied): (i64, i64, i64) = checkpointed?;
        if busy != 0 && (frames < 0 || copied != frames) {
            bail!("another process reading the store kept the WAL from being copied whole");
        }
        Ok(())
    }

    /// Inserts or replaces a key row.
    /// Writes a key's row; returns the digest of the sealed row, for the audit entry that
    /// binds it.
    pub fn put_key(&mut self, record: &KeyRecord) -> Result<[u8; 32]> {
        let sealed = self.barrier.seal("keys", &record.id, &to_bytes(record));
        self.conn.prepare_cached(
            "INSERT INTO keys (id, token_hash, sealed) VALUES (?1, ?2, ?3)
             ON CONFLICT(id) DO UPDATE SET token_hash = excluded.token_hash, sealed = excluded.sealed",
        )?
        .execute(params![record.id, record.token_hash.as_slice(), sealed])?;
        Ok(audit::row_digest(&sealed))
    }

    /// Inserts or replaces a key's usage row; returns where the row is.
    ///
    /// With a known row (`at`, from loading or an earlier write), the row is rewritten by
    /// rowid, skipping the lookup in the id index: flushing a million keys in slot order
    /// otherwise read an index page per key. The id is checked on that row too, so a stale
    /// or wrong hint only costs the lookup, never another key's row.
    pub fn put_usage(&mut self, id: &str, usage: &UsageRecord, at: UsageRow) -> Result<UsageRow> {
        let sealed = self.barrier.seal("usage", id, &to_bytes(usage));
        if let Some(rowid) = at.rowid() {
            let rewritten = self
                .conn
                .prepare_cached("UPDATE usage SET sealed = ?2 WHERE rowid = ?1 AND id = ?3")?
                .execute(params![rowid, sealed, id])?;
            if rewritten == 1 {
                return Ok(at);
            }
        }
        let rowid: i64 = self
            .conn
            .prepare_cached(
                "INSERT INTO usage (id, sealed) VALUES (?1, ?2)
             ON CONFLICT(id) DO UPDATE SET sealed = excluded.sealed
             RETURNING rowid",
            )?
            .query_row(params![id, sealed], |row| row.get(0))?;
        Ok(UsageRow::from_rowid(rowid))
    }

    /// Writes a new key's usage row, counting nothing yet. Not [`Store::put_usage`]:
    /// asking SQLite where the row went (`RETURNING`) cost as much as the insert, and the
    /// first flush learns it anyway.
    pub fn put_new_usage(&mut self, id: &str) -> Result<()> {
        let sealed = self
            .barrier
            .seal("usage", id, &to_bytes(&UsageRecord::default()));
        self.conn
            .prepare_cached(
                "INSERT INTO usage (id, sealed) VALUES (?1, ?2)
                 ON CONFLICT(id) DO UPDATE SET sealed = excluded.sealed",
            )?
            .execute(params![id, sealed])?;
        Ok(())
    }

    /// Inserts or replaces an owner's row.
    pub fn put_owner(&mut self, record: &OwnerRecord) -> Result<()> {
        let row = self.barrier.row_id("owners", &record.id);
        let sealed = self.barrier.seal("owners", &row, &to_bytes(record));
        // Stored with its first row, so that an owner whose usage is missing later lost it.
        let fresh_usage = self
            .barrier
            .seal("owner_usage", &row, &to_bytes(&OwnerUsage::default()));
        self.conn
            .prepare_cached(
                "INSERT INTO owners (id, sealed, usage) VALUES (?1, ?2, ?3)
             ON CONFLICT(id) DO UPDATE SET sealed = excluded.sealed",
            )?
            .execute(params![row, sealed, fresh_usage])?;
        Ok(())
    }

    /// Seals a fresh usage into the owner rows made before schema 7, which had none until
    /// their first flush (see [`Store::put_owner`]).
    fn give_owners_their_usage(&mut self) -> Result<()> {
        let rows: Vec<String> = self
            .conn
            .prepare("SELECT id FROM owners WHERE usage IS NULL")?
            .query_map([], |row| row.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        if rows.is_empty() {
            return Ok(());
        }
        self.begin()?;
        for row in rows {
            let fresh = self
                .barrier
                .seal("owner_usage", &row, &to_bytes(&OwnerUsage::default()));
            let written = self.conn.execute(
                "UPDATE owners SET usage = ?2 WHERE id = ?1",
                params![row, fresh],
            );
            if let Err(e) = written {
                self.rollback();
                return Err(e.into());
            }
        }
        self.commit()
    }

    /// Writes where an owner's limits stand (the usage flush), if the owner has a row.
    pub fn put_owner_usage(&mut self, owner_id: &str, usage: &OwnerUsage) -> Result<()> {
        let row = self.barrier.row_id("owners", owner_id);
        let sealed = self.barrier.seal("owner_usage", &row, &to_bytes(usage));
        self.conn
            .prepare_cached("UPDATE owners SET usage = ?2 WHERE id = ?1")?
            .execute(params![row, sealed])?;
        Ok(())
    }

    /// Every owner, with where its limits stood. A row that does not open is left out and
    /// reported: its keys are served without the owner's limits until it is set again; a
    /// usage that is missing or does not open resumes the limits spent.
    pub fn load_owners(&self) -> Result<Vec<(OwnerRecord, OwnerUsage)>> {
        let mut owners = Vec::new();
        let mut rows = self.conn.prepare("SELECT id, sealed, usage FROM owners")?;
        let mut rows = rows.query([])?;
        while let Some(row) = rows.next()? {
            let id = row.get_ref(0)?.as_str()?;
            let sealed = row.get_ref(1)?.as_blob()?;
            let record = self
                .barrier
                .open("owners", id, sealed)
                .ok()
                .and_then(|plain| from_bytes::<OwnerRecord>(&plain))
                .filter(|r| self.barrier.row_id("owners", &r.id) == id);
            let Some(record) = record else {
                tracing::error!(row = %printable(id), "an owner's sealed row does not open; its keys go without its limits");
                continue;
            };
            let usage = row
                .get_ref(2)?
                .as_blob_or_null()?
                .and_then(|sealed| self.barrier.open("owner_usage", id, sealed).ok())
                .and_then(|plain| from_bytes::<OwnerUsage>(&plain))
                .unwrap_or_else(|| owner_usage_lost(&record, id));
            owners.push((record, usage));
        }
        Ok(owners)
    }

    /// Records that a token hash must never verify again.
    pub fn put_retired(&mut self, hash: &TokenHash, key_id: Option<&str>, at: i64) -> Result<()> {
        let record = RetiredRecord {
            key_id: key_id.map(str::to_owned),
            at,
        };
        let sealed = self
            .barrier
            .seal("retired", &hex::encode(hash), &to_bytes(&record));
        self.conn
            .prepare_cached(
                "INSERT INTO retired (token_hash, sealed) VALUES (?1, ?2)
             ON CONFLICT(token_hash) DO NOTHING",
            )?
            .execute(params![hash.as_slice(), sealed])?;
        Ok(())
    }

    /// Appends an entry to the audit log, inside the open transaction.
    pub fn append_audit(&mut self, record: &AuditRecord) -> Result<()> {
        self.append_bound_audit(record, None)
    }

    /// Appends an entry that binds `row`, the digest of the key row its change wrote (the
    /// entry's key): see [`audit::bound_link`].
    pub fn append_bound_audit(
        &mut self,
        record: &AuditRecord,
        row: Option<[u8; 32]>,
    ) -> Result<()> {
        let seq = self.pending_head.seq + 1;
        let sealed = self
            .barrier
            .seal("audit", &seq.to_string(), &to_bytes(record));
        let bound = row
            .as_ref()
            .and_then(|row| record.key_id.as_deref().map(|id| (id, row)));
        let link = audit::bound_link(&self.pending_head.link, seq, &sealed, bound);
        let mut bound_entries = self.pending_head.bound_entries;
        let (key_id, digest) = match bound {
            Some((id, row)) => {
                bound_entries = self.entry_set.add(bound_entries, seq, id, Some(row));
                (Some(id), Some(row.as_slice()))
            }
            None => (None, None),
        };
        self.conn
            .prepare_cached(
                "INSERT INTO audit (seq, sealed, link, key_id, row_digest) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![seq as i64, sealed, link.as_slice(), key_id, digest])?;
        self.pending_head = ChainHead {
            seq,
            link,
            bound_entries,
        };
        Ok(())
    }

    /// One page of the audit log after sequence number `after`; with `verify`, the whole
    /// chain is checked too.
    pub fn read_audit(&self, verify: bool, after: u64) -> Result<AuditReport> {
        let mut statement = self
            .conn
            .prepare("SELECT seq, sealed FROM audit WHERE seq > ?1 ORDER BY seq")?;
        let mut rows = statement.query([after as i64])?;
        let mut entries = Vec::new();
        let mut used = 0;
        let mut next = None;
        while let Some(row) = rows.next()? {
            let seq = row.get::<_, i64>(0)? as u64;
            let sealed: Vec<u8> = row.get(1)?;
            if used + sealed.len() > AUDIT_PAGE_BYTES && !entries.is_empty() {
                next = entries.last().map(|e: &AuditEntry| e.seq);
                break;
            }
            used += sealed.len();
            let Some(record) = self
                .barrier
                .open("audit", &seq.to_string(), &sealed)
                .ok()
                .and_then(|plain| from_bytes::<AuditRecord>(&plain))
            else {
                // Shown by `verify`; listing goes on past it.
                continue;
            };
            entries.push(AuditEntry {
                seq,
                at: record.at,
                actor: record.actor,
                action: record.action,
                key_id: record.key_id,
                detail: record.detail,
            });
        }
        let chain = if verify {
            Some(self.check_chain()?)
        } else {
            None
        };
        Ok(AuditReport {
            entries,
            chain,
            next,
        })
    }

    /// Checks every entry opens, links to its predecessor, and that the last one is the
    /// sealed head; then that every key row is the one its last entry bound.
    fn check_chain(&self) -> Result<ChainCheck> {
        let Links {
            checked,
            mut problem,
            ..
        } = self.check_links()?;
        if problem.is_none() {
            problem = self.first_unbound_row()?;
        }
        Ok(ChainCheck {
            ok: problem.is_none(),
            checked,
            problem,
        })
    }

    /// How many entries link up, and the first problem with the chain: an entry missing,
    /// not opening or not linking, a log that does not end at the sealed head, or an empty
    /// log beside keys.
    fn check_links(&self) -> Result<Links> {
        let mut statement = self
            .conn
            .prepare("SELECT seq, sealed, link, key_id, row_digest FROM audit ORDER BY seq")?;
        let mut rows = statement.query([])?;
        let mut previous = audit::GENESIS;
        let mut expected_seq = 1u64;
        let mut problem: Option<String> = None;
        let mut links = Links::default();
        while let Some(row) = rows.next()? {
            let seq = row.get::<_, i64>(0)? as u64;
            let sealed: Vec<u8> = row.get(1)?;
            let link: Vec<u8> = row.get(2)?;
            let key_id: Option<String> = row.get(3)?;
            let stored_digest: Option<Vec<u8>> = row.get(4)?;
            if let Some(id) = &key_id {
                links.bound_entries =
                    self.entry_set
                        .add(links.bound_entries, seq, id, stored_digest.as_deref());
            }
            let digest: Option<[u8; 32]> = stored_digest.and_then(|d| d.try_into().ok());
            let opens = self
                .barrier
                .open("audit", &seq.to_string(), &sealed)
                .ok()
                .and_then(|plain| from_bytes::<AuditRecord>(&plain))
                .is_some();
            let bound = key_id.as_deref().zip(digest.as_ref());
            let expected_link = audit::bound_link(&previous, seq, &sealed, bound);
            if problem.is_none() {
                if seq != expected_seq {
                    problem = Some(format!("entry {expected_seq} is missing"));
                } else if !opens {
                    problem = Some(format!("entry {seq} does not open (tampered)"));
                } else if link != expected_link {
                    problem = Some(format!("entry {seq} does not link to its predecessor"));
                }
            }
            previous = expected_link;
            expected_seq = seq + 1;
        }
        let last = expected_seq - 1;
        if problem.is_none() && (last != self.audit_head.seq || previous != self.audit_head.link) {
            problem = Some(format!(
                "the log ends at entry {last} but its sealed head names entry {}",
                self.audit_head.seq
            ));
        }
        // Every key came with an entry: an empty log (head gone too) beside keys was emptied.
        let keys = self.key_count()?;
        if problem.is_none() && last == 0 && keys > 0 {
            problem = Some(format!(
                "the log is empty but the store holds {keys} keys: its entries and its head \
                 were removed"
            ));
        }
        links.checked = last;
        links.problem = problem;
        Ok(links)
    }

    /// Wraps the data key under a new master key, inside the open transaction. The old
    /// master key no longer opens the store once this commits.
    pub fn rewrap_data_key(&mut self, new_master: &KeyBytes) -> Result<()> {
        let wrapped = wrap_data_key(new_master, self.data_key.bytes());
        self.conn.execute(
            "UPDATE meta SET value = ?1 WHERE name = ?2",
            params![wrapped, META_DATA_KEY],
        )?;
        Ok(())
    }
}

/// Where a fleet replica stands: the last stream sequence applied, and where each lane
/// (a key, the owners, a retired hash's subject) stands.
#[derive(Debug, Default, Clone)]
pub struct FleetPosition {
    pub applied: u64,
    pub lanes: std::collections::HashMap<String, Lane>,
    /// The sequence of the first change applied that was sealed with what it was made
    /// against; a change in version 0.1's form after it can only be a copy.
    pub bound_since: Option<u64>,
}

/// Where one lane of the fleet's stream stands on this node.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Lane {
    /// The last message read on it, whatever it held: what a change to it must expect,
    /// so that two writers cannot both win.
    pub last: u64,
    /// The sequence of the last change applied from it: what a change made here is made
    /// against (and sealed with).
    pub changed: u64,
    /// A change read must have been made against this sequence or a later one: one past
    /// what the last change applied was made against. What changes were made against only
    /// grows along a subject, so a copy of a change already applied (or superseded) is
    /// refused; and it depends on what was applied, not on which messages a node read, so
    /// that a node that missed a message (erased, deleted) agrees with one that did not.
    pub floor: u64,
}

impl Store {
    /// The replica's position, as committed.
    pub fn fleet_position(&self) -> Result<FleetPosition> {
        let mut position = FleetPosition {
            applied: self.sealed_meta(META_FLEET_APPLIED)?.unwrap_or(0),
            bound_since: self.sealed_meta(META_FLEET_BOUND_SINCE)?,
            ..FleetPosition::default()
        };
        let mut rows = self.conn.prepare("SELECT id, sealed FROM fleet_keys")?;
        let mut rows = rows.query([])?;
        while let Some(row) = rows.next()? {
            let id: String = row.get(0)?;
            let sealed: Vec<u8> = row.get(1)?;
            // Version 0.1 kept one sequence: no floor then (its changes carry none; copies
            // of them are refused by `bound_since`).
            let (last, changed, floor) = self
                .barrier
                .open("fleet_keys", &id, &sealed)
                .ok()
                .and_then(|plain| {
                    from_bytes::<(u64, u64, u64)>(&plain)
                        .or_else(|| from_bytes::<u64>(&plain).map(|seq| (seq, seq, 0)))
                })
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "the fleet position of lane {} does not open (tampered)",
                        printable(&id)
                    )
                })?;
            position.lanes.insert(
                id,
                Lane {
                    last,
                    changed,
                    floor,
                },
            );
        }
        Ok(position)
    }

    /// Records, in the open transaction, that stream sequence `seq` is applied, and where
    /// its lane now stands.
    pub fn put_fleet_applied(&mut self, seq: u64, lane: Option<(&str, Lane)>) -> Result<()> {
        self.put_sealed_meta(META_FLEET_APPLIED, &seq)?;
        if let Some((id, lane)) = lane {
            let all = (lane.last, lane.changed, lane.floor);
            let sealed = self.barrier.seal("fleet_keys", id, &to_bytes(&all));
            self.conn
                .prepare_cached(
                    "INSERT INTO fleet_keys (id, sealed) VALUES (?1, ?2)
                     ON CONFLICT(id) DO UPDATE SET sealed = excluded.sealed",
                )?
                .execute(params![id, sealed])?;
        }
        Ok(())
    }

    /// Records, in the open transaction, where [`FleetPosition::bound_since`] is.
    pub fn put_fleet_bound_since(&mut self, seq: u64) -> Result<()> {
        self.put_sealed_meta(META_FLEET_BOUND_SINCE, &seq)
    }

    /// The fleet's data key as this node last saw it, wrapped by the master key.
    pub fn fleet_data_key(&self) -> Result<Option<Vec<u8>>> {
        self.sealed_meta(META_FLEET_DATA_KEY)
    }

    pub fn put_fleet_data_key(&mut self, wrapped: &[u8]) -> Result<()> {
        self.put_sealed_meta(META_FLEET_DATA_KEY, &wrapped.to_vec())
    }

    fn sealed_meta<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<Option<T>> {
        open_sealed_meta(&self.conn, &self.barrier, name)
    }

    fn put_sealed_meta<T: serde::Serialize>(&mut self, name: &str, value: &T) -> Result<()> {
        let sealed = self.barrier.seal("meta", name, &to_bytes(value));
        self.conn
            .prepare_cached(
                "INSERT INTO meta (name, value) VALUES (?1, ?2)
                 ON CONFLICT(name) DO UPDATE SET value = excluded.value",
            )?
            .execute(params![name, sealed])?;
        Ok(())
    }
}

/// Hands `each` every key's row digest as its last audit entry bound it, in key-id order.
fn bound_digests(
    conn: &Connection,
    entry_set: &EntrySet,
    mut each: impl FnMut(&str, &[u8]),
) -> Result<u128> {
    // The covering index in order, each key's entries oldest first: its last row is the
    // one that counts. Picking it here costs a third of what GROUP BY with MAX() costs.
    let mut statement = conn.prepare(BOUND_DIGESTS)?;
    let mut rows = statement.query([])?;
    let mut key = String::new();
    let mut last: Option<Vec<u8>> = None;
    let mut sum = 0u128;
    let mut last_seq = 0u64;
    while let Some(row) = rows.next()? {
        let id = row.get_ref(0)?.as_str()?;
        let seq = u64::try_from(row.get_ref(1)?.as_i64()?).unwrap_or(u64::MAX);
        let digest = row.get_ref(2)?.as_blob_or_null()?;
        sum = entry_set.add(sum, seq, id, digest);
        // An index edited to list a key's entries in another order would make an older
        // entry its last: refused like ids out of order.
        if id == key && seq <= last_seq {
            return Err(index_out_of_order());
        }
        last_seq = seq;
        if id != key {
            if id < key.as_str() {
                return Err(index_out_of_order());
            }
            if let Some(digest) = &last {
                each(&key, digest);
            }
            key.clear();
            key.push_str(id);
        }
        last = digest.map(|digest| {
            let mut buffer = last.take().unwrap_or_default();
            buffer.clear();
            buffer.extend_from_slice(digest);
            buffer
        });
    }
    if let Some(digest) = &last {
        each(&key, digest);
    }
    Ok(sum)
}

fn index_out_of_order() -> anyhow::Error {
    anyhow!(
        "the audit table's key index is out of order: the store was edited outside the \
         daemon; restore it from a backup"
    )
}

/// Every key's audit entries, from the index that covers them.
const BOUND_DIGESTS: &str =
    "SELECT key_id, seq, row_digest FROM audit WHERE key_id IS NOT NULL ORDER BY key_id, seq";

fn send_batch(to_open: &SyncSender<RowBatch>, batch: RowBatch) -> Result<()> {
    to_open
        .send(batch)
        .map_err(|_| anyhow!("the thread opening key rows stopped"))
}

/// Opens each row of each batch and hands it to `sink`; returns the ids of rows that do not
/// open. Batches go back emptied, to be filled again.
fn open_batches(
    barrier: &Barrier,
    batches: Receiver<RowBatch>,
    give_back: Sender<RowBatch>,
    mut sink: impl KeySink,
) -> Vec<String> {
    let mut corrupt = Vec::new();
    for mut batch in batches {
        open_batch(barrier, &batch, &mut sink, &mut corrupt);
        batch.clear();
        // The reader may have finished; an unused batch is simply dropped.
        let _ = give_back.send(batch);
    }
    corrupt
}

fn open_batch(
    barrier: &Barrier,
    batch: &RowBatch,
    sink: &mut impl KeySink,
    corrupt: &mut Vec<String>,
) {
    // Opening a row takes long enough that a hint a few rows ahead has arrived in time.
    const AHEAD: usize = 4;
    for row in batch.rows().take(AHEAD) {
        sink.coming(row.hash);
    }
    let mut ahead = batch.rows().skip(AHEAD);
    for row in batch.rows() {
        if let Some(next) = ahead.next() {
            sink.coming(next.hash);
        }
        match open_key_row(barrier, &row) {
            Some((record, usage)) => sink.add(record, usage, row.usage_row),
            None => {
                tracing::error!(key_id = %printable(row.id), "sealed row does not open: the key is refused until the row is restored");
                corrupt.push(printable(row.id));
            }
        }
    }
}

/// An owner's row holds its usage from the moment it is set, so one without a usage that
/// opens was changed outside the daemon: its limits resume spent.
/// `row` (an HMAC of the owner's id, not the id) names it in the log.
fn owner_usage_lost(record: &OwnerRecord, row: &str) -> OwnerUsage {
    if record.ratelimit.is_none() && record.credits.is_none() {
        return OwnerUsage::default();
    }
    tracing::error!(owner_row = %printable(row), "an owner's stored usage is missing or does not open: its shared rate limit is shut for a window and its credits are at zero until an admin sets them again (restore the store from a backup if you did not change it)");
    let now = crate::time::now_ms();
    OwnerUsage {
        ratelimit: limits::rate_spent(record.ratelimit, now),
        credits: limits::credits_spent(record.credits, now),
    }
}

fn open_key_row(barrier: &Barrier, row: &KeyRow<'_>) -> Option<(KeyRecord, UsageRecord)> {
    let record = legacy::key_record(&barrier.open("keys", row.id, row.sealed).ok()?)?;
    if record.id != row.id || record.token_hash.as_slice() != row.hash {
        return None;
    }
    let usage = match row.usage {
        Some(plain) => legacy::usage_record(plain)?,
        None => usage_of_a_missing_row(&record),
    };
    Some((record, usage))
}

/// Every key gets its usage row when it is made, so one that has none lost it outside the
/// daemon: its limits resume spent rather than fresh (`index::limits::spent`).
fn usage_of_a_missing_row(record: &KeyRecord) -> UsageRecord {
    let details = &record.details;
    if details.ratelimit.is_none() && details.credits.is_none() {
        return UsageRecord::default();
    }
    tracing::error!(key_id = %printable(&record.id), "the key's usage row is missing: its rate limit is shut for a window and its credits are at zero until an admin sets them again (restore the store from a backup if you did not remove the row)");
    let now = crate::time::now_ms();
    let mut usage = UsageRecord::default();
    usage.limits.ratelimit = limits::rate_spent(details.ratelimit, now);
    usage.limits.credits = limits::credits_spent(details.credits, now);
    usage
}

/// Key ids come from the file: show only their printable ASCII in logs.
fn printable(id: &str) -> String {
    id.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(64)
        .collect()
}

/// Brings the schema up to date; returns the version the store had.
fn migrate(conn: &Connection, path: &Path) -> Result<i64> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if version > SCHEMA_VERSION {
        bail!(
            "the store {} has schema version {version}, newer than this authenta-keyd \
             understands ({SCHEMA_VERSION}): run the newer authenta-keyd that wrote it",
            path.display()
        );
    }
    for (from, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
        let to = from + 1;
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE; {sql} PRAGMA user_version = {to}; COMMIT;"
        ))
        .with_context(|| format!("migrating the store {} to schema {to}", path.display()))?;
    }
    if version < SCHEMA_VERSION {
        give_back_memory();
    }
    Ok(version)
}

/// Returns to the system the heap a migration used (its rollback journal is in memory: see
/// [`keep_temporary_data_in_memory`]), which glibc would otherwise keep for the daemon's
/// lifetime under the index loaded next.
#[allow(unsafe_code)]
fn give_back_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free heap memory; it takes no pointer.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn load_or_create_data_key(conn: &Connection, master: &KeyBytes) -> Result<KeyBytes> {
    let wrapped: Option<Vec<u8>> = conn
        .query_row(
            "SELECT value FROM meta WHERE name = ?1",
            [META_DATA_KEY],
            |row| row.get(0),
        )
        .optional()?;
    match wrapped {
        Some(wrapped) => unwrap_data_key(master, &wrapped).map_err(|_| {
            anyhow::anyhow!(
                "the master key does not open this store (wrong master key?): pass the \
                 --master-key-file or credential it was created with"
            )
        }),
        None => {
            let rng = ring::rand::SystemRandom::new();
            let data_key = crate::store::barrier::random_key(&rng)
                .map_err(|_| anyhow::anyhow!("the system random number generator failed"))?;
            conn.execute(
                "INSERT INTO meta (name, value) VALUES (?1, ?2)",
                params![META_DATA_KEY, wrap_data_key(master, &data_key)],
            )?;
            Ok(data_key)
        }
    }
}

/// What checking the audit chain link by link found.
#[derive(Default)]
struct Links {
    /// Entries that link up.
    checked: u64,
    /// The first thing wrong, if any.
    problem: Option<String>,
    /// The sum of the entries that name a key, as the head records it.
    bound_entries: u128,
}

/// In what form the store holds the audit chain's head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HeadForm {
    Current,
    /// Sealed before heads summed the entries that bind rows (see
    /// [`Store::sum_entries_of_an_older_store`]).
    BeforeEntrySums,
    /// None: no entry was ever made, or the head was deleted.
    Missing,
}

/// The audit chain's head, and the form it was in.
fn read_audit_head(conn: &Connection, barrier: &Barrier) -> Result<(ChainHead, HeadForm)> {
    let tampered = || anyhow::anyhow!("the audit log's sealed head does not open (tampered)");
    if let Ok(head) = open_sealed_meta::<ChainHead>(conn, barrier, META_AUDIT_HEAD) {
        return Ok(match head {
            Some(head) => (head, HeadForm::Current),
            None => (ChainHead::EMPTY, HeadForm::Missing),
        });
    }
    let older = open_sealed_meta::<ChainHeadV1>(conn, barrier, META_AUDIT_HEAD)
        .map_err(|_| tampered())?
        .ok_or_else(tampered)?;
    let head = ChainHead {
        seq: older.seq,
        link: older.link,
        bound_entries: 0,
    };
    Ok((head, HeadForm::BeforeEntrySums))
}

/// A sealed value of the meta table, if set; an error when it does not open (tampered).
fn open_sealed_meta<T: serde::de::DeserializeOwned>(
    conn: &Connection,
    barrier: &Barrier,
    name: &str,
) -> Result<Option<T>> {
    let sealed: Option<Vec<u8>> = conn
        .query_row("SELECT value FROM meta WHERE name = ?1", [name], |row| {
            row.get(0)
        })
        .optional()?;
    sealed
        .map(|sealed| {
            barrier
                .open("meta", name, &sealed)
                .ok()
                .and_then(|plain| from_bytes(&plain))
                .ok_or_else(|| anyhow::anyhow!("the store's {name} does not open (tampered)"))
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use zeroize::Zeroizing;

    /// A write after the stop's index snapshot (a task not yet stopped) takes the snapshot
    /// back: it no longer copies the store.
    #[test]
    fn a_write_after_the_index_snapshot_removes_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::open(dir.path(), &Zeroizing::new([7u8; 32])).expect("store");
        let snapshot = dir.path().join(index_snapshot::FILE_NAME);
        store
            .write_index_snapshot(&Index::default(), &[])
            .expect("snapshot");
        assert!(snapshot.exists());
        store.begin().expect("begin");
        store.put_fleet_bound_since(5).expect("put");
        store.commit().expect("commit");
        assert!(!snapshot.exists(), "a write after it takes it back");
    }

    /// When SQLite has abandoned the transaction itself (as it may after an I/O error or a
    /// full disk), the commit writes nothing: a head written then would commit alone and
    /// name entries that were rolled back, and the store would not open again.
    #[test]
    fn a_transaction_sqlite_abandoned_commits_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::open(dir.path(), &Zeroizing::new([7u8; 32])).expect("store");
        store.begin().expect("begin");
        let entry = AuditRecord {
            at: 1,
            actor: authenta_client::proto::Actor::Daemon,
            action: "test".into(),
            key_id: None,
            detail: None,
        };
        store.append_audit(&entry).expect("append");
        store.conn.execute_batch("ROLLBACK").expect("abandon");
        assert!(store.commit().is_err(), "nothing to commit");
        store.rollback();
        drop(store);
        let store = Store::open(dir.path(), &Zeroizing::new([7u8; 32])).expect("opens again");
        let report = store.read_audit(true, 0).expect("audit");
        assert!(report.entries.is_empty());
        assert!(report.chain.is_some_and(|c| c.ok));
    }

    /// Rows are checked when the daemon starts: a store another connection wrote since
    /// gets no snapshot, whose start would not check them.
    #[test]
    fn no_index_snapshot_after_another_connection_wrote() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::open(dir.path(), &Zeroizing::new([7u8; 32])).expect("store");
        let other = Connection::open(db_path(dir.path())).expect("open");
        other
            .execute(
                "INSERT INTO meta (name, value) VALUES ('planted', x'00')",
                [],
            )
            .expect("insert");
        let error = store
            .write_index_snapshot(&Index::default(), &[])
            .expect_err("refused");
        assert!(error.to_string().contains("another connection"), "{error}");
        assert!(!dir.path().join(index_snapshot::FILE_NAME).exists());
    }

    #[test]
    fn a_lane_kept_by_version_0_1_reads_with_no_floor() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::open(dir.path(), &Zeroizing::new([7u8; 32])).expect("store");
        let old = store
            .barrier
            .seal("fleet_keys", "key_old", &to_bytes(&41u64));
        store
            .conn
            .execute(
                "INSERT INTO fleet_keys (id, sealed) VALUES ('key_old', ?1)",
                [old],
            )
            .expect("insert");
        store.begin().expect("begin");
        let lane = Lane {
            last: 9,
            changed: 7,
            floor: 4,
        };
        store
            .put_fleet_applied(9, Some(("owners", lane)))
            .expect("put");
        store.put_fleet_bound_since(5).expect("put");
        store.commit().expect("commit");
        let position = store.fleet_position().expect("position");
        assert_eq!(
            position.lanes["key_old"],
            Lane {
                last: 41,
                changed: 41,
                floor: 0
            }
        );
        assert_eq!(position.lanes["owners"], lane);
        assert_eq!((position.applied, position.bound_since), (9, Some(5)));
    }

    #[test]
    fn start_up_reads_each_keys_last_digest_from_the_index_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), &Zeroizing::new([7u8; 32])).expect("store");
        let plan: Vec<String> = store
            .conn
            .prepare(&format!("EXPLAIN QUERY PLAN {BOUND_DIGESTS}"))
            .expect("plan")
            .query_map([], |row| row.get::<_, String>(3))
            .expect("rows")
            .collect::<rusqlite::Result<_>>()
            .expect("plan rows");
        let plan = plan.join("; ");
        assert!(plan.contains("COVERING INDEX audit_by_key"), "{plan}");
        assert!(!plan.contains("TEMP B-TREE"), "no sort of its own: {plan}");
    }

    #[test]
    fn each_keys_last_entry_decides_what_its_row_must_be() {
        let conn = Connection::open_in_memory().expect("sqlite");
        conn.execute_batch(
            "CREATE TABLE audit (seq INTEGER PRIMARY KEY, key_id TEXT, row_digest BLOB);
             CREATE INDEX audit_by_key ON audit (key_id, seq, row_digest);
             INSERT INTO audit VALUES (1, 'b', x'01'), (2, 'a', x'02'), (3, NULL, NULL),
                 (4, 'b', x'0303'), (5, 'c', x'04'), (6, 'c', NULL), (7, 'a', x'05');",
        )
        .expect("entries");
        let mut seen = Vec::new();
        let set = EntrySet::new(&[7; 32]);
        let sum = bound_digests(&conn, &set, |id, digest| {
            seen.push((id.to_string(), digest.to_vec()))
        })
        .expect("read");
        // Every entry that names a key is summed, whatever it binds.
        let entries: [(u64, &str, Option<&[u8]>); 6] = [
            (1, "b", Some(&[1])),
            (2, "a", Some(&[2])),
            (4, "b", Some(&[3, 3])),
            (5, "c", Some(&[4])),
            (6, "c", None),
            (7, "a", Some(&[5])),
        ];
        let expected = entries
            .iter()
            .fold(0, |sum, &(seq, id, row)| set.add(sum, seq, id, row));
        assert_eq!(sum, expected);
        // c's last entry binds no row (only an edited store has one): c has no row to match.
        assert_eq!(
            seen,
            vec![("a".to_string(), vec![5]), ("b".to_string(), vec![3, 3])]
        );
    }

    #[test]
    fn an_audit_index_out_of_byte_order_is_refused() {
        // An edited schema whose key ids compare without case: "a..." sorts before "B...",
        // so one id's entries could interleave with another's.
        let conn = Connection::open_in_memory().expect("sqlite");
        conn.execute_batch(
            "CREATE TABLE audit (seq INTEGER PRIMARY KEY, key_id TEXT COLLATE NOCASE,
                 row_digest BLOB);
             INSERT INTO audit VALUES (1, 'B', x'01'), (2, 'a', x'02');",
        )
        .expect("entries");
        let read = bound_digests(&conn, &EntrySet::new(&[7; 32]), |_, _| {});
        let error = read.expect_err("refused").to_string();
        assert!(error.contains("out of order"), "{error}");
    }

    #[test]
    fn an_audit_index_edited_to_list_a_keys_entries_newest_first_is_refused() {
        // Built descending, then declared ascending: SQLite reads it as it is stored, so a
        // key's oldest entry would come last and count as its binding.
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("edited.db");
        let conn = Connection::open(&path).expect("sqlite");
        conn.execute_batch(
            "CREATE TABLE audit (seq INTEGER PRIMARY KEY, key_id TEXT, row_digest BLOB);
             CREATE INDEX audit_by_key ON audit (key_id, seq DESC, row_digest);
             INSERT INTO audit VALUES (1, 'a', x'01'), (2, 'a', x'02');
             PRAGMA writable_schema = ON;
             UPDATE sqlite_schema
                 SET sql = 'CREATE INDEX audit_by_key ON audit (key_id, seq, row_digest)'
                 WHERE name = 'audit_by_key';
             PRAGMA writable_schema = OFF;",
        )
        .expect("an edited index");
        drop(conn);
        let conn = Connection::open(&path).expect("reopen");
        let read = bound_digests(&conn, &EntrySet::new(&[7; 32]), |_, _| {});
        let error = read.expect_err("refused").to_string();
        assert!(error.contains("out of order"), "{error}");
    }

    #[test]
    fn keys_are_indexed_by_id_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), &Zeroizing::new([7u8; 32])).expect("store");
        let schema: Vec<String> = store
            .conn
            .prepare("SELECT sql FROM sqlite_master WHERE tbl_name = 'keys'")
            .expect("prepare")
            .query_map([], |row| row.get::<_, Option<String>>(0))
            .expect("query")
            .filter_map(|sql| sql.expect("row"))
            .collect();
        assert_eq!(
            schema,
            ["CREATE TABLE \"keys\" (id TEXT PRIMARY KEY, token_hash BLOB NOT NULL, sealed BLOB NOT NULL)"]
        );
        let autoindexes: i64 = store
            .conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND tbl_name = 'keys'",
                [],
                |row| row.get(0),
            )
            .expect("count");
        assert_eq!(autoindexes, 1, "only the id's");
    }

    #[test]
    fn the_key_count_hint_is_the_largest_rowid_within_what_the_file_could_hold() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), &Zeroizing::new([7u8; 32])).expect("store");
        assert_eq!(store.key_count_hint().expect("hint"), 0);
        for n in 0u8..3 {
            store
                .conn
                .execute(
                    "INSERT INTO keys (id, token_hash, sealed) VALUES (?1, ?2, x'00')",
                    params![format!("key_{n}"), vec![n; 32]],
                )
                .expect("row");
        }
        assert_eq!(store.key_count_hint().expect("hint"), 3);
        store
            .conn
            .execute(
                "INSERT INTO keys (rowid, id, token_hash, sealed) VALUES (1000000000000, 'x', x'01', x'00')",
                [],
            )
            .expect("an edited rowid");
        let hint = store.key_count_hint().expect("hint");
        let files: u64 = ["keys.db", "keys.db-wal"]
            .iter()
            .map(|f| std::fs::metadata(dir.path().join(f)).map_or(0, |m| m.len()))
            .sum();
        assert!(
            hint as u64 <= files / 256,
            "{hint} for files of {files} bytes"
        );
        assert!(hint < 1_000_000, "not the edited rowid: {hint}");
    }
}
