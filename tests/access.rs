//! Access rules through the real binary with dropped privileges: `verify_gids` allow and
//! refuse exactly as configured and SIGHUP reloads them, and `admin_gids` grant admin
//! requests. The tests act as `nobody` and return early when not run as root.

mod common;

use common::{wait_for, Daemon};

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
        Some(1),
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
