//! Which files the daemon may obey, like sshd's StrictModes: a file whose content decides
//! what the daemon does (the config, the policy) must be owned by root or the daemon's own
//! user, and neither it nor any directory above it may be writable by anyone else. Whoever
//! could write it would be an admin. A sticky directory (such as /tmp) may be above it:
//! nobody else can rename or remove what root owns there.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Why `path` may not be trusted, or `Ok` when it may. Both the path as given (its
/// symlinks' own directories) and the file it resolves to are checked, up to `/`.
pub fn check(path: &Path) -> Result<(), String> {
    let resolved =
        std::fs::canonicalize(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let euid = nix::unistd::geteuid().as_raw();
    for place in [path.to_path_buf(), resolved] {
        check_chain(&place, euid)?;
    }
    Ok(())
}

/// [`check`] as an error naming the file by `what` (`the master key file`, `[fleet]
/// tls_ca`): whoever could write a key or a credential file could give the daemon one
/// they know.
pub fn check_as(path: &Path, what: &str) -> anyhow::Result<()> {
    check(path).map_err(|why| anyhow::anyhow!("{what}: {why}"))
}

/// Whether others than its owner may read a file holding a secret: only warned about, as
/// a key handed over by root in a file the daemon's group can read is not an attacker's.
pub fn readable_by_others(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|meta| meta.mode() & 0o077 != 0)
}

/// Why a directory that exists may not be trusted to make things in, or `Ok`: as
/// [`check`], but the directory itself may be sticky (such as /tmp).
pub fn check_dir(dir: &Path) -> Result<(), String> {
    let euid = nix::unistd::geteuid().as_raw();
    check_chain_from(dir, euid, false)
}

/// Why a client may not send a token or a key to whatever listens at `socket`, or `Ok`.
/// Unlike the daemon, a client does not know the daemon's user, so it trusts the socket's
/// directory by who could have made it: when the directory above it is trusted and no one
/// else may write it, only root or that directory's owner could have, and the socket's
/// directory may then be anyone's (a service user's `/run/authenta`, say); otherwise (it
/// sits in `/tmp`, say) it must be root's or this user's. A directory others may write
/// (sticky, such as `/tmp` itself) can hold only a socket of root's or this user's.
pub fn check_socket_for_client(socket: &Path) -> Result<(), String> {
    use std::os::unix::fs::FileTypeExt;
    let euid = nix::unistd::geteuid().as_raw();
    let socket = &std::path::absolute(socket)
        .map_err(|e| format!("cannot make {} absolute: {e}", socket.display()))?;
    let Some(dir) = socket.parent() else {
        return Ok(());
    };
    let Ok(dir_meta) = std::fs::metadata(dir) else {
        // Nothing listens there: connecting says so.
        return Ok(());
    };
    let made_by_its_owner = dir.parent().is_none_or(|above| {
        check_dir(above).is_ok() && std::fs::metadata(above).is_ok_and(|m| m.mode() & 0o022 == 0)
    });
    if made_by_its_owner {
        if dir_meta.mode() & 0o022 != 0 && dir_meta.mode() & 0o1000 == 0 {
            return Err(format!(
                "its directory {} is writable by others",
                dir.display()
            ));
        }
    } else {
        check_dir(dir)?;
    }
    if dir_meta.mode() & 0o022 != 0 {
        if let Ok(link) = std::fs::symlink_metadata(socket) {
            if !link.file_type().is_socket() {
                return Err(format!("{} is not a socket", socket.display()));
            }
            if link.uid() != 0 && link.uid() != euid {
                return Err(format!(
                    "{} belongs to uid {}, in a directory others can write",
                    socket.display(),
                    link.uid()
                ));
            }
        }
    }
    Ok(())
}

/// Checks `path` itself and each directory above it.
fn check_chain(path: &Path, euid: u32) -> Result<(), String> {
    check_chain_from(path, euid, true)
}

/// [`check_chain`], `path` itself taken as a file (no sticky exception) when `is_file`.
fn check_chain_from(path: &Path, euid: u32, is_file: bool) -> Result<(), String> {
    let absolute = std::path::absolute(path)
        .map_err(|e| format!("cannot make {} absolute: {e}", path.display()))?;
    let mut place: Option<PathBuf> = Some(absolute);
    let mut first = is_file;
    while let Some(current) = place {
        check_one(&current, euid, first)?;
        first = false;
        place = current.parent().map(Path::to_path_buf);
    }
    Ok(())
}

fn check_one(path: &Path, euid: u32, is_file: bool) -> Result<(), String> {
    // A link is as trustworthy as whoever can point it elsewhere: its owner (another user
    // may make one in a sticky directory such as /tmp), at any time after this check.
    if let Ok(link) = std::fs::symlink_metadata(path) {
        if link.file_type().is_symlink() && link.uid() != 0 && link.uid() != euid {
            return Err(format!(
                "{} is not trusted: it is a link that uid {} owns and can point elsewhere at \
                 any time; use the path it leads to, or a link of root's or the daemon's user",
                path.display(),
                link.uid()
            ));
        }
    }
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot inspect {}: {e}", path.display()))?;
    let what = if is_file { "it" } else { "its directory" };
    if meta.uid() != 0 && meta.uid() != euid {
        return Err(format!(
            "{} is not trusted: {what} {} belongs to uid {}, not root or the daemon's uid {euid}",
            path.display(),
            path.display(),
            meta.uid()
        ));
    }
    // Others may write a sticky directory above the file: they cannot replace what it holds.
    let sticky_dir = !is_file && meta.is_dir() && meta.mode() & 0o1000 != 0;
    if meta.mode() & 0o022 != 0 && !sticky_dir {
        return Err(format!(
            "{} is not trusted: it is writable by {} (mode {:04o}); make it writable by its \
             owner only, e.g. chmod go-w {}",
            path.display(),
            if meta.mode() & 0o002 != 0 {
                "everyone"
            } else {
                "its group"
            },
            meta.mode() & 0o7777,
            path.display()
        ));
    }
    Ok(())
}

/// The files of a store in a data directory, which the daemon opens there.
const STORE_FILES: [&str; 4] = ["keys.db", "keys.db-wal", "keys.db-shm", "master.key"];

/// Why the data directory may not be trusted, or `Ok`: it and every directory above it
/// as [`check`] says, and each store file in it that exists must be a regular file (not a
/// link) that only root or the daemon's user can write. Whoever could write any of them
/// could put in a store and a development key of their own, whose tokens would then
/// verify, or read and roll back the store at will.
pub fn check_data_dir(dir: &Path) -> Result<(), String> {
    check(dir).map_err(|why| format!("the data directory: {why}"))?;
    for name in STORE_FILES {
        let path = dir.join(name);
        match std::fs::symlink_metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(format!("cannot inspect {}: {e}", path.display())),
            Ok(meta) if !meta.file_type().is_file() => {
                return Err(format!(
                    "{} is not a regular file (a link or another kind of file); refusing it",
                    path.display()
                ))
            }
            Ok(_) => check_one(&path, nix::unistd::geteuid().as_raw(), true)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_file_writable_by_others_or_in_such_a_directory_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("policy.toml");
        std::fs::write(&file, "").expect("write");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert_eq!(check(&file), Ok(()));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).expect("chmod");
        assert!(check(&file).is_err_and(|e| e.contains("writable by everyone")));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
            .expect("chmod");
        assert!(check(&file).is_err_and(|e| e.contains("writable by everyone")));
        // Sticky, like /tmp: fine above a file its owner alone can write.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777))
            .expect("chmod");
        assert_eq!(check(&file), Ok(()));
    }
}
