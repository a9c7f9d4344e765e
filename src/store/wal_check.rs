//! Notices the store's WAL being removed or replaced from outside while the daemon runs.
//!
//! SQLite keeps one WAL file open for as long as the daemon's connection is (a checkpoint
//! only truncates it) and goes on writing it after its name is gone. If the file is removed
//! from the data directory, or another put in its place, every commit since the last
//! checkpoint is in a file no one finds after a crash: `kill -9` or a power cut loses it,
//! although it was acknowledged. So after each commit the store thread checks that the name
//! still holds the file it started with; when it does not, it copies the WAL into the
//! database file at once (a checkpoint), before it answers.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The WAL's name and the file (device, inode) it held when the store thread started.
pub struct WalCheck {
    path: PathBuf,
    identity: (u64, u64),
}

impl WalCheck {
    /// The WAL of the database at `db`, which exists once the store is open in WAL mode.
    pub fn new(db: &Path) -> io::Result<WalCheck> {
        let path = wal_path(db);
        let identity = identity(&path)?.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} is missing", path.display()),
            )
        })?;
        Ok(WalCheck { path, identity })
    }

    /// Whether the WAL's name still holds the file SQLite writes; if not, what happened.
    pub fn still_in_place(&self) -> Result<(), String> {
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

fn wal_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
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
    fn a_wal_removed_or_replaced_is_noticed() {
        for replace in [false, true] {
            let dir = tempfile::tempdir().expect("tempdir");
            let wal = dir.path().join("keys.db-wal");
            std::fs::write(&wal, b"frames").expect("wal");
            let check = WalCheck::new(&dir.path().join("keys.db")).expect("found");
            // Held open, as SQLite holds it: its inode cannot be reused by the new file.
            let _sqlite = std::fs::File::open(&wal).expect("opens");
            assert_eq!(check.still_in_place(), Ok(()));
            std::fs::remove_file(&wal).expect("removed");
            if replace {
                std::fs::write(&wal, b"someone else's").expect("replaced");
            }
            let refused = check.still_in_place().expect_err("noticed");
            assert!(
                refused.contains("keys.db-wal was removed or replaced"),
                "{refused}"
            );
        }
    }
}
