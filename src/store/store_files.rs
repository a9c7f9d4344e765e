//! Notices the store's files being removed or replaced from outside while the daemon runs.
//!
//! SQLite keeps the database file and its WAL open for as long as the daemon's connection
//! is, and goes on writing both after their names are gone:
//!
//! - **the WAL** (a checkpoint only truncates it): every commit since the last checkpoint
//!   is then in a file no one finds after a crash, so `kill -9` or a power cut loses it,
//!   although it was acknowledged. After each commit, and at each health check, the store
//!   thread looks; when the WAL is out of place it copies the WAL into the database file (a
//!   checkpoint), then sets aside whatever file now holds the WAL's name, which SQLite
//!   would otherwise replay over the database at the next start.
//! - **the database file** (removed, or a backup moved over it while the daemon runs): the
//!   daemon's changes would go to a file that vanishes when it stops. The store thread
//!   looks before each batch and refuses changes while it is out of place, revocations
//!   too (each refusal says so); verify goes on answering from memory, and health checks
//!   report it.
//!
//! The identities are taken as the store opens, from the path SQLite resolved.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The store's database file and WAL as they were when the store opened.
pub struct StoreFiles {
    db: Watched,
    wal: Watched,
}

impl StoreFiles {
    /// The database at `db` (the path SQLite resolved) and its WAL, which exists once the
    /// connection is in WAL mode.
    pub fn new(db: &Path) -> io::Result<StoreFiles> {
        let mut wal = db.as_os_str().to_owned();
        wal.push("-wal");
        Ok(StoreFiles {
            db: Watched::new(db.to_path_buf())?,
            wal: Watched::new(PathBuf::from(wal))?,
        })
    }

    /// Whether the database file's name still holds the file SQLite writes; if not, what
    /// happened and what to do (logged once each time it goes out of place).
    pub fn database_in_place(&mut self) -> Result<(), String> {
        self.db.in_place().map_err(|why| {
            format!(
                "{why}, so no change is made (it would be lost with that file): stop the \
                 daemon, put the store back (docs/operations.md, \"Backup and restore\") and \
                 start it again"
            )
        })
    }

    /// Whether the WAL's name still holds the file SQLite writes; if not, what happened
    /// (logged once).
    pub fn wal_in_place(&mut self) -> Result<(), String> {
        self.wal.in_place()
    }

    /// Moves whatever file holds the WAL's name now (not SQLite's WAL, which is out of
    /// place) aside, so that no start replays it over the database.
    pub fn set_foreign_wal_aside(&self, now_ms: i64) -> io::Result<Option<PathBuf>> {
        let mut aside = self.wal.path.as_os_str().to_owned();
        aside.push(format!(".foreign-{now_ms}"));
        let aside = PathBuf::from(aside);
        match std::fs::rename(&self.wal.path, &aside) {
            Ok(()) => Ok(Some(aside)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// A file's name and the file (device, inode) it held at the start.
struct Watched {
    path: PathBuf,
    identity: (u64, u64),
    /// Out of place when last looked at, so the next refusal is not logged again.
    out_of_place: bool,
}

impl Watched {
    fn new(path: PathBuf) -> io::Result<Watched> {
        let identity = identity(&path)?.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} is missing", path.display()),
            )
        })?;
        Ok(Watched {
            path,
            identity,
            out_of_place: false,
        })
    }

    fn in_place(&mut self) -> Result<(), String> {
        let why = match identity(&self.path) {
            Ok(Some(now)) if now == self.identity => {
                self.out_of_place = false;
                return Ok(());
            }
            Ok(_) => format!(
                "{} was removed or replaced while the daemon had it open",
                self.path.display()
            ),
            Err(e) => format!("cannot look at {}: {e}", self.path.display()),
        };
        if !self.out_of_place {
            tracing::error!(error = %why, "a store file is out of place");
            self.out_of_place = true;
        }
        Err(why)
    }
}

/// Device and inode of the file at `path` itself (not a link's target); None if there is
/// none.
fn identity(path: &Path) -> io::Result<Option<(u64, u64)>> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) => Ok(Some((meta.dev(), meta.ino()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_removed_or_replaced_is_noticed_and_a_foreign_wal_set_aside() {
        for (name, replace) in [
            ("keys.db-wal", false),
            ("keys.db-wal", true),
            ("keys.db", true),
        ] {
            let dir = tempfile::tempdir().expect("tempdir");
            for file in ["keys.db", "keys.db-wal"] {
                std::fs::write(dir.path().join(file), b"pages").expect("written");
            }
            let mut files = StoreFiles::new(&dir.path().join("keys.db")).expect("found");
            assert_eq!(files.database_in_place(), Ok(()));
            assert_eq!(files.wal_in_place(), Ok(()));
            let path = dir.path().join(name);
            // Held open, as SQLite holds it: its inode cannot be reused by the new file.
            let _sqlite = std::fs::File::open(&path).expect("opens");
            std::fs::remove_file(&path).expect("removed");
            if replace {
                std::fs::write(&path, b"someone else's").expect("replaced");
            }
            let refused = if name == "keys.db" {
                files.database_in_place()
            } else {
                files.wal_in_place()
            };
            let refused = refused.expect_err("noticed");
            assert!(
                refused.contains(&format!("{name} was removed or replaced")),
                "{refused}"
            );
            if name == "keys.db-wal" {
                let aside = files.set_foreign_wal_aside(7).expect("renamed");
                assert_eq!(aside.is_some(), replace);
                assert!(!path.exists());
                assert_eq!(dir.path().join("keys.db-wal.foreign-7").exists(), replace);
            }
        }
    }
}
