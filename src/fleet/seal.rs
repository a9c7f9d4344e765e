//! Change sets as they travel through NATS: sealed by the fleet's data key with the subject
//! as associated data, so a message cannot be read, altered, or moved to another key's
//! subject; and checked, once opened, to change only the key its subject names. Each is
//! sealed together with the sequence of the subject's change it was made against, so that
//! a copy published again later (a replay, which would roll the key back) is told from it.

use crate::fleet::subjects::Carries;
use crate::key::UsageRecord;
use crate::store::barrier::Barrier;
use crate::store::change::ChangeSet;
use crate::store::legacy;
use crate::store::record_codec::{from_bytes, to_bytes};
use serde::{Deserialize, Serialize};

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

/// A change as it travels (the sealed plaintext).
#[derive(Debug, Serialize, Deserialize)]
struct Travelling<S> {
    /// The sequence of the subject's change it was made against (0: none).
    after: u64,
    /// It stands in for a message erased from the stream (a rotation without its token),
    /// for the nodes that did not read that message: a node that did skips it quietly.
    stands_in: bool,
    set: S,
}

/// A change opened from the stream.
#[derive(Debug)]
pub struct Opened {
    /// See [`Travelling::after`]; None for a change published by version 0.1, which did not
    /// seal it.
    pub after: Option<u64>,
    pub stands_in: bool,
    pub set: ChangeSet,
}

/// Seals `set`, made against the subject's change at sequence `after`.
pub fn seal(barrier: &Barrier, subject: &str, after: u64, set: &ChangeSet) -> Vec<u8> {
    seal_travelling(barrier, subject, after, false, set)
}

/// Seals `set` to stand in for an erased message, made against `after` as that one was.
pub fn seal_stand_in(barrier: &Barrier, subject: &str, after: u64, set: &ChangeSet) -> Vec<u8> {
    seal_travelling(barrier, subject, after, true, set)
}

fn seal_travelling(
    barrier: &Barrier,
    subject: &str,
    after: u64,
    stands_in: bool,
    set: &ChangeSet,
) -> Vec<u8> {
    let travelling = Travelling {
        after,
        stands_in,
        set,
    };
    barrier.seal("fleet-after", subject, &to_bytes(&travelling))
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
) -> Result<Opened, Refused> {
    let opened = match barrier.open("fleet-after", subject, sealed) {
        Ok(plain) => {
            let travelling: Travelling<ChangeSet> = from_bytes(&plain).ok_or(Refused::Decode)?;
            Opened {
                after: Some(travelling.after),
                stands_in: travelling.stands_in,
                set: travelling.set,
            }
        }
        Err(_) => {
            let plain = barrier
                .open("fleet", subject, sealed)
                .map_err(|_| Refused::Seal)?;
            Opened {
                after: None,
                stands_in: false,
                set: legacy::change_set(&plain).ok_or(Refused::Decode)?,
            }
        }
    };
    if fits(carries, &opened.set) {
        Ok(opened)
    } else {
        Err(Refused::WrongKey)
    }
}

/// Whether `set` changes only what a subject carrying `carries` may: its key, or owners
/// on the owners' subject, or hashes no key holds.
fn fits(carries: &Carries, set: &ChangeSet) -> bool {
    let key = match carries {
        Carries::Key(id) => Some(id.as_str()),
        _ => None,
    };
    let owners_fit = match carries {
        Carries::Owners => set.retired.is_empty(),
        _ => set.owners.is_empty(),
    };
    owners_fit
        && set.keys.iter().all(|r| Some(r.id.as_str()) == key)
        && set.retired.iter().all(|(_, k)| k.as_deref() == key)
        && set.audit.iter().all(|a| a.key_id.as_deref() == key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::barrier::random_key;

    #[test]
    fn a_change_opens_with_what_it_was_made_against_and_version_0_1s_without() {
        let barrier = Barrier::new(&random_key(&ring::rand::SystemRandom::new()).expect("rng"));
        let subject = "authenta.prod.owners";
        let set = ChangeSet {
            at: 5,
            ..ChangeSet::default()
        };
        let sealed = seal(&barrier, subject, 41, &set);
        let opened = open(&barrier, subject, &Carries::Owners, &sealed).expect("opens");
        assert_eq!((opened.after, opened.set), (Some(41), set.clone()));
        let old = barrier.seal("fleet", subject, &to_bytes(&set));
        let opened = open(&barrier, subject, &Carries::Owners, &old).expect("opens");
        assert_eq!(opened.after, None);
        let elsewhere = open(
            &barrier,
            "authenta.prod.retired.x",
            &Carries::Unkeyed,
            &sealed,
        );
        assert!(matches!(elsewhere, Err(Refused::Seal)));
    }
}
