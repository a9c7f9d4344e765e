//! The policy file's rules: rotation schedules, maximum key ages, expiry warnings and
//! revocation pushes. [`parse`] reads and validates a file whole; this module evaluates the
//! rules for a key; [`sink`] writes a rotated token where its consumer reads it.
//!
//! Owns the rules only. Never touches the store, the index or the daemon: putting a policy
//! in force and watching the file are `crate::daemon::policy_reload` and
//! `crate::daemon::policy_watch`; the scheduler (`crate::daemon::scheduler`) runs rotations.

pub mod parse;
pub(crate) mod sink;

use crate::key::KeyRecord;
use crate::token::TokenHash;
use std::path::PathBuf;
use std::time::Duration;

/// Read when neither `--policy` nor the config's `policy` names a file, if present.
pub const DEFAULT_PATH: &str = "/etc/authenta/policy.toml";

/// A validated policy. The empty policy (no file) changes nothing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Policy {
    pub defaults: Defaults,
    /// Rules in file order; the first that matches a key applies to it.
    pub rotation: Vec<RotationRule>,
    pub revocations: Revocations,
}

/// `[defaults]`: what applies to keys no rule names.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Defaults {
    /// Keys whose last (re)generation is older stop verifying (401 `expired`).
    pub max_age: Option<Duration>,
    /// How long before `rotate_by` verify answers and lists flag a key as due.
    pub warn_before: Option<Duration>,
    /// Grace of `keys regenerate` when the request names none.
    pub regenerate_grace: Option<Duration>,
}

/// One `[[rotation]]` rule.
#[derive(Debug, Clone, PartialEq)]
pub struct RotationRule {
    /// Matches this key id exactly.
    pub id: Option<String>,
    /// Matches key names: exactly, or as a glob (`*`, `?`, `[...]`).
    pub name: Option<glob::Pattern>,
    /// Matches keys with this environment label.
    pub environment: Option<String>,
    pub max_age: Option<Duration>,
    pub warn_before: Option<Duration>,
    /// Regenerate on this period, writing the new token to `sink`.
    pub every: Option<Duration>,
    /// How long the replaced token keeps verifying after a scheduled rotation.
    pub overlap: Duration,
    pub sink: Option<Sink>,
}

/// Where a scheduled rotation writes the new token for the service that uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sink {
    pub path: PathBuf,
    /// Uid to own the file (resolved from a user name at parse time).
    pub owner: Option<u32>,
    /// File mode, 0400 unless set.
    pub mode: u32,
}

/// Where the operator lets rotations write tokens (the config's `sink_dirs` and
/// `sink_owners`, never the policy's own say): a policy file is data, and a rotation's sink is
/// a root daemon writing a live token to a file and giving it away.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SinkRules {
    /// Directories a sink may be written in (each sink's own directory must be one).
    pub dirs: Vec<PathBuf>,
    /// Uids a sink may be given to.
    pub owners: Vec<u32>,
}

impl SinkRules {
    /// Refuses a policy whose sinks are not where the config allows; the error names the
    /// setting to change.
    pub fn check(&self, policy: &Policy) -> Result<(), String> {
        for sink in policy.rotation.iter().filter_map(|rule| rule.sink.as_ref()) {
            let dir = sink.path.parent().unwrap_or(&sink.path);
            if !self.dirs.iter().any(|allowed| allowed == dir) {
                return Err(format!(
                    "sink {} is not in a directory the config allows: add {} to sink_dirs in \
                     the daemon's config (keyd.toml) to let rotations write there",
                    sink.path.display(),
                    dir.display()
                ));
            }
            if let Some(uid) = sink.owner.filter(|uid| !self.owners.contains(uid)) {
                return Err(format!(
                    "sink {} is to be given to uid {uid}, which the config does not allow: add \
                     the user to sink_owners in the daemon's config (keyd.toml)",
                    sink.path.display()
                ));
            }
        }
        Ok(())
    }
}

/// `[revocations]`: applied durably; removing an entry later does not revive a key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Revocations {
    pub ids: Vec<String>,
    /// SHA-256 of leaked tokens, as secret scanners report them.
    pub token_sha256: Vec<TokenHash>,
}

/// What a policy means for one key, in unix milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyTimes {
    /// From then on the key answers 401 `expired` (its `max_age` ran out).
    pub expires_at: Option<i64>,
    /// When the key is due for rotation.
    pub rotate_by: Option<i64>,
    /// From then on the key is flagged as due (`rotate_by - warn_before`).
    pub warn_from: Option<i64>,
    /// When the scheduler regenerates it (rules with `every`).
    pub scheduled_at: Option<i64>,
}

impl KeyTimes {
    /// Whether the key is flagged as due for rotation at `now`.
    pub fn rotation_due(&self, now: i64) -> bool {
        self.warn_from.is_some_and(|from| from <= now)
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl RotationRule {
    /// Whether this rule applies to `key`: every matcher it has must match.
    pub fn matches(&self, key: &(impl KeyFacts + ?Sized)) -> bool {
        self.id.as_ref().is_none_or(|id| id == key.id())
            && self.name.as_ref().is_none_or(|p| p.matches(key.name()))
            && self
                .environment
                .as_ref()
                .is_none_or(|env| key.environment() == Some(env.as_str()))
    }
}

/// What rules match on and times count from: a stored record, or the index's compact entry.
pub trait KeyFacts {
    fn id(&self) -> &str;
    fn name(&self) -> &str;
    fn environment(&self) -> Option<&str>;
    fn created_at(&self) -> i64;
    fn rotated_at(&self) -> Option<i64>;
}

impl KeyFacts for KeyRecord {
    fn id(&self) -> &str {
        &self.id
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn environment(&self) -> Option<&str> {
        self.environment.as_deref()
    }
    fn created_at(&self) -> i64 {
        self.created_at
    }
    fn rotated_at(&self) -> Option<i64> {
        self.rotated_at
    }
}

impl Policy {
    /// Whether any rule rotates keys on a schedule (`every`).
    pub fn schedules_rotations(&self) -> bool {
        self.rotation.iter().any(|rule| rule.every.is_some())
    }

    /// Whether this policy counts times for any key: it has rotation rules or a maximum
    /// age. When not, [`Policy::times_under`] reads nothing of a key.
    pub fn may_count_times(&self) -> bool {
        !self.rotation.is_empty() || self.defaults.max_age.is_some()
    }

    /// The first rule that matches `key`.
    pub fn rule_for(&self, key: &(impl KeyFacts + ?Sized)) -> Option<&RotationRule> {
        self.rotation.iter().find(|rule| rule.matches(key))
    }

    /// Where the first rule that matches `key` is in `rotation`.
    pub fn rule_index(&self, key: &(impl KeyFacts + ?Sized)) -> Option<usize> {
        self.rotation.iter().position(|rule| rule.matches(key))
    }

    /// What this policy means for `key`.
    pub fn times(&self, key: &(impl KeyFacts + ?Sized)) -> KeyTimes {
        self.times_under(self.rule_for(key), key)
    }

    /// What this policy means for `key` when `rule` is the one that matches it.
    pub fn times_under(
        &self,
        rule: Option<&RotationRule>,
        key: &(impl KeyFacts + ?Sized),
    ) -> KeyTimes {
        if rule.is_none() && self.defaults.max_age.is_none() {
            // Nothing to count: neither an age nor a schedule.
            return KeyTimes::default();
        }
        let base = key.rotated_at().unwrap_or(key.created_at());
        let max_age = rule.and_then(|r| r.max_age).or(self.defaults.max_age);
        let warn_before = rule
            .and_then(|r| r.warn_before)
            .or(self.defaults.warn_before);
        let every = rule.and_then(|r| r.every);
        let expires_at = max_age.map(|age| base.saturating_add(millis(age)));
        let scheduled_at = every.map(|period| base.saturating_add(millis(period)));
        let rotate_by = match (scheduled_at, expires_at) {
            (Some(s), Some(e)) => Some(s.min(e)),
            (s, e) => s.or(e),
        };
        let warn_from = rotate_by.map(|at| at.saturating_sub(warn_before.map_or(0, millis)));
        KeyTimes {
            expires_at,
            rotate_by,
            warn_from,
            scheduled_at,
        }
    }

    /// Grace of a regenerate that names none: the policy's, else `fallback` (the config's).
    pub fn regenerate_grace(&self, fallback: Duration) -> Duration {
        self.defaults.regenerate_grace.unwrap_or(fallback)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::Permissions;

    const DAY: i64 = 86_400_000;

    fn key(name: &str, env: Option<&str>, created_at: i64, rotated_at: Option<i64>) -> KeyRecord {
        KeyRecord {
            id: "key_0123456789abcdef".into(),
            token_hash: [0; 32],
            name: name.into(),
            start: "s".into(),
            permissions: Permissions::default(),
            environment: env.map(Into::into),
            created_at,
            rotated_at,
            expires_at: None,
            revoked_at: None,
            revoke_reason: None,
            grace: None,
            details: Default::default(),
        }
    }

    fn rule(name: &str) -> RotationRule {
        RotationRule {
            id: None,
            name: Some(glob::Pattern::new(name).expect("glob")),
            environment: None,
            max_age: None,
            warn_before: None,
            every: None,
            overlap: Duration::ZERO,
            sink: None,
        }
    }

    #[test]
    fn defaults_give_expiry_and_a_warning_window_from_the_last_generation() {
        let policy = Policy {
            defaults: Defaults {
                max_age: Some(Duration::from_secs(365 * 86_400)),
                warn_before: Some(Duration::from_secs(30 * 86_400)),
                regenerate_grace: None,
            },
            ..Policy::default()
        };
        let times = policy.times(&key("k", None, 0, Some(10 * DAY)));
        assert_eq!(times.expires_at, Some(375 * DAY));
        assert_eq!(times.rotate_by, Some(375 * DAY));
        assert_eq!(times.warn_from, Some(345 * DAY));
        assert_eq!(times.scheduled_at, None);
    }

    #[test]
    fn the_first_matching_rule_wins_and_all_its_matchers_must_match() {
        let mut backend = rule("Backend-*");
        backend.environment = Some("production".into());
        backend.max_age = Some(Duration::from_secs(90 * 86_400));
        let mut everything = rule("*");
        everything.max_age = Some(Duration::from_secs(86_400));
        let policy = Policy {
            rotation: vec![backend, everything],
            ..Policy::default()
        };
        let prod = key("Backend-Server-Key", Some("production"), 0, None);
        let staging = key("Backend-Server-Key", Some("staging"), 0, None);
        assert_eq!(policy.times(&prod).expires_at, Some(90 * DAY));
        assert_eq!(policy.times(&staging).expires_at, Some(DAY));
    }

    #[test]
    fn schedules_rotate_before_expiry() {
        let mut r = rule("*");
        r.every = Some(Duration::from_secs(30 * 86_400));
        r.max_age = Some(Duration::from_secs(45 * 86_400));
        r.warn_before = Some(Duration::from_secs(2 * 86_400));
        let policy = Policy {
            rotation: vec![r],
            ..Policy::default()
        };
        let times = policy.times(&key("k", None, 0, None));
        assert_eq!(times.scheduled_at, Some(30 * DAY));
        assert_eq!(times.rotate_by, Some(30 * DAY));
        assert_eq!(times.warn_from, Some(28 * DAY));
        assert_eq!(times.expires_at, Some(45 * DAY));
    }

    #[test]
    fn no_policy_means_no_times() {
        assert_eq!(
            Policy::default().times(&key("k", None, 5, None)),
            KeyTimes::default()
        );
    }
}
