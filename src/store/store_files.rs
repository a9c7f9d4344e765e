//! Notices the store's files being removed or replaced from outside while the daemon runs.
//!
//! SQLite keeps the database file and its WAL open for as long as the daemon's connection
//! is, and goes on writing both after their names are gone:
//!
//! - **the WAL** (a checkpoint only truncates it): every commit since the last checkpoint
//!   is then in a file no one finds after a crash, so `kill -9` or a power cut loses it,
//!   although it was acknowledged. The store thread checks the WAL after each commit and,
//!   when it is not in place, copies it into the database file (a checkpoint) before it
//!   answers.
//! - **the database file** (removed, or a backup moved over it while the daemon runs): the
//!   daemon's changes would go to a file that vanishes when it stops. The store thread
//!   checks it before each batch and refuses changes while it is not in place; verify goes
//!   on answering from memory.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The store's database file and WAL, as they were when the store thread started.
pub struct StoreFiles {
    db: Watched,
    wal: Watched,
}

impl StoreFiles {
    /// The database at `db` and its WAL (which exists once the store is open in WAL mode).
    pub fn new(db: &Path) -> io::Result<StoreFiles> {
        let mut wal = db.as_os_str().to_owned();
        wal.push("-wal");
        Ok(StoreFiles {
            db: Watched::new(db.to_path_buf())?,
            wal: Watched::new(PathBuf::from(wal))?,
        })
    }

    /// Whether the database file's name still holds the file SQLite writes; if not, what
    /// happened and what to do.
    pub fn database_in_place(&self) -> Result<(), String> {
        self.db.in_place().map_err(|why| {
            format!(
                "{why}, so the change would be lost when the daemon stops: stop the daemon, put \
                 the store back (docs/operations.md, \"Backup and restore\") and start it again"
            )
        })
    }

    /// Whether the WAL's name still holds the file SQLite writes; if not, what happened.
    pub fn wal_in_place(&self) -> Result<(), String> {
        self.wal.in_place()
    }
}

/// A file's name and the file (device, inode) it held at the start.
struct Watched {
    path: PathBuf,
    identity: (u64, u64),
}

impl Watched {
    fn new(path: PathBuf) -> io::Result<Watched> {
        let identity = identity(&path)?.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} is missing", path.display()),
            )
        })?;
        Ok(Watched { path, identity })
    }

    fn in_place(&self) -> Result<(), String> {
        match identity(&self.path) {
            Ok(Some(now)) if now == self.identity => Ok(()),
            Ok(_) => Err(format!(
                "{} was removed or replaced while the daemon had it open",
                self.path.display()
            )),
            Err(e) => Err(format!("cannot look at {}: {e}", self.path.display())),
        }
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
    fn a_file_removed_or_replaced_is_noticed() {
        for (name, replace) in [
            ("keys.db-wal", false),
            ("keys.db-wal", true),
            ("keys.db", true),
        ] {
            let dir = tempfile::tempdir().expect("tempdir");
            for file in ["keys.db", "keys.db-wal"] {
                std::fs::write(dir.path().join(file), b"pages").expect("written");
            }
            let files = StoreFiles::new(&dir.path().join("keys.db")).expect("found");
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
        }
    }
}
