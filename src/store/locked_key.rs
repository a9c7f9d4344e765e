//! Key material in memory that is locked (never swapped) where the limits allow, and wiped
//! on drop.

use crate::store::barrier::KeyBytes;

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
