//! The verify decision: the one question apps ask on every request they serve.
//!
//! It parses and hashes the token, looks the hash up in the in-memory index, and checks, in
//! this order: revoked (or replaced by a regenerate), expired, environment, permissions.
//! It never touches SQLite and never waits on anything but the index's read lock.

use crate::index::limits::{self, Limits};
use crate::index::{Hit, KeyUse, LookupKey, Maps, RUN_MAX};
use crate::key::Permissions;
use crate::token::{check_token, hash_token, TokenHash};
use authenta_client::proto::{KeyState, VerifyCode};
use authenta_client::verify_wire::{VerifyAnswerRef, VerifyQuestion, VerifyRequestRef, NO_META};

/// Decides a run of pipelined verifies (at most [`RUN_MAX`]) under one read of the index,
/// at `now`, handing each answer with its request id to `answered`, in order; stops at the
/// first error `answered` returns. Every verify an app sends is decided here.
///
/// Three passes, so that the memory each lookup needs is asked for in runs of prefetches
/// with nothing between them: every token is checked and hashed, then every table bucket is
/// asked for, then every entry those buckets name. With a million keys each of those lines
/// sits on a page the TLB does not hold, and a prefetch does not retire until its page walk
/// is done; issued back to back, the walks overlap instead of queueing behind the hashing.
///
/// The uses are counted once the whole run is decided, with one fence for all (see
/// [`Maps::count_uses`]), so a decision waits for no count; still before `decide_run`
/// returns, so a client that lists its keys after an answer sees that verify counted.
pub fn decide_run<'m, E>(
    maps: &'m Maps,
    run: &[Option<VerifyRequestRef<'_>>],
    now: i64,
    mut answered: impl FnMut(u64, &VerifyAnswerRef<'m>) -> Result<(), E>,
) -> Result<(), E> {
    let mut keys = [None; RUN_MAX];
    for (request, key) in run.iter().flatten().zip(&mut keys) {
        *key = token_hash(request.question().token).map(|hash| maps.lookup_key(hash));
    }
    for key in keys.iter().flatten() {
        maps.prefetch_bucket(key);
    }
    for key in keys.iter().flatten() {
        maps.prefetch_entry(key);
    }
    if run.len() > 1 {
        for key in keys.iter().flatten() {
            maps.prefetch_heap(key);
        }
    }
    let mut uses = [None; RUN_MAX];
    let mut result = Ok(());
    for ((request, key), used) in run.iter().flatten().zip(keys).zip(&mut uses) {
        let answer;
        (answer, *used) = decide(maps, request.question(), key, now);
        result = answered(request.id, &answer);
        if result.is_err() {
            break;
        }
    }
    maps.count_uses(&uses, now);
    result
}

/// The token's SHA-256 if it is well-formed (prefix, length, alphabet, checksum).
fn token_hash(token: &str) -> Option<TokenHash> {
    check_token(token).ok().map(|()| hash_token(token))
}

/// The decision for one verify, its token already checked and hashed and made a
/// [`LookupKey`] (`None`: malformed), borrowing from `maps` so that the answer is encoded
/// without allocating. In this order: unknown, revoked (or replaced by a regenerate),
/// expired, environment, permissions, then the key's and its owner's rate limits and
/// credits (see [`limits::enforce`]). Returns the use to count when the token matched a
/// key, for [`decide_run`] to count with the rest of its run.
fn decide<'m>(
    maps: &'m Maps,
    question: &VerifyQuestion<'_>,
    key: Option<LookupKey>,
    now: i64,
) -> (VerifyAnswerRef<'m>, Option<KeyUse<'m>>) {
    let Some(key) = key else {
        return (no_key(VerifyCode::Malformed), None);
    };
    let (found, replaced) = match maps.by_key(&key) {
        None => return (no_key(VerifyCode::Unknown), None),
        Some(Hit::Retired(key_id)) => return retired(maps, key_id),
        Some(Hit::Current(found)) => (found, false),
        Some(Hit::Previous(found)) => {
            let over = found.grace().is_none_or(|g| g.until <= now);
            (found, over)
        }
    };
    let entry = found.entry();
    let times = found.times();
    let question_code = if replaced {
        VerifyCode::Revoked
    } else {
        match found.state_under(&times, now) {
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
    let (code, limits) = match found.extra() {
        Some(extra) if question_code == VerifyCode::Valid => {
            limits::enforce(extra, question.cost, now)
        }
        Some(extra) => (question_code, limits::peek(extra, now)),
        None => (question_code, Limits::default()),
    };
    let used = KeyUse {
        key: found,
        allowed: code == VerifyCode::Valid,
    };
    let dead = matches!(code, VerifyCode::Revoked | VerifyCode::Expired);
    let answer = VerifyAnswerRef {
        code,
        key_id: Some(entry.id()),
        permissions: entry.permissions.bits(),
        environment: entry.environment(),
        rotate_by: times.rotate_by,
        rotation_due: times.rotation_due(now),
        name: (!dead).then(|| entry.name()),
        owner_id: found.owner_id().filter(|_| !dead),
        meta: if dead { &NO_META } else { found.meta() },
        expires_at: entry.expires_at().filter(|_| !dead),
        ratelimit: limits.ratelimit.filter(|_| !dead),
        remaining: limits.remaining.filter(|_| !dead),
    };
    (answer, Some(used))
}

/// A token that must never verify again. When its key is still known, the verify counts as
/// one of that key's denials (an app still using a replaced token shows in its usage) and
/// the answer carries the key's environment, as every other answer about a key does.
fn retired<'m>(
    maps: &'m Maps,
    key_id: Option<&'m str>,
) -> (VerifyAnswerRef<'m>, Option<KeyUse<'m>>) {
    let answer = VerifyAnswerRef {
        key_id,
        ..no_key(VerifyCode::Revoked)
    };
    let Some(found) = key_id.and_then(|id| maps.by_id(id)) else {
        return (answer, None);
    };
    let answer = VerifyAnswerRef {
        environment: found.entry().environment(),
        ..answer
    };
    let used = KeyUse {
        key: found,
        allowed: false,
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
        name: None,
        owner_id: None,
        meta: &NO_META,
        expires_at: None,
        ratelimit: None,
        remaining: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::Index;
    use crate::key::{Grace, KeyRecord, UsageRecord};
    use crate::token::generate_token;
    use authenta_client::proto::Permission;
    use authenta_client::verify_wire::VerifyBodyRef;
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
            details: Default::default(),
        }
    }

    /// What a verify answered, owned.
    type Answer = (u64, VerifyCode, Option<i64>, bool);

    /// Asks a run of pipelined verifies through [`decide_run`], the path every request takes.
    fn ask_run(
        index: &Index,
        questions: &[(&str, &[Permission], Option<&str>)],
        now: i64,
    ) -> Vec<Answer> {
        let run: Vec<_> = questions
            .iter()
            .enumerate()
            .map(|(n, (token, perms, environment))| {
                Some(VerifyRequestRef {
                    id: n as u64,
                    body: VerifyBodyRef::Verify(VerifyQuestion {
                        token,
                        permissions: Permissions::from_list(perms).bits(),
                        environment: *environment,
                        cost: None,
                    }),
                })
            })
            .collect();
        let maps = index.read();
        let mut answers = Vec::new();
        decide_run(&maps, &run, now, |id, a| {
            answers.push((id, a.code, a.rotate_by, a.rotation_due));
            Ok::<(), ()>(())
        })
        .expect("every answer taken");
        answers
    }

    fn ask(
        index: &Index,
        token: &str,
        perms: &[Permission],
        env: Option<&str>,
        now: i64,
    ) -> VerifyCode {
        ask_run(index, &[(token, perms, env)], now)[0].1
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
    fn a_replaced_token_is_a_denial_of_its_key_and_names_its_environment() {
        let rng = SystemRandom::new();
        let token = generate_token(&rng).expect("rng").to_string();
        let replaced = generate_token(&rng).expect("rng").to_string();
        let retired = vec![(
            hash_token(&replaced),
            Some("key_0123456789abcdef".to_string()),
        )];
        let index = Index::from_loaded(vec![(record(&token), UsageRecord::default())], retired);
        let run = [Some(VerifyRequestRef {
            id: 1,
            body: VerifyBodyRef::Verify(VerifyQuestion {
                token: &replaced,
                permissions: Default::default(),
                environment: None,
                cost: None,
            }),
        })];
        let maps = index.read();
        let mut seen = None;
        decide_run(&maps, &run, 0, |_, a| {
            seen = Some((
                a.code,
                a.key_id.map(str::to_owned),
                a.environment.map(str::to_owned),
            ));
            Ok::<(), ()>(())
        })
        .expect("answered");
        let expected = (
            VerifyCode::Revoked,
            Some("key_0123456789abcdef".to_string()),
            Some("production".to_string()),
        );
        assert_eq!(seen, Some(expected));
        let usage = maps
            .by_id("key_0123456789abcdef")
            .map(|e| e.usage.snapshot())
            .expect("key present");
        assert_eq!((usage.allowed, usage.denied), (0, 1));
    }

    #[test]
    fn a_pipelined_run_answers_in_order_and_counts_every_verify() {
        let rng = SystemRandom::new();
        let token = generate_token(&rng).expect("rng").to_string();
        let other = generate_token(&rng).expect("rng").to_string();
        let index = Index::from_loaded(vec![(record(&token), UsageRecord::default())], vec![]);
        let read: &[Permission] = &[Permission::Read];
        let answers = ask_run(
            &index,
            &[
                (&token, read, None),
                ("api_nope", &[], None),
                (&token, &[Permission::Write], None),
                (&other, &[], None),
                (&token, read, Some("production")),
            ],
            0,
        );
        let codes: Vec<_> = answers.iter().map(|a| (a.0, a.1)).collect();
        assert_eq!(
            codes,
            vec![
                (0, VerifyCode::Valid),
                (1, VerifyCode::Malformed),
                (2, VerifyCode::InsufficientPermissions),
                (3, VerifyCode::Unknown),
                (4, VerifyCode::Valid),
            ]
        );
        let usage = index
            .read()
            .by_id("key_0123456789abcdef")
            .map(|e| e.usage.snapshot())
            .expect("key present");
        assert_eq!(
            (usage.verifications, usage.allowed, usage.denied),
            (3, 2, 1)
        );
    }

    /// An index of one key without an expiry of its own, made at `created_at`, and its token.
    fn one_key_made_at(created_at: i64) -> (String, Index) {
        let token = generate_token(&SystemRandom::new())
            .expect("rng")
            .to_string();
        let mut r = record(&token);
        r.expires_at = None;
        r.created_at = created_at;
        let index = Index::from_loaded(vec![(r, UsageRecord::default())], vec![]);
        (token, index)
    }

    #[test]
    fn policy_max_age_and_warning_follow_an_injected_clock() {
        use crate::policy::{Defaults, Policy};
        use std::time::Duration;
        const DAY: i64 = 86_400_000;
        let (token, index) = one_key_made_at(100 * DAY);
        index.set_policy(std::sync::Arc::new(Policy {
            defaults: Defaults {
                max_age: Some(Duration::from_secs(10 * 86_400)),
                warn_before: Some(Duration::from_secs(2 * 86_400)),
                regenerate_grace: None,
            },
            ..Policy::default()
        }));
        let ask_at = |now: i64| ask_run(&index, &[(&token, &[], None)], now)[0];
        let (_, code, rotate_by, due) = ask_at(107 * DAY);
        assert_eq!((code, due), (VerifyCode::Valid, false));
        assert_eq!(rotate_by, Some(110 * DAY));
        let (_, code, _, due) = ask_at(108 * DAY + 1);
        assert_eq!((code, due), (VerifyCode::Valid, true));
        assert_eq!(ask_at(110 * DAY).1, VerifyCode::Expired);
        let entry = index
            .read()
            .by_id("key_0123456789abcdef")
            .map(|e| (e.info(110 * DAY), e.info(108 * DAY + 1)))
            .expect("entry");
        assert_eq!(entry.0.state, authenta_client::proto::KeyState::Expired);
        assert!(entry.1.rotation_due);
        // A new policy without max_age brings the key back: age is policy, not state.
        index.set_policy(std::sync::Arc::new(Policy::default()));
        assert_eq!(ask_at(110 * DAY).1, VerifyCode::Valid);
    }

    #[test]
    fn a_key_is_judged_by_the_policy_in_force_before_and_after_its_rule_is_filed() {
        use crate::policy::parse::parse;
        const DAY: i64 = 86_400_000;
        let (token, index) = one_key_made_at(0);
        let rules = |first: &str, second: &str| {
            let text = format!(
                "[[rotation]]\nname = \"{first}\"\nmax_age = \"1d\"\n\n\
                 [[rotation]]\nname = \"{second}\"\nmax_age = \"10d\"\n"
            );
            std::sync::Arc::new(parse(&text).expect("policy"))
        };
        let ask_at = |now: i64| ask_run(&index, &[(&token, &[], None)], now)[0];
        // The key ("n") falls under the second rule: 10 days.
        index.set_policy(rules("other", "n"));
        assert_eq!(ask_at(2 * DAY).2, Some(10 * DAY));
        // The same rules swapped: the key's filed rule (the second) now means "other" and
        // 10 days, but verify must judge it by the first, 1 day, also before the change
        // reaches its entry.
        let swapped = rules("n", "other");
        index.write().put_policy(swapped.clone());
        assert_eq!(
            ask_at(2 * DAY).1,
            VerifyCode::Expired,
            "before its cell is set"
        );
        index.set_policy(rules("other", "n"));
        index.set_policy(swapped);
        assert_eq!(ask_at(2 * DAY).1, VerifyCode::Expired, "after");
        assert_eq!(ask_at(DAY - 1).2, Some(DAY));
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
