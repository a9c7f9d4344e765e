//! The command line as a new user meets it: tables, pipes, durations, `--json`, exit codes
//! and the help text. Each test is one of the rough edges found by trying every command.

mod common;

use common::{run_with_stdin, Daemon, BIN};
use std::process::{Command, Stdio};

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn keys_list_cells_line_up_with_their_headers_oldest_first() {
    let daemon = Daemon::start();
    let (first, token) = daemon.create("First-Key", "read", &["--expires-in", "90d"]);
    std::thread::sleep(std::time::Duration::from_millis(5));
    let (second, _) = daemon.create("Second-Key", "read,write", &[]);
    assert_eq!(daemon.verify_code(&token, &[]), "valid");
    let table = stdout(&daemon.cli(&["keys", "list"]));
    let lines: Vec<&str> = table.lines().collect();
    let header = lines[0];
    for column in ["EXPIRES", "LAST USED", "USAGE"] {
        assert!(header.contains(column), "{header}");
    }
    // Each column starts where its header does: USAGE holds usage, EXPIRES the expiry.
    let usage_at = header.find("USAGE").expect("USAGE");
    let first_row = lines
        .iter()
        .find(|l| l.contains(&first))
        .expect("first key's row");
    assert!(
        first_row[usage_at..].starts_with("1 (1 ok, 0 denied)"),
        "{table}"
    );
    let expires_at = header.find("EXPIRES").expect("EXPIRES");
    assert!(first_row[expires_at..].contains("(in 89 d)"), "{table}");
    assert!(
        first_row.contains("(just now)") || first_row.contains("ago)"),
        "relative times next to RFC 3339: {table}"
    );
    // Oldest first, newest last.
    let position = |id: &str| lines.iter().position(|l| l.contains(id)).expect("row");
    assert!(position(&first) < position(&second), "{table}");
    // The token's start, in one form in the table and in JSON.
    let json = daemon.cli_json(&["keys", "list", "--json"]);
    let start = json[0]["start"].as_str().expect("start");
    assert_eq!(start, &token[..12]);
    assert!(
        first_row.contains(start) && !first_row.contains("..."),
        "{table}"
    );
}

/// Runs the CLI with its stdout a pipe whose reader is already gone, as `| head -1` leaves
/// it by the time the command writes its second line.
fn into_closed_pipe(daemon: &Daemon, args: &[&str]) -> std::process::Output {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let mut command = daemon.cli_command(args);
    command.stdout(writer).stderr(Stdio::piped());
    command.output().expect("run")
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let daemon = Daemon::start();
    daemon.create("Piped", "read", &[]);
    for args in [
        &["keys", "list"][..],
        &["keys", "list", "--json"],
        &["audit"],
        &["status"],
    ] {
        let out = into_closed_pipe(&daemon, args);
        // 141, as a process killed by SIGPIPE: `health | head` must not pass as a success.
        assert_eq!(out.status.code(), Some(141), "{args:?}: {}", stderr(&out));
        assert!(
            !stderr(&out).contains("Broken pipe"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn durations_print_as_they_are_written_and_only_documented_units_parse() {
    let daemon = Daemon::start();
    let policy = daemon.dir.path().join("p.toml");
    std::fs::write(
        &policy,
        "[defaults]\nmax_age = \"365d\"\nwarn_before = \"30d\"\n",
    )
    .expect("policy");
    let check = stdout(&daemon.cli(&["policy", "check", policy.to_str().expect("path")]));
    assert!(
        check.contains("365d") && !check.contains("month"),
        "{check}"
    );
    std::fs::write(&policy, "[defaults]\nmax_age = \"1y\"\n").expect("policy");
    let out = daemon.cli(&["policy", "check", policy.to_str().expect("path")]);
    assert!(!out.status.success(), "1y is not a documented unit");
    assert!(stdout(&out).contains("unknown unit 'y'") || stderr(&out).contains("unknown unit 'y'"));

    let (id, _) = daemon.create("Graced", "read", &[]);
    daemon.cli(&["keys", "regenerate", &id, "--grace", "1h"]);
    let audit = stdout(&daemon.cli(&["audit"]));
    assert!(
        audit.contains("grace=1h") && !audit.contains("3600s"),
        "{audit}"
    );
}

#[test]
fn negative_durations_and_a_lone_pidfile_are_refused_with_the_reason() {
    let daemon = Daemon::start();
    let out = daemon.cli(&[
        "keys",
        "create",
        "--name",
        "N",
        "--permissions",
        "read",
        "--expires-in",
        "-5d",
    ]);
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("durations must be positive"),
        "{}",
        stderr(&out)
    );
    let out = Command::new(BIN)
        .args(["serve", "--pidfile", "/tmp/never.pid"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
    assert!(stderr(&out).contains("--daemonize"), "{}", stderr(&out));
}

#[test]
fn json_everywhere_errors_included() {
    let daemon = Daemon::start();
    let new_key = daemon.dir.path().join("new.hex");
    std::fs::write(&new_key, "ff".repeat(32)).expect("new key");
    let out = daemon.cli(&[
        "rekey",
        "--json",
        "--new-master-key-file",
        new_key.to_str().expect("path"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let answer: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("rekey --json is JSON");
    assert_eq!(answer["rekeyed"], true);

    let nowhere = daemon.dir.path().join("nowhere.sock");
    let out = run_with_stdin(
        {
            let mut command = daemon.cli_command(&["verify", "--json"]);
            command.env("AUTHENTA_SOCKET", &nowhere);
            command
        },
        "api_whatever\n",
    );
    assert_eq!(out.status.code(), Some(69));
    let error: serde_json::Value = serde_json::from_slice(&out.stdout).expect("an error as JSON");
    assert_eq!(error["error"]["code"], "unavailable");
    assert!(error["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("serve")));

    let out = daemon.cli(&["keys", "show", "key_AAAAAAAAAAAAAAAA", "--json"]);
    let error: serde_json::Value = serde_json::from_slice(&out.stdout).expect("an error as JSON");
    assert_eq!(
        (out.status.code(), error["error"]["code"].as_str()),
        (Some(66), Some("not_found"))
    );
}

#[test]
fn verify_takes_a_comma_list_of_permissions_like_create() {
    let daemon = Daemon::start();
    let (_, token) = daemon.create("Both", "read", &[]);
    assert_eq!(
        daemon.verify_code(&token, &["--permission", "read,write"]),
        "insufficient_permissions"
    );
    assert_eq!(
        daemon.verify_code(&token, &["--permission", "read"]),
        "valid"
    );
    let (_, both) = daemon.create("Both2", "read", &["--permissions", "write"]);
    assert_eq!(
        daemon.verify_code(&both, &["--permission", "read", "--permission", "write"]),
        "valid"
    );
}

#[test]
fn exit_codes_tell_failures_apart_and_help_lists_them() {
    let help = stdout(&Command::new(BIN).arg("--help").output().expect("help"));
    for code in ["41", "43", "64", "65", "66", "69", "75", "77"] {
        assert!(
            help.contains(&format!("  {code}  ")),
            "--help lacks exit code {code}: {help}"
        );
    }
    let out = Command::new(BIN)
        .arg("no-such-command")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64), "usage");
    let serve_help = stdout(
        &Command::new(BIN)
            .args(["serve", "--help"])
            .output()
            .expect("help"),
    );
    assert!(
        serve_help.contains("$TMPDIR/authenta-<euid>/keyd.sock"),
        "{serve_help}"
    );
}

#[test]
fn daemon_logs_honour_no_color_on_a_terminal() {
    // The log is coloured only on a terminal: run the daemon under a pseudo-terminal.
    let dir = tempfile::tempdir().expect("tmp");
    let key = dir.path().join("master.hex");
    std::fs::write(&key, common::MASTER_HEX).expect("key");
    let script = r#"
import os, pty, sys, time, signal
argv = sys.argv[1:]
def run(no_color):
    pid, fd = pty.fork()
    if pid == 0:
        if no_color:
            os.environ["NO_COLOR"] = "1"
        else:
            os.environ.pop("NO_COLOR", None)
        os.execv(argv[0], argv)
    out, deadline = b"", time.time() + 15
    while b"ready" not in out and time.time() < deadline:
        try:
            out += os.read(fd, 4096)
        except OSError:
            break
    os.kill(pid, signal.SIGTERM)
    os.waitpid(pid, 0)
    return out
plain, coloured = run(True), run(False)
print("ready" in plain.decode(errors="replace"), b"\x1b[" in plain, b"\x1b[" in coloured)
"#;
    let out = Command::new("python3")
        .args(["-c", script, BIN, "serve", "--socket"])
        .arg(dir.path().join("k.sock"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--master-key-file")
        .arg(&key)
        .output()
        .expect("python3");
    assert_eq!(stdout(&out).trim(), "True False True", "{}", stderr(&out));
}

#[test]
fn tests_acting_as_another_user_can_run_the_binary_wherever_the_clone_is() {
    if !common::can_drop_privileges() {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let as_nobody = |bin: &std::path::Path| {
        common::retry_busy_text(|| {
            Command::new(bin)
                .arg("--version")
                .uid(65534)
                .gid(65534)
                .output()
        })
    };
    // A clone under a 0700 directory, as root's home is.
    let home = tempfile::tempdir().expect("tmp");
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let hidden = home.path().join("authenta-keyd");
    std::fs::copy(BIN, &hidden).expect("copy");
    assert!(
        as_nobody(&hidden).is_err(),
        "nobody cannot reach a binary under 0700"
    );
    let reachable = common::runnable_by_others(&hidden);
    assert_ne!(reachable, hidden);
    let out = as_nobody(&reachable).expect("run as nobody");
    if let Some(dir) = reachable.parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn completions_print_for_every_shell_even_beside_an_untrusted_socket_directory() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(BIN)
            .args(["completions", shell])
            .output()
            .expect("run");
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        assert!(stdout(&out).contains("authenta-keyd"), "{shell}");
    }
    if !common::can_drop_privileges() {
        return;
    }
    // The generators never connect, so a socket directory they could not trust is no reason
    // to refuse them.
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let tmp = tempfile::tempdir().expect("tmp");
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let planted = tmp.path().join("authenta-65534");
    std::fs::create_dir(&planted).expect("dir");
    std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let as_nobody = |args: &[&str]| {
        Command::new(common::bin_for_others())
            .args(args)
            .env_clear()
            .env("TMPDIR", tmp.path())
            .uid(65534)
            .gid(65534)
            .output()
            .expect("run as nobody")
    };
    let out = as_nobody(&["completions", "bash"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let status = as_nobody(&["status"]);
    assert!(
        stderr(&status).contains("another user could put their own socket there"),
        "a client of the daemon still refuses it: {}",
        stderr(&status)
    );
}
