//! The verify decision: the one question apps ask on every request they serve.
//!
//! It parses and hashes the token, looks the hash up in the in-memory index, and checks, in
//! this order: revoked (or replaced by a regenerate), expired, environment, permissions.
//! It never touches SQLite and never waits on anything but the index's read lock.

use crate::index::{Hit, Index, KeyUse, LookupKey, Maps};
use crate::key::Permissions;
use crate::token::{check_token, hash_token, TokenHash};
use authenta_client::proto::{KeyState, VerifyAnswer, VerifyCode, VerifyRequest};
use authenta_client::verify_wire::{VerifyAnswerRef, VerifyQuestion};

/// Answers a verify at `now` (unix milliseconds) and counts it against the key it matched.
pub fn verify(index: &Index, request: &VerifyRequest, now: i64) -> VerifyAnswer {
    let question = VerifyQuestion {
        token: &request.token,
        permissions: Permissions::from_list(&request.permissions).bits(),
        environment: request.environment.as_deref(),
    };
    let maps = index.read();
    let answer = decide(&maps, &question, now);
    VerifyAnswer {
        code: answer.code,
        key_id: answer.key_id.map(str::to_owned),
        permissions: Permissions::from_bits(answer.permissions).to_list(),
        environment: answer.environment.map(str::to_owned),
        rotate_by: answer.rotate_by,
        rotation_due: answer.rotation_due,
    }
}

/// The decision, borrowing from `maps` (a read of the index), so that it is encoded without
/// allocating; counts it against the key it matched.
pub fn decide<'m>(maps: &'m Maps, question: &VerifyQuestion<'_>, now: i64) -> VerifyAnswerRef<'m> {
    let key = token_hash(question.token).map(|hash| maps.lookup_key(hash));
    let (answer, used) = judge(maps, question, key, now);
    if let Some(used) = used {
        maps.count_use(used, now);
    }
    answer
}

/// The token's SHA-256 if it is well-formed (prefix, length, alphabet, checksum).
pub fn token_hash(token: &str) -> Option<TokenHash> {
    check_token(token).ok().map(|()| hash_token(token))
}

/// [`decide`] with the token already checked and hashed by [`token_hash`] and made a
/// [`LookupKey`] (`None`: malformed), so that a run of verifies can hash first, prefetch,
/// and look up together without hashing twice; and without counting: it returns the use
/// to count (when the token matched a key), so that a run counts all of its uses together
/// ([`Maps::count_uses`]).
pub fn judge<'m>(
    maps: &'m Maps,
    question: &VerifyQuestion<'_>,
    key: Option<LookupKey>,
    now: i64,
) -> (VerifyAnswerRef<'m>, Option<KeyUse<'m>>) {
    let Some(key) = key else {
        return (no_key(VerifyCode::Malformed), None);
    };
    let (entry, replaced) = match maps.by_key(&key) {
        None => return (no_key(VerifyCode::Unknown), None),
        Some(Hit::Retired(key_id)) => {
            let answer = VerifyAnswerRef {
                key_id,
                ..no_key(VerifyCode::Revoked)
            };
            return (answer, None);
        }
        Some(Hit::Current(entry)) => (entry, false),
        Some(Hit::Previous(entry)) => {
            let over = entry.grace().is_none_or(|g| g.until <= now);
            (entry, over)
        }
    };
    let code = if replaced {
        VerifyCode::Revoked
    } else {
        match entry.state(now) {
            KeyState::Revoked => VerifyCode::Revoked,
            KeyState::Expired => VerifyCode::Expired,
            KeyState::Active => {
                if question
                    .environment
                    .is_some_and(|wanted| entry.environment() != Some(wanted))
                {
                    VerifyCode::WrongEnvironment
                } else if !entry
                    .permissions
                    .contains_all(Permissions::from_bits(question.permissions))
                {
                    VerifyCode::InsufficientPermissions
                } else {
                    VerifyCode::Valid
                }
            }
        }
    };
    let used = KeyUse {
        key: entry,
        allowed: code == VerifyCode::Valid,
    };
    let entry = entry.entry();
    let answer = VerifyAnswerRef {
        code,
        key_id: Some(entry.id()),
        permissions: entry.permissions.bits(),
        environment: entry.environment(),
        rotate_by: entry.policy.rotate_by(),
        rotation_due: entry.policy.rotation_due(now),
    };
    (answer, Some(used))
}

fn no_key(code: VerifyCode) -> VerifyAnswerRef<'static> {
    VerifyAnswerRef {
        code,
        key_id: None,
        permissions: Default::default(),
        environment: None,
        rotate_by: None,
        rotation_due: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::{Grace, KeyRecord, UsageRecord};
    use crate::token::generate_token;
    use authenta_client::proto::Permission;
    use ring::rand::SystemRandom;

    fn record(token: &str) -> KeyRecord {
        KeyRecord {
            id: "key_0123456789abcdef".into(),
            token_hash: hash_token(token),
            name: "n".into(),
            start: "s".into(),
            permissions: Permissions::from_list(&[Permission::Read]),
            environment: Some("production".into()),
            created_at: 0,
            rotated_at: None,
            expires_at: Some(1_000),
            revoked_at: None,
            revoke_reason: None,
            grace: None,
        }
    }

    fn ask(
        index: &Index,
        token: &str,
        perms: &[Permission],
        env: Option<&str>,
        now: i64,
    ) -> VerifyCode {
        let request = VerifyRequest {
            token: token.into(),
            permissions: perms.to_vec(),
            environment: env.map(Into::into),
        };
        verify(index, &request, now).code
    }

    #[test]
    fn decisions_in_order() {
        let rng = SystemRandom::new();
        let token = generate_token(&rng).expect("rng").to_string();
        let other = generate_token(&rng).expect("rng").to_string();
        let index = Index::from_loaded(vec![(record(&token), UsageRecord::default())], vec![]);
        assert_eq!(
            ask(&index, &token, &[Permission::Read], None, 0),
            VerifyCode::Valid
        );
        assert_eq!(
            ask(&index, &token, &[Permission::Read], Some("production"), 0),
            VerifyCode::Valid
        );
        assert_eq!(
            ask(&index, &token, &[Permission::Read], Some("staging"), 0),
            VerifyCode::WrongEnvironment
        );
        assert_eq!(
            ask(&index, &token, &[Permission::Write], None, 0),
            VerifyCode::InsufficientPermissions
        );
        assert_eq!(ask(&index, &token, &[], None, 1_000), VerifyCode::Expired);
        assert_eq!(ask(&index, &other, &[], None, 0), VerifyCode::Unknown);
        assert_eq!(ask(&index, "api_nope", &[], None, 0), VerifyCode::Malformed);
        let usage = index
            .read()
            .by_id("key_0123456789abcdef")
            .map(|e| e.usage.snapshot());
        let usage = usage.expect("key present");
        assert_eq!(
            (usage.verifications, usage.allowed, usage.denied),
            (5, 2, 3)
        );
    }

    #[test]
    fn policy_max_age_and_warning_follow_an_injected_clock() {
        use crate::policy::{Defaults, Policy};
        use std::time::Duration;
        const DAY: i64 = 86_400_000;
        let token = generate_token(&SystemRandom::new())
            .expect("rng")
            .to_string();
        let mut r = record(&token);
        r.expires_at = None;
        r.created_at = 100 * DAY;
        let index = Index::from_loaded(vec![(r, UsageRecord::default())], vec![]);
        index.set_policy(std::sync::Arc::new(Policy {
            defaults: Defaults {
                max_age: Some(Duration::from_secs(10 * 86_400)),
                warn_before: Some(Duration::from_secs(2 * 86_400)),
                regenerate_grace: None,
            },
            ..Policy::default()
        }));
        let ask_at = |now: i64| {
            let request = VerifyRequest {
                token: token.clone(),
                permissions: vec![],
                environment: None,
            };
            verify(&index, &request, now)
        };
        let early = ask_at(107 * DAY);
        assert_eq!((early.code, early.rotation_due), (VerifyCode::Valid, false));
        assert_eq!(early.rotate_by, Some(110 * DAY));
        let warned = ask_at(108 * DAY + 1);
        assert_eq!(
            (warned.code, warned.rotation_due),
            (VerifyCode::Valid, true)
        );
        let late = ask_at(110 * DAY);
        assert_eq!(late.code, VerifyCode::Expired);
        let entry = index
            .read()
            .by_id("key_0123456789abcdef")
            .map(|e| (e.info(110 * DAY), e.info(108 * DAY + 1)))
            .expect("entry");
        assert_eq!(entry.0.state, authenta_client::proto::KeyState::Expired);
        assert!(entry.1.rotation_due);
        // A new policy without max_age brings the key back: age is policy, not state.
        index.set_policy(std::sync::Arc::new(Policy::default()));
        assert_eq!(ask_at(110 * DAY).code, VerifyCode::Valid);
    }

    #[test]
    fn previous_token_lives_only_through_its_grace() {
        let rng = SystemRandom::new();
        let old = generate_token(&rng).expect("rng").to_string();
        let new = generate_token(&rng).expect("rng").to_string();
        let mut r = record(&new);
        r.expires_at = None;
        r.grace = Some(Grace {
            token_hash: hash_token(&old),
            until: 500,
        });
        let index = Index::from_loaded(vec![(r, UsageRecord::default())], vec![]);
        assert_eq!(ask(&index, &old, &[], None, 499), VerifyCode::Valid);
        assert_eq!(ask(&index, &old, &[], None, 500), VerifyCode::Revoked);
        assert_eq!(ask(&index, &new, &[], None, 500), VerifyCode::Valid);
    }
}
