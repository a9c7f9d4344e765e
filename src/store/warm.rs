//! Reads the store's file into the page cache ahead of start-up, in parallel.
//!
//! Start-up reads most of the file (the key, usage and audit-index pages lie interleaved,
//! as the tables grew together). From a cold cache, SQLite's own 4 KiB reads get the
//! kernel's modest readahead: a million-key store (about 700 MB) took over a second of
//! waiting on the disk. Several threads asking for 4 MiB ranges at once keep the device
//! busy, and `posix_fadvise(WILLNEED)` fills the cache without copying anything out of it.

use rustix::fs::{fadvise, Advice};
use std::fs::File;
use std::num::NonZeroU64;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// Threads asking at once, and the range each asks for at a time.
const THREADS: u64 = 8;
const CHUNK: u64 = 4 << 20;

/// Starts filling the page cache with the file at `path`, and returns at once. A file that
/// is already cached costs a few milliseconds; a failure costs nothing but the speed-up.
///
/// Only a regular file is read, never through a symlink and never blocking on a FIFO, and
/// only as far as it holds data: a file made sparse and huge does not fill the cache.
pub fn warm_page_cache(path: &Path) {
    let Some((file, len)) = open_regular(path) else {
        return;
    };
    // Never closed: closing any descriptor of a file drops every POSIX lock this process
    // holds on it, SQLite's included. Another process's connection to the store (a
    // backup, `sqlite3`) would then take itself for the last one, checkpoint and delete
    // the WAL the daemon still writes to, and commits would be lost.
    let file: &'static File = Box::leak(Box::new(file));
    for first in 0..THREADS {
        let spawned = std::thread::Builder::new()
            .name("authenta-warm".into())
            .spawn(move || read_ahead(file, first, len));
        if spawned.is_err() {
            return;
        }
    }
}

/// The file at `path` if it is a regular one, and how far to read it: its length, or the
/// bytes its blocks hold if fewer.
fn open_regular(path: &Path) -> Option<(File, u64)> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    let meta = file.metadata().ok()?;
    meta.is_file()
        .then(|| (file, meta.len().min(meta.blocks().saturating_mul(512))))
}

/// Asks for chunks `first`, `first + THREADS`, ... of the file.
fn read_ahead(file: &File, first: u64, len: u64) {
    let mut offset = first * CHUNK;
    while offset < len {
        if fadvise(file, offset, NonZeroU64::new(CHUNK), Advice::WillNeed).is_err() {
            return;
        }
        offset += THREADS * CHUNK;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_regular_file_is_read_and_only_as_far_as_it_holds_data() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        std::fs::write(&data, vec![7u8; 1 << 20]).expect("write");
        assert_eq!(open_regular(&data).map(|(_, len)| len), Some(1 << 20));

        let sparse = dir.path().join("sparse");
        File::create(&sparse)
            .and_then(|f| f.set_len(1 << 40))
            .expect("a 1 TiB hole");
        let (_, len) = open_regular(&sparse).expect("a regular file");
        assert!(len < 1 << 20, "a hole is not read: {len}");

        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&data, &link).expect("symlink");
        assert!(open_regular(&link).is_none(), "not through a symlink");

        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).expect("fifo");
        assert!(
            open_regular(&fifo).is_none(),
            "a FIFO neither blocks nor is read"
        );
        assert!(open_regular(dir.path()).is_none(), "nor a directory");
    }
}
