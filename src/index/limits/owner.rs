//! An owner's limits, shared by every key that names it, and when they last moved.

use super::{carry_balance, carry_bucket, Balance, Bucket};
use crate::key::{OwnerRecord, OwnerUsage};
use std::sync::atomic::{AtomicBool, Ordering};

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
    pub(crate) fn touch(&self) {
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
