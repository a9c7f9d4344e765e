//! Wall-clock time in unix milliseconds: the unit of every timestamp the daemon keeps.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the unix epoch (0 for a clock set before 1970).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Adds seconds to a timestamp without overflow.
pub fn add_secs(at_ms: i64, secs: u64) -> i64 {
    at_ms.saturating_add(i64::try_from(secs).unwrap_or(i64::MAX).saturating_mul(1000))
}
