//! What this machine's memory allows a verify's lookup, at best: random reads with the
//! index's footprint and none of its work, each independent of the last so that the CPU
//! overlaps as many as it can (the daemon cannot do better: it must read a bucket before
//! it knows which entry to read).
//!
//! A lookup reads one 8-byte table bucket and two lines of a 192-byte entry. With 10,000
//! keys that is a 256 KiB table and a 2 MiB slab; with a million, 16 MiB and 192 MiB. The
//! third case is what a layout with one page walk per lookup (bucket and entry on one page)
//! could reach. Memory is mapped with transparent huge pages asked for, as the daemon's
//! malloc does under `glibc.malloc.hugetlb=1`.
//!
//! ```sh
//! cargo run --release -p authenta-bench --example memory_floor
//! ```

use std::hint::black_box;
use std::time::Instant;

const LOOKUPS: usize = 2_000_000;
const ROUNDS: usize = 5;
const LINE: usize = 64;
const ENTRY: usize = 192;

/// Anonymous memory with huge pages asked for, touched so that no lookup faults.
struct Region {
    ptr: *mut u8,
    len: usize,
}

impl Region {
    fn new(len: usize) -> Region {
        // SAFETY: an anonymous private mapping of `len` bytes; checked for failure before
        // use, unmapped once in `drop`, and only read through `bytes` while it lives.
        #[allow(unsafe_code)]
        let ptr = unsafe {
            let ptr = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            assert!(ptr != libc::MAP_FAILED, "mmap of {len} bytes failed");
            libc::madvise(ptr, len, libc::MADV_HUGEPAGE);
            std::ptr::write_bytes(ptr.cast::<u8>(), 1, len);
            ptr.cast::<u8>()
        };
        Region { ptr, len }
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` is a live mapping of `len` bytes, written once in `new`.
        #[allow(unsafe_code)]
        unsafe {
            std::slice::from_raw_parts(self.ptr, self.len)
        }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        #[allow(unsafe_code)]
        unsafe {
            libc::munmap(self.ptr.cast(), self.len);
        }
    }
}

/// xorshift64: the next pseudo-random number.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Nanoseconds per lookup of `table` then two entry lines of `slab` (independent picks).
fn two_pages(table: &[u8], slab: &[u8]) -> f64 {
    let buckets = (table.len() / 8) as u64;
    let entries = (slab.len() / ENTRY) as u64;
    let mut state = 0x9e37_79b9_7f4a_7c15;
    let mut sum = 0u64;
    let started = Instant::now();
    for _ in 0..LOOKUPS {
        let pick = next(&mut state);
        let bucket = (pick % buckets) as usize * 8;
        let entry = ((pick >> 24) % entries) as usize * ENTRY;
        sum += u64::from(table[bucket]) + u64::from(slab[entry]) + u64::from(slab[entry + LINE]);
    }
    black_box(sum);
    started.elapsed().as_nanos() as f64 / LOOKUPS as f64
}

/// Nanoseconds per lookup of two lines on one page of `slab`: one walk per lookup.
fn one_page(slab: &[u8]) -> f64 {
    let lines = (slab.len() / LINE) as u64;
    let mut state = 0x9e37_79b9_7f4a_7c15;
    let mut sum = 0u64;
    let started = Instant::now();
    for _ in 0..LOOKUPS {
        let line = (next(&mut state) % lines) as usize * LINE;
        sum += u64::from(slab[line]) + u64::from(slab[line ^ 2048]);
    }
    black_box(sum);
    started.elapsed().as_nanos() as f64 / LOOKUPS as f64
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let small_table = Region::new(256 << 10);
    let small_slab = Region::new(10_000 * ENTRY);
    let table = Region::new(16 << 20);
    let slab = Region::new(1_000_000 * ENTRY);
    let mut small = Vec::new();
    let mut large = Vec::new();
    let mut single = Vec::new();
    for _ in 0..ROUNDS {
        small.push(two_pages(small_table.bytes(), small_slab.bytes()));
        large.push(two_pages(table.bytes(), slab.bytes()));
        single.push(one_page(slab.bytes()));
    }
    let (small, large, single) = (median(small), median(large), median(single));
    println!("ns per lookup, median of {ROUNDS} rounds of {LOOKUPS} independent lookups:");
    println!("  10,000 keys (256 KiB table, 2 MiB slab):        {small:6.1}");
    println!("  1,000,000 keys (16 MiB table, 192 MiB slab):    {large:6.1}");
    println!("  1,000,000 keys, bucket and entry on one page:   {single:6.1}");
    println!(
        "  a million keys cost at least {:.1} ns more per lookup ({:.1} with one walk)",
        large - small,
        single - small
    );
}
