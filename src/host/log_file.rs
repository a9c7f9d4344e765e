//! `serve --log-file FILE`: the daemon's log (its stderr) goes to FILE, and to a new FILE
//! after SIGHUP, so logrotate can move the old one away (`postrotate`: `kill -HUP`), as
//! nginx and sshd do.

use anyhow::{Context, Result};
use nix::fcntl::OFlag;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
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
    let file = open_checked(path)?;
    nix::unistd::dup2(file.as_raw_fd(), std::io::stderr().as_raw_fd())
        .with_context(|| format!("cannot send the log to {}", path.display()))?;
    Ok(())
}

/// Opens the log file for appending (made `0600` when new), if it is one the daemon may
/// log into ([`check_ours`]).
pub fn open_checked(path: &Path) -> Result<std::fs::File> {
    // Said plainly here: opening would fail with ELOOP or ENXIO.
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_file() {
            return Err(not_a_regular_file(path));
        }
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        // A link planted where the log goes would send the log elsewhere, and opening a
        // FIFO for writing would wait for a reader.
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .with_context(|| format!("cannot open the log file {}", path.display()))?;
    let meta = file
        .metadata()
        .with_context(|| format!("cannot inspect the log file {}", path.display()))?;
    check_ours(path, &meta)?;
    // Writes block again, as they always have for a regular file.
    nix::fcntl::fcntl(
        file.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFL(OFlag::O_APPEND),
    )
    .with_context(|| format!("cannot set up the log file {}", path.display()))?;
    Ok(file)
}

/// The log names key ids and peers, so it goes only into a regular file that the daemon's
/// user (or root) owns and that other users may not write: in a directory others can
/// write, such as /tmp, another user could have made the file first, to read it, or put a
/// FIFO there. Checked on the open file, so that nothing can be swapped in after the check.
/// A group may write it (`create 0660 ...` in a logrotate rule).
fn check_ours(path: &Path, meta: &std::fs::Metadata) -> Result<()> {
    let euid = nix::unistd::geteuid().as_raw();
    if !meta.file_type().is_file() {
        return Err(not_a_regular_file(path));
    }
    if meta.uid() != euid && meta.uid() != 0 {
        anyhow::bail!(
            "the log file {} belongs to uid {}, not the daemon's uid {euid} or root: someone \
             else made it, and could read the log; remove it, or give --log-file a path in a \
             directory only the daemon's user can write",
            path.display(),
            meta.uid()
        );
    }
    if meta.mode() & 0o002 != 0 {
        anyhow::bail!(
            "the log file {} is writable by every user (mode {:04o}): chmod o-w it",
            path.display(),
            meta.mode() & 0o7777
        );
    }
    // A hard link to another file (where the kernel lets other users make them, or one
    // made to a file of a group they are in) would have the daemon append its log to that
    // file: /etc/shadow, or a file its makers can read.
    if meta.nlink() != 1 {
        anyhow::bail!(
            "the log file {} has {} names (hard links): it may be another file under this \
             name; remove the name, or give --log-file another path",
            path.display(),
            meta.nlink()
        );
    }
    Ok(())
}

fn not_a_regular_file(path: &Path) -> anyhow::Error {
    anyhow::anyhow!(
        "the log file {} is not a regular file (a link, a FIFO, ...): remove it, or give \
         --log-file another path",
        path.display()
    )
}
