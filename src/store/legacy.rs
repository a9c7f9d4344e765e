//! Records as version 0.1 (protocol 1) wrote them, read back by later versions.
//!
//! bincode records carry no field names: a record with fields added does not decode from
//! bytes written before, and the old form does not decode from the new (its trailing
//! bytes are refused). So each record that grew is read as the current form first and,
//! failing that, as its old form here, which gains the new fields empty. Nothing writes
//! these forms any more; a store or fleet stream upgrades as its rows are rewritten.

use crate::key::{Grace, KeyDetails, KeyRecord, Permissions, UsageRecord};
use crate::store::audit::AuditRecord;
use crate::store::change::{ChangeSet, RotatedToken};
use crate::store::record_codec::from_bytes;
use crate::token::TokenHash;
use serde::Deserialize;

/// A key as version 0.1 sealed it.
#[derive(Deserialize)]
struct KeyRecordV1 {
    id: String,
    token_hash: TokenHash,
    name: String,
    start: String,
    permissions: Permissions,
    environment: Option<String>,
    created_at: i64,
    rotated_at: Option<i64>,
    expires_at: Option<i64>,
    revoked_at: Option<i64>,
    revoke_reason: Option<String>,
    grace: Option<Grace>,
}

impl From<KeyRecordV1> for KeyRecord {
    fn from(v1: KeyRecordV1) -> Self {
        KeyRecord {
            id: v1.id,
            token_hash: v1.token_hash,
            name: v1.name,
            start: v1.start,
            permissions: v1.permissions,
            environment: v1.environment,
            created_at: v1.created_at,
            rotated_at: v1.rotated_at,
            expires_at: v1.expires_at,
            revoked_at: v1.revoked_at,
            revoke_reason: v1.revoke_reason,
            grace: v1.grace,
            details: KeyDetails::default(),
        }
    }
}

/// A key's usage as version 0.1 sealed it.
#[derive(Deserialize)]
struct UsageRecordV1 {
    verifications: u64,
    allowed: u64,
    denied: u64,
    last_used_at: Option<i64>,
}

/// A fleet change as version 0.1 published it.
#[derive(Deserialize)]
struct ChangeSetV1 {
    at: i64,
    keys: Vec<KeyRecordV1>,
    retired: Vec<(TokenHash, Option<String>)>,
    audit: Vec<AuditRecord>,
    node: Option<String>,
    rotated: Option<RotatedToken>,
}

/// A sealed key record's bytes, as this version or 0.1 wrote them.
pub fn key_record(bytes: &[u8]) -> Option<KeyRecord> {
    from_bytes(bytes).or_else(|| from_bytes::<KeyRecordV1>(bytes).map(KeyRecord::from))
}

/// A sealed usage record's bytes, as this version or 0.1 wrote them.
pub fn usage_record(bytes: &[u8]) -> Option<UsageRecord> {
    from_bytes(bytes).or_else(|| {
        from_bytes::<UsageRecordV1>(bytes).map(|v1| UsageRecord {
            verifications: v1.verifications,
            allowed: v1.allowed,
            denied: v1.denied,
            last_used_at: v1.last_used_at,
            limits: Default::default(),
        })
    })
}

/// A fleet change's bytes, as this version or 0.1 published them.
pub fn change_set(bytes: &[u8]) -> Option<ChangeSet> {
    from_bytes(bytes).or_else(|| {
        from_bytes::<ChangeSetV1>(bytes).map(|v1| ChangeSet {
            at: v1.at,
            keys: v1.keys.into_iter().map(KeyRecord::from).collect(),
            retired: v1.retired,
            audit: v1.audit,
            node: v1.node,
            rotated: v1.rotated,
            owners: Vec::new(),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::record_codec::to_bytes;
    use serde::Serialize;

    /// The 0.1 forms, for writing test bytes.
    #[derive(Serialize)]
    struct OldUsage(u64, u64, u64, Option<i64>);

    #[test]
    fn old_usage_rows_read_back_with_no_limits() {
        let bytes = to_bytes(&OldUsage(3, 2, 1, Some(9)));
        let usage = usage_record(&bytes).expect("decodes");
        assert_eq!(
            (usage.allowed, usage.denied, usage.last_used_at),
            (2, 1, Some(9))
        );
        assert_eq!(usage.limits, Default::default());
        let new = to_bytes(&usage);
        assert_eq!(usage_record(&new), Some(usage));
    }

    #[test]
    fn old_key_rows_read_back_as_plain_keys() {
        let old = (
            "key_0123456789abcdef",
            [7u8; 32],
            "name",
            "abcdefgh",
            Permissions::from_list(&[authenta_client::proto::Permission::Read]),
            Some("production"),
            5i64,
            None::<i64>,
            Some(9i64),
            None::<i64>,
            None::<String>,
            None::<Grace>,
        );
        let record = key_record(&to_bytes(&old)).expect("decodes");
        assert_eq!(record.name, "name");
        assert_eq!(record.expires_at, Some(9));
        assert!(record.details.is_empty());
        assert_eq!(key_record(&to_bytes(&record)), Some(record));
    }
}
