//! The HTTP side, driven like a reverse proxy and a monitoring system would: the real
//! daemon with `--http-listen` on a Unix socket and a loopback port.

mod common;

use common::http::{self, bearer};
use common::{can_drop_privileges, Daemon};
use std::os::unix::process::CommandExt;
use std::process::Command;

/// `GET /v1/auth` on the TCP port with these headers.
fn auth(daemon: &Daemon, method: &str, headers: &[(&str, &str)]) -> http::Reply {
    http::tcp(&daemon.http_address(), method, "/v1/auth", headers)
}

#[test]
fn forward_auth_answers_each_verify_code_with_its_status_and_headers() {
    let daemon = Daemon::start_http(None, None);
    let (full_id, full) = daemon.create("full", "read,write,delete", &["--environment", "prod"]);
    let (_, reader) = daemon.create("reader", "read", &[]);
    let (revoked_id, revoked) = daemon.create("gone", "read", &[]);
    daemon.cli(&["keys", "revoke", &revoked_id]);

    let (name, value) = bearer(&full);
    let ok = auth(&daemon, "DELETE", &[(name, &value)]);
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(ok.header("x-authenta-key-id"), Some(full_id.as_str()));
    assert_eq!(
        ok.header("x-authenta-permissions"),
        Some("read,write,delete")
    );
    assert_eq!(ok.header("x-authenta-environment"), Some("prod"));
    assert_eq!(ok.json()["code"], "valid");

    let read_only = auth(&daemon, "DELETE", &[("x-api-key", &reader)]);
    assert_eq!(read_only.status, 403, "{read_only:?}");
    assert_eq!(read_only.error_code(), "insufficient_permissions");
    assert!(read_only
        .header("www-authenticate")
        .is_some_and(|c| c.contains("insufficient_scope")));

    let (name, value) = bearer(&revoked);
    let gone = auth(&daemon, "GET", &[(name, &value)]);
    assert_eq!(gone.status, 401, "{gone:?}");
    assert_eq!(gone.error_code(), "revoked");
    assert_eq!(
        gone.header("www-authenticate"),
        Some("Bearer realm=\"authenta\", error=\"invalid_token\"")
    );
    assert!(
        !gone.body.contains(&revoked),
        "the token must not come back"
    );

    let none = auth(&daemon, "GET", &[]);
    assert_eq!((none.status, none.error_code().as_str()), (401, "missing"));
    assert_eq!(
        none.header("www-authenticate"),
        Some("Bearer realm=\"authenta\"")
    );

    let garbage = auth(&daemon, "GET", &[("x-api-key", "api_not-a-token")]);
    assert_eq!(
        (garbage.status, garbage.error_code().as_str()),
        (401, "malformed")
    );
    let elsewhere = auth(
        &daemon,
        "GET",
        &[("x-api-key", &full), ("x-authenta-environment", "dev")],
    );
    assert_eq!(
        (elsewhere.status, elsewhere.error_code().as_str()),
        (401, "wrong_environment")
    );
    // A proxy that appends its environment header to one the client sent: the client's
    // comes first, and must not decide.
    let twice = auth(
        &daemon,
        "GET",
        &[
            ("x-api-key", &full),
            ("x-authenta-environment", "prod"),
            ("x-authenta-environment", "dev"),
        ],
    );
    assert_eq!(
        (twice.status, twice.error_code().as_str()),
        (400, "bad_request"),
        "an environment asked twice"
    );
}

#[test]
fn the_permission_comes_from_the_original_method_or_the_header() {
    let daemon = Daemon::start_http(None, None);
    let (_, reader) = daemon.create("reader", "read", &[]);
    let key = ("x-api-key", reader.as_str());
    let status = |method: &str, extra: &[(&str, &str)]| {
        let mut headers = vec![key];
        headers.extend_from_slice(extra);
        auth(&daemon, method, &headers).status
    };
    assert_eq!(status("GET", &[]), 200);
    assert_eq!(status("HEAD", &[]), 200);
    assert_eq!(status("POST", &[]), 403);
    // The proxy's own subrequest is a GET; the method that counts is the original one.
    assert_eq!(status("GET", &[("x-forwarded-method", "DELETE")]), 403);
    assert_eq!(status("GET", &[("x-original-method", "PUT")]), 403);
    assert_eq!(status("POST", &[("x-original-method", "OPTIONS")]), 200);
    assert_eq!(status("DELETE", &[("x-authenta-permission", "read")]), 200);
    // A client's own headers, passed on by a proxy that did not strip them, cannot lower
    // what the proxy's original method asks for.
    let slipped_permission = [
        ("x-original-method", "DELETE"),
        ("x-authenta-permission", "read"),
    ];
    assert_eq!(status("GET", &slipped_permission), 403);
    let slipped_method = [
        ("x-original-method", "DELETE"),
        ("x-forwarded-method", "GET"),
    ];
    assert_eq!(status("GET", &slipped_method), 403);
    assert_eq!(
        status("GET", &[("x-authenta-permission", "read,write")]),
        403
    );
    let odd = auth(&daemon, "GET", &[key, ("x-original-method", "TRACE")]);
    assert_eq!(
        (odd.status, odd.error_code().as_str()),
        (403, "unmapped_method")
    );
    let bad = auth(&daemon, "GET", &[key, ("x-authenta-permission", "admin")]);
    assert_eq!(bad.status, 400);
    // Envoy's ext_authz appends the original path to its path prefix.
    let envoy = http::tcp(&daemon.http_address(), "GET", "/v1/auth/orders/7", &[key]);
    assert_eq!(envoy.status, 200);
}

#[test]
fn the_http_side_answers_no_admin_request_and_no_unknown_path() {
    let daemon = Daemon::start_http(None, None);
    for path in ["/v1/keys", "/", "/status", "/v1/authx"] {
        let reply = http::tcp(&daemon.http_address(), "POST", path, &[]);
        assert_eq!(reply.status, 404, "{path}: {reply:?}");
    }
    let reply = http::tcp(&daemon.http_address(), "POST", "/metrics", &[]);
    assert_eq!(reply.status, 405);
    assert_eq!(reply.header("allow"), Some("GET, HEAD"));
}

#[test]
fn health_and_readiness_over_http_and_over_the_socket() {
    let daemon = Daemon::start_http(None, None);
    let alive = http::unix(&daemon.http_socket(), "GET", "/healthz", &[]);
    assert_eq!(alive.status, 200);
    let ready = http::unix(&daemon.http_socket(), "GET", "/readyz", &[]);
    assert_eq!(ready.status, 200, "{ready:?}");
    assert_eq!(ready.json()["store"], true);
    assert_eq!(ready.json()["policy"], "none");
    let out = daemon.cli(&["health"]);
    assert!(out.status.success(), "{out:?}");

    // A policy file that never loaded: the revocations it may push are not in force.
    let broken = Daemon::start_http(None, Some("this is not toml ["));
    let unready = http::tcp(&broken.http_address(), "GET", "/readyz", &[]);
    assert_eq!(unready.status, 503, "{unready:?}");
    assert_eq!(unready.json()["policy"], "failed");
    let out = broken.cli(&["health", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report["ready"], false);
}

/// Whoever can reach the HTTP side could otherwise keep the store thread busy with `/readyz`
/// (each check asks it) and slow every admin change: one check answers for a second.
#[test]
fn one_readiness_check_answers_readyz_for_a_second() {
    let daemon = Daemon::start_http(None, None);
    let ready = http::tcp(&daemon.http_address(), "GET", "/readyz", &[]);
    assert_eq!(ready.status, 200, "{ready:?}");
    let db = daemon.data_dir.join("keys.db");
    std::fs::rename(&db, db.with_extension("moved")).expect("move the store away");
    let exact = daemon.cli(&["health"]);
    assert_eq!(exact.status.code(), Some(1), "the socket's check is exact");
    let cached = http::tcp(&daemon.http_address(), "GET", "/readyz", &[]);
    assert_eq!(cached.status, 200, "the check of a moment ago answers");
    std::thread::sleep(std::time::Duration::from_millis(1_100));
    let checked = http::tcp(&daemon.http_address(), "GET", "/readyz", &[]);
    assert_eq!(checked.status, 503, "{checked:?}");
    assert_eq!(checked.json()["store"], false);
    std::fs::rename(db.with_extension("moved"), &db).expect("put the store back");
}

#[test]
fn a_monitoring_user_may_ask_health_but_no_admin_request() {
    if !can_drop_privileges() {
        return;
    }
    let daemon = Daemon::start_with_config(Some("socket_mode = \"0666\"\n"));
    let health = daemon.cli_as_nobody(&["health"], None);
    assert!(health.status.success(), "{health:?}");
    let status = daemon.cli_as_nobody(&["status"], None);
    assert!(!status.status.success(), "status is for admins: {status:?}");
}

#[test]
fn over_the_unix_socket_the_verify_rules_apply() {
    if !can_drop_privileges() {
        return;
    }
    // Root's group may verify; nobody may not.
    let daemon = Daemon::start_http(Some("socket_mode = \"0666\"\nverify_gids = [0]\n"), None);
    let (_, token) = daemon.create("app", "read", &[]);
    let curl = Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}", "--unix-socket"])
        .arg(daemon.http_socket())
        .args(["-H", &format!("X-API-Key: {token}"), "http://keyd/v1/auth"])
        .uid(65534)
        .gid(65534)
        .output()
        .expect("run curl as nobody");
    let text = String::from_utf8_lossy(&curl.stdout);
    assert!(text.ends_with("\n403"), "{text}");
    assert!(text.contains("permission_denied"), "{text}");
    let allowed = http::unix(
        &daemon.http_socket(),
        "GET",
        "/v1/auth",
        &[("x-api-key", &token)],
    );
    assert_eq!(allowed.status, 200);
}

#[test]
fn an_address_other_hosts_can_reach_is_refused_unless_allowed() {
    let daemon = Daemon::start();
    let out = daemon
        .serve_command(&daemon.master_key)
        .args(["--http-listen", "0.0.0.0:0"])
        .output()
        .expect("run serve");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("http_allow_remote"), "{stderr}");
}

/// Parses `/metrics` with the Prometheus project's own Python parser (OpenMetrics), and
/// returns `name{labels} value` lines as it understood them.
fn parse_metrics(text: &str) -> Vec<String> {
    let script = r#"
import sys
try:
    from prometheus_client.openmetrics.parser import text_string_to_metric_families
except ImportError:
    sys.exit("python3 has no prometheus_client: pip install prometheus_client (.ci/run does)")
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
        print(f"{s.name}{{{labels}}} {s.value}")
"#;
    let out = common::run_with_stdin(
        {
            let mut command = Command::new("python3");
            command.args(["-c", script]);
            command
        },
        text,
    );
    assert!(
        out.status.success(),
        "the Prometheus parser refused /metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn sample(samples: &[String], name_and_labels: &str) -> f64 {
    samples
        .iter()
        .find_map(|line| line.strip_prefix(name_and_labels)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample {name_and_labels} in {samples:#?}"))
}

#[test]
fn metrics_parse_as_prometheus_text_and_move_with_verifies() {
    let daemon = Daemon::start_http(None, None);
    let (id, token) = daemon.create("metered-app-key", "read", &[]);
    let scrape = || {
        let reply = http::tcp(&daemon.http_address(), "GET", "/metrics", &[]);
        assert_eq!(reply.status, 200);
        assert!(reply
            .header("content-type")
            .is_some_and(|t| t.contains("openmetrics-text")));
        reply.body
    };
    let before = parse_metrics(&scrape());
    let valid = r#"authenta_verifies_total{code="valid"}"#;
    let revoked = r#"authenta_verifies_total{code="revoked"}"#;
    assert_eq!(sample(&before, valid), 0.0);
    assert_eq!(sample(&before, r#"authenta_keys{state="active"}"#), 1.0);

    assert_eq!(auth(&daemon, "GET", &[("x-api-key", &token)]).status, 200);
    assert_eq!(daemon.verify_code(&token, &[]), "valid");
    daemon.cli(&["keys", "revoke", &id]);
    assert_eq!(auth(&daemon, "GET", &[("x-api-key", &token)]).status, 401);

    // Keys by state are counted at most once a second (a count reads every key).
    std::thread::sleep(std::time::Duration::from_millis(1_100));
    let text = scrape();
    let after = parse_metrics(&text);
    assert_eq!(
        sample(&after, valid),
        2.0,
        "one verify over HTTP, one over the socket"
    );
    assert_eq!(sample(&after, revoked), 1.0);
    assert_eq!(sample(&after, r#"authenta_keys{state="revoked"}"#), 1.0);
    assert!(
        sample(
            &after,
            r#"authenta_admin_requests_total{kind="revoke",outcome="ok"}"#
        ) >= 1.0
    );
    assert!(sample(&after, r#"authenta_store_commit_seconds_count{}"#) >= 2.0);
    for secret in [id.as_str(), token.as_str(), "metered-app-key"] {
        assert!(!text.contains(secret), "/metrics names a key: {secret}");
    }
}
