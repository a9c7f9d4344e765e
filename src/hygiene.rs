//! Process hygiene for a process that holds keys: no core dumps, not dumpable (no ptrace
//! attach by other processes of the same uid, no `/proc/PID/mem` reads), and key material in
//! memory that is locked (never swapped) where the limits allow, and wiped on drop.

use crate::barrier::KeyBytes;

/// Turns off core dumps and makes the process non-dumpable. Failures are logged, not fatal:
/// the daemon is still correct without them, only less hardened.
pub fn harden_process() {
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        tracing::warn!(error = %e, "cannot set PR_SET_DUMPABLE 0");
    }
    if let Err(e) = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0) {
        tracing::warn!(error = %e, "cannot turn off core dumps");
    }
}

/// A 32-byte key in its own heap allocation, locked into RAM when permitted
/// (`RLIMIT_MEMLOCK`), and zeroed when dropped.
pub struct LockedKey {
    // Field order matters: the lock is released before the key is wiped and freed.
    _lock: Option<region::LockGuard>,
    key: Box<KeyBytes>,
}

impl LockedKey {
    pub fn new(key: KeyBytes) -> Self {
        let key = Box::new(key);
        let lock = match region::lock(key.as_ptr(), key.len()) {
            Ok(guard) => Some(guard),
            Err(e) => {
                tracing::debug!(error = %e, "cannot lock key memory (RLIMIT_MEMLOCK?)");
                None
            }
        };
        LockedKey { _lock: lock, key }
    }

    pub fn bytes(&self) -> &KeyBytes {
        &self.key
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locked_keys_keep_their_bytes() {
        let key = LockedKey::new(zeroize::Zeroizing::new([9u8; 32]));
        assert_eq!(**key.bytes(), [9u8; 32]);
    }
}
