//! `serve --daemonize` for hosts without systemd: fork (before any thread or runtime
//! exists), detach, hold the pidfile under `flock`, and let the parent exit 0 only once the
//! daemon is ready — or non-zero with the daemon's own error.
//!
//! The parent and the daemon share a pipe. The daemon writes `ready` or `error: ...` to it;
//! the parent waits for that line (or for the pipe to close, which means the daemon died).

use anyhow::{Context, Result};
use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

/// The daemon's end of the pipe to its waiting parent.
pub struct ReadyPipe(Option<File>);

impl ReadyPipe {
    /// Tells the parent the daemon is ready; the parent exits 0.
    pub fn ready(&mut self) {
        self.say("ready\n");
    }

    /// Tells the parent why the daemon could not start; the parent prints it and exits 1.
    pub fn failed(&mut self, message: &str) {
        self.say(&format!("error: {}\n", message.replace('\n', " ")));
    }

    fn say(&mut self, line: &str) {
        if let Some(mut pipe) = self.0.take() {
            let _ = pipe.write_all(line.as_bytes());
        }
    }
}

/// Detaches into the background. Returns only in the daemon; the parent process waits for
/// readiness and exits here. `log` receives the daemon's stderr (its log); without one the
/// log goes to /dev/null.
pub fn detach(pidfile: &Path, log: Option<&Path>) -> Result<ReadyPipe> {
    check_pidfile_dir(pidfile)?;
    let (read_end, write_end) = nix::unistd::pipe().context("cannot create a pipe")?;
    let mut daemon = daemonize::Daemonize::new()
        .pid_file(pidfile)
        .working_directory(std::env::current_dir().context("no current directory")?)
        .umask(0o077);
    if let Some(log) = log {
        let file = crate::host::log_file::open_checked(log)?;
        daemon = daemon.stderr(file);
    }
    match daemon.execute() {
        daemonize::Outcome::Parent(Ok(_)) => {
            drop(write_end);
            std::process::exit(wait_for_daemon(File::from(read_end), pidfile));
        }
        daemonize::Outcome::Parent(Err(e)) => Err(anyhow::anyhow!("cannot daemonize: {e}")),
        daemonize::Outcome::Child(result) => {
            drop(read_end);
            let mut pipe = ReadyPipe(Some(File::from(write_end)));
            if let Err(e) = result {
                let message = match e.to_string() {
                    m if m.to_lowercase().contains("lock") => format!(
                        "another authenta-keyd holds the pidfile {} ({m})",
                        pidfile.display()
                    ),
                    m => format!("cannot daemonize: {m}"),
                };
                pipe.failed(&message);
                std::process::exit(1);
            }
            Ok(pipe)
        }
    }
}

/// The pidfile is opened (created, truncated, written) following links, and its pid is what
/// `kill $(cat ...)` and logrotate signal: whoever else could write its directory could
/// point it at a file the daemon's user may write, or put another process's pid in it. So
/// its directory must exist and be trusted as the config's is.
fn check_pidfile_dir(pidfile: &Path) -> Result<()> {
    let dir = match pidfile.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    if std::fs::symlink_metadata(dir).is_err() {
        anyhow::bail!(
            "the pidfile's directory {} does not exist: make it first (for /run/authenta, as \
             root: install -d -m 0750 -g authenta /run/authenta) or name another --pidfile",
            dir.display()
        );
    }
    crate::host::trust::check(dir).map_err(|why| {
        anyhow::anyhow!(
            "the pidfile's directory: {why}; another user could point the pidfile at another \
             file or put another process's pid in it"
        )
    })
}

/// In the parent: the exit status, once the daemon has said how it went.
fn wait_for_daemon(pipe: File, pidfile: &Path) -> i32 {
    let mut said = String::new();
    let _ = pipe.take(4096).read_to_string(&mut said);
    match said.lines().next() {
        Some("ready") => 0,
        Some(line) => {
            eprintln!("{line}");
            1
        }
        None => {
            eprintln!(
                "error: the daemon exited before it was ready (see its log; pidfile {})",
                pidfile.display()
            );
            1
        }
    }
}
