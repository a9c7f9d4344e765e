//! Random bytes for many small draws: the system's CSPRNG read a few kilobytes at a time.
//!
//! A durable create draws five times (its token, its id, and a nonce for each of the three
//! rows it seals), and each `getrandom` call costs about a microsecond of kernel time
//! whatever its size: a tenth of the store thread's time during creates. A [`Pool`] reads
//! [`POOL_BYTES`] at once and hands each byte out once, in order, wiping it as it goes, so
//! the bytes are the kernel's as before; what the pool holds is only bytes not yet handed
//! out. Those decide future tokens, so they are as secret as the data key in the same
//! process's memory.
//!
//! The store thread discards what is left at the start of every batch
//! ([`Pool::discard`]), so bytes wait at most one batch (a fraction of a millisecond under
//! load) to be used. That bounds what a clone of a running VM could repeat: Linux reseeds
//! `getrandom` when a VM is cloned, which a pool filled before the clone would not see,
//! and two clones handing out the same bytes would issue the same tokens and seal with
//! the same nonces. The daemon forks only before any pool exists (`--daemonize`).

use ring::error::Unspecified;
use ring::rand::{SecureRandom, SystemRandom};
use std::sync::{Mutex, PoisonError};
use zeroize::{Zeroize, Zeroizing};

/// Bytes read from the system at once: a batch of about eight creates in one read.
const POOL_BYTES: usize = 1024;

/// Anything that fills a buffer with cryptographically secure random bytes.
pub trait RandomSource {
    fn fill(&self, dest: &mut [u8]) -> Result<(), Unspecified>;
}

impl RandomSource for SystemRandom {
    fn fill(&self, dest: &mut [u8]) -> Result<(), Unspecified> {
        SecureRandom::fill(self, dest)
    }
}

/// The system's random bytes, read [`POOL_BYTES`] at a time and handed out once each.
pub struct Pool {
    system: SystemRandom,
    unused: Mutex<Unused>,
}

struct Unused {
    bytes: Zeroizing<[u8; POOL_BYTES]>,
    /// Where the bytes not yet handed out begin ([`POOL_BYTES`]: none left).
    next: usize,
}

impl Pool {
    pub fn new() -> Pool {
        Pool {
            system: SystemRandom::new(),
            unused: Mutex::new(Unused {
                bytes: Zeroizing::new([0; POOL_BYTES]),
                next: POOL_BYTES,
            }),
        }
    }

    /// Forgets (wipes) the bytes not handed out yet: the next draw reads the system afresh.
    pub fn discard(&self) {
        let mut unused = self.unused.lock().unwrap_or_else(PoisonError::into_inner);
        unused.bytes.zeroize();
        unused.next = POOL_BYTES;
    }
}

impl Default for Pool {
    fn default() -> Self {
        Pool::new()
    }
}

impl RandomSource for Pool {
    fn fill(&self, dest: &mut [u8]) -> Result<(), Unspecified> {
        if dest.len() > POOL_BYTES / 4 {
            return RandomSource::fill(&self.system, dest);
        }
        // Every state of `Unused` is sound, so a panic elsewhere that poisoned the lock
        // leaves nothing to repair.
        let mut unused = self.unused.lock().unwrap_or_else(PoisonError::into_inner);
        if POOL_BYTES - unused.next < dest.len() {
            RandomSource::fill(&self.system, unused.bytes.as_mut())?;
            unused.next = 0;
        }
        let taken = unused.next..unused.next + dest.len();
        dest.copy_from_slice(&unused.bytes[taken.clone()]);
        unused.bytes[taken.clone()].zeroize();
        unused.next = taken.end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No byte is handed out twice: draws of every size across several refills never
    /// repeat a 16-byte value, and a handed-out byte no longer sits in the pool.
    #[test]
    fn each_byte_is_handed_out_once() {
        let pool = Pool::new();
        let mut seen = std::collections::HashSet::new();
        for size in (16..=64).cycle().take(2_000) {
            let mut draw = vec![0u8; size];
            pool.fill(&mut draw).expect("fill");
            assert!(seen.insert(draw[..16].to_vec()), "a draw repeated");
            let unused = pool.unused.lock().expect("lock");
            assert!(unused.bytes[..unused.next].iter().all(|&b| b == 0));
        }
    }

    /// After a discard nothing of the old bytes is handed out: the next draw reads anew.
    #[test]
    fn a_discarded_pool_reads_the_system_again() {
        let pool = Pool::new();
        let mut first = [0u8; 32];
        pool.fill(&mut first).expect("fill");
        let left = pool.unused.lock().expect("lock").bytes[32..64].to_vec();
        pool.discard();
        assert!(pool
            .unused
            .lock()
            .expect("lock")
            .bytes
            .iter()
            .all(|&b| b == 0));
        let mut next = [0u8; 32];
        pool.fill(&mut next).expect("fill");
        assert_ne!(next.to_vec(), left, "a discarded byte was handed out");
    }

    /// Draws larger than a quarter of the pool go to the system directly, and still fill.
    #[test]
    fn a_large_draw_is_filled_too() {
        let pool = Pool::new();
        let mut draw = vec![0u8; POOL_BYTES * 2];
        pool.fill(&mut draw).expect("fill");
        assert!(draw.iter().filter(|&&b| b == 0).count() < POOL_BYTES / 16);
    }
}
