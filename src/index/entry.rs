//! One key in the index: its entry (fixed size, in a slab), its live usage counters and
//! policy times, and what a lookup hands back (`Found`, `Hit`, `KeyUse`).

use super::limits::{Balance, Bucket, Owner};
use crate::key::{Grace, KeyDetails, KeyRecord, LimitUsage, Permissions, UsageRecord};
use crate::policy::{KeyFacts, KeyTimes, Policy};
use crate::token::{TokenHash, KEY_ID_LEN, START_LEN};
use authenta_client::proto::{KeyInfo, KeyState, Meta, Usage};
use authenta_client::verify_wire::NO_META;
use compact_str::CompactString;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

/// A key id in fixed space: `key_` and 16 base62 characters.
pub(super) type KeyId = [u8; KEY_ID_LEN];

pub(super) fn key_id(id: &str) -> Option<KeyId> {
    id.as_bytes().try_into().ok()
}

pub(super) fn id_str(id: &KeyId) -> &str {
    // Only ids that were `&str` are ever stored.
    std::str::from_utf8(id).unwrap_or_default()
}

/// Live verify counts of one key; kept across every version of its record.
#[derive(Debug, Default)]
#[repr(C)]
pub struct UsageCounters {
    pub(super) allowed: AtomicU64,
    pub(super) denied: AtomicU64,
    /// Unix milliseconds; 0 when never used.
    pub(super) last_used_at: AtomicI64,
}

impl UsageCounters {
    pub(super) fn from_record(record: &UsageRecord) -> Self {
        UsageCounters {
            allowed: AtomicU64::new(record.allowed),
            denied: AtomicU64::new(record.denied),
            last_used_at: AtomicI64::new(record.last_used_at.unwrap_or(0)),
        }
    }

    /// Counts one verify of this key (called by [`Maps::count_uses`], which also marks it
    /// dirty). One atomic add per verify: the total is the sum, and `last_used_at` is only
    /// written when it moves (two racing verifies may leave the earlier of their two times,
    /// never one older than both).
    pub fn record(&self, allowed: bool, now: i64) {
        let counter = if allowed { &self.allowed } else { &self.denied };
        counter.fetch_add(1, Ordering::Relaxed);
        if self.last_used_at.load(Ordering::Relaxed) < now {
            self.last_used_at.store(now, Ordering::Relaxed);
        }
    }

    /// The counts now.
    pub fn snapshot(&self) -> UsageRecord {
        let last = self.last_used_at.load(Ordering::Relaxed);
        let allowed = self.allowed.load(Ordering::Relaxed);
        let denied = self.denied.load(Ordering::Relaxed);
        UsageRecord {
            verifications: allowed + denied,
            allowed,
            denied,
            last_used_at: (last > 0).then_some(last),
            limits: Default::default(),
        }
    }
}

/// Which rotation rule of the policy in force applies to one key, tagged with the
/// generation of the policy it was chosen under (`Maps::policy_generation`). Verify derives
/// the key's policy times from that rule and the key's own times (see [`Found::times`]):
/// four bytes where the times themselves took 32. A cell chosen under another generation
/// (a policy change not yet applied to every key) is not trusted: the rule is then looked
/// up again, so a key is never judged by a rule of another policy.
#[derive(Debug)]
pub struct RuleCell(AtomicU32);

impl RuleCell {
    /// No rule applies.
    const NO_RULE: u32 = 0xFFFF;
    /// Chosen under no generation: look the rule up.
    const UNKNOWN: u32 = u32::MAX;
    /// Generations cycle below this, so that no cell chosen under one is `UNKNOWN`.
    pub(super) const GENERATIONS: u16 = 0xFFFF;

    pub(super) fn unknown() -> Self {
        RuleCell(AtomicU32::new(Self::UNKNOWN))
    }

    pub(super) fn set(&self, generation: u16, rule: Option<usize>) {
        let value = match rule {
            None => (u32::from(generation) << 16) | Self::NO_RULE,
            Some(at) => match u32::try_from(at) {
                Ok(at) if at < Self::NO_RULE => (u32::from(generation) << 16) | at,
                _ => Self::UNKNOWN,
            },
        };
        self.0.store(value, Ordering::Relaxed);
    }

    /// The rule's place in the policy's `rotation` (`Some(None)`: none applies) when it was
    /// chosen under `generation`; `None` when it must be looked up.
    pub(super) fn get(&self, generation: u16) -> Option<Option<usize>> {
        let value = self.0.load(Ordering::Relaxed);
        if value == Self::UNKNOWN || value >> 16 != u32::from(generation) {
            return None;
        }
        let at = value & 0xFFFF;
        Some((at != Self::NO_RULE).then_some(at as usize))
    }
}

/// An optional time (unix milliseconds) in 8 bytes rather than `Option<i64>`'s 16.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Millis(i64);

impl Millis {
    const NONE: i64 = i64::MIN;

    pub(super) fn from(value: Option<i64>) -> Self {
        Millis(value.unwrap_or(Self::NONE))
    }

    pub(super) fn get(self) -> Option<i64> {
        (self.0 != Self::NONE).then_some(self.0)
    }
}

/// One key as the index holds it: what a verify reads (the record's fields in compact
/// form), the live usage counters and which policy rule applies to it.
///
/// Laid out by hand (`repr(C)`), 128 bytes aligned to 64, so that every entry is exactly
/// two cache lines: with a million keys every verify misses the cache on its entry, and
/// each line more, or each pointer followed, is one more miss (`Maps::prefetch_entry` asks
/// for both together). The first line finds the key and says what it may do; the second
/// holds what the answer and the counting read: the counters, the expiry, the environment
/// and the name (inline up to 24 bytes). What only lists, stored records and policy
/// times read is in the key's [`Cold`] part, and its owner, metadata and limits in its
/// [`Extra`]: both kept beside the entries, by slot (see `Maps::cold`, `Maps::extras`).
/// `an_entry_is_two_lines_wherever_it_is` holds this.
#[derive(Debug)]
#[repr(C, align(64))]
pub struct Entry {
    // First line: what finds the key and what it may do.
    pub(super) token_hash: TokenHash,
    pub(super) id: KeyId,
    pub permissions: Permissions,
    /// The key is revoked (when: its `Cold::revoked_at`).
    pub(super) revoked: bool,
    /// How much of `Cold::start` is the token's start.
    pub(super) start_len: u8,
    /// Which policy rule applies.
    pub(super) rule: RuleCell,
    // Second line: what the answer and the counting read.
    pub usage: UsageCounters,
    pub(super) expires_at: Millis,
    /// Shared by every key with the same label (see `Maps::environments`). `Arc<String>`,
    /// rather than `Arc<str>`, for a thin 8-byte pointer.
    pub(super) environment: Option<Arc<String>>,
    /// Inline up to 24 bytes, so that answering with most names reads no other line.
    pub(super) name: CompactString,
}

/// The parts of a key a verify reads only when the policy counts times for it (a rotation
/// rule applies, or a maximum age): what its policy times count from; and when it was
/// revoked and its token's start, which only lists and stored records read.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub struct Cold {
    pub(super) created_at: i64,
    pub(super) rotated_at: Millis,
    pub(super) revoked_at: Millis,
    pub(super) start: [u8; START_LEN],
}

/// The rarer parts of a key: protocol 2's owner, metadata and limits with their live
/// state, a revoke reason and a token in grace.
///
/// Laid out by hand, cache-line aligned, what a verify reads first: the owner, the
/// metadata's pointer and the limits fill the first two lines (the two a verify
/// prefetches with the entry's), so a limited key costs a verify at most two misses more
/// than a plain key, and they overlap the entry's.
/// The metadata sits behind a pointer, `None` when empty, so that an answer learns it has
/// none without reading another line.
#[derive(Debug, Default)]
#[repr(C, align(64))]
pub struct Extra {
    pub owner: Option<std::sync::Arc<Owner>>,
    pub meta: Option<Box<Meta>>,
    pub ratelimit: Option<Bucket>,
    pub credits: Option<Balance>,
    pub(super) revoke_reason: Option<String>,
    pub(super) grace: Option<Grace>,
}

impl Extra {
    fn is_empty(&self) -> bool {
        self.revoke_reason.is_none()
            && self.grace.is_none()
            && self.meta.is_none()
            && self.ratelimit.is_none()
            && self.credits.is_none()
            && self.owner.is_none()
    }

    /// `Some` unless there is nothing in it.
    pub(super) fn boxed(self) -> Option<Box<Extra>> {
        (!self.is_empty()).then(|| Box::new(self))
    }
}

impl Entry {
    pub fn id(&self) -> &str {
        id_str(&self.id)
    }

    pub fn environment(&self) -> Option<&str> {
        self.environment.as_deref().map(String::as_str)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn expires_at(&self) -> Option<i64> {
        self.expires_at.get()
    }
}

/// A key's entry with its cold part: what policy rules match on and times count from.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    pub(super) entry: &'a Entry,
    pub(super) cold: &'a Cold,
}

impl KeyFacts for Facts<'_> {
    fn id(&self) -> &str {
        self.entry.id()
    }
    fn name(&self) -> &str {
        &self.entry.name
    }
    fn environment(&self) -> Option<&str> {
        self.entry.environment()
    }
    fn created_at(&self) -> i64 {
        self.cold.created_at
    }
    fn rotated_at(&self) -> Option<i64> {
        self.cold.rotated_at.get()
    }
}

/// A key in the index: its entry, its extras, and its slot (to queue it for a usage
/// flush).
#[derive(Debug, Clone, Copy)]
pub struct Found<'a> {
    pub(super) slot: u32,
    pub(super) entry: &'a Entry,
    /// Read only when the policy counts times for the key, or for lists and records.
    pub(super) cold: &'a Cold,
    pub(super) extra: Option<&'a Extra>,
    /// The policy in force and its generation, for the key's policy times.
    pub(super) policy: &'a Policy,
    pub(super) policy_generation: u16,
}

impl<'a> Found<'a> {
    /// The entry, for as long as the read it was found in.
    pub fn entry(self) -> &'a Entry {
        self.entry
    }

    /// The owner, metadata and limits, if the key has any.
    pub fn extra(self) -> Option<&'a Extra> {
        self.extra
    }

    /// What policy rules match on and times count from.
    pub fn facts(self) -> Facts<'a> {
        Facts {
            entry: self.entry,
            cold: self.cold,
        }
    }

    pub fn created_at(self) -> i64 {
        self.cold.created_at
    }

    pub fn rotated_at(self) -> Option<i64> {
        self.cold.rotated_at.get()
    }

    pub fn revoked_at(self) -> Option<i64> {
        self.cold.revoked_at.get()
    }

    pub(super) fn start(self) -> &'a str {
        let len = usize::from(self.entry.start_len).min(START_LEN);
        std::str::from_utf8(&self.cold.start[..len]).unwrap_or_default()
    }

    /// What the policy in force means for this key. Its cold part is read only when a
    /// rule or a maximum age applies.
    pub fn times(self) -> KeyTimes {
        let rule = match self.entry.rule.get(self.policy_generation) {
            Some(at) => at.and_then(|at| self.policy.rotation.get(at)),
            None => self.policy.rule_for(&self.facts()),
        };
        self.policy.times_under(rule, &self.facts())
    }

    /// The key's state at `now` under `times` (its [`Found::times`]), counting the
    /// policy's maximum age.
    pub fn state_under(self, times: &KeyTimes, now: i64) -> KeyState {
        let entry = self.entry;
        if entry.revoked {
            KeyState::Revoked
        } else if entry.expires_at.get().is_some_and(|at| at <= now)
            || times.expires_at.is_some_and(|at| at <= now)
        {
            KeyState::Expired
        } else {
            KeyState::Active
        }
    }

    /// The key's state at `now`.
    pub fn state(self, now: i64) -> KeyState {
        self.state_under(&self.times(), now)
    }

    /// The previous token's grace, if a regenerate left one.
    pub fn grace(self) -> Option<&'a Grace> {
        self.extra?.grace.as_ref()
    }

    pub fn owner_id(self) -> Option<&'a str> {
        self.extra?.owner.as_deref().map(|o| &*o.id)
    }

    pub fn meta(self) -> &'a Meta {
        self.extra
            .and_then(|e| e.meta.as_deref())
            .unwrap_or(&NO_META)
    }

    /// The owner, metadata and limits as stored.
    pub fn details(self) -> KeyDetails {
        let Some(extra) = self.extra else {
            return KeyDetails::default();
        };
        KeyDetails {
            owner_id: self.owner_id().map(str::to_owned),
            meta: self.meta().clone(),
            ratelimit: extra.ratelimit.as_ref().map(|b| b.rule),
            credits: extra.credits.as_ref().map(|b| b.credits),
        }
    }

    /// The usage to flush: the counters, and where the limits stand.
    pub fn usage_record(self) -> UsageRecord {
        let mut usage = self.entry.usage.snapshot();
        if let Some(extra) = self.extra {
            let owner = extra.owner.as_deref();
            usage.limits = LimitUsage {
                ratelimit: extra
                    .ratelimit
                    .as_ref()
                    .map(Bucket::stored)
                    .unwrap_or_default(),
                credits: extra
                    .credits
                    .as_ref()
                    .map(Balance::spent)
                    .unwrap_or_default(),
                owner_credits: owner
                    .and_then(|o| o.credits.as_ref())
                    .map(Balance::spent)
                    .unwrap_or_default(),
            };
        }
        usage
    }

    /// The stored record this key was made from.
    pub fn to_record(self) -> KeyRecord {
        let entry = self.entry;
        KeyRecord {
            id: entry.id().to_owned(),
            token_hash: entry.token_hash,
            name: entry.name.to_string(),
            start: self.start().to_owned(),
            permissions: entry.permissions,
            environment: entry.environment().map(str::to_owned),
            created_at: self.created_at(),
            rotated_at: self.rotated_at(),
            expires_at: entry.expires_at.get(),
            revoked_at: self.revoked_at(),
            revoke_reason: self.extra.and_then(|e| e.revoke_reason.clone()),
            grace: self.grace().cloned(),
            details: self.details(),
        }
    }

    /// The key as listed: live usage, never the token.
    pub fn info(self, now: i64) -> KeyInfo {
        let entry = self.entry;
        let usage = entry.usage.snapshot();
        let credits = self.extra.and_then(|e| e.credits.as_ref());
        let times = self.times();
        KeyInfo {
            id: entry.id().to_owned(),
            name: entry.name.to_string(),
            start: self.start().to_owned(),
            permissions: entry.permissions.to_list(),
            environment: entry.environment().map(str::to_owned),
            state: self.state_under(&times, now),
            created_at: self.created_at(),
            rotated_at: self.rotated_at(),
            last_used_at: usage.last_used_at,
            expires_at: entry.expires_at.get(),
            rotate_by: times.rotate_by,
            rotation_due: times.rotation_due(now),
            revoked_at: self.revoked_at(),
            grace_until: self.grace().map(|g| g.until).filter(|&until| until > now),
            usage: Usage {
                verifications: usage.verifications,
                allowed: usage.allowed,
                denied: usage.denied,
            },
            owner_id: self.owner_id().map(str::to_owned),
            meta: self.meta().clone(),
            ratelimit: self
                .extra
                .and_then(|e| e.ratelimit.as_ref())
                .map(|b| b.rule),
            remaining: credits.map(|b| b.left(now)),
            refill: credits.and_then(|b| b.credits.refill),
        }
    }
}

impl std::ops::Deref for Found<'_> {
    type Target = Entry;
    fn deref(&self) -> &Entry {
        self.entry
    }
}

/// One verify to count against the key it matched: allowed (valid) or denied.
#[derive(Debug, Clone, Copy)]
pub struct KeyUse<'a> {
    pub key: Found<'a>,
    pub allowed: bool,
}

/// Which of a key's tokens a hash is.
#[derive(Debug, Clone, Copy)]
pub enum Hit<'a> {
    /// The key's current token.
    Current(Found<'a>),
    /// The token a regenerate replaced, valid until the entry's grace ends.
    Previous(Found<'a>),
    /// A token that must never verify again: replaced, or revoked by its hash. The key it
    /// belonged to, when known.
    Retired(Option<&'a str>),
}
