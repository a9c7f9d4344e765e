//! Key lifecycle (protocol 2): owners and metadata in verify answers, update in place, rate
//! limits and credits on keys and shared by an owner, across restarts and `kill -9`, and
//! over the HTTP side. Each test starts the real daemon.

mod common;

use common::{http, Daemon};
use serde_json::Value;
use std::time::Duration;

fn remaining(answer: &Value) -> i64 {
    answer["remaining"].as_i64().unwrap_or(-1)
}

#[test]
fn a_valid_answer_names_the_key_its_owner_and_metadata() {
    let daemon = Daemon::start();
    let (id, token) = daemon.create(
        "Billing-Worker",
        "read",
        &[
            "--owner",
            "acme-corp",
            "--meta",
            "plan=pro",
            "--meta",
            "region=eu",
            "--expires-in",
            "30d",
        ],
    );
    let (code, answer) = daemon.verify(&token, &["--permission", "read"]);
    assert_eq!(code, 0, "{answer}");
    assert_eq!(answer["name"], "Billing-Worker");
    assert_eq!(answer["owner_id"], "acme-corp");
    assert_eq!(answer["meta"]["plan"], "pro");
    assert_eq!(answer["meta"]["region"], "eu");
    assert!(answer["expires_at"].is_string(), "{answer}");
    // A key of no owner: the filter leaves it out.
    daemon.create("Other", "read", &[]);
    let listed = daemon.cli_json(&["keys", "list", "--owner", "acme-corp", "--json"]);
    let ids: Vec<_> = listed
        .as_array()
        .expect("array")
        .iter()
        .map(|k| k["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, vec![id.as_str()]);
    // A revoked key's token learns nothing more about it.
    daemon.cli(&["keys", "revoke", &id]);
    let (_, answer) = daemon.verify(&token, &[]);
    assert_eq!(answer["code"], "revoked");
    assert!(
        answer["name"].is_null() && answer["owner_id"].is_null(),
        "{answer}"
    );
}

#[test]
fn owners_and_metadata_are_bounded() {
    let daemon = Daemon::start();
    let long_owner = "o".repeat(129);
    let big_meta = format!("blob={}", "x".repeat(1100));
    for extra in [
        vec!["--owner", long_owner.as_str()],
        vec!["--meta", big_meta.as_str()],
        vec!["--ratelimit", "0/1s"],
        vec!["--refill", "10/1d"],
    ] {
        let mut args = vec!["keys", "create", "--name", "n", "--permissions", "read"];
        args.extend(extra.iter().copied());
        let out = daemon.cli(&args);
        assert_eq!(out.status.code(), Some(64), "{extra:?} refused as usage");
        assert!(!out.stderr.is_empty(), "{extra:?} says why");
    }
    assert_eq!(daemon.key_count(), 0, "nothing was created");
}

#[test]
fn update_changes_a_key_in_place_and_audits_only_what_changed() {
    let daemon = Daemon::start();
    let (id, token) = daemon.create("Reader", "read", &["--meta", "trial=yes"]);
    assert_eq!(
        daemon.verify_code(&token, &["--permission", "write"]),
        "insufficient_permissions"
    );
    let updated = daemon.cli_json(&[
        "keys",
        "update",
        &id,
        "--permissions",
        "read,write",
        "--owner",
        "secret-tenant",
        "--meta",
        "plan=gold",
        "--unset-meta",
        "trial",
        "--name",
        "Writer",
        "--json",
    ]);
    assert_eq!(updated["permissions"], serde_json::json!(["read", "write"]));
    assert_eq!(updated["meta"], serde_json::json!({"plan": "gold"}));
    // The same token, changed at once.
    let (code, answer) = daemon.verify(&token, &["--permission", "write"]);
    assert_eq!(code, 0, "{answer}");
    assert_eq!(answer["name"], "Writer");
    assert_eq!(answer["owner_id"], "secret-tenant");
    let audit = daemon.cli_json(&["audit", "--json"]);
    let entries = audit["entries"].as_array().expect("entries");
    let update = entries
        .iter()
        .find(|e| e["action"] == "update")
        .expect("an update entry");
    let detail = update["detail"].as_str().expect("detail");
    assert!(
        detail.contains("permissions=read,write") && detail.contains("owner"),
        "{detail}"
    );
    for secret in ["secret-tenant", "gold", "Writer"] {
        assert!(
            !audit.to_string().contains(secret),
            "{secret} in the audit log"
        );
    }
    // Clearing fields, and a revoked key stays as it is.
    let cleared = daemon.cli_json(&["keys", "update", &id, "--no-owner", "--json"]);
    assert!(cleared["owner_id"].is_null());
    daemon.cli(&["keys", "revoke", &id]);
    let out = daemon.cli(&["keys", "update", &id, "--permissions", "read"]);
    assert_eq!(out.status.code(), Some(64));
    let out = daemon.cli(&["keys", "update", "key_0000000000000000", "--name", "x"]);
    assert_eq!(out.status.code(), Some(66), "no such key");
}

#[test]
fn a_rate_limit_answers_429_until_the_window_frees_a_verify() {
    let daemon = Daemon::start();
    let (_, token) = daemon.create("Limited", "read", &["--ratelimit", "3/3s"]);
    for left in [2, 1, 0] {
        let (code, answer) = daemon.verify(&token, &[]);
        assert_eq!(code, 0, "{answer}");
        assert_eq!(answer["ratelimit"]["remaining"], left);
        assert_eq!(answer["ratelimit"]["limit"], 3);
    }
    let (code, answer) = daemon.verify(&token, &[]);
    assert_eq!((code, answer["code"].as_str()), (49, Some("rate_limited")));
    assert_eq!(answer["ratelimit"]["remaining"], 0);
    // One verify frees up every window / limit = 1 s.
    std::thread::sleep(Duration::from_millis(1_100));
    assert_eq!(daemon.verify_code(&token, &[]), "valid");
    assert_eq!(daemon.verify_code(&token, &[]), "rate_limited");
    // Denials for other reasons do not spend the limit.
    let usage = daemon.show_usage(&token);
    assert!(usage.1 >= 2, "refusals count as denied: {usage:?}");
}

#[test]
fn credits_are_spent_by_cost_and_refused_at_zero() {
    let daemon = Daemon::start();
    let (id, token) = daemon.create("Metered", "read,write", &["--remaining", "5"]);
    let (_, answer) = daemon.verify(&token, &["--cost", "2"]);
    assert_eq!(remaining(&answer), 3);
    let (_, answer) = daemon.verify(&token, &["--cost", "0"]);
    assert_eq!(
        (answer["code"].as_str(), remaining(&answer)),
        (Some("valid"), 3)
    );
    // A refusal for another reason spends nothing.
    let (_, answer) = daemon.verify(&token, &["--permission", "delete"]);
    assert_eq!(answer["code"], "insufficient_permissions");
    assert_eq!(remaining(&answer), 3);
    let (_, answer) = daemon.verify(&token, &["--cost", "4"]);
    assert_eq!(
        (answer["code"].as_str(), remaining(&answer)),
        (Some("usage_exceeded"), 3)
    );
    let (_, answer) = daemon.verify(&token, &["--cost", "3"]);
    assert_eq!(
        (answer["code"].as_str(), remaining(&answer)),
        (Some("valid"), 0)
    );
    let (code, answer) = daemon.verify(&token, &["--cost", "0"]);
    assert_eq!(
        (code, answer["code"].as_str()),
        (49, Some("usage_exceeded"))
    );
    assert_eq!(remaining(&answer), 0);
    // A new balance brings it back, with the same token.
    daemon.cli_json(&["keys", "update", &id, "--remaining", "1", "--json"]);
    assert_eq!(daemon.verify_code(&token, &[]), "valid");
    assert_eq!(daemon.verify_code(&token, &[]), "usage_exceeded");
}

#[test]
fn a_refill_sets_the_balance_back_each_interval() {
    let daemon = Daemon::start();
    let (_, token) = daemon.create(
        "Refilled",
        "read",
        &["--remaining", "1", "--refill", "2/2s"],
    );
    assert_eq!(daemon.verify_code(&token, &[]), "valid");
    assert_eq!(daemon.verify_code(&token, &[]), "usage_exceeded");
    std::thread::sleep(Duration::from_millis(2_100));
    assert_eq!(daemon.verify_code(&token, &[]), "valid");
    assert_eq!(daemon.verify_code(&token, &[]), "valid");
    assert_eq!(daemon.verify_code(&token, &[]), "usage_exceeded");
}

#[test]
fn an_owners_limits_are_shared_by_all_its_keys() {
    let daemon = Daemon::start();
    let owner = daemon.cli_json(&["owners", "set", "acme", "--ratelimit", "4/1h", "--json"]);
    assert_eq!(owner["ratelimit"], "4/1h");
    let (_, first) = daemon.create("A", "read", &["--owner", "acme"]);
    let (_, second) = daemon.create("B", "read", &["--owner", "acme"]);
    for token in [&first, &second, &first, &second] {
        assert_eq!(daemon.verify_code(token, &[]), "valid");
    }
    assert_eq!(daemon.verify_code(&first, &[]), "rate_limited");
    assert_eq!(daemon.verify_code(&second, &[]), "rate_limited");
    let shown = daemon.cli_json(&["owners", "show", "acme", "--json"]);
    assert_eq!(
        (
            shown["keys"].as_i64(),
            shown["ratelimit_remaining"].as_i64()
        ),
        (Some(2), Some(0))
    );
    // Shared credits: three verifies between the two keys, then none for either.
    daemon.cli_json(&["owners", "set", "beta", "--remaining", "3", "--json"]);
    let (_, third) = daemon.create("C", "read", &["--owner", "beta"]);
    let (_, fourth) = daemon.create("D", "read", &["--owner", "beta"]);
    for token in [&third, &fourth, &third] {
        assert_eq!(daemon.verify_code(token, &[]), "valid");
    }
    assert_eq!(daemon.verify_code(&fourth, &[]), "usage_exceeded");
    assert_eq!(daemon.verify_code(&third, &[]), "usage_exceeded");
    // Removing the owner's limit lets its keys through again.
    daemon.cli_json(&["owners", "set", "acme", "--no-ratelimit", "--json"]);
    assert_eq!(daemon.verify_code(&first, &[]), "valid");
}

const FAST_FLUSH: &str = "usage_flush_interval = \"300ms\"\n";

#[test]
fn limits_and_credits_resume_after_a_restart_and_lose_at_most_a_flush_to_kill_9() {
    let mut daemon = Daemon::start_with_config(Some(FAST_FLUSH));
    daemon.cli_json(&["owners", "set", "acme", "--remaining", "1000", "--json"]);
    let (_, token) = daemon.create(
        "Durable",
        "read",
        &[
            "--remaining",
            "100",
            "--ratelimit",
            "1000/10h",
            "--owner",
            "acme",
        ],
    );
    for _ in 0..10 {
        assert_eq!(daemon.verify_code(&token, &[]), "valid");
    }
    daemon.stop();
    daemon.restart();
    let (_, answer) = daemon.verify(&token, &[]);
    assert_eq!(
        remaining(&answer),
        89,
        "a clean stop loses nothing: {answer}"
    );
    assert_eq!(answer["ratelimit"]["remaining"], 989);
    let owner = daemon.cli_json(&["owners", "show", "acme", "--json"]);
    assert_eq!(owner["remaining"], 989);
    // Five more, flushed; then three that kill -9 may lose.
    for _ in 0..5 {
        daemon.verify_code(&token, &[]);
    }
    std::thread::sleep(Duration::from_millis(1_000));
    for _ in 0..3 {
        daemon.verify_code(&token, &[]);
    }
    daemon.kill9();
    daemon.restart();
    let (_, answer) = daemon.verify(&token, &[]);
    let left = remaining(&answer);
    assert!(
        (80..=83).contains(&left),
        "81 exact, at most 3 given back: {left}"
    );
    let owner = daemon.cli_json(&["owners", "show", "acme", "--json"]);
    let owner_left = owner["remaining"].as_i64().expect("owner balance");
    assert!((980..=983).contains(&owner_left), "{owner_left}");
}

#[test]
fn forward_auth_answers_429_with_retry_after() {
    let daemon = Daemon::start_http(None, None);
    let (_, limited) = daemon.create("L", "read", &["--ratelimit", "1/10s", "--owner", "acme"]);
    let (_, metered) = daemon.create("M", "read", &["--remaining", "1"]);
    let ask = |token: &str| {
        let (name, value) = http::bearer(token);
        http::unix(&daemon.http_socket(), "GET", "/v1/auth", &[(name, &value)])
    };
    let first = ask(&limited);
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.header("x-authenta-owner-id"), Some("acme"));
    let refused = ask(&limited);
    assert_eq!(
        (refused.status, refused.error_code().as_str()),
        (429, "rate_limited")
    );
    let retry: u64 = refused
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert!((1..=10).contains(&retry), "{retry}");
    assert_eq!(ask(&metered).status, 200);
    let spent = ask(&metered);
    assert_eq!(
        (spent.status, spent.error_code().as_str()),
        (429, "usage_exceeded")
    );
    assert!(spent.header("retry-after").is_none());
    // A client's own cost header spends nothing less: HTTP verifies always cost 1.
    let (_, more) = daemon.create("N", "read", &["--remaining", "1"]);
    let (name, value) = http::bearer(&more);
    let cheap = [(name, value.as_str()), ("x-authenta-cost", "0")];
    assert_eq!(
        http::unix(&daemon.http_socket(), "GET", "/v1/auth", &cheap).status,
        200
    );
    assert_eq!(
        http::unix(&daemon.http_socket(), "GET", "/v1/auth", &cheap).status,
        429
    );
}
