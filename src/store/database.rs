//! The encrypted SQLite store: schema, migrations, and reading and writing sealed rows.
//!
//! Only what lookups need is plaintext: key ids and SHA-256 token hashes. Names,
//! permissions, timestamps, usage and the audit log are sealed by the [`Barrier`], each
//! with its table and row as associated data. WAL with `synchronous=FULL` makes every
//! acknowledged commit survive `kill -9` and power loss. Only the writer thread
//! ([`crate::store::writer`]) holds a `Store` after start-up.

use crate::key::{KeyRecord, OwnerRecord, OwnerUsage, RetiredHashes, UsageRecord, UsageRow};
use crate::store::audit::{self, AuditRecord, ChainHead};
use crate::store::barrier::{unwrap_data_key, wrap_data_key, Barrier, KeyBytes};
use crate::store::legacy;
use crate::store::locked_key::LockedKey;
use crate::store::record_codec::{from_bytes, to_bytes};
use crate::token::{TokenHash, KEY_ID_LEN, KEY_ID_PREFIX};
use anyhow::{bail, Context, Result};
use authenta_client::proto::{AuditEntry, AuditReport, ChainCheck};
use rusqlite::{params, Connection, OptionalExtension};
use std::path::{Path, PathBuf};

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
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

const META_DATA_KEY: &str = "data_key";
const META_AUDIT_HEAD: &str = "audit_head";
/// In fleet mode: the last stream sequence applied, and the fleet's data key as this node
/// last saw it (wrapped by the master key), to restore it should the stream lose it.
const META_FLEET_APPLIED: &str = "fleet_applied";
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

/// An open store.
pub struct Store {
    conn: Connection,
    barrier: Barrier,
    /// Kept (locked, wiped on drop) only so that a rekey can wrap it again.
    data_key: LockedKey,
    /// The audit chain's head as committed.
    audit_head: ChainHead,
    /// The head including the open transaction's appends.
    pending_head: ChainHead,
}

/// Path of the database in `data_dir`.
pub fn db_path(data_dir: &Path) -> PathBuf {
    data_dir.join(DB_FILE)
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
        let had_schema = migrate(&conn, &path)?;
        let data_key = load_or_create_data_key(&conn, master)?;
        let barrier = Barrier::new(&data_key);
        let data_key = LockedKey::new(data_key);
        let audit_head = read_audit_head(&conn, &barrier)?;
        let mut store = Store {
            conn,
            barrier,
            data_key,
            audit_head,
            pending_head: audit_head,
        };
        // Schema 1 bound no rows; a store of schema 2 whose chain binds none lost its entries,
        // and binding its rows now would launder whatever was written back.
        if had_schema == 1 {
            store.bind_rows_of_an_older_store()?;
        }
        Ok(store)
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

    /// Reads every key and its usage. Rows that do not open are reported, not returned.
    pub fn load(&self) -> Result<Loaded> {
        let mut keys = Vec::new();
        let (corrupt, retired) = self.load_each(|record, usage, _| keys.push((record, usage)))?;
        Ok(Loaded {
            keys,
            owners: self.load_owners()?,
            corrupt,
            retired,
        })
    }

    /// How many key rows the store holds (to size the index before loading).
    pub fn key_count(&self) -> Result<usize> {
        let n: i64 = self
            .conn
            .query_row("SELECT count(*) FROM keys", [], |row| row.get(0))?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// Hands every key and its usage to `each` as it is read, without collecting them, and
    /// returns the ids of rows that do not open and the retired token hashes.
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
        mut each: impl FnMut(KeyRecord, UsageRecord, UsageRow),
    ) -> Result<(Vec<String>, RetiredHashes)> {
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
        let mut bound = self.bound_rows()?;
        let mut rows = keys.query([])?;
        while let Some(row) = rows.next()? {
            let id = row.get_ref(0)?.as_str()?;
            let hash = row.get_ref(1)?.as_blob()?;
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
            let (usage_sealed, usage_row) = match usage_found {
                Some((sealed, rowid)) => (Some(sealed), UsageRow::from_rowid(rowid)),
                None => (None, UsageRow::UNKNOWN),
            };
            match self.open_key_row(id, hash, sealed, usage_sealed.as_deref()) {
                Some((record, usage)) => each(record, usage, usage_row),
                None => {
                    tracing::error!(key_id = %printable(id), "sealed row does not open: the key is refused until the row is restored");
                    corrupt.push(printable(id));
                }
            }
        }
        // Keys the chain knows whose rows are gone.
        for id in bound.unseen() {
            tracing::error!(key_id = %printable(&id), "the audit chain names this key but its row was deleted");
            corrupt.push(printable(&id));
        }
        Ok((corrupt, self.load_retired()?))
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
        let mut bound = self.bound_rows()?;
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
        let deleted = bound.unseen().next();
        Ok(deleted.map(|id| {
            format!(
                "key {}: the chain names it but its row was deleted",
                printable(&id)
            )
        }))
    }

    /// Each key's row digest as its last audit entry bound it.
    fn bound_rows(&self) -> Result<BoundRows> {
        // SQLite takes a bare column of an aggregate with max() from the row holding the
        // maximum: each key's last entry, read from the covering index alone, in key order.
        let mut statement = self.conn.prepare(
            "SELECT key_id, row_digest, MAX(seq) FROM audit \
             WHERE key_id IS NOT NULL GROUP BY key_id ORDER BY key_id",
        )?;
        let mut bound = BoundRows::default();
        let mut rows = statement.query([])?;
        while let Some(row) = rows.next()? {
            let id = row.get_ref(0)?.as_str()?;
            if let Some(digest) = row.get_ref(1)?.as_blob_or_null()? {
                bound.push(id, digest);
            }
        }
        bound.index();
        Ok(bound)
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

    fn open_key_row(
        &self,
        id: &str,
        hash: &[u8],
        sealed: &[u8],
        usage: Option<&[u8]>,
    ) -> Option<(KeyRecord, UsageRecord)> {
        let record = legacy::key_record(&self.barrier.open("keys", id, sealed).ok()?)?;
        if record.id != id || record.token_hash.as_slice() != hash {
            return None;
        }
        let usage = match usage {
            Some(sealed) => legacy::usage_record(&self.barrier.open("usage", id, sealed).ok()?)?,
            None => UsageRecord::default(),
        };
        Some((record, usage))
    }

    /// Starts a transaction; writes until [`Store::commit`] are all-or-nothing.
    pub fn begin(&mut self) -> Result<()> {
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        self.pending_head = self.audit_head;
        Ok(())
    }

    /// Commits the transaction durably.
    pub fn commit(&mut self) -> Result<()> {
        self.conn.execute_batch("COMMIT")?;
        self.audit_head = self.pending_head;
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

    /// Copies the WAL into the database file and empties it.
    pub fn checkpoint(&mut self) -> Result<()> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
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

    /// Inserts or replaces an owner's row.
    pub fn put_owner(&mut self, record: &OwnerRecord) -> Result<()> {
        let row = self.barrier.row_id("owners", &record.id);
        let sealed = self.barrier.seal("owners", &row, &to_bytes(record));
        self.conn
            .prepare_cached(
                "INSERT INTO owners (id, sealed) VALUES (?1, ?2)
             ON CONFLICT(id) DO UPDATE SET sealed = excluded.sealed",
            )?
            .execute(params![row, sealed])?;
        Ok(())
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
    /// usage that does not open resumes the limits full.
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
                .unwrap_or_default();
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
        let (key_id, digest) = match bound {
            Some((id, row)) => (Some(id), Some(row.as_slice())),
            None => (None, None),
        };
        self.conn
            .prepare_cached(
                "INSERT INTO audit (seq, sealed, link, key_id, row_digest) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![seq as i64, sealed, link.as_slice(), key_id, digest])?;
        let head = ChainHead { seq, link };
        self.put_sealed_meta(META_AUDIT_HEAD, &head)?;
        self.pending_head = head;
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
    /// sealed head.
    fn check_chain(&self) -> Result<ChainCheck> {
        let mut statement = self
            .conn
            .prepare("SELECT seq, sealed, link, key_id, row_digest FROM audit ORDER BY seq")?;
        let mut rows = statement.query([])?;
        let mut previous = audit::GENESIS;
        let mut expected_seq = 1u64;
        let mut problem: Option<String> = None;
        while let Some(row) = rows.next()? {
            let seq = row.get::<_, i64>(0)? as u64;
            let sealed: Vec<u8> = row.get(1)?;
            let link: Vec<u8> = row.get(2)?;
            let key_id: Option<String> = row.get(3)?;
            let digest: Option<[u8; 32]> = row
                .get::<_, Option<Vec<u8>>>(4)?
                .and_then(|d| d.try_into().ok());
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
        if problem.is_none() {
            problem = self.first_unbound_row()?;
        }
        Ok(ChainCheck {
            ok: problem.is_none(),
            checked: last,
            problem,
        })
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

/// Where a fleet replica stands: the last stream sequence applied, and each key's last
/// sequence (what a change to it must expect, so that two writers cannot both win).
#[derive(Debug, Default, Clone)]
pub struct FleetPosition {
    pub applied: u64,
    pub keys: std::collections::HashMap<String, u64>,
}

impl Store {
    /// The replica's position, as committed.
    pub fn fleet_position(&self) -> Result<FleetPosition> {
        let mut position = FleetPosition {
            applied: self.sealed_meta(META_FLEET_APPLIED)?.unwrap_or(0),
            ..FleetPosition::default()
        };
        let mut rows = self.conn.prepare("SELECT id, sealed FROM fleet_keys")?;
        let mut rows = rows.query([])?;
        while let Some(row) = rows.next()? {
            let id: String = row.get(0)?;
            let sealed: Vec<u8> = row.get(1)?;
            let seq = self
                .barrier
                .open("fleet_keys", &id, &sealed)
                .ok()
                .and_then(|plain| from_bytes::<u64>(&plain))
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "the fleet position of key {} does not open (tampered)",
                        printable(&id)
                    )
                })?;
            position.keys.insert(id, seq);
        }
        Ok(position)
    }

    /// Records, in the open transaction, that stream sequence `seq` is applied, and that it
    /// is `key`'s last change.
    pub fn put_fleet_applied(&mut self, seq: u64, key: Option<&str>) -> Result<()> {
        self.put_sealed_meta(META_FLEET_APPLIED, &seq)?;
        if let Some(id) = key {
            let sealed = self.barrier.seal("fleet_keys", id, &to_bytes(&seq));
            self.conn
                .prepare_cached(
                    "INSERT INTO fleet_keys (id, sealed) VALUES (?1, ?2)
                     ON CONFLICT(id) DO UPDATE SET sealed = excluded.sealed",
                )?
                .execute(params![id, sealed])?;
        }
        Ok(())
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

/// Each key's row digest as the chain last bound it, sorted by key id, with a directory of
/// where each first three characters of the id's random part begin. A million keys take
/// 52 MB, with no allocation each (a map of strings took three times that), and a lookup
/// reads one directory entry and then a run of about four rows: a plain binary search cost
/// a dozen cache misses per key, over a second of start-up at a million keys.
#[derive(Default)]
struct BoundRows {
    rows: Vec<([u8; KEY_ID_LEN], [u8; 32])>,
    /// Which rows a key row has matched, to find keys whose rows were deleted.
    seen: Vec<bool>,
    /// `starts[p]`: the first row whose prefix is `p` or more (see [`prefix`]).
    starts: Vec<u32>,
}

/// How many prefixes the directory tells apart: three base62 characters.
const PREFIXES: usize = 62 * 62 * 62;

/// The directory slot of a key id: its first three characters after `key_`, in base62
/// order (the byte order of the ids). Ids of another shape are not a key's.
fn prefix(id: &[u8; KEY_ID_LEN]) -> Option<usize> {
    id[KEY_ID_PREFIX.len()..KEY_ID_PREFIX.len() + 3]
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
    /// Adds the next key, in key-id order; an id or digest of another shape is no key's.
    fn push(&mut self, id: &str, digest: &[u8]) {
        let (Ok(id), Ok(digest)) = (
            <[u8; KEY_ID_LEN]>::try_from(id.as_bytes()),
            digest.try_into(),
        ) else {
            return;
        };
        if prefix(&id).is_some() && id.starts_with(KEY_ID_PREFIX.as_bytes()) {
            self.rows.push((id, digest));
        }
    }

    /// Builds the directory, once every key is pushed.
    fn index(&mut self) {
        self.seen = vec![false; self.rows.len()];
        self.starts = vec![0; PREFIXES + 1];
        let mut row = 0;
        for (p, start) in self.starts.iter_mut().enumerate() {
            while row < self.rows.len() && prefix(&self.rows[row].0).is_some_and(|q| q < p) {
                row += 1;
            }
            *start = u32::try_from(row).unwrap_or(u32::MAX);
        }
    }

    fn find(&self, id: &str) -> Option<usize> {
        let id = <[u8; KEY_ID_LEN]>::try_from(id.as_bytes()).ok()?;
        let p = prefix(&id)?;
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
    Ok(version)
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

fn read_audit_head(conn: &Connection, barrier: &Barrier) -> Result<ChainHead> {
    let head = open_sealed_meta(conn, barrier, META_AUDIT_HEAD)
        .map_err(|_| anyhow::anyhow!("the audit log's sealed head does not open (tampered)"))?;
    Ok(head.unwrap_or(ChainHead::EMPTY))
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

    #[test]
    fn start_up_reads_each_keys_last_digest_from_the_index_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), &Zeroizing::new([7u8; 32])).expect("store");
        let plan: Vec<String> = store
            .conn
            .prepare(
                "EXPLAIN QUERY PLAN SELECT key_id, row_digest, MAX(seq) FROM audit \
                 WHERE key_id IS NOT NULL GROUP BY key_id ORDER BY key_id",
            )
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
    fn bound_rows_find_keys_by_id_and_name_the_ones_never_seen() {
        let mut bound = BoundRows::default();
        let (a, b) = ("key_AAAAAAAAAAAAAAAA", "key_BBBBBBBBBBBBBBBB");
        bound.push(a, &audit::row_digest(b"row a"));
        bound.push(b, &audit::row_digest(b"row b"));
        bound.push("key_short", &[0; 32]);
        bound.push("key_CC!CCCCCCCCCCCCC", &[0; 32]);
        bound.index();
        assert_eq!(bound.check(a, b"row a"), None);
        assert!(bound.check(a, b"row a").is_some(), "a second row of one id");
        assert!(bound.check("key_CCCCCCCCCCCCCCCC", b"x").is_some());
        assert_eq!(bound.unseen().collect::<Vec<_>>(), vec![b.to_string()]);
        assert!(bound.check(b, b"row b, older").is_some());
    }
}
