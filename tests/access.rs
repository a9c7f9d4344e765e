//! Access rules through the real binary with dropped privileges: a peer that is not an admin
//! can verify but not administer, `admin_uids` and `admin_gids` grant admin requests, and
//! `verify_gids` allow and refuse exactly as configured and SIGHUP reloads them. The tests
//! act as `nobody` and return early when not run as root.

mod common;

use common::{wait_for, Daemon};

#[test]
fn a_peer_that_is_not_an_admin_can_verify_but_not_administer() {
    if !common::can_drop_privileges() {
        return;
    }
    let daemon = Daemon::start_with_config(Some("socket_mode = \"0666\"\n"));
    let (id, token) = daemon.create("Backend-Server-Key", "read", &[]);

    let out = daemon.cli_as_nobody(&["verify", "--permission", "read"], Some(&token));
    assert_eq!(
        out.status.code(),
        Some(0),
        "nobody may verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    for args in [
        vec!["keys", "list"],
        vec!["keys", "create", "--name", "x", "--permissions", "read"],
        vec!["keys", "revoke", id.as_str()],
        vec!["keys", "regenerate", id.as_str()],
        vec!["status"],
        vec!["audit"],
    ] {
        let out = daemon.cli_as_nobody(&args, None);
        assert_eq!(
            out.status.code(),
            Some(77),
            "{args:?}: exit 77, no permission"
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("uid 65534 may not make admin requests"),
            "{args:?}: {stderr}"
        );
        assert!(stderr.contains("admin_uids"), "says what to do: {stderr}");
    }
    assert_eq!(
        daemon.verify_code(&token, &[]),
        "valid",
        "nothing was revoked"
    );
    assert_eq!(daemon.key_count(), 1);
    assert!(daemon.log().contains("admin request refused"));
}

#[test]
fn named_admin_uids_may_administer() {
    if !common::can_drop_privileges() {
        return;
    }
    let daemon = Daemon::start_with_config(Some("socket_mode = \"0666\"\nadmin_uids = [65534]\n"));
    let out = daemon.cli_as_nobody(
        &[
            "keys",
            "create",
            "--name",
            "ByNobody",
            "--permissions",
            "read",
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let audit = daemon.cli_json(&["audit", "--json"]);
    assert!(audit["entries"][0]["actor"]
        .as_str()
        .expect("actor")
        .starts_with("uid=65534"));
}

#[test]
fn admin_gids_grant_admin_requests() {
    if !common::can_drop_privileges() {
        return;
    }
    let daemon = Daemon::start_with_config(Some("socket_mode = \"0666\"\nadmin_gids = [65534]\n"));
    let out = daemon.cli_as_nobody(&["keys", "list", "--json"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn verify_gids_allow_and_refuse_exactly_as_configured_and_sighup_reloads_them() {
    if !common::can_drop_privileges() {
        return;
    }
    let daemon = Daemon::start_with_config(Some("socket_mode = \"0666\"\nverify_gids = [4242]\n"));
    let (_, token) = daemon.create("Backend-Server-Key", "read", &[]);

    let out = daemon.cli_as_nobody(&["verify"], Some(&token));
    assert_eq!(out.status.code(), Some(1), "nobody is not in verify_gids");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("may not verify") && stderr.contains("verify_gids"),
        "{stderr}"
    );
    assert!(!stderr.contains(&token));
    assert_eq!(
        daemon.verify_code(&token, &[]),
        "valid",
        "root (an admin) still verifies"
    );
    assert!(
        daemon.log().contains("uid=65534"),
        "refusal logged with the uid"
    );

    // Put nobody's group in, and reload.
    let config = daemon.config.clone().expect("config");
    std::fs::write(&config, "socket_mode = \"0666\"\nverify_gids = [65534]\n").expect("write");
    common::signal_pid(daemon.pid(), libc::SIGHUP);
    wait_for("the reload", || {
        daemon.log().contains("reloaded the access rules")
    });
    let out = daemon.cli_as_nobody(&["verify"], Some(&token));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = daemon.cli_as_nobody(&["keys", "list"], None);
    assert_eq!(
        out.status.code(),
        Some(77),
        "verify_gids grant verify, not admin"
    );

    // An invalid config on reload keeps the rules in force.
    std::fs::write(&config, "verify_gids = \"oops\"\n").expect("write");
    common::signal_pid(daemon.pid(), libc::SIGHUP);
    wait_for("the failed reload", || {
        daemon.log().contains("config reload failed")
    });
    let out = daemon.cli_as_nobody(&["verify"], Some(&token));
    assert_eq!(out.status.code(), Some(0));
}
