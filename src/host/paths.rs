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

/// Gives `dir` (one the daemon made) to group `gid`, so that the socket's group can reach
/// the socket inside it; through the directory opened as itself (see [`open_made_dir`]).
pub fn give_group(dir: &Path, gid: u32) -> Result<()> {
    let made = open_made_dir(dir, "socket directory")?;
    std::os::unix::fs::fchown(&made, None, Some(gid))
        .with_context(|| format!("cannot give {} to group {gid}", dir.display()))
}

/// The directory the daemon just made at `dir`, opened without following a link, and
/// refused unless it is a directory of the daemon's own user. Its mode and group are set
/// through this descriptor, never by name: in a sticky directory such as /tmp another user
/// may swap the new name for a link to a directory of their choosing between the making
/// and the setting, and a `chmod` by name would follow it.
fn open_made_dir(dir: &Path, what: &str) -> Result<fs::File> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let made = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_DIRECTORY)
        .open(dir)
        .with_context(|| {
            format!(
                "the {what} {} is not the directory just made (a link put in its place?)",
                dir.display()
            )
        })?;
    let meta = made
        .metadata()
        .with_context(|| format!("cannot inspect the {what} {}", dir.display()))?;
    let euid = nix::unistd::geteuid().as_raw();
    if meta.uid() != euid {
        bail!(
            "the {what} {} belongs to uid {}, not the daemon's {euid}: another user made it \
             first; remove it, or choose another place",
            dir.display(),
            meta.uid()
        );
    }
    Ok(made)
}

/// The socket when neither `--socket` nor `AUTHENTA_SOCKET` names one:
/// `/run/authenta/keyd.sock` for root, else `$XDG_RUNTIME_DIR/authenta/keyd.sock`.
pub fn default_socket() -> PathBuf {
    if is_root() {
        return PathBuf::from("/run/authenta/keyd.sock");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("authenta/keyd.sock"),
        _ => fallback_socket_dir().join("keyd.sock"),
    }
}

/// The socket directory of a non-root daemon without `XDG_RUNTIME_DIR`: `$TMPDIR/authenta-UID`,
/// in a directory every user can write to, so it must be this user's alone.
pub fn fallback_socket_dir() -> PathBuf {
    std::env::temp_dir().join(format!("authenta-{}", nix::unistd::geteuid()))
}

/// Makes the fallback socket directory (0700) when missing, and refuses one that is not this
/// user's alone (as ssh-agent and tmux do): whoever else could write to it could put their
/// own socket in the daemon's place and collect the tokens apps send.
pub fn ensure_private_dir(dir: &Path) -> Result<()> {
    ensure_dir(dir, 0o700, "socket directory")?;
    check_private_dir(dir)
}

/// Refuses `dir` unless it is a directory owned by this user with no access for others.
pub fn check_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::symlink_metadata(dir)
        .with_context(|| format!("cannot inspect the socket directory {}", dir.display()))?;
    let euid = nix::unistd::geteuid().as_raw();
    let problem = if meta.file_type().is_symlink() || !meta.is_dir() {
        Some("is not a directory".to_owned())
    } else if meta.uid() != euid {
        Some(format!("belongs to uid {}, not {euid}", meta.uid()))
    } else if meta.mode() & 0o077 != 0 {
        Some(format!("has mode {:04o}, not 0700", meta.mode() & 0o7777))
    } else {
        None
    };
    match problem {
        None => Ok(()),
        Some(problem) => bail!(
            "the socket directory {} {problem}: in the shared temporary directory, another \
             user could put their own socket there and answer in the daemon's place. Remove \
             it (the daemon makes it 0700), or pass --socket, or set XDG_RUNTIME_DIR",
            dir.display()
        ),
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

/// Refuses to make `dir` inside a directory that someone else could write (a sticky one,
/// such as /tmp, aside): they could swap what the daemon makes for a link, to `/etc` say,
/// before the daemon sets its mode and group by name.
fn check_where_made(dir: &Path, what: &str) -> Result<()> {
    let absolute = std::path::absolute(dir)
        .with_context(|| format!("cannot make {} absolute", dir.display()))?;
    let Some(existing) = absolute.ancestors().skip(1).find(|a| a.exists()) else {
        return Ok(());
    };
    super::trust::check_dir(existing)
        .map_err(|why| anyhow::anyhow!("cannot make the {what} {}: {why}", dir.display()))
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
            check_where_made(dir, what)?;
            fs::DirBuilder::new()
                .recursive(true)
                .mode(mode)
                .create(dir)
                .with_context(|| format!("cannot create the {what} {}", dir.display()))?;
            // The umask may have narrowed the mode; set exactly what was asked.
            open_made_dir(dir, what)?
                .set_permissions(fs::Permissions::from_mode(mode))
                .with_context(|| format!("cannot set the mode of {}", dir.display()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a race in a sticky directory leaves between making the directory and setting
    /// its mode: the name now a link to a directory of the attacker's choosing. The mode is
    /// set through the directory opened as itself, so the link is refused, not followed.
    #[test]
    fn a_link_swapped_in_for_a_made_directory_is_refused_and_not_followed() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let target = tmp.path().join("victims");
        fs::create_dir(&target).expect("target");
        fs::set_permissions(&target, fs::Permissions::from_mode(0o755)).expect("chmod");
        let swapped = tmp.path().join("made");
        std::os::unix::fs::symlink(&target, &swapped).expect("link");
        let refused = open_made_dir(&swapped, "data directory").expect_err("a link");
        assert!(
            refused.to_string().contains("a link put in its place"),
            "{refused}"
        );
        assert!(give_group(&swapped, 0).is_err());
        let mode = fs::metadata(&target).expect("target").permissions().mode();
        assert_eq!(mode & 0o777, 0o755, "the link's target was left alone");
    }

    #[test]
    fn a_made_directory_gets_exactly_its_mode() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("a/b");
        ensure_dir(&dir, 0o750, "data directory").expect("made");
        let mode = fs::metadata(&dir).expect("made").permissions().mode();
        assert_eq!(mode & 0o7777, 0o750);
    }
}
