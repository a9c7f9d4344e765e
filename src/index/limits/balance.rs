//! A credit balance: what this node and the others spent of it in the current refill
//! period.

use crate::key::{Credits, Spent};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

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
    #[inline(always)]
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
    #[inline(always)]
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

    /// Resumes from what a store held (a key's usage row), when it is this balance's: a
    /// later period replaces the counts, the same period keeps the larger.
    pub fn resume(&self, spent: &Spent) {
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
