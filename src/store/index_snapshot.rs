//! A sealed copy of the index, written at a clean stop and read once at the next start in
//! place of every key row: a million keys are then ready without opening a million sealed
//! rows or checking each against the audit chain.
//!
//! The store stays the truth; the snapshot is only used when it provably says the same as
//! a start that reads and checks every row would:
//!
//! - **Only the daemon wrote the store since that start.** A stop writes no snapshot when
//!   another connection committed to the store while the daemon ran (SQLite's
//!   `data_version`), when `keys.db` changed between two of the daemon's own writes (a
//!   write that bypassed SQLite), or when `keys.db` or its WAL was moved or replaced
//!   ([`OwnWrites`]), also checked again once the file is written. Every row was checked
//!   when the daemon started, so the index it copies is what those rows say, changed only
//!   by the daemon's own commits. A write the daemon makes after the snapshot (a task not
//!   yet stopped) removes the snapshot first.
//! - **Nothing wrote the store since that stop.** The head names the build, format and
//!   schema that wrote it, the audit chain's head, a random token the stop also committed
//!   to the store (sealed), and the database file's identity and times (device, inode,
//!   size, mtime, ctime) just after the stop emptied the WAL into it. The start uses it
//!   only when all match, as observed before SQLite opened the file (the WAL empty then)
//!   and again after: whoever writes the file (a row written back from an older copy,
//!   usage edited) changes its ctime, which no one but root can set; an older snapshot
//!   put back names an older token, which each start removes from the store.
//! - **Every frame is sealed** by the barrier (AES-256-GCM under the data key) with the
//!   file's random id, the frame's number and whether it is the last as associated data,
//!   so a frame changed, dropped, reordered, moved from another snapshot or cut off at the
//!   end does not open.
//! - **It is read once**: removed as the start takes it.
//!
//! Any doubt, and the start reads and checks every row as without a snapshot.

use super::audit::ChainHead;
use super::barrier::Barrier;
use crate::key::{KeyRecord, OwnerRecord, OwnerUsage, UsageRecord};
use crate::token::TokenHash;
use anyhow::{bail, Context, Result};
use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

/// The snapshot's name in the data directory, and the name it is written under first.
pub const FILE_NAME: &str = "index.snapshot";
const TEMPORARY_NAME: &str = "index.snapshot.tmp";
const MAGIC: &[u8; 8] = b"AKDSNAP1";
const FILE_ID_LEN: usize = 16;
/// Plaintext gathered before a frame is sealed: large enough that sealing costs little per
/// key, small enough that reading and filing overlap and that the frames decoded ahead
/// (about 1 MB of items each) add little to start-up's peak memory.
const FRAME_PLAIN: usize = 256 << 10;
/// Largest sealed frame read back: a frame holds [`FRAME_PLAIN`] and at most one item more.
const MAX_FRAME: usize = 4 << 20;
/// Largest item decoded (bincode counts decoded bytes): a key record is bounded far below.
const MAX_ITEM: usize = 1 << 20;
/// Associated data's table name for the barrier.
const TABLE: &str = "index snapshot";
/// The layout of the file and of its items: a build that lays them out otherwise bumps it.
const FORMAT: u32 = 1;
/// Frames decoded ahead of the filing thread.
const FRAMES_AHEAD: usize = 2;

/// What the snapshot is a copy of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Head {
    format: u32,
    build: String,
    schema: i64,
    audit_head: ChainHead,
    /// Also committed to the store by the stop, and removed by the next start.
    token: String,
    database: FileStamp,
}

/// A file's identity and the times any write moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileStamp {
    pub fn of(path: &Path) -> Result<FileStamp> {
        let meta = std::fs::symlink_metadata(path)
            .with_context(|| format!("cannot inspect {}", path.display()))?;
        Ok(FileStamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        })
    }
}

/// The store's file as a start found it, before SQLite opened it: only then does an empty
/// WAL show that everything SQLite read came from the file itself.
#[derive(Debug, Clone, Copy)]
pub struct AtRest {
    wal_empty: bool,
    database: Option<FileStamp>,
}

impl AtRest {
    /// Looks at the store at `db` (which may not exist yet).
    pub fn observe(db: &Path) -> AtRest {
        AtRest {
            wal_empty: wal_is_empty(db).unwrap_or(false),
            database: FileStamp::of(db).ok(),
        }
    }
}

/// Whether anyone but the daemon's own connection wrote the store while it ran: a snapshot
/// copies the index only when no one did.
pub struct OwnWrites {
    data_version: i64,
    database: Option<FileStamp>,
    /// What someone else did, once noticed.
    others: Option<&'static str>,
}

impl OwnWrites {
    /// From now on, on `conn`, the connection to the store at `db` that the daemon writes.
    pub fn new(conn: &Connection, db: &Path) -> Result<OwnWrites> {
        Ok(OwnWrites {
            data_version: data_version(conn)?,
            database: FileStamp::of(db).ok(),
            others: None,
        })
    }

    /// Before the daemon writes: whatever changed since its last write was someone else's.
    pub fn before_writing(&mut self, conn: &Connection, db: &Path) {
        if self.others.is_some() {
            return;
        }
        if data_version(conn).ok() != Some(self.data_version) {
            self.others = Some("another connection committed to the store while the daemon ran");
        } else if FileStamp::of(db).ok() != self.database {
            self.others =
                Some("keys.db was written while the daemon ran, not through its connection");
        }
    }

    /// After the daemon wrote (a commit may copy the WAL into the file).
    pub fn after_writing(&mut self, db: &Path) {
        self.database = FileStamp::of(db).ok();
    }

    /// What someone else did, if anything.
    pub fn others(&self) -> Option<&'static str> {
        self.others
    }
}

/// Counts commits to the store by connections other than `conn`.
fn data_version(conn: &Connection) -> Result<i64> {
    Ok(conn
        .prepare_cached("PRAGMA data_version")?
        .query_row([], |row| row.get(0))?)
}

/// A fresh random token, in hex.
pub fn new_token() -> Result<String> {
    let mut token = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut token)
        .map_err(|_| anyhow::anyhow!("the system random number generator failed"))?;
    Ok(hex::encode(token))
}

/// One thing the snapshot holds, in this order: owners, keys, retired token hashes, the ids
/// of keys refused at the start it copies, and the counts of each, last.
#[derive(Debug, Serialize, Deserialize)]
// Nearly every item is a key: boxing it would cost an allocation each.
#[allow(clippy::large_enum_variant)]
pub enum Item {
    Owner(OwnerRecord, OwnerUsage),
    /// A key, its usage and where its usage row is ([`crate::key::UsageRow`] bits).
    Key(KeyRecord, UsageRecord, u32),
    Retired(TokenHash, Option<String>),
    Refused(String),
    End(Counts),
}

/// How many of each kind the snapshot holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub owners: u64,
    pub keys: u64,
    pub retired: u64,
    pub refused: u64,
}

impl Item {
    /// Where the kind comes in the file.
    fn rank(&self) -> u8 {
        match self {
            Item::Owner(..) => 0,
            Item::Key(..) => 1,
            Item::Retired(..) => 2,
            Item::Refused(_) => 3,
            Item::End(_) => 4,
        }
    }

    fn count_in(&self, counts: &mut Counts) {
        match self {
            Item::Owner(..) => counts.owners += 1,
            Item::Key(..) => counts.keys += 1,
            Item::Retired(..) => counts.retired += 1,
            Item::Refused(_) => counts.refused += 1,
            Item::End(_) => {}
        }
    }
}

fn codec() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_ITEM>()
}

/// The build that writes and reads snapshots: another build reads every row instead, as
/// its records may be laid out differently.
fn build() -> String {
    format!("{} {}", env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"))
}

fn wal_path(db: &Path) -> PathBuf {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    PathBuf::from(wal)
}

/// Whether the WAL is absent or empty: then everything SQLite reads comes from the
/// database file itself.
fn wal_is_empty(db: &Path) -> Result<bool> {
    match std::fs::symlink_metadata(wal_path(db)) {
        Ok(meta) => Ok(meta.is_file() && meta.len() == 0),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(e).context("cannot inspect the WAL"),
    }
}

/// Writes snapshots: frames of items, sealed one by one.
pub struct SnapshotWriter<'a> {
    out: BufWriter<File>,
    barrier: &'a Barrier,
    file_id: String,
    frames: u64,
    plain: Vec<u8>,
    counts: Counts,
    rank: u8,
    temporary: PathBuf,
    path: PathBuf,
}

impl<'a> SnapshotWriter<'a> {
    /// Starts a snapshot of the store at `db` (its WAL emptied just before) whose audit
    /// chain's head is `audit_head`, under a temporary name beside it.
    pub fn create(
        db: &Path,
        schema: i64,
        audit_head: ChainHead,
        token: String,
        barrier: &'a Barrier,
    ) -> Result<SnapshotWriter<'a>> {
        if !wal_is_empty(db)? {
            bail!("the WAL was not emptied into the database file");
        }
        let dir = db.parent().context("the store has no directory")?;
        let head = Head {
            format: FORMAT,
            build: build(),
            schema,
            audit_head,
            token,
            database: FileStamp::of(db)?,
        };
        let temporary = dir.join(TEMPORARY_NAME);
        match std::fs::remove_file(&temporary) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).context("cannot remove an unfinished snapshot")
            }
            _ => {}
        }
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&temporary)
            .with_context(|| format!("cannot create {}", temporary.display()))?;
        let mut id = [0u8; FILE_ID_LEN];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut id)
            .map_err(|_| anyhow::anyhow!("the system random number generator failed"))?;
        // Unlike `id`, the token is never in the file's plaintext.
        let mut writer = SnapshotWriter {
            out: BufWriter::with_capacity(FRAME_PLAIN, file),
            barrier,
            file_id: hex::encode(id),
            frames: 0,
            plain: Vec::with_capacity(FRAME_PLAIN + 4096),
            counts: Counts::default(),
            rank: 0,
            temporary,
            path: dir.join(FILE_NAME),
        };
        writer.out.write_all(MAGIC)?;
        writer.out.write_all(&id)?;
        let head = bincode::serde::encode_to_vec(&head, codec())?;
        writer.seal(&head, false)?;
        Ok(writer)
    }

    /// Adds an item; items must come in [`Item`]'s order.
    pub fn push(&mut self, item: &Item) -> Result<()> {
        if item.rank() < self.rank || matches!(item, Item::End(_)) {
            bail!("snapshot items out of order");
        }
        self.rank = item.rank();
        item.count_in(&mut self.counts);
        bincode::serde::encode_into_std_write(item, &mut self.plain, codec())?;
        if self.plain.len() >= FRAME_PLAIN {
            let plain = std::mem::take(&mut self.plain);
            self.seal(&plain, false)?;
            self.plain = plain;
            self.plain.clear();
        }
        Ok(())
    }

    /// Seals the counts as the last frame, makes the file durable and gives it its name.
    pub fn finish(mut self) -> Result<Counts> {
        let end = Item::End(self.counts);
        bincode::serde::encode_into_std_write(&end, &mut self.plain, codec())?;
        let plain = std::mem::take(&mut self.plain);
        self.seal(&plain, true)?;
        let file = self.out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&self.temporary, &self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(self.counts)
    }

    fn seal(&mut self, plain: &[u8], last: bool) -> Result<()> {
        let sealed = self
            .barrier
            .seal(TABLE, &frame_row(&self.file_id, self.frames, last), plain);
        let len = u32::try_from(sealed.len()).context("a snapshot frame too large")?;
        self.out.write_all(&len.to_le_bytes())?;
        self.out.write_all(&sealed)?;
        self.frames += 1;
        Ok(())
    }
}

/// Removes the snapshot written beside the store at `db`, if any: it no longer copies the
/// store.
pub fn remove_written(db: &Path) -> Result<()> {
    let dir = db.parent().context("the store has no directory")?;
    match std::fs::remove_file(dir.join(FILE_NAME)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).context("cannot remove the index snapshot, which no longer copies the store")
        }
        _ => Ok(()),
    }
}

/// Removes a snapshot whose writing failed half-way, if any.
pub fn remove_unfinished(db: &Path) {
    if let Some(dir) = db.parent() {
        let _ = std::fs::remove_file(dir.join(TEMPORARY_NAME));
    }
}

/// The associated data's row of frame `n`.
fn frame_row(file_id: &str, n: u64, last: bool) -> String {
    format!("{file_id}/{n}/{}", if last { "last" } else { "more" })
}

/// A snapshot taken out of the data directory, not yet read.
pub struct TakenSnapshot {
    file: BufReader<File>,
    len: u64,
}

/// Takes the snapshot in the store directory of `db` (removing its name, so that it is
/// read at most once), if there is one. Only a regular file of this user's, which no
/// one else may write, is taken.
pub fn take(db: &Path) -> Result<Option<TakenSnapshot>> {
    let dir = db.parent().context("the store has no directory")?;
    // Left by a stop that was killed while writing it.
    remove_unfinished(db);
    let path = dir.join(FILE_NAME);
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot open {}", path.display())),
    };
    std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
    let meta = file.metadata()?;
    let euid = nix::unistd::geteuid().as_raw();
    if !meta.is_file() || meta.uid() != euid || meta.mode() & 0o022 != 0 {
        bail!("it is not a regular file of the daemon's user that only that user may write");
    }
    Ok(Some(TakenSnapshot {
        file: BufReader::with_capacity(1 << 20, file),
        len: meta.len(),
    }))
}

impl TakenSnapshot {
    /// Reads the snapshot and hands its items to `each` a frame at a time, on this thread,
    /// while another reads, opens and decodes the frames ahead. `each` takes out of the
    /// items what it keeps; the rest goes back to be dropped by the thread that made it,
    /// which glibc's allocator does many times faster than freeing another thread's
    /// strings. An error when it is not a whole, sealed snapshot of the store at `db` as it
    /// is `now`: the caller then reads every row instead, and must discard whatever `each`
    /// was handed.
    pub fn read(
        mut self,
        db: &Path,
        now: &StoreNow,
        barrier: &Barrier,
        mut each: impl FnMut(&mut [Item]) -> Result<()>,
    ) -> Result<Counts> {
        let mut frames = Frames::start(&mut self.file, self.len, barrier)?;
        let head: Head = decode_one(frames.next_frame()?.context("no head")?.0)?;
        check_head(&head, db, now)?;
        let (send, decoded) = mpsc::sync_channel(FRAMES_AHEAD);
        let (give_back, returned) = mpsc::channel();
        std::thread::scope(|scope| {
            let reader = scope.spawn(move || decode_frames(frames, send, returned));
            // A filing error drops the channel, which stops the reader; a reading error ends
            // the frames early, and is the one to report.
            let filed = file_frames(decoded, give_back, &mut each);
            reader
                .join()
                .map_err(|_| anyhow::anyhow!("the thread reading the snapshot panicked"))??;
            filed
        })
    }
}

/// What the store says now, for a snapshot to copy.
pub struct StoreNow {
    pub schema: i64,
    pub audit_head: ChainHead,
    /// The token the last stop committed, if it is still there.
    pub token: Option<String>,
    pub at_rest: AtRest,
}

fn check_head(head: &Head, db: &Path, now: &StoreNow) -> Result<()> {
    if head.format != FORMAT || head.build != build() || head.schema != now.schema {
        bail!("it was written by another build ({})", head.build);
    }
    if head.audit_head != now.audit_head {
        bail!("the audit chain moved on since it was written");
    }
    if now.token.as_deref() != Some(head.token.as_str()) {
        bail!("it is not the one the last stop wrote");
    }
    let untouched = now.at_rest.wal_empty
        && now.at_rest.database == Some(head.database)
        && wal_is_empty(db)?
        && FileStamp::of(db)? == head.database;
    if !untouched {
        bail!("the database file was written since");
    }
    Ok(())
}

/// A frame's items, and whether it was the last frame.
type Decoded = (Vec<Item>, bool);

/// Hands each frame's items to `each` and then back, checking their order and, at the
/// end, their counts.
fn file_frames(
    decoded: mpsc::Receiver<Decoded>,
    give_back: mpsc::Sender<Vec<Item>>,
    each: &mut impl FnMut(&mut [Item]) -> Result<()>,
) -> Result<Counts> {
    let mut counts = Counts::default();
    let mut rank = 0;
    let mut end = None;
    let mut last_seen = false;
    for (mut items, last) in decoded {
        for item in &items {
            if end.is_some() || item.rank() < rank {
                bail!("its items are out of order");
            }
            rank = item.rank();
            item.count_in(&mut counts);
            if let Item::End(said) = item {
                end = Some(*said);
            }
        }
        each(&mut items)?;
        // The reader may be done; then these are dropped here.
        let _ = give_back.send(items);
        last_seen = last;
    }
    match end {
        Some(said) if said == counts && last_seen => Ok(counts),
        Some(_) if last_seen => bail!("its counts do not match its items"),
        _ => bail!("it ends early"),
    }
}

/// Opens and decodes frame after frame, into batches handed back by the filing thread
/// (their leftovers dropped here); the last frame must end the file.
fn decode_frames(
    mut frames: Frames<'_, '_>,
    send: mpsc::SyncSender<Decoded>,
    returned: mpsc::Receiver<Vec<Item>>,
) -> Result<()> {
    loop {
        let Some((plain, last)) = frames.next_frame()? else {
            bail!("it ends without its last frame");
        };
        let mut items = returned.try_recv().unwrap_or_default();
        items.clear();
        let mut rest = plain;
        while !rest.is_empty() {
            let (item, used): (Item, usize) = bincode::serde::decode_from_slice(rest, codec())
                .context("an item does not decode")?;
            rest = &rest[used..];
            items.push(item);
        }
        if send.send((items, last)).is_err() || last {
            return Ok(());
        }
    }
}

fn decode_one<T: serde::de::DeserializeOwned>(plain: &[u8]) -> Result<T> {
    match bincode::serde::decode_from_slice(plain, codec()) {
        Ok((value, used)) if used == plain.len() => Ok(value),
        _ => bail!("its head does not decode"),
    }
}

/// The frames of a snapshot file, opened in order, each in the same buffer.
struct Frames<'f, 'b> {
    file: &'f mut BufReader<File>,
    left: u64,
    barrier: &'b Barrier,
    file_id: String,
    n: u64,
    done: bool,
    buffer: Vec<u8>,
}

impl<'f, 'b> Frames<'f, 'b> {
    fn start(file: &'f mut BufReader<File>, len: u64, barrier: &'b Barrier) -> Result<Self> {
        let mut magic = [0u8; 8];
        let mut id = [0u8; FILE_ID_LEN];
        file.read_exact(&mut magic).context("it is too short")?;
        if &magic != MAGIC {
            bail!("it is not a snapshot of this format");
        }
        file.read_exact(&mut id).context("it is too short")?;
        Ok(Frames {
            file,
            left: len.saturating_sub((MAGIC.len() + FILE_ID_LEN) as u64),
            barrier,
            file_id: hex::encode(id),
            n: 0,
            done: false,
            buffer: Vec::new(),
        })
    }

    /// The next frame's plaintext and whether it is the last; `None` at the end of the
    /// file.
    fn next_frame(&mut self) -> Result<Option<(&[u8], bool)>> {
        if self.done || self.left == 0 {
            return Ok(None);
        }
        let mut len = [0u8; 4];
        self.file.read_exact(&mut len).context("it is cut short")?;
        let len = u32::from_le_bytes(len) as usize;
        if len > MAX_FRAME || len as u64 + 4 > self.left {
            bail!("a frame's length is out of bounds");
        }
        self.buffer.resize(len, 0);
        self.file
            .read_exact(&mut self.buffer)
            .context("it is cut short")?;
        self.left -= len as u64 + 4;
        let last = self.left == 0;
        let n = self.n;
        self.n += 1;
        self.done = last;
        let plain = self
            .barrier
            .open_in_place(TABLE, &frame_row(&self.file_id, n, last), &mut self.buffer)
            .map_err(|_| anyhow::anyhow!("frame {n} does not open (tampered or cut)"))?;
        Ok(Some((plain, last)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::barrier::random_key;
    use ring::rand::SystemRandom;

    const HEAD: ChainHead = ChainHead {
        seq: 7,
        link: [3; 32],
        bound_entries: 11,
    };
    const TOKEN: &str = "a token";

    /// A store file and a snapshot of it of several frames (50,000 retired hashes).
    fn written(barrier: &Barrier) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = dir.path().join("keys.db");
        std::fs::write(&db, b"a store").expect("write");
        write_snapshot(&db, barrier);
        (dir, db)
    }

    fn write_snapshot(db: &Path, barrier: &Barrier) {
        let mut out = SnapshotWriter::create(db, 9, HEAD, TOKEN.into(), barrier).expect("create");
        for n in 0..50_000u32 {
            let mut hash = [0u8; 32];
            hash[..4].copy_from_slice(&n.to_le_bytes());
            out.push(&Item::Retired(hash, Some(format!("key-{n}"))))
                .expect("push");
        }
        out.push(&Item::Refused("key-x".into())).expect("push");
        out.finish().expect("finish");
    }

    fn now(db: &Path) -> StoreNow {
        StoreNow {
            schema: 9,
            audit_head: HEAD,
            token: Some(TOKEN.into()),
            at_rest: AtRest::observe(db),
        }
    }

    fn read_back(db: &Path, barrier: &Barrier, now: StoreNow) -> Result<Vec<Item>> {
        let taken = take(db)?.context("a snapshot is there")?;
        let mut items = Vec::new();
        taken.read(db, &now, barrier, |batch| {
            let placeholder = || Item::End(Counts::default());
            items.extend(
                batch
                    .iter_mut()
                    .map(|item| std::mem::replace(item, placeholder())),
            );
            Ok(())
        })?;
        Ok(items)
    }

    /// The byte ranges of each frame, length included.
    fn frames_of(bytes: &[u8]) -> Vec<std::ops::Range<usize>> {
        let mut at = MAGIC.len() + FILE_ID_LEN;
        let mut frames = Vec::new();
        while at < bytes.len() {
            let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4")) as usize;
            frames.push(at..at + 4 + len);
            at += 4 + len;
        }
        frames
    }

    fn put(path: &Path, bytes: &[u8]) {
        std::fs::write(path, bytes).expect("write");
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("chmod");
    }

    fn barrier() -> Barrier {
        Barrier::new(&random_key(&SystemRandom::new()).expect("rng"))
    }

    #[test]
    fn what_is_written_is_read_back_once() {
        let barrier = barrier();
        let (_dir, db) = written(&barrier);
        let items = read_back(&db, &barrier, now(&db)).expect("read");
        assert_eq!(items.len(), 50_002);
        assert!(matches!(&items[49_999], Item::Retired(_, Some(id)) if id == "key-49999"));
        assert!(matches!(&items[50_000], Item::Refused(id) if id == "key-x"));
        assert!(matches!(items[50_001], Item::End(c) if c.retired == 50_000 && c.refused == 1));
        assert!(take(&db).expect("take").is_none(), "read once");
    }

    #[test]
    fn a_frame_cut_off_swapped_or_taken_from_another_snapshot_does_not_read() {
        let barrier = barrier();
        let (_dir, db) = written(&barrier);
        let path = db.with_file_name(FILE_NAME);
        let whole = std::fs::read(&path).expect("read");
        let frames = frames_of(&whole);
        assert!(frames.len() >= 4, "{} frames", frames.len());
        // A second snapshot of the same store under the same key: only its file id differs.
        write_snapshot(&db, &barrier);
        let other = std::fs::read(&path).expect("read");
        let other_frames = frames_of(&other);

        let cut = whole[..frames[frames.len() - 1].start].to_vec();
        let mut swapped = whole[..frames[1].start].to_vec();
        swapped.extend_from_slice(&whole[frames[2].clone()]);
        swapped.extend_from_slice(&whole[frames[1].clone()]);
        swapped.extend_from_slice(&whole[frames[3].start..]);
        let mut spliced = whole[..frames[1].start].to_vec();
        spliced.extend_from_slice(&other[other_frames[1].clone()]);
        spliced.extend_from_slice(&whole[frames[2].start..]);
        for (what, bytes) in [("cut", cut), ("swapped", swapped), ("spliced", spliced)] {
            put(&path, &bytes);
            assert!(read_back(&db, &barrier, now(&db)).is_err(), "{what} reads");
        }
        put(&path, &whole);
        assert!(
            read_back(&db, &barrier, now(&db)).is_ok(),
            "whole, it reads"
        );
        put(&path, &whole);
        let another_key = self::barrier();
        assert!(
            read_back(&db, &another_key, now(&db)).is_err(),
            "another key reads"
        );
    }

    #[test]
    fn a_snapshot_of_another_state_of_the_store_does_not_read() {
        let barrier = barrier();
        let expect_refused = |db: &Path, now: StoreNow, why: &str| {
            let error = read_back(db, &barrier, now).expect_err(why);
            assert!(error.to_string().contains(why), "{error}");
        };
        let (_dir, db) = written(&barrier);
        let moved_on = StoreNow {
            audit_head: ChainHead { seq: 8, ..HEAD },
            ..now(&db)
        };
        expect_refused(&db, moved_on, "audit chain");

        let (_dir, db) = written(&barrier);
        let older = StoreNow {
            token: Some("a newer token".into()),
            ..now(&db)
        };
        expect_refused(&db, older, "not the one the last stop wrote");

        let (_dir, db) = written(&barrier);
        let gone = StoreNow {
            token: None,
            ..now(&db)
        };
        expect_refused(&db, gone, "not the one the last stop wrote");

        // The same bytes written back in place, the times set back: only ctime shows it.
        let (_dir, db) = written(&barrier);
        let mtime = std::fs::metadata(&db)
            .expect("stat")
            .modified()
            .expect("mtime");
        std::fs::write(&db, b"a store").expect("write");
        let file = std::fs::File::options()
            .write(true)
            .open(&db)
            .expect("open");
        file.set_modified(mtime).expect("set mtime back");
        drop(file);
        expect_refused(&db, now(&db), "written since");

        // A WAL with frames when the store was opened, gone when the snapshot is read.
        let (_dir, db) = written(&barrier);
        std::fs::write(wal_path(&db), b"frames").expect("write");
        let opened = now(&db);
        std::fs::remove_file(wal_path(&db)).expect("remove");
        expect_refused(&db, opened, "written since");
    }
}
