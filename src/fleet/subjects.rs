//! Where a fleet's changes live in NATS: one stream per fleet, one subject per key.
//!
//! Subjects carry only key ids (public), node names and a digest for hashes no key holds;
//! everything else travels sealed. A change to key `K` is published on
//! `authenta.<fleet>.key.K`, so that JetStream's expected-last-subject-sequence makes two
//! writers of one key conflict; owners' limits share `authenta.<fleet>.owners`. Usage goes to a second stream that keeps only the last
//! message of each subject: `authenta.<fleet>.usage.<node>.K` holds node's counts of K.

use crate::store::change::ChangeSet;
use ring::digest;

/// The lane of owners' limits (not a key id: those start with `key_`).
pub const OWNERS_LANE: &str = "owners";

/// The subjects and stream of one fleet.
#[derive(Debug, Clone)]
pub struct Subjects {
    prefix: String,
    stream: String,
    usage_stream: String,
}

/// What a subject of the fleet's stream carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Carries {
    /// Changes to one key.
    Key(String),
    /// A token hash no key holds, retired by a policy revocation.
    Unkeyed,
    /// Owners' limits (one subject for all owners: owner ids are not for NATS to see).
    Owners,
    /// The fleet's data key, wrapped by the master key.
    DataKey,
}

impl Subjects {
    /// For a fleet name already checked by the config (letters, digits, `-`, `_`).
    pub fn new(fleet: &str) -> Self {
        Subjects {
            prefix: format!("authenta.{fleet}"),
            stream: format!("AUTHENTA_{fleet}"),
            usage_stream: format!("AUTHENTA_{fleet}_USAGE"),
        }
    }

    /// The stream of changes.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The subjects of the stream of changes.
    pub fn changes(&self) -> Vec<String> {
        vec![
            format!("{}.key.>", self.prefix),
            format!("{}.retired.>", self.prefix),
            self.owners(),
            self.data_key(),
        ]
    }

    /// The stream of usage: the last counts of every node for every key.
    pub fn usage_stream(&self) -> &str {
        &self.usage_stream
    }

    pub fn all_usage(&self) -> String {
        format!("{}.usage.>", self.prefix)
    }

    /// Where `node` publishes its counts of key `id`.
    pub fn usage(&self, node: &str, id: &str) -> String {
        format!("{}.usage.{node}.{id}", self.prefix)
    }

    /// The node and key of a usage subject.
    pub fn usage_of<'s>(&self, subject: &'s str) -> Option<(&'s str, &'s str)> {
        let rest = subject
            .strip_prefix(&self.prefix)?
            .strip_prefix(".usage.")?;
        let (node, id) = rest.split_once('.')?;
        crate::token::is_key_id(id).then_some((node, id))
    }

    pub fn key(&self, id: &str) -> String {
        format!("{}.key.{id}", self.prefix)
    }

    pub fn owners(&self) -> String {
        format!("{}.owners", self.prefix)
    }

    pub fn data_key(&self) -> String {
        format!("{}.datakey", self.prefix)
    }

    /// A subject for a retired hash no key holds: a digest of it, so that subjects name no
    /// token hash and the same hash always lands on the same subject.
    pub fn unkeyed(&self, hash: &[u8; 32]) -> String {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(self.prefix.as_bytes());
        ctx.update(hash);
        let digest = ctx.finish();
        format!(
            "{}.retired.{}",
            self.prefix,
            hex::encode(&digest.as_ref()[..12])
        )
    }

    /// The subject a change goes to: its key's, else the owners' when it sets owners, else
    /// that of the first hash it retires.
    pub fn of_change(&self, key: Option<&str>, set: &ChangeSet) -> String {
        match (key, set.retired.first()) {
            (Some(id), _) => self.key(id),
            (None, _) if !set.owners.is_empty() => self.owners(),
            (None, Some((hash, _))) => self.unkeyed(hash),
            (None, None) => self.unkeyed(&[0; 32]),
        }
    }

    /// The lane of a subject of changes: the name under which a node keeps the subject's
    /// last sequence (a key's id, [`OWNERS_LANE`], or `retired.<digest>`).
    pub fn lane(&self, subject: &str) -> Option<String> {
        match self.carries(subject)? {
            Carries::Key(id) => Some(id),
            Carries::Owners => Some(OWNERS_LANE.to_owned()),
            Carries::Unkeyed => subject
                .strip_prefix(&self.prefix)
                .and_then(|rest| rest.strip_prefix('.'))
                .map(str::to_owned),
            Carries::DataKey => None,
        }
    }

    /// What `subject` carries; None for a subject this build does not know.
    pub fn carries(&self, subject: &str) -> Option<Carries> {
        let rest = subject.strip_prefix(&self.prefix)?.strip_prefix('.')?;
        if rest == "datakey" {
            return Some(Carries::DataKey);
        }
        if rest == "owners" {
            return Some(Carries::Owners);
        }
        if let Some(id) = rest.strip_prefix("key.") {
            return crate::token::is_key_id(id).then(|| Carries::Key(id.to_owned()));
        }
        rest.strip_prefix("retired.").map(|_| Carries::Unkeyed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_round_trip_and_name_no_hash() {
        let s = Subjects::new("prod");
        let id = "key_0123456789abcdef";
        assert_eq!(s.carries(&s.key(id)), Some(Carries::Key(id.into())));
        assert_eq!(s.carries(&s.data_key()), Some(Carries::DataKey));
        assert_eq!(s.carries(&s.owners()), Some(Carries::Owners));
        assert_eq!(s.lane(&s.key(id)).as_deref(), Some(id));
        assert_eq!(s.lane(&s.owners()).as_deref(), Some(OWNERS_LANE));
        let lane = s.lane(&s.unkeyed(&[7u8; 32])).expect("a lane");
        assert!(
            lane.starts_with("retired.") && !lane.contains("prod"),
            "{lane}"
        );
        assert_eq!(s.lane(&s.data_key()), None);
        let hash = [7u8; 32];
        let unkeyed = s.unkeyed(&hash);
        assert_eq!(s.carries(&unkeyed), Some(Carries::Unkeyed));
        assert!(!unkeyed.contains(&hex::encode(&hash[..6])));
        assert_eq!(s.carries("authenta.prod.key.not-a-key-id"), None);
        assert_eq!(s.carries("authenta.other.key.key_0123456789abcdef"), None);
        assert_eq!(s.stream(), "AUTHENTA_prod");
        assert_eq!(s.usage_of(&s.usage("host-a", id)), Some(("host-a", id)));
        assert_eq!(s.usage_of("authenta.prod.usage.host-a.nope"), None);
    }
}
