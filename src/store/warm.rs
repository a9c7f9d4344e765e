//! Reads the store's file into the page cache ahead of start-up, in parallel.
//!
//! Start-up reads most of the file (the key, usage and audit-index pages lie interleaved,
//! as the tables grew together). From a cold cache, SQLite's own 4 KiB reads get the
//! kernel's modest readahead: a million-key store (about 700 MB) took over a second of
//! waiting on the disk. Several threads asking for 4 MiB ranges at once keep the device
//! busy, and `posix_fadvise(WILLNEED)` fills the cache without copying anything out of it.

use rustix::fs::{fadvise, Advice};
use std::num::NonZeroU64;
use std::path::Path;

/// Threads asking at once, and the range each asks for at a time.
const THREADS: u64 = 8;
const CHUNK: u64 = 4 << 20;

/// Starts filling the page cache with the file at `path`, and returns at once. A file that
/// is already cached costs a few milliseconds; a failure costs nothing but the speed-up.
pub fn warm_page_cache(path: &Path) {
    let Ok(len) = std::fs::metadata(path).map(|m| m.len()) else {
        return;
    };
    for first in 0..THREADS {
        let path = path.to_path_buf();
        let spawned = std::thread::Builder::new()
            .name("authenta-warm".into())
            .spawn(move || read_ahead(&path, first, len));
        if spawned.is_err() {
            return;
        }
    }
}

/// Asks for chunks `first`, `first + THREADS`, ... of the file.
fn read_ahead(path: &Path, first: u64, len: u64) {
    let Ok(file) = std::fs::File::open(path) else {
        return;
    };
    let mut offset = first * CHUNK;
    while offset < len {
        if fadvise(&file, offset, NonZeroU64::new(CHUNK), Advice::WillNeed).is_err() {
            return;
        }
        offset += THREADS * CHUNK;
    }
}
