//! Attacks on protocol 2's key lifecycle (owners, metadata, update, rate limits, credits)
//! from outside, against the real daemon. Each test that fails names a defect; the few that
//! pass guard attacks the daemon withstands.

mod common;

use authenta_client::proto::{self, Meta, UpdateKey, VerifyCode, VerifyRequest};
use authenta_client::Client;
use common::{http, Daemon};
use std::time::{Duration, Instant};

const FAST_FLUSH: &str = "usage_flush_interval = \"200ms\"\n";

// ---------------------------------------------------------------------------------------
// Metadata bound

/// docs/limits.md: "all of it together is at most 1 KiB as JSON". `keys update` checks
/// only the entries it adds, never the merged whole, so each update adds another KiB.
#[test]
fn update_cannot_grow_metadata_past_one_kib() {
    let daemon = Daemon::start();
    let a = format!("a={}", "x".repeat(700));
    let (id, _) = daemon.create("Meta", "read", &["--meta", &a]);
    let b = format!("b={}", "y".repeat(700));
    let out = daemon.cli(&["keys", "update", &id, "--meta", &b, "--json"]);
    let shown = daemon.show(&id);
    let size = serde_json::to_vec(&shown["meta"]).expect("json").len();
    assert!(
        size <= 1024,
        "update accepted (exit {:?}): the key's metadata is now {size} bytes as JSON",
        out.status.code()
    );
}

/// Metadata is printed to an admin's terminal by `keys show`: a control character in it
/// could rewrite what the admin sees (a forged `state: revoked` line) or run an escape
/// sequence. Refused on create and on update, as in a name. And a malformed `--meta` is
/// refused without its value in the message: metadata may be secret.
#[test]
fn metadata_with_control_characters_is_refused_and_a_bad_one_is_not_echoed() {
    let daemon = Daemon::start();
    let forged = "a=\u{1b}]0;pwned\u{7}\nstate:        revoked";
    let out = daemon.cli(&[
        "keys",
        "create",
        "--name",
        "n",
        "--permissions",
        "read",
        "--meta",
        forged,
    ]);
    assert_eq!(
        out.status.code(),
        Some(64),
        "a control character in metadata, on create"
    );
    let (id, _) = daemon.create("Plain", "read", &[]);
    let out = daemon.cli(&["keys", "update", &id, "--meta", "k=\u{1b}[2J"]);
    assert_eq!(
        out.status.code(),
        Some(64),
        "a control character in metadata, on update"
    );
    assert_eq!(
        daemon.show(&id)["meta"],
        serde_json::json!({}),
        "nothing was set"
    );

    for command in [
        vec!["keys", "create", "--name", "n", "--permissions", "read"],
        vec!["keys", "update", id.as_str()],
    ] {
        let mut args = command.clone();
        args.extend(["--meta", "=METAVALUESECRET"]);
        let out = daemon.cli(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{command:?}: {stderr}");
        assert!(stderr.contains("KEY=VALUE"), "says what to write: {stderr}");
        assert!(!stderr.contains("METAVALUESECRET"), "{stderr}");
    }
}

/// The consequence: grown past a frame, every verify of the key is answered with a
/// connection-level BadFrame and the connection is closed (the app can no longer verify
/// the key, and a pipelining client loses its other requests on that connection), and
/// `keys list` (every page that holds the key) and `keys show` fail.
#[test]
fn grown_metadata_never_makes_a_verify_answer_too_large_to_send() {
    let daemon = Daemon::start();
    let (id, token) = daemon.create("Meta", "read", &[]);
    let mut client = Client::connect(&daemon.socket).expect("connect");
    for n in 0..80 {
        let mut set_meta = Meta::new();
        set_meta.insert(format!("k{n:03}"), "v".repeat(1000));
        // Each update alone is within the bound; only the sum is not.
        let _ = client.update_key(UpdateKey {
            id: id.clone(),
            set_meta,
            ..UpdateKey::default()
        });
    }
    let answer = Client::new(&daemon.socket).verify_answer(VerifyRequest {
        token: token.clone(),
        permissions: vec![],
        environment: None,
        cost: None,
    });
    assert!(
        matches!(&answer, Ok(a) if a.code == VerifyCode::Valid),
        "a valid key's verify must be answered: {:?}",
        answer.map(|a| a.code)
    );
    // And the admin can no longer list any key, nor show this one.
    daemon.create("Bystander", "read", &[]);
    let listed = daemon.cli(&["keys", "list", "--json"]);
    assert!(
        listed.status.success(),
        "keys list fails for every key: {}",
        String::from_utf8_lossy(&listed.stderr)
    );
}

// ---------------------------------------------------------------------------------------
// Rate limits

/// GCRA in whole microseconds: `interval_us = window_us / limit` rounds down, so the
/// bucket holds `window_us / interval_us` verifies, not `limit`. 600000/1s gets an interval
/// of 1 us and a bucket of 1,000,000: two thirds more than the rule allows, in a burst and
/// sustained. The answer's `remaining` (clamped to the limit) gives it away: after one
/// verify it still says 600000.
#[test]
fn a_rate_limit_holds_no_more_than_its_limit() {
    let daemon = Daemon::start();
    let (_, token) = daemon.create("Fast", "read", &["--ratelimit", "600000/1s"]);
    let (code, answer) = daemon.verify(&token, &[]);
    assert_eq!(code, 0, "{answer}");
    assert_eq!(
        answer["ratelimit"]["remaining"], 599_999,
        "one verify taken of 600000: {answer}"
    );
}

/// A key's stored rate-limit state (its TAT) carries no rule. After `keys update
/// --ratelimit` raises the limit, the live bucket starts fresh, but a restart raises the new
/// bucket to the old rule's TAT from the usage row: a key limited to 1/366d, raised to
/// 100/1s, is refused for a year after the next restart.
#[test]
fn a_raised_key_rate_limit_is_not_undone_by_a_restart() {
    let mut daemon = Daemon::start_with_config(Some(FAST_FLUSH));
    let (id, token) = daemon.create("Trial", "read", &["--ratelimit", "1/366d"]);
    assert_eq!(daemon.verify_code(&token, &[]), "valid");
    assert_eq!(daemon.verify_code(&token, &[]), "rate_limited");
    std::thread::sleep(Duration::from_millis(800)); // flushed
    daemon.cli_json(&["keys", "update", &id, "--ratelimit", "100/1s", "--json"]);
    daemon.stop();
    daemon.restart();
    let (_, answer) = daemon.verify(&token, &[]);
    assert_eq!(
        answer["code"], "valid",
        "100/1s after a restart, not the old rule's state: {answer}"
    );
}

/// The same for an owner: its stored TAT (in its keys' usage rows) carries neither the rule
/// nor the owner, so a key moved from a spent owner to another one brings the old owner's
/// state into the new owner's bucket at restart, shutting all the new owner's keys.
#[test]
fn a_key_moved_to_another_owner_does_not_carry_the_old_owners_rate_limit() {
    let mut daemon = Daemon::start_with_config(Some(FAST_FLUSH));
    daemon.cli_json(&["owners", "set", "trial", "--ratelimit", "1/366d", "--json"]);
    daemon.cli_json(&[
        "owners",
        "set",
        "paying",
        "--ratelimit",
        "1000/1s",
        "--json",
    ]);
    let (id, token) = daemon.create("Moved", "read", &["--owner", "trial"]);
    let (_, other) = daemon.create("Other", "read", &["--owner", "paying"]);
    assert_eq!(daemon.verify_code(&token, &[]), "valid");
    std::thread::sleep(Duration::from_millis(800)); // flushed
    daemon.cli_json(&["keys", "update", &id, "--owner", "paying", "--json"]);
    assert_eq!(
        daemon.verify_code(&other, &[]),
        "valid",
        "before the restart"
    );
    daemon.stop();
    daemon.restart();
    let (_, answer) = daemon.verify(&other, &[]);
    assert_eq!(
        answer["code"], "valid",
        "owner paying (1000/1s) shut by trial's state after a restart: {answer}"
    );
}

// ---------------------------------------------------------------------------------------
// Credits

/// An owner's spending is only stored in its keys' usage rows. Once the key that spent it
/// leaves the owner (`--no-owner`, or another owner), a restart resumes the owner from its
/// remaining keys' rows only: the whole balance comes back, far more than "the credits
/// spent since the last flush" (here: none).
#[test]
fn a_key_leaving_its_owner_does_not_refill_the_owner_at_restart() {
    let mut daemon = Daemon::start_with_config(Some(FAST_FLUSH));
    daemon.cli_json(&["owners", "set", "acme", "--remaining", "3", "--json"]);
    let (spender, token) = daemon.create("Spender", "read", &["--owner", "acme"]);
    let (_, idle) = daemon.create("Idle", "read", &["--owner", "acme"]);
    for _ in 0..3 {
        assert_eq!(daemon.verify_code(&token, &[]), "valid");
    }
    std::thread::sleep(Duration::from_millis(800)); // flushed
    let shown = daemon.cli_json(&["owners", "show", "acme", "--json"]);
    assert_eq!(shown["remaining"], 0);
    daemon.cli_json(&["keys", "update", &spender, "--no-owner", "--json"]);
    daemon.stop();
    daemon.restart();
    let shown = daemon.cli_json(&["owners", "show", "acme", "--json"]);
    assert_eq!(
        shown["remaining"], 0,
        "a clean restart gave the owner's spent balance back: {shown}"
    );
    assert_eq!(daemon.verify_code(&idle, &[]), "usage_exceeded");
}

/// A new refill interval once counted periods from the balance's start under the new
/// interval while keeping the period number of the old: going from 1/1s to 1/3s after five
/// periods, the next refill came 18 s after the start. docs/limits.md: a new refill starts
/// a new balance now holding what is left, so the next refill is one new interval away.
#[test]
fn changing_the_refill_interval_keeps_the_refill_schedule() {
    let daemon = Daemon::start();
    let started = Instant::now();
    let (id, token) = daemon.create(
        "Refilled",
        "read",
        &["--remaining", "1", "--refill", "1/1s"],
    );
    std::thread::sleep(Duration::from_millis(5_200).saturating_sub(started.elapsed()));
    assert_eq!(daemon.verify_code(&token, &[]), "valid");
    assert_eq!(daemon.verify_code(&token, &[]), "usage_exceeded");
    daemon.cli_json(&["keys", "update", &id, "--refill", "1/2s", "--json"]);
    let updated = Instant::now();
    assert_eq!(
        daemon.verify_code(&token, &[]),
        "usage_exceeded",
        "what was spent is kept"
    );
    // The next refill: one new interval after the update.
    std::thread::sleep(Duration::from_millis(2_300).saturating_sub(updated.elapsed()));
    let (_, answer) = daemon.verify(&token, &[]);
    assert_eq!(
        answer["code"], "valid",
        "no refill one new interval after the change: {answer}"
    );
}

// ---------------------------------------------------------------------------------------
// What a dead token learns

/// docs/limits.md: answers for revoked, replaced or expired tokens carry none of `name`,
/// `owner_id`, `meta` and `expires_at`. `expires_at` still comes back.
#[test]
fn a_revoked_token_learns_no_expiry() {
    let daemon = Daemon::start();
    let (id, token) = daemon.create(
        "Dead",
        "read",
        &[
            "--owner",
            "acme",
            "--meta",
            "plan=pro",
            "--expires-in",
            "30d",
        ],
    );
    daemon.cli(&["keys", "revoke", &id]);
    let (_, answer) = daemon.verify(&token, &[]);
    assert_eq!(answer["code"], "revoked");
    assert!(
        answer["name"].is_null() && answer["owner_id"].is_null(),
        "{answer}"
    );
    assert!(answer["expires_at"].is_null(), "expiry leaked: {answer}");
}

/// A refused verify gives its rate-limit slot back, but its answer reports the state
/// *with* the slot taken: a key with 1/1h and an empty balance answers `usage_exceeded`
/// with `ratelimit.remaining: 0` and `retry_at` an hour away, though the slot is free. A
/// client that honours `retry_at` backs off for nothing.
#[test]
fn a_refused_verify_reports_the_rate_limit_it_gave_back() {
    let daemon = Daemon::start();
    let (_, token) = daemon.create("K", "read", &["--ratelimit", "1/1h", "--remaining", "0"]);
    let (code, answer) = daemon.verify(&token, &[]);
    assert_eq!(
        (code, answer["code"].as_str()),
        (49, Some("usage_exceeded"))
    );
    assert_eq!(
        answer["ratelimit"]["remaining"], 1,
        "nothing was taken of the rate limit: {answer}"
    );
}

/// The common form of the stale-TAT defect: an operator raises an owner's limit, then the
/// daemon restarts cleanly (an upgrade) before the owner's keys are used again; the keys'
/// usage rows still hold the old rule's TAT and shut the owner under the new rule.
#[test]
fn a_raised_owner_rate_limit_is_not_undone_by_a_restart() {
    let mut daemon = Daemon::start_with_config(Some(FAST_FLUSH));
    daemon.cli_json(&["owners", "set", "acme", "--ratelimit", "2/366d", "--json"]);
    let (_, token) = daemon.create("K", "read", &["--owner", "acme"]);
    assert_eq!(daemon.verify_code(&token, &[]), "valid");
    assert_eq!(daemon.verify_code(&token, &[]), "valid");
    std::thread::sleep(Duration::from_millis(800)); // flushed
    let raised = daemon.cli_json(&["owners", "set", "acme", "--ratelimit", "100/1s", "--json"]);
    assert_eq!(raised["ratelimit_remaining"], 100, "live: a fresh bucket");
    daemon.stop();
    daemon.restart();
    let shown = daemon.cli_json(&["owners", "show", "acme", "--json"]);
    assert_eq!(
        shown["ratelimit_remaining"], 100,
        "after a clean restart: {shown}"
    );
    let (_, answer) = daemon.verify(&token, &[]);
    assert_eq!(answer["code"], "valid", "100/1s after a restart: {answer}");
}

// ---------------------------------------------------------------------------------------
// Owners over HTTP

/// `--owner` takes "printable characters", but `X-Authenta-Owner-Id` can carry only
/// visible ASCII and proxies strip surrounding whitespace: owner `société-générale` is sent
/// as an empty header (which the docs define as "the key has no owner"), and owner ` acme`
/// (a different owner, with its own limits) reaches the app as `acme`.
#[test]
fn forward_auth_names_every_owner_as_it_is() {
    let daemon = Daemon::start_http(None, None);
    for owner in ["société-générale", " acme"] {
        // Refusing such an owner id at create is a fix too.
        let made = daemon.cli(&[
            "keys",
            "create",
            "--name",
            "H",
            "--permissions",
            "read",
            "--owner",
            owner,
            "--json",
        ]);
        if !made.status.success() {
            continue;
        }
        let made: serde_json::Value = serde_json::from_slice(&made.stdout).expect("json");
        let token = made["token"].as_str().expect("token").to_owned();
        let (name, value) = http::bearer(&token);
        let reply = http::unix(&daemon.http_socket(), "GET", "/v1/auth", &[(name, &value)]);
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(
            reply.header("x-authenta-owner-id"),
            Some(owner),
            "owner {owner:?} over HTTP"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Attacks the daemon withstands (regression guards)

/// Owner ids, metadata keys and values, and names never reach the store file, the WAL,
/// the daemon's log (at debug) or the audit log in plain text, through create, update,
/// `owners set`, `owners show` of an unknown owner, verify and a usage flush.
#[test]
fn owner_and_metadata_stay_sealed_everywhere() {
    let mut daemon = Daemon::start_with_config(Some(FAST_FLUSH));
    let (id, token) = daemon.create(
        "Name-SECRETNAME",
        "read",
        &[
            "--owner",
            "OWNERSECRET",
            "--meta",
            "METAKEYSECRET=METAVALSECRET",
            "--remaining",
            "5",
        ],
    );
    daemon.cli_json(&["owners", "set", "OWNERSECRET", "--remaining", "9", "--json"]);
    daemon.cli_json(&[
        "owners",
        "set",
        "OTHEROWNERSECRET",
        "--ratelimit",
        "9/1s",
        "--json",
    ]);
    daemon.cli_json(&[
        "keys",
        "update",
        &id,
        "--owner",
        "NEWOWNERSECRET",
        "--meta",
        "K2SECRET=V2SECRET",
        "--name",
        "RENAMEDSECRET",
        "--json",
    ]);
    daemon.verify(&token, &[]);
    let missing = daemon.cli(&["owners", "show", "NOSUCHOWNERSECRET"]);
    assert!(!common::contains(&missing.stderr, b"NOSUCHOWNERSECRET"));
    std::thread::sleep(Duration::from_millis(500));
    let audit = daemon.cli(&["audit", "--json"]);
    daemon.stop();
    let mut all = daemon.log().into_bytes();
    all.extend(audit.stdout);
    for (_, bytes) in daemon.data_dir_bytes() {
        all.extend(bytes);
    }
    assert!(
        !common::contains(&all, b"SECRET"),
        "an owner id, metadata or name in plain text"
    );
}

/// The daemon, not only the CLI, bounds what the raw protocol brings: oversized owner ids
/// and metadata, zero limits, refills without a balance, expiries past 100 years.
#[test]
fn the_daemon_checks_lifecycle_fields_sent_over_the_raw_protocol() {
    let daemon = Daemon::start();
    let mut client = Client::connect(&daemon.socket).expect("connect");
    let mut big_meta = Meta::new();
    big_meta.insert("k".into(), "v".repeat(5000));
    let base = proto::CreateKey {
        name: "x".into(),
        permissions: vec![proto::Permission::Read],
        environment: None,
        expires_in_secs: None,
        owner_id: None,
        meta: Meta::new(),
        ratelimit: None,
        remaining: None,
        refill: None,
    };
    let refused = |r: Result<(), authenta_client::Error>, what: &str| {
        assert!(
            matches!(
                r,
                Err(authenta_client::Error::Refused {
                    code: proto::ErrorCode::BadRequest,
                    ..
                })
            ),
            "{what} must be refused"
        )
    };
    let mut create = |c: proto::CreateKey| client.create_key(c).map(|_| ());
    refused(
        create(proto::CreateKey {
            meta: big_meta.clone(),
            ..base.clone()
        }),
        "5 KiB meta",
    );
    refused(
        create(proto::CreateKey {
            owner_id: Some("o".repeat(5000)),
            ..base.clone()
        }),
        "long owner",
    );
    refused(
        create(proto::CreateKey {
            owner_id: Some("a\nb".into()),
            ..base.clone()
        }),
        "control owner",
    );
    refused(
        create(proto::CreateKey {
            ratelimit: Some(proto::RateLimit {
                limit: 1,
                window_ms: u64::MAX,
            }),
            ..base.clone()
        }),
        "endless window",
    );
    refused(
        create(proto::CreateKey {
            refill: Some(proto::Refill {
                amount: 1,
                interval_ms: 1_000,
            }),
            ..base.clone()
        }),
        "refill without a balance",
    );
    let mut client = Client::connect(&daemon.socket).expect("connect");
    let made = client.create_key(base.clone()).expect("a plain key");
    let id = made.key.id.clone();
    let mut update = |u: UpdateKey| {
        client
            .update_key(UpdateKey {
                id: id.clone(),
                ..u
            })
            .map(|_| ())
    };
    refused(
        update(UpdateKey {
            set_meta: big_meta.clone(),
            ..UpdateKey::default()
        }),
        "5 KiB meta",
    );
    refused(
        update(UpdateKey {
            owner_id: Some(Some("o".repeat(129))),
            ..UpdateKey::default()
        }),
        "long owner",
    );
    refused(
        update(UpdateKey {
            expires_in_secs: Some(Some(u64::MAX)),
            ..UpdateKey::default()
        }),
        "endless expiry",
    );
    refused(
        update(UpdateKey {
            ratelimit: Some(Some(proto::RateLimit {
                limit: 0,
                window_ms: 1_000,
            })),
            ..UpdateKey::default()
        }),
        "zero limit",
    );
    refused(
        client
            .set_owner(proto::OwnerUpdate {
                id: "o".repeat(129),
                ..Default::default()
            })
            .map(|_| ()),
        "long owner id",
    );
    assert_eq!(daemon.key_count(), 1);
}

/// Extreme values over the raw protocol: u64::MAX balances and refills, u32::MAX limits in
/// a 1 ms window, 1/366d, u32::MAX costs, on a key and its owner. No panic, no thread lost,
/// and a cost never takes more than is left.
#[test]
fn extreme_limits_and_costs_neither_panic_nor_overspend() {
    let daemon = Daemon::start();
    let mut client = Client::connect(&daemon.socket).expect("connect");
    client
        .set_owner(proto::OwnerUpdate {
            id: "big".into(),
            ratelimit: Some(Some(proto::RateLimit {
                limit: 1_000,
                window_ms: 1,
            })),
            remaining: Some(Some(u64::MAX)),
            refill: Some(Some(proto::Refill {
                amount: u64::MAX,
                interval_ms: 366 * 86_400_000,
            })),
        })
        .expect("owner set");
    // Faster than one verify a microsecond is refused: a bucket counting nanoseconds
    // would round it by more than a thousandth.
    let too_fast = client.set_owner(proto::OwnerUpdate {
        id: "fast".into(),
        ratelimit: Some(Some(proto::RateLimit {
            limit: u32::MAX,
            window_ms: 1,
        })),
        ..Default::default()
    });
    assert!(too_fast.is_err(), "u32::MAX per ms accepted");
    let year = 366 * 86_400_000;
    let cases = [
        (
            proto::RateLimit {
                limit: 1_000,
                window_ms: 1,
            },
            u64::MAX,
            Some(proto::Refill {
                amount: u64::MAX,
                interval_ms: 1_000,
            }),
        ),
        (
            proto::RateLimit {
                limit: 1,
                window_ms: year,
            },
            0,
            None,
        ),
        (
            proto::RateLimit {
                limit: u32::MAX,
                window_ms: year,
            },
            u64::MAX,
            Some(proto::Refill {
                amount: 1,
                interval_ms: year,
            }),
        ),
        (
            proto::RateLimit {
                limit: 1,
                window_ms: 1,
            },
            1,
            None,
        ),
    ];
    for (ratelimit, remaining, refill) in cases {
        let made = client
            .create_key(proto::CreateKey {
                name: "x".into(),
                permissions: vec![proto::Permission::Read],
                environment: None,
                expires_in_secs: Some(100 * 365 * 86_400),
                owner_id: Some("big".into()),
                meta: Meta::new(),
                ratelimit: Some(ratelimit),
                remaining: Some(remaining),
                refill,
            })
            .expect("created");
        let mut left = remaining;
        for cost in [u32::MAX, 0, 1, u32::MAX, u32::MAX] {
            let answer = Client::new(&daemon.socket)
                .verify_answer(VerifyRequest {
                    token: made.token.to_string(),
                    permissions: vec![],
                    environment: None,
                    cost: Some(cost),
                })
                .expect("answered");
            if answer.code == VerifyCode::Valid {
                left = left
                    .checked_sub(u64::from(cost))
                    .expect("never more than is left");
                assert_eq!(answer.remaining, Some(left));
            }
        }
    }
    assert!(daemon.cli(&["keys", "list", "--json"]).status.success());
    assert!(daemon
        .cli(&["owners", "show", "big", "--json"])
        .status
        .success());
    assert!(!daemon.log().contains("panicked"), "{}", daemon.log());
}
