//! The cap on open HTTP connections.
//!
//! Over the cap, the oldest connection is closed to let the new one in, as nginx reuses its
//! idle keep-alive connections when it runs out: a proxy's pool of idle keep-alive
//! connections, or a client holding thousands open, can then never lock a new caller out.
//! A closed connection finishes the request it is serving first (hyper's graceful
//! shutdown), and a proxy opens a new one when it needs it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};
use tokio_util::sync::CancellationToken;

pub struct Admission {
    /// Oldest first; an entry whose connection has ended no longer upgrades.
    open: Mutex<VecDeque<Weak<CancellationToken>>>,
    cap: usize,
}

/// A connection's place under the cap: cancelled when it is pushed out. The connection
/// holds it while it lives.
pub type Place = Arc<CancellationToken>;

impl Admission {
    pub fn new(cap: usize) -> Admission {
        Admission {
            open: Mutex::new(VecDeque::new()),
            cap: cap.max(1),
        }
    }

    /// Admits a new connection, closing the oldest ones while at the cap. Returns its place
    /// and how many were pushed out.
    pub fn admit(&self) -> (Place, usize) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.len() >= self.cap {
            open.retain(|entry| entry.strong_count() > 0);
        }
        let mut pushed_out = 0;
        while open.len() >= self.cap {
            if let Some(oldest) = open.pop_front().and_then(|entry| entry.upgrade()) {
                oldest.cancel();
                pushed_out += 1;
            }
        }
        let place = Arc::new(CancellationToken::new());
        open.push_back(Arc::downgrade(&place));
        (place, pushed_out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_the_cap_the_oldest_connection_makes_room() {
        let admission = Admission::new(2);
        let (first, _) = admission.admit();
        let (second, _) = admission.admit();
        let (third, pushed_out) = admission.admit();
        assert_eq!(pushed_out, 1);
        assert!(first.is_cancelled());
        assert!(!second.is_cancelled() && !third.is_cancelled());
        drop(second);
        let (_fourth, pushed_out) = admission.admit();
        assert_eq!(pushed_out, 0, "an ended connection frees its place");
        assert!(!third.is_cancelled());
    }
}
