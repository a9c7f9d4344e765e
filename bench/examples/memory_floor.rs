//! What this machine's memory allows a verify's lookup at best: the daemon's access pattern
//! with none of its other work. In runs of 32, as `VerifyBatch::answer_run` does: prefetch
//! every run's table bucket, then read each bucket to learn its entry and prefetch that
//! entry's two lines, then read them.
//!
//! With 10,000 keys that is a 256 KiB table and a 2 MiB slab of 192-byte entries; with a
//! million, 16 MiB and 192 MiB. The third case is what a layout with one page walk per
//! lookup could reach: each bucket on the same 4 KiB page as its entry (16 entries and 128
//! buckets a page). Memory is mapped with transparent huge pages asked for, as the daemon's
//! malloc does under `glibc.malloc.hugetlb=1`; the program prints how much of it the kernel
//! backed with them.
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
const PAGE: usize = 4096;
/// Lookups asked for together, as `RUN_MAX` in the daemon.
const RUN: usize = 32;

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

    fn write_u64(&self, at: usize, value: u64) {
        assert!(at + 8 <= self.len);
        // SAFETY: in bounds (checked above) of a live mapping; no reference to it is held
        // while this writes, since callers write before they borrow `bytes`.
        #[allow(unsafe_code)]
        unsafe {
            self.ptr.add(at).cast::<u64>().write_unaligned(value);
        }
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

/// Asks the CPU for the line holding `byte`, without waiting.
fn prefetch(byte: &u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint that never faults; the address is a live reference's.
    #[allow(unsafe_code)]
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
            (byte as *const u8).cast::<i8>(),
        );
    }
}

/// Reads a bucket: the 8 bytes at `at`.
fn bucket(table: &[u8], at: usize) -> u64 {
    let mut bytes = [0; 8];
    bytes.copy_from_slice(&table[at..at + 8]);
    u64::from_le_bytes(bytes)
}

/// Nanoseconds per lookup, in runs of 32, and the MiB of huge pages in use while the
/// regions are mapped: `bucket_at` picks a bucket's offset in `table` from a random
/// number, and `entry_at` an entry's offset in `slab` from the bucket's value.
fn lookups(
    table: &[u8],
    slab: &[u8],
    bucket_at: impl Fn(u64) -> usize,
    entry_at: impl Fn(usize, u64) -> usize,
) -> (f64, Option<f64>) {
    let mut state = 0x9e37_79b9_7f4a_7c15;
    let mut sum = 0u64;
    let mut buckets = [0usize; RUN];
    let mut entries = [0usize; RUN];
    let started = Instant::now();
    for _ in 0..LOOKUPS / RUN {
        for at in &mut buckets {
            *at = bucket_at(next(&mut state));
            prefetch(&table[*at]);
        }
        for (at, entry) in buckets.iter().zip(&mut entries) {
            *entry = entry_at(*at, bucket(table, *at));
            prefetch(&slab[*entry]);
            prefetch(&slab[*entry + LINE]);
        }
        for &entry in &entries {
            sum += u64::from(slab[entry]) + u64::from(slab[entry + LINE]);
        }
    }
    black_box(sum);
    let ns = started.elapsed().as_nanos() as f64 / LOOKUPS as f64;
    (ns, huge_mib())
}

/// A table of `buckets` 8-byte buckets, each naming a random one of `entries`.
fn table(buckets: usize, entries: usize) -> Region {
    let region = Region::new(buckets * 8);
    let mut state = 0x2545_f491_4f6c_dd1d;
    for at in (0..buckets * 8).step_by(8) {
        let value = next(&mut state) % entries as u64;
        region.write_u64(at, value);
    }
    region
}

/// Nanoseconds per lookup with a separate table and slab, as the daemon has them.
fn two_walks(keys: usize) -> (f64, Option<f64>) {
    let buckets = (keys * 2).next_power_of_two();
    let table = table(buckets, keys);
    let slab = Region::new(keys * ENTRY);
    lookups(
        table.bytes(),
        slab.bytes(),
        |random| (random as usize & (buckets - 1)) * 8,
        |_, value| value as usize * ENTRY,
    )
}

/// Nanoseconds per lookup with each bucket on its entry's page: the page's first 1 KiB is
/// 128 buckets, each naming one of the 16 entries after them.
fn one_walk(keys: usize) -> (f64, Option<f64>) {
    const PER_PAGE: usize = 16;
    let pages = keys.div_ceil(PER_PAGE);
    let region = Region::new(pages * PAGE);
    let mut state = 0x2545_f491_4f6c_dd1d;
    for page in 0..pages {
        for bucket in 0..128 {
            let value = next(&mut state) % PER_PAGE as u64;
            region.write_u64(page * PAGE + bucket * 8, value);
        }
    }
    let bytes = region.bytes();
    lookups(
        bytes,
        bytes,
        |random| (random as usize % pages) * PAGE + ((random >> 40) as usize % 128) * 8,
        |at, value| at / PAGE * PAGE + 1024 + value as usize * ENTRY,
    )
}

/// The process's anonymous memory in huge pages, in MiB, as the kernel reports it.
fn huge_mib() -> Option<f64> {
    let rollup = std::fs::read_to_string("/proc/self/smaps_rollup").ok()?;
    let line = rollup.lines().find(|l| l.starts_with("AnonHugePages:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let mut small = Vec::new();
    let mut large = Vec::new();
    let mut single = Vec::new();
    let mut huge = None;
    for _ in 0..ROUNDS {
        small.push(two_walks(10_000).0);
        let (ns, in_huge) = two_walks(1_000_000);
        large.push(ns);
        huge = in_huge;
        single.push(one_walk(1_000_000).0);
    }
    let (small, large, single) = (median(small), median(large), median(single));
    println!("ns per lookup, median of {ROUNDS} rounds of {LOOKUPS} lookups in runs of {RUN}:");
    println!("  10,000 keys (256 KiB table, 2 MiB slab):            {small:6.1}");
    println!(
        "  1,000,000 keys (16 MiB table, 192 MiB slab):        {large:6.1}   ({} MiB in huge pages)",
        huge.map_or("?".into(), |m| format!("{m:.0}"))
    );
    println!("  1,000,000 keys, bucket and entry on one page:       {single:6.1}");
    println!(
        "  what a million keys add per lookup: {:.1} ns ({:.1} with one walk)",
        large - small,
        single - small
    );
}
