//! Disk faults and tampering around the store, through the real binary: a full disk, a
//! truncated database, symlinks planted where the socket or the data
//! directory should be. Each gets a clear message, fails closed, and never panics.

mod common;

use authenta_client::proto::VerifyCode;
use common::Daemon;
use std::path::{Path, PathBuf};
use std::process::Command;

fn code(daemon: &Daemon, token: &str) -> VerifyCode {
    daemon.answer_code(token)
}

/// A small tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).expect("mount point");
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(at)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        ok.then(|| Tmpfs(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A daemon whose data directory is on a fresh tmpfs of `size`.
fn daemon_on_tmpfs(size: &str) -> Option<(Daemon, Tmpfs)> {
    if !common::can_drop_privileges() {
        return None;
    }
    let mut daemon = Daemon::start();
    assert!(daemon.stop().success());
    let mount = daemon.dir.path().join("small");
    let Some(fs) = Tmpfs::mount(&mount, size) else {
        panic!("mounting a tmpfs failed although running as root");
    };
    daemon.data_dir = mount.join("data");
    daemon.restart();
    Some((daemon, fs))
}

fn fill(dir: &Path) -> PathBuf {
    let filler = dir.join("filler");
    let mut file = std::fs::File::create(&filler).expect("filler");
    let chunk = vec![0xa5u8; 64 * 1024];
    while std::io::Write::write_all(&mut file, &chunk).is_ok() {}
    let _ = file.sync_all();
    filler
}

#[test]
fn a_full_disk_fails_admin_writes_clearly_while_verify_goes_on() {
    let Some((mut daemon, fs)) = daemon_on_tmpfs("4m") else {
        return;
    };
    let (id, token) = daemon.create("Before-Full", "read", &[]);
    let filler = fill(&fs.0);

    let mut failed = None;
    for i in 0..50 {
        let out = daemon.cli(&[
            "keys",
            "create",
            "--name",
            &format!("K{i}"),
            "--permissions",
            "read",
        ]);
        if !out.status.success() {
            failed = Some(String::from_utf8_lossy(&out.stderr).to_string());
            break;
        }
    }
    let message = failed.expect("a create fails once the disk is full");
    assert!(
        message.contains("could not commit"),
        "clear error: {message}"
    );
    assert_eq!(message.lines().count(), 1, "{message}");
    let revoke = daemon.cli(&["keys", "revoke", &id]);
    let revoke_failed = !revoke.status.success();
    assert_eq!(
        code(&daemon, &token),
        if revoke_failed {
            VerifyCode::Valid
        } else {
            VerifyCode::Revoked
        },
        "an unacknowledged revoke changed nothing; an acknowledged one holds"
    );
    for _ in 0..20 {
        assert!(matches!(
            code(&daemon, &token),
            VerifyCode::Valid | VerifyCode::Revoked
        ));
    }

    std::fs::remove_file(filler).expect("free space");
    let (new_id, new_token) = daemon.create("After-Full", "read", &[]);
    assert_eq!(code(&daemon, &new_token), VerifyCode::Valid);
    assert!(daemon.stop().success());
    daemon.restart();
    assert_eq!(code(&daemon, &new_token), VerifyCode::Valid);
    assert_eq!(daemon.show(&new_id)["state"], "active");
    let audit = daemon.cli_json(&["audit", "--verify", "--json"]);
    assert_eq!(
        audit["chain"]["ok"], true,
        "consistent after the disk filled: {audit}"
    );
    assert!(!daemon.log().contains("panicked"));
}

#[test]
fn a_truncated_database_is_refused_with_a_clear_message() {
    let mut daemon = Daemon::start();
    for i in 0..30 {
        daemon.create(&format!("Key-{i}"), "read", &[]);
    }
    assert!(daemon.stop().success());
    let db = daemon.data_dir.join("keys.db");
    let len = std::fs::metadata(&db).expect("db").len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&db)
        .expect("open");
    file.set_len(len / 2 + 100).expect("truncate");
    drop(file);
    let log = daemon.dir.path().join("truncated.log");
    let mut child = daemon
        .serve_command(&daemon.master_key)
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("run");
    let status = common::wait_timeout(&mut child, std::time::Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| !s.success()),
        "a truncated store must not be served: {status:?}"
    );
    let stderr = std::fs::read_to_string(&log).expect("log");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains("keys.db") || stderr.contains("store"),
        "names the store: {stderr}"
    );
}

#[test]
fn a_symlink_where_the_socket_or_the_data_directory_belongs_is_refused() {
    let mut daemon = Daemon::start();
    assert!(daemon.stop().success());
    let elsewhere = daemon.dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).expect("dir");

    std::os::unix::fs::symlink(elsewhere.join("target.sock"), &daemon.socket).expect("plant");
    assert!(daemon
        .serve_refused(&daemon.master_key)
        .contains("symbolic link"));
    std::fs::remove_file(&daemon.socket).expect("unplant");

    let real = daemon.data_dir.clone();
    let link = daemon.dir.path().join("data-link");
    std::os::unix::fs::symlink(&real, &link).expect("plant");
    daemon.data_dir = link;
    let stderr = daemon.serve_refused(&daemon.master_key);
    assert!(stderr.contains("symbolic link"), "{stderr}");
    assert!(!elsewhere.join("target.sock").exists());
}
