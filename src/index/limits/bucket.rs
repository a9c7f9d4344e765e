//! A rate limit as a GCRA token bucket: one atomic arrival time, in nanoseconds.

use crate::key::RateState;
use authenta_client::proto::{RateLimit, RateLimitState};
use std::sync::atomic::{AtomicI64, Ordering};

/// One rate limit and where it stands, in nanoseconds.
#[derive(Debug)]
pub struct Bucket {
    pub rule: RateLimit,
    /// Nanoseconds each verify takes: the window over the limit, rounded up, so that the
    /// rate never exceeds the rule (it falls short by at most one nanosecond a verify).
    interval_ns: i64,
    /// Theoretical arrival time, unix nanoseconds.
    tat: AtomicI64,
}

impl Bucket {
    /// A bucket for `rule`, resuming at `tat` (0: full).
    pub fn new(rule: RateLimit, tat: i64) -> Bucket {
        let window_ns = i64::try_from(rule.window_ms)
            .unwrap_or(i64::MAX)
            .saturating_mul(NS_PER_MS);
        let limit = i64::from(rule.limit.max(1));
        let interval_ns = (window_ns.saturating_add(limit - 1) / limit).max(1);
        Bucket {
            rule,
            interval_ns,
            tat: AtomicI64::new(tat),
        }
    }

    /// How far ahead of now the arrival time may run: `limit` intervals, so a burst is
    /// exactly `limit` verifies. Computed, not stored, so that a key's limits fit the two
    /// cache lines a verify reads (`Extra`'s layout).
    fn capacity_ns(&self) -> i64 {
        self.interval_ns
            .saturating_mul(i64::from(self.rule.limit.max(1)))
    }

    /// A bucket for `rule` resuming from a stored state, used only if stored for the same
    /// rule: a state kept under another rule (a limit since raised) means nothing now.
    pub fn resumed(rule: RateLimit, stored: &RateState) -> Bucket {
        let tat = if stored.rule == Some(rule) {
            stored.tat
        } else {
            0
        };
        Bucket::new(rule, tat)
    }

    /// Takes one verify from the limit at `now` (unix ms): `Ok` with the state after it when
    /// allowed, `Err` with the state when the limit is spent.
    #[inline(always)]
    pub fn take(&self, now: i64) -> Result<RateLimitState, RateLimitState> {
        let now_ns = now.saturating_mul(NS_PER_MS);
        let capacity_ns = self.capacity_ns();
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            let after = tat.max(now_ns).saturating_add(self.interval_ns);
            if after - now_ns > capacity_ns {
                return Err(self.state(tat, now_ns));
            }
            match self
                .tat
                .compare_exchange_weak(tat, after, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Ok(self.state(after, now_ns)),
                Err(actual) => tat = actual,
            }
        }
    }

    /// The state at `now` without taking anything.
    pub fn peek(&self, now: i64) -> RateLimitState {
        self.state(
            self.tat.load(Ordering::Relaxed),
            now.saturating_mul(NS_PER_MS),
        )
    }

    /// Gives back one verify taken by [`Bucket::take`] (a later check refused it).
    pub fn give_back(&self) {
        self.tat.fetch_sub(self.interval_ns, Ordering::Relaxed);
    }

    /// Counts `n` verifies allowed elsewhere (other nodes of a fleet) as if made here now,
    /// at most a burst's worth: they can hold the limit shut for one window, not longer.
    pub fn add_uses(&self, n: u64, now: i64) {
        let now_ns = now.saturating_mul(NS_PER_MS);
        let cost = i64::try_from(n)
            .unwrap_or(i64::MAX)
            .saturating_mul(self.interval_ns);
        let _ = self
            .tat
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |tat| {
                let moved = tat.max(now_ns).saturating_add(cost);
                Some(
                    moved
                        .min(now_ns.saturating_add(self.capacity_ns()))
                        .max(tat),
                )
            });
    }

    /// Resumes at `tat` if that is later than where the bucket stands (0: no change).
    pub fn raise_to(&self, tat: i64) {
        self.tat.fetch_max(tat, Ordering::Relaxed);
    }

    /// Where the bucket stands, to persist with its rule.
    pub fn stored(&self) -> RateState {
        RateState {
            rule: Some(self.rule),
            tat: self.tat.load(Ordering::Relaxed),
        }
    }

    #[inline(always)]
    fn state(&self, tat: i64, now_ns: i64) -> RateLimitState {
        let capacity_ns = self.capacity_ns();
        let used = (tat - now_ns).clamp(0, capacity_ns);
        let left = (capacity_ns - used) / self.interval_ns;
        let remaining = u32::try_from(left).unwrap_or(u32::MAX).min(self.rule.limit);
        let retry_ns = if remaining > 0 {
            now_ns
        } else {
            tat - capacity_ns + self.interval_ns
        };
        RateLimitState {
            limit: self.rule.limit,
            remaining,
            reset_at: ceil_ms(tat.max(now_ns)),
            retry_at: ceil_ms(retry_ns.max(now_ns)),
        }
    }
}

const NS_PER_MS: i64 = 1_000_000;

fn ceil_ms(ns: i64) -> i64 {
    ns.div_euclid(NS_PER_MS) + i64::from(ns.rem_euclid(NS_PER_MS) != 0)
}

/// A bucket for `rule`, keeping where `old` stood when it had the same rule.
pub fn carry_bucket(rule: Option<RateLimit>, old: Option<&Bucket>) -> Option<Bucket> {
    let rule = rule?;
    let tat = old.filter(|b| b.rule == rule).map_or(0, |b| b.stored().tat);
    Some(Bucket::new(rule, tat))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_limit_at_once_then_one_per_interval() {
        let bucket = Bucket::new(
            RateLimit {
                limit: 10,
                window_ms: 1_000,
            },
            0,
        );
        let now = 1_000_000;
        for n in 0..10 {
            let state = bucket.take(now).expect("within the limit");
            assert_eq!(state.remaining, 9 - n);
        }
        let refused = bucket.take(now).expect_err("over the limit");
        assert_eq!(refused.remaining, 0);
        assert_eq!(refused.retry_at, now + 100);
        assert_eq!(refused.reset_at, now + 1_000);
        assert!(bucket.take(now + 99).is_err());
        assert!(bucket.take(now + 100).is_ok());
        assert_eq!(bucket.peek(now + 2_000).remaining, 10);
    }

    #[test]
    fn remote_uses_close_the_bucket_for_at_most_a_window() {
        let rule = RateLimit {
            limit: 5,
            window_ms: 1_000,
        };
        let bucket = Bucket::new(rule, 0);
        bucket.add_uses(1_000_000, 10_000);
        assert!(bucket.take(10_000).is_err());
        assert!(bucket.take(11_000).is_ok());
    }
}
