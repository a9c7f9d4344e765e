//! `serve --log-file FILE`: the daemon's log (its stderr) goes to FILE, and to a new FILE
//! after SIGHUP, so logrotate can move the old one away (`postrotate`: `kill -HUP`), as
//! nginx and sshd do.

use anyhow::{Context, Result};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The log file stderr points at.
pub struct LogFile {
    path: PathBuf,
}

impl LogFile {
    /// Points stderr at `path` (appending; made `0600`, as the log names key ids and peers).
    pub fn open(path: &Path) -> Result<LogFile> {
        redirect_stderr(path)?;
        Ok(LogFile {
            path: path.to_path_buf(),
        })
    }

    /// Points stderr at a file of the same name again: after a rotation, a new one.
    pub fn reopen(&self) {
        match redirect_stderr(&self.path) {
            Ok(()) => tracing::info!(file = %self.path.display(), "log file reopened"),
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "cannot reopen the log file; logging on to the old one")
            }
        }
    }
}

fn redirect_stderr(path: &Path) -> Result<()> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        // A link planted where the log goes would send the log elsewhere.
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .with_context(|| format!("cannot open the log file {}", path.display()))?;
    nix::unistd::dup2(file.as_raw_fd(), std::io::stderr().as_raw_fd())
        .with_context(|| format!("cannot send the log to {}", path.display()))?;
    Ok(())
}
