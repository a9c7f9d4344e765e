//! Where the socket and the data live by default, and making those directories safely.

use anyhow::{bail, Context, Result};
use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn home_relative(var: &str, fallback: &str) -> Option<PathBuf> {
    match std::env::var_os(var) {
        Some(dir) if !dir.is_empty() => Some(PathBuf::from(dir)),
        _ => std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(|h| PathBuf::from(h).join(fallback)),
    }
}

/// The socket when neither `--socket` nor `AUTHENTA_SOCKET` names one:
/// `/run/authenta/keyd.sock` for root, else `$XDG_RUNTIME_DIR/authenta/keyd.sock`.
pub fn default_socket() -> PathBuf {
    if is_root() {
        return PathBuf::from("/run/authenta/keyd.sock");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("authenta/keyd.sock"),
        _ => std::env::temp_dir()
            .join(format!("authenta-{}", nix::unistd::geteuid()))
            .join("keyd.sock"),
    }
}

/// The data directory when `--data-dir` names none: `$STATE_DIRECTORY` (systemd), else
/// `/var/lib/authenta` for root, else `$XDG_STATE_HOME/authenta` or
/// `~/.local/state/authenta`.
pub fn default_data_dir() -> Result<PathBuf> {
    if let Some(dirs) = std::env::var_os("STATE_DIRECTORY").filter(|d| !d.is_empty()) {
        // systemd passes a colon-separated list when several are configured; ours is first.
        let first = dirs
            .to_string_lossy()
            .split(':')
            .next()
            .unwrap_or_default()
            .to_owned();
        return Ok(PathBuf::from(first));
    }
    if is_root() {
        return Ok(PathBuf::from("/var/lib/authenta"));
    }
    home_relative("XDG_STATE_HOME", ".local/state")
        .map(|d| d.join("authenta"))
        .context("no data directory: pass --data-dir, or set HOME or XDG_STATE_HOME")
}

/// Makes `dir` (and parents) with `mode` when missing. Refuses a symlink in its place: a
/// planted link could redirect the daemon's files somewhere an attacker reads.
pub fn ensure_dir(dir: &Path, mode: u32, what: &str) -> Result<()> {
    match fs::symlink_metadata(dir) {
        Ok(meta) if meta.file_type().is_symlink() => bail!(
            "the {what} {} is a symbolic link; refusing to use it (point at the real directory)",
            dir.display()
        ),
        Ok(meta) if !meta.is_dir() => {
            bail!("the {what} {} exists but is not a directory", dir.display())
        }
        Ok(_) => Ok(()),
        Err(_) => {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(mode)
                .create(dir)
                .with_context(|| format!("cannot create the {what} {}", dir.display()))?;
            // The umask may have narrowed the mode; set exactly what was asked.
            fs::set_permissions(dir, fs::Permissions::from_mode(mode))
                .with_context(|| format!("cannot set the mode of {}", dir.display()))
        }
    }
}
