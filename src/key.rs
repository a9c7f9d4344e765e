//! The key record: what the store seals and the index serves.

use crate::token::TokenHash;

/// Token hashes that must never verify again, with the key each belonged to if known.
pub type RetiredHashes = Vec<(TokenHash, Option<String>)>;
use authenta_client::proto::{KeyState, Meta, Permission, RateLimit, Refill};
use authenta_client::verify_wire::PermissionBits;
use serde::{Deserialize, Serialize};

/// A set of permissions, one bit each, so a verify checks "holds all of these" with one AND.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permissions(u8);

impl Permissions {
    fn bit(p: Permission) -> u8 {
        p.bit()
    }

    /// The set with the same bits as a wire-format set.
    pub fn from_bits(bits: PermissionBits) -> Self {
        Permissions(bits.0 & Permission::ALL.iter().fold(0, |acc, p| acc | p.bit()))
    }

    /// The wire-format set.
    pub fn bits(self) -> PermissionBits {
        PermissionBits(self.0)
    }

    /// The set holding exactly `list`.
    pub fn from_list(list: &[Permission]) -> Self {
        Permissions(list.iter().fold(0, |acc, &p| acc | Self::bit(p)))
    }

    /// Whether every permission of `other` is in this set.
    pub fn contains_all(self, other: Permissions) -> bool {
        self.0 & other.0 == other.0
    }

    /// The permissions in display order.
    pub fn to_list(self) -> Vec<Permission> {
        Permission::ALL
            .into_iter()
            .filter(|&p| self.0 & Self::bit(p) != 0)
            .collect()
    }
}

/// A previous token kept alive for a bounded time after a regenerate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grace {
    pub token_hash: TokenHash,
    /// Unix milliseconds; the old token verifies as `revoked` from then on.
    pub until: i64,
}

/// One API key. The token itself is never kept: only its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub id: String,
    /// SHA-256 of the current token. Also the store's plaintext lookup column; kept inside
    /// the sealed record too, so a swapped lookup column is detected on load.
    pub token_hash: TokenHash,
    pub name: String,
    pub start: String,
    pub permissions: Permissions,
    pub environment: Option<String>,
    pub created_at: i64,
    pub rotated_at: Option<i64>,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub revoke_reason: Option<String>,
    pub grace: Option<Grace>,
    /// Owner, metadata, rate limit and credits (protocol 2); all empty for a plain key.
    pub details: KeyDetails,
}

/// What protocol 2 added to a key: who it belongs to, what the app wants back with every
/// answer, and its limits.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyDetails {
    pub owner_id: Option<String>,
    pub meta: Meta,
    pub ratelimit: Option<RateLimit>,
    pub credits: Option<Credits>,
}

impl KeyDetails {
    /// Nothing set: the key is served as a plain key.
    pub fn is_empty(&self) -> bool {
        *self == KeyDetails::default()
    }
}

/// Largest metadata a key may carry, as JSON.
pub const MAX_META_JSON: usize = 1024;

/// The size of `meta` as JSON, to hold it to [`MAX_META_JSON`].
pub fn meta_json_len(meta: &Meta) -> usize {
    serde_json::to_vec(meta).map_or(usize::MAX, |json| json.len())
}

/// A credit balance as an admin set it: `remaining` at `set_at`, and an optional refill
/// every `interval` from then on (which sets the balance back to the refill's amount).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credits {
    pub remaining: u64,
    /// Unix milliseconds. Also what tells a new balance from the old one: spending counted
    /// against another `set_at` does not count against this one.
    pub set_at: i64,
    pub refill: Option<Refill>,
}

impl Credits {
    /// Which refill period `now` is in: 0 until the first refill.
    pub fn period(&self, now: i64) -> i64 {
        match self.refill {
            Some(refill) if refill.interval_ms > 0 => {
                let interval = i64::try_from(refill.interval_ms).unwrap_or(i64::MAX);
                (now - self.set_at).max(0) / interval
            }
            _ => 0,
        }
    }

    /// The balance at the start of period `period`.
    pub fn base(&self, period: i64) -> u64 {
        match self.refill {
            Some(refill) if period > 0 => refill.amount,
            _ => self.remaining,
        }
    }

    /// When period `period` ends and the next refill comes (none without a refill).
    pub fn next_refill(&self, period: i64) -> Option<i64> {
        let refill = self.refill?;
        let interval = i64::try_from(refill.interval_ms).ok()?;
        Some(
            self.set_at
                .saturating_add(interval.saturating_mul(period + 1)),
        )
    }
}

/// An owner (tenant) and the limits all its keys share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerRecord {
    pub id: String,
    pub ratelimit: Option<RateLimit>,
    pub credits: Option<Credits>,
}

/// Credits spent by this node in one period of one balance (see [`Credits`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spent {
    pub set_at: i64,
    pub period: i64,
    pub spent: u64,
}

/// A rate limit's state, with the rule it was kept under (a state is only resumed under
/// the same rule: raised or moved since, it means nothing).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateState {
    pub rule: Option<RateLimit>,
    /// The theoretical arrival time, unix nanoseconds (0: full).
    pub tat: i64,
}

/// Where a key's limits stood at the last flush, so that a restart resumes them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitUsage {
    pub ratelimit: RateState,
    pub credits: Spent,
    /// What this node had spent of the key's owner's balance: published with the key's
    /// usage so that the other nodes of a fleet count it (the owner's own row resumes it
    /// after a restart).
    pub owner_credits: Spent,
}

/// Where an owner's shared limits stood at the last flush, kept in the owner's row.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerUsage {
    pub ratelimit: RateState,
    pub credits: Spent,
}

impl KeyRecord {
    /// The state at `now` (unix milliseconds).
    pub fn state(&self, now: i64) -> KeyState {
        if self.revoked_at.is_some() {
            KeyState::Revoked
        } else if self.expires_at.is_some_and(|at| at <= now) {
            KeyState::Expired
        } else {
            KeyState::Active
        }
    }
}

/// Verify counts of one key as stored; the live counters are in the index.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRecord {
    pub verifications: u64,
    pub allowed: u64,
    pub denied: u64,
    pub last_used_at: Option<i64>,
    pub limits: LimitUsage,
}

/// Where a key's usage row is in the store: its rowid, as a hint for rewriting it (see
/// `Store::put_usage`). Four bytes, as a million keys keep one each in memory; a rowid
/// past `u32::MAX` is simply not remembered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UsageRow(u32);

impl UsageRow {
    /// Not known: the row is found by id.
    pub const UNKNOWN: UsageRow = UsageRow(0);

    /// The hint for this rowid (rowids start at 1; others are not remembered).
    pub fn from_rowid(rowid: i64) -> UsageRow {
        UsageRow(u32::try_from(rowid).unwrap_or(0))
    }

    /// The row as stored, as a number for the hint's atomic cell.
    pub fn to_bits(self) -> u32 {
        self.0
    }

    /// The hint back from [`to_bits`](Self::to_bits).
    pub fn from_bits(bits: u32) -> UsageRow {
        UsageRow(bits)
    }

    pub fn rowid(self) -> Option<i64> {
        (self.0 != 0).then_some(i64::from(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_sets() {
        let rw = Permissions::from_list(&[Permission::Read, Permission::Write]);
        assert!(rw.contains_all(Permissions::from_list(&[Permission::Read])));
        assert!(rw.contains_all(Permissions::from_list(&[])));
        assert!(!rw.contains_all(Permissions::from_list(&[Permission::Delete])));
        assert_eq!(rw.to_list(), vec![Permission::Read, Permission::Write]);
    }
}
