//! Rate limits and credit balances as verify enforces them: lock-free, a compare-and-swap
//! on one atomic each, so a limited key costs a verify a few nanoseconds, not a lock.
//!
//! A rate limit is a token bucket in its GCRA form (the generic cell rate algorithm): one
//! number per limit, the "theoretical arrival time" (TAT). Each allowed verify moves it one
//! emission interval (window / limit, rounded up) into the future; a verify is refused while
//! that would put it more than `limit` intervals ahead of now. So a key may burst its whole limit at once, and
//! then gets the limit spread evenly over each window. Chosen over a sliding window because
//! it is exact with one 8-byte atomic and no timer, has no burst of twice the limit at a
//! window's edge (as fixed windows do), and other nodes' uses fold into it by moving the
//! TAT on (see [`Bucket::add_uses`]).
//!
//! [`bucket`] holds a rate limit, [`balance`] a credit balance, [`owner`] what all keys of
//! one owner share; this file, the order in which a verify meets them.

mod balance;
mod bucket;
mod owner;
mod spent;

pub use balance::{carry_balance, Balance};
pub use bucket::{carry_bucket, Bucket};
pub use owner::Owner;
pub use spent::{credits_spent, rate_spent};

use super::entry::Extra;
use authenta_client::proto::{RateLimitState, VerifyCode};

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
// Inlined, with the bucket's and the balance's steps, into the verify's decision: called,
// each handed its state back through the stack, and a limited verify cost half as much again.
#[inline(always)]
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
