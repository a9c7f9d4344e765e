//! Change sets as they travel through NATS: sealed by the fleet's data key with the subject
//! as associated data, so a message cannot be read, altered, or moved to another key's
//! subject; and checked, once opened, to change only the key its subject names.

use crate::fleet::subjects::Carries;
use crate::key::UsageRecord;
use crate::store::barrier::Barrier;
use crate::store::change::ChangeSet;
use crate::store::legacy;
use crate::store::record_codec::to_bytes;

/// Why a message of the stream is refused.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("its seal does not open (tampered, or sealed with another fleet's data key)")]
    Seal,
    #[error("it does not decode as a change")]
    Decode,
    #[error("it changes a key other than the one its subject names")]
    WrongKey,
}

pub fn seal(barrier: &Barrier, subject: &str, set: &ChangeSet) -> Vec<u8> {
    barrier.seal("fleet", subject, &to_bytes(set))
}

pub fn seal_usage(barrier: &Barrier, subject: &str, usage: &UsageRecord) -> Vec<u8> {
    barrier.seal("fleet-usage", subject, &to_bytes(usage))
}

pub fn open_usage(barrier: &Barrier, subject: &str, sealed: &[u8]) -> Result<UsageRecord, Refused> {
    let plain = barrier
        .open("fleet-usage", subject, sealed)
        .map_err(|_| Refused::Seal)?;
    legacy::usage_record(&plain).ok_or(Refused::Decode)
}

/// Opens a change published on `subject`, which carries `carries`.
pub fn open(
    barrier: &Barrier,
    subject: &str,
    carries: &Carries,
    sealed: &[u8],
) -> Result<ChangeSet, Refused> {
    let plain = barrier
        .open("fleet", subject, sealed)
        .map_err(|_| Refused::Seal)?;
    let set = legacy::change_set(&plain).ok_or(Refused::Decode)?;
    let key = match carries {
        Carries::Key(id) => Some(id.as_str()),
        _ => None,
    };
    let fits = set.keys.iter().all(|r| Some(r.id.as_str()) == key)
        && set.retired.iter().all(|(_, k)| k.as_deref() == key)
        && set.audit.iter().all(|a| a.key_id.as_deref() == key)
        && (key.is_none() || set.owners.is_empty());
    if fits {
        Ok(set)
    } else {
        Err(Refused::WrongKey)
    }
}
