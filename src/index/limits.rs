//! Rate limits and credit balances as verify enforces them: lock-free, a compare-and-swap
//! on one atomic each, so a limited key costs a verify a few nanoseconds, not a lock.
//!
//! A rate limit is a token bucket in its GCRA form (the generic cell rate algorithm): one
//! number per limit, the "theoretical arrival time" (TAT). Each allowed verify moves it one
//! emission interval (window / limit) into the future; a verify is refused while that would
//! put it more than a window ahead of now. So a key may burst its whole limit at once, and
//! then gets the limit spread evenly over each window. Chosen over a sliding window because
//! it is exact with one 8-byte atomic and no timer, has no burst of twice the limit at a
//! window's edge (as fixed windows do), and other nodes' uses fold into it by moving the
//! TAT on (see [`Bucket::add_uses`]).

use super::entry::Extra;
use crate::key::{Credits, OwnerRecord, OwnerUsage, RateState, Spent};
use authenta_client::proto::{RateLimit, RateLimitState, VerifyCode};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

/// Where a key's limits stand after a verify, for its answer.
#[derive(Debug, Default, Clone, Copy)]
pub struct Limits {
    pub ratelimit: Option<RateLimitState>,
    pub remaining: Option<u64>,
}

/// Takes a verify that passed every other check from the key's rate limit, its owner's,
/// the key's credits and its owner's, in that order, each refused check giving back what
/// the earlier ones took (so a refused verify spends nothing). Answers `Valid`,
/// `RateLimited` or `UsageExceeded`, with the key's state (else its owner's) of each.
pub fn enforce(extra: &Extra, cost: Option<u32>, now: i64) -> (VerifyCode, Limits) {
    let cost = u64::from(cost.unwrap_or(1));
    let owner = extra.owner.as_deref();
    let owner_bucket = owner.and_then(|o| o.ratelimit.as_ref());
    let owner_balance = owner.and_then(|o| o.credits.as_ref());
    let key_rate = extra.ratelimit.as_ref().map(|b| b.take(now));
    let mut limits = Limits {
        ratelimit: key_rate.map(|r| r.unwrap_or_else(|s| s)),
        remaining: None,
    };
    if let Some(Err(_)) = key_rate {
        limits.remaining = peek_credits(extra, now);
        return (VerifyCode::RateLimited, limits);
    }
    let give_back_key_rate = || {
        if let Some(bucket) = &extra.ratelimit {
            bucket.give_back();
        }
    };
    if let Some(owner) = owner.filter(|o| o.ratelimit.is_some() || o.credits.is_some()) {
        owner.touch();
    }
    if let Some(bucket) = owner_bucket {
        let taken = bucket.take(now);
        limits.ratelimit = limits.ratelimit.or(Some(taken.unwrap_or_else(|s| s)));
        if taken.is_err() {
            give_back_key_rate();
            limits = peek(extra, now);
            limits.ratelimit = Some(taken.unwrap_or_else(|s| s));
            return (VerifyCode::RateLimited, limits);
        }
    }
    let give_back_rates = || {
        give_back_key_rate();
        if let Some(bucket) = owner_bucket {
            bucket.give_back();
        }
    };
    let key_spent = extra.credits.as_ref().map(|b| b.spend(cost, now));
    limits.remaining = key_spent.map(|r| r.unwrap_or_else(|left| left));
    if let Some(Err(_)) = key_spent {
        give_back_rates();
        limits.ratelimit = peek(extra, now).ratelimit;
        return (VerifyCode::UsageExceeded, limits);
    }
    if let Some(balance) = owner_balance {
        match balance.spend(cost, now) {
            Ok(left) => limits.remaining = limits.remaining.or(Some(left)),
            Err(left) => {
                give_back_rates();
                if let Some(balance) = &extra.credits {
                    balance.refund(cost);
                }
                // The balance that refused, so the answer says why; and the rate limit as
                // it stands with the slot given back.
                limits.remaining = Some(left);
                limits.ratelimit = peek(extra, now).ratelimit;
                return (VerifyCode::UsageExceeded, limits);
            }
        }
    }
    (VerifyCode::Valid, limits)
}

/// Where a key's limits stand, for an answer that did not reach them.
pub fn peek(extra: &Extra, now: i64) -> Limits {
    let owner = extra.owner.as_deref();
    let bucket = extra
        .ratelimit
        .as_ref()
        .or(owner.and_then(|o| o.ratelimit.as_ref()));
    Limits {
        ratelimit: bucket.map(|b| b.peek(now)),
        remaining: peek_credits(extra, now),
    }
}

fn peek_credits(extra: &Extra, now: i64) -> Option<u64> {
    let owner = extra.owner.as_deref();
    extra
        .credits
        .as_ref()
        .or(owner.and_then(|o| o.credits.as_ref()))
        .map(|b| b.left(now))
}

/// One rate limit and where it stands, in nanoseconds.
#[derive(Debug)]
pub struct Bucket {
    pub rule: RateLimit,
    /// Nanoseconds each verify takes: the window over the limit, rounded up, so that the
    /// rate never exceeds the rule (it falls short by at most one nanosecond a verify).
    interval_ns: i64,
    /// How far ahead of now the arrival time may run: `limit` intervals, so a burst is
    /// exactly `limit` verifies.
    capacity_ns: i64,
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
            capacity_ns: interval_ns.saturating_mul(limit),
            tat: AtomicI64::new(tat),
        }
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
    pub fn take(&self, now: i64) -> Result<RateLimitState, RateLimitState> {
        let now_ns = now.saturating_mul(NS_PER_MS);
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            let after = tat.max(now_ns).saturating_add(self.interval_ns);
            if after - now_ns > self.capacity_ns {
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
                Some(moved.min(now_ns.saturating_add(self.capacity_ns)).max(tat))
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

    fn state(&self, tat: i64, now_ns: i64) -> RateLimitState {
        let used = (tat - now_ns).clamp(0, self.capacity_ns);
        let left = (self.capacity_ns - used) / self.interval_ns;
        let remaining = u32::try_from(left).unwrap_or(u32::MAX).min(self.rule.limit);
        let retry_ns = if remaining > 0 {
            now_ns
        } else {
            tat - self.capacity_ns + self.interval_ns
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

/// A credit balance and what has been spent of it in the current refill period: by this
/// node (`local`, persisted) and by the other nodes of a fleet (`remote`, as they last
/// published).
#[derive(Debug)]
pub struct Balance {
    pub credits: Credits,
    period: AtomicI64,
    local: AtomicU64,
    remote: AtomicU64,
    /// Taken only to start a new period (a refill), so that two verifies racing over the
    /// boundary do not both reset the counts.
    refilling: Mutex<()>,
}

impl Balance {
    /// A balance for `credits`, with what this node had spent of it (if the same balance).
    pub fn new(credits: Credits, spent: Spent) -> Balance {
        let same = spent.set_at == credits.set_at;
        Balance {
            credits,
            period: AtomicI64::new(if same { spent.period } else { 0 }),
            local: AtomicU64::new(if same { spent.spent } else { 0 }),
            remote: AtomicU64::new(0),
            refilling: Mutex::new(()),
        }
    }

    /// The period `now` is in, starting it (counts at zero) if it is new.
    fn current(&self, now: i64) -> i64 {
        let period = self.credits.period(now);
        if period > self.period.load(Ordering::Acquire) {
            let _refilling = self.refilling.lock().unwrap_or_else(|e| e.into_inner());
            if period > self.period.load(Ordering::Acquire) {
                self.local.store(0, Ordering::Relaxed);
                self.remote.store(0, Ordering::Relaxed);
                self.period.store(period, Ordering::Release);
            }
        }
        self.period.load(Ordering::Acquire)
    }

    /// Spends `cost` at `now`: `Ok(left after)`, or `Err(left)` when the balance is below
    /// the cost or at zero (a zero-cost check at zero is refused too: nothing is left).
    pub fn spend(&self, cost: u64, now: i64) -> Result<u64, u64> {
        let base = self.credits.base(self.current(now));
        let mut local = self.local.load(Ordering::Relaxed);
        loop {
            let spent = local.saturating_add(self.remote.load(Ordering::Relaxed));
            let left = base.saturating_sub(spent);
            if left == 0 || left < cost {
                return Err(left);
            }
            match self.local.compare_exchange_weak(
                local,
                local + cost,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(left - cost),
                Err(actual) => local = actual,
            }
        }
    }

    /// Gives back what [`Balance::spend`] took (a later check refused the verify).
    pub fn refund(&self, cost: u64) {
        let _ = self
            .local
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| {
                Some(l.saturating_sub(cost))
            });
    }

    /// What is left at `now`.
    pub fn left(&self, now: i64) -> u64 {
        let base = self.credits.base(self.current(now));
        let spent = self
            .local
            .load(Ordering::Relaxed)
            .saturating_add(self.remote.load(Ordering::Relaxed));
        base.saturating_sub(spent)
    }

    /// What this node spent, to persist and publish.
    pub fn spent(&self) -> Spent {
        Spent {
            set_at: self.credits.set_at,
            period: self.period.load(Ordering::Acquire),
            spent: self.local.load(Ordering::Relaxed),
        }
    }

    /// Counts what another node spent since it last published (`delta`), if in this
    /// balance's current period.
    pub fn add_remote(&self, delta: u64, spent_in: &Spent, now: i64) {
        if spent_in.set_at == self.credits.set_at && spent_in.period == self.current(now) {
            self.remote.fetch_add(delta, Ordering::Relaxed);
        }
    }

    /// Resumes from what a store held, when it is this balance's.
    pub fn add_restored(&self, spent: &Spent) {
        self.restore_max(spent)
    }

    /// Resumes from one of several stored snapshots of this balance (an owner's, one per
    /// key): the latest period, and in it the most spent, is the latest snapshot.
    pub fn restore_max(&self, spent: &Spent) {
        if spent.set_at != self.credits.set_at {
            return;
        }
        let _refilling = self.refilling.lock().unwrap_or_else(|e| e.into_inner());
        let period = self.period.load(Ordering::Acquire);
        if spent.period > period {
            self.period.store(spent.period, Ordering::Release);
            self.local.store(spent.spent, Ordering::Relaxed);
        } else if spent.period == period {
            self.local.fetch_max(spent.spent, Ordering::Relaxed);
        }
    }
}

/// An owner's shared limits, one per owner id that any key names (with no limits when no
/// `owners set` gave it any).
#[derive(Debug)]
pub struct Owner {
    pub id: Box<str>,
    pub ratelimit: Option<Bucket>,
    pub credits: Option<Balance>,
    /// An `owners set` made this owner (else only keys name it).
    pub recorded: bool,
    /// Its limits moved since the last flush wrote them to its row.
    dirty: AtomicBool,
}

impl Owner {
    /// An owner made from its record, taking over the state of `old` where the rules are
    /// the same, or else resuming from `stored` (its row, at start-up).
    pub fn new(record: &OwnerRecord, old: Option<&Owner>, stored: &OwnerUsage) -> Owner {
        let old_bucket = old.and_then(|o| o.ratelimit.as_ref());
        let ratelimit = match (record.ratelimit, old_bucket) {
            (Some(rule), None) => Some(Bucket::resumed(rule, &stored.ratelimit)),
            (rule, old) => carry_bucket(rule, old),
        };
        let old_balance = old.and_then(|o| o.credits.as_ref());
        let credits = match (record.credits, old_balance) {
            (Some(credits), None) => Some(Balance::new(credits, stored.credits)),
            (credits, old) => carry_balance(credits, old),
        };
        Owner {
            id: record.id.clone().into_boxed_str(),
            ratelimit,
            credits,
            recorded: true,
            dirty: AtomicBool::new(false),
        }
    }

    /// An owner no record names: no limits.
    pub fn bare(id: &str) -> Owner {
        Owner {
            id: id.into(),
            ratelimit: None,
            credits: None,
            recorded: false,
            dirty: AtomicBool::new(false),
        }
    }

    /// Marks the limits as moved (only a clean owner pays for the write).
    fn touch(&self) {
        if !self.dirty.load(Ordering::Relaxed) {
            self.dirty.store(true, Ordering::Relaxed);
        }
    }

    /// Where its limits stand, if they moved since the last call.
    pub fn take_usage(&self) -> Option<OwnerUsage> {
        if !self.recorded || !self.dirty.swap(false, Ordering::AcqRel) {
            return None;
        }
        Some(OwnerUsage {
            ratelimit: self
                .ratelimit
                .as_ref()
                .map(Bucket::stored)
                .unwrap_or_default(),
            credits: self
                .credits
                .as_ref()
                .map(Balance::spent)
                .unwrap_or_default(),
        })
    }

    /// Marks it dirty again: its flush failed.
    pub fn requeue(&self) {
        self.dirty.store(true, Ordering::Relaxed);
    }

    pub fn to_record(&self) -> OwnerRecord {
        OwnerRecord {
            id: self.id.to_string(),
            ratelimit: self.ratelimit.as_ref().map(|b| b.rule),
            credits: self.credits.as_ref().map(|b| b.credits),
        }
    }
}

/// A bucket for `rule`, keeping where `old` stood when it had the same rule.
pub fn carry_bucket(rule: Option<RateLimit>, old: Option<&Bucket>) -> Option<Bucket> {
    let rule = rule?;
    let tat = old.filter(|b| b.rule == rule).map_or(0, |b| b.stored().tat);
    Some(Bucket::new(rule, tat))
}

/// A balance for `credits`, keeping what was spent of `old` when it is the same balance.
pub fn carry_balance(credits: Option<Credits>, old: Option<&Balance>) -> Option<Balance> {
    let credits = credits?;
    let balance = Balance::new(credits, old.map(Balance::spent).unwrap_or_default());
    if let Some(old) = old.filter(|o| o.credits == credits) {
        balance
            .remote
            .store(old.remote.load(Ordering::Relaxed), Ordering::Relaxed);
    }
    Some(balance)
}

#[cfg(test)]
mod tests {
    use super::*;
    use authenta_client::proto::Refill;

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

    #[test]
    fn a_balance_spends_down_to_zero_and_refills_each_period() {
        let credits = Credits {
            remaining: 3,
            set_at: 0,
            refill: Some(Refill {
                amount: 2,
                interval_ms: 1_000,
            }),
        };
        let balance = Balance::new(credits, Spent::default());
        assert_eq!(balance.spend(2, 10), Ok(1));
        assert_eq!(balance.spend(2, 10), Err(1));
        assert_eq!(balance.spend(0, 10), Ok(1));
        assert_eq!(balance.spend(1, 10), Ok(0));
        assert_eq!(balance.spend(0, 10), Err(0));
        assert_eq!(balance.left(999), 0);
        assert_eq!(balance.left(1_000), 2);
        assert_eq!(balance.spend(1, 1_500), Ok(1));
        balance.add_remote(
            1,
            &Spent {
                set_at: 0,
                period: 1,
                spent: 1,
            },
            1_500,
        );
        assert_eq!(balance.spend(1, 1_500), Err(0));
        assert_eq!(balance.spent().spent, 1);
    }
}
