//! Limits resumed as spent: what start-up gives a key or an owner whose stored state of
//! its limits is missing or does not open. Such a row was deleted or damaged outside the
//! daemon, and taking it as "nothing used" would hand out a fresh window and a full
//! balance to whoever removed it: the limits fail closed instead, the rate limit shut for
//! one window and the balance empty until its next refill (or until an admin sets it again).

use super::Bucket;
use crate::key::{Credits, RateState, Spent};
use authenta_client::proto::RateLimit;

/// A rate limit under `rule` whose window is used up at `now` (unix ms).
pub fn rate_spent(rule: Option<RateLimit>, now: i64) -> RateState {
    let Some(rule) = rule else {
        return RateState::default();
    };
    let bucket = Bucket::new(rule, 0);
    bucket.add_uses(u64::MAX, now);
    bucket.stored()
}

/// A balance of `credits` spent to zero in the period `now` (unix ms) is in.
pub fn credits_spent(credits: Option<Credits>, now: i64) -> Spent {
    let Some(credits) = credits else {
        return Spent::default();
    };
    let period = credits.period(now);
    Spent {
        set_at: credits.set_at,
        period,
        spent: credits.base(period),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::limits::Balance;
    use authenta_client::proto::Refill;

    #[test]
    fn a_limit_resumed_spent_refuses_until_its_window_or_refill() {
        let now = 1_000_000;
        let rule = RateLimit {
            limit: 10,
            window_ms: 1_000,
        };
        let bucket = Bucket::resumed(rule, &rate_spent(Some(rule), now));
        assert!(bucket.take(now).is_err(), "shut at once");
        assert!(
            bucket.take(now + 1_000).is_ok(),
            "open again a window later"
        );

        let credits = Credits {
            remaining: 5,
            set_at: 0,
            refill: Some(Refill {
                amount: 5,
                interval_ms: 10_000,
            }),
        };
        let balance = Balance::new(credits, credits_spent(Some(credits), now));
        assert_eq!(balance.spend(1, now), Err(0), "empty at once");
        assert!(
            balance.spend(1, 1_010_000).is_ok(),
            "refilled at the next period"
        );
    }
}
