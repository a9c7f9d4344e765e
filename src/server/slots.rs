//! Connection slots no one can hoard: a cap on connections, a cap per uid (so one uid cannot
//! lock the others out), and refusals that cost little. A refused connection is answered
//! by a short task, of which at most [`MAX_REFUSERS`] run at once (past that it is simply
//! closed), and refusals are logged at most once a second per reason, with a count.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Refusals answered at once; a flood past this is closed without an answer, so that it
/// costs neither memory nor time.
pub const MAX_REFUSERS: usize = 64;

/// A connection's place: released when the connection ends.
pub struct Slot {
    _total: OwnedSemaphorePermit,
    _uid: UidSlot,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// At `max_connections`.
    Cap,
    /// At `max_connections_per_uid` for the peer's uid.
    PerUid,
    /// The peer may neither verify nor administer.
    NotAllowed,
}

impl Refusal {
    /// How `/metrics` labels it.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Cap => "cap",
            Refusal::PerUid => "per_uid",
            Refusal::NotAllowed => "not_allowed",
        }
    }
}

pub struct Slots {
    total: Arc<Semaphore>,
    per_uid: Arc<Mutex<HashMap<u32, usize>>>,
    max_per_uid: usize,
    refusers: Arc<Semaphore>,
    log: Mutex<HashMap<Refusal, (Instant, u64)>>,
}

impl Slots {
    pub fn new(max_connections: usize, max_per_uid: usize) -> Self {
        Slots {
            total: Arc::new(Semaphore::new(max_connections)),
            per_uid: Arc::default(),
            max_per_uid,
            refusers: Arc::new(Semaphore::new(MAX_REFUSERS)),
            log: Mutex::default(),
        }
    }

    /// A slot for a connection of `uid`, or why there is none.
    pub fn take(&self, uid: u32) -> Result<Slot, Refusal> {
        let uid_slot =
            UidSlot::take(&self.per_uid, uid, self.max_per_uid).ok_or(Refusal::PerUid)?;
        let total = self
            .total
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::Cap)?;
        Ok(Slot {
            _total: total,
            _uid: uid_slot,
        })
    }

    /// A place to answer a refusal, if one is free.
    pub fn refuser(&self) -> Option<OwnedSemaphorePermit> {
        self.refusers.clone().try_acquire_owned().ok()
    }

    /// Logs a refusal, at most once a second per reason, with how many there were since.
    pub fn note(&self, refusal: Refusal, uid: u32) {
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let (last, count) = log
            .entry(refusal)
            .or_insert((now - Duration::from_secs(2), 0));
        *count += 1;
        if now.duration_since(*last) >= Duration::from_secs(1) {
            tracing::warn!(reason = ?refusal, uid, refused = *count, "connections refused (logged at most once a second)");
            *last = now;
            *count = 0;
        }
    }
}

/// One connection counted against its uid.
struct UidSlot {
    per_uid: Arc<Mutex<HashMap<u32, usize>>>,
    uid: u32,
}

impl UidSlot {
    fn take(per_uid: &Arc<Mutex<HashMap<u32, usize>>>, uid: u32, max: usize) -> Option<UidSlot> {
        let mut counts = per_uid.lock().unwrap_or_else(|e| e.into_inner());
        let count = counts.entry(uid).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(UidSlot {
            per_uid: per_uid.clone(),
            uid,
        })
    }
}

impl Drop for UidSlot {
    fn drop(&mut self) {
        let mut counts = self.per_uid.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = counts.get_mut(&self.uid) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.uid);
            }
        }
    }
}
