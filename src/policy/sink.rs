//! Writing a rotated token to the file its service reads: never half-written, never through
//! a symbolic link, never with a mode the umask chose. The directory is opened one component
//! at a time from `/` without following any link, and must be trusted (owned by root or the
//! daemon's user, writable by nobody else); the token is written to a temporary file created
//! in it exclusively, given exactly the sink's mode (`fchmod`) and owner, fsynced, and only
//! renamed over the sink once the rotation is committed.

use crate::policy::Sink;
use rustix::fs::{
    fchmod, fchown, fstat, fsync, openat, renameat, unlinkat, AtFlags, Mode, OFlags, CWD,
};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::path::{Component, Path};

/// A token written to a temporary file next to its sink, not yet published. Dropping it
/// unpublished removes the temporary file.
pub struct StagedSink {
    dir: OwnedFd,
    temp: std::ffi::OsString,
    name: std::ffi::OsString,
    published: bool,
}

/// Writes `token` next to `sink` and fsyncs it. Fails when the directory is missing, is
/// reached through a symbolic link, is not trusted, or the owner cannot be set.
pub fn stage(sink: &Sink, token: &str) -> io::Result<StagedSink> {
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidInput, what.to_owned());
    let parent = sink
        .path
        .parent()
        .ok_or_else(|| invalid("sink has no directory"))?;
    let name = sink
        .path
        .file_name()
        .ok_or_else(|| invalid("sink has no file name"))?
        .to_owned();
    let dir = open_dir_no_symlinks(parent)?;
    check_trusted_dir(&dir, parent)?;
    let mut temp = std::ffi::OsString::from(".");
    temp.push(&name);
    temp.push(format!(".tmp-{}", std::process::id()));
    let _ = unlinkat(&dir, temp.as_os_str(), AtFlags::empty());
    let staged = StagedSink {
        dir,
        temp,
        name,
        published: false,
    };
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = openat(
        &staged.dir,
        staged.temp.as_os_str(),
        flags,
        Mode::from_raw_mode(0o600),
    )?;
    let mut file = File::from(fd);
    // Exactly the mode asked for, whatever the umask.
    fchmod(&file, Mode::from_raw_mode(sink.mode))?;
    if let Some(uid) = sink.owner {
        fchown(&file, Some(rustix::fs::Uid::from_raw(uid)), None)?;
    }
    file.write_all(token.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    Ok(staged)
}

/// Opens `path` (absolute) one component at a time without following a symbolic link.
fn open_dir_no_symlinks(path: &Path) -> io::Result<OwnedFd> {
    let flags = OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::RDONLY;
    let mut dir = openat(CWD, "/", flags, Mode::empty())?;
    for component in path.components() {
        match component {
            Component::RootDir => {}
            Component::Normal(name) => {
                dir = openat(&dir, name, flags, Mode::empty()).map_err(|e| {
                    io::Error::other(format!(
                        "cannot open {} without following a link: {e}",
                        path.display()
                    ))
                })?;
            }
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "sink path must be absolute and plain",
                ))
            }
        }
    }
    Ok(dir)
}

/// The sink's directory must be trusted like the policy file itself: owned by root or the
/// daemon's user, writable by nobody else (else its owner could swap the file under us).
fn check_trusted_dir(dir: &OwnedFd, path: &Path) -> io::Result<()> {
    let stat = fstat(dir)?;
    let euid = nix::unistd::geteuid().as_raw();
    if (stat.st_uid != 0 && stat.st_uid != euid) || stat.st_mode & 0o022 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "the sink directory {} is not trusted: it must belong to root or the daemon's \
                 uid and be writable by its owner alone",
                path.display()
            ),
        ));
    }
    Ok(())
}

impl StagedSink {
    /// Renames the staged file over the sink and fsyncs the directory: readers see the old
    /// token or the new one, never a mix.
    pub fn publish(mut self) -> io::Result<()> {
        renameat(
            &self.dir,
            self.temp.as_os_str(),
            &self.dir,
            self.name.as_os_str(),
        )?;
        self.published = true;
        fsync(&self.dir)?;
        Ok(())
    }
}

impl Drop for StagedSink {
    fn drop(&mut self) {
        if !self.published {
            let _ = unlinkat(&self.dir, self.temp.as_os_str(), AtFlags::empty());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    fn sink(dir: &std::path::Path) -> Sink {
        Sink {
            path: dir.join("token"),
            owner: None,
            mode: 0o400,
        }
    }

    #[test]
    fn publish_replaces_the_sink_whole_with_its_mode() {
        let dir = tempfile::tempdir().expect("tmp");
        let s = sink(dir.path());
        fs::write(&s.path, "old\n").expect("write");
        let staged = stage(&s, "api_new").expect("stage");
        assert_eq!(
            fs::read_to_string(&s.path).expect("read"),
            "old\n",
            "not yet published"
        );
        staged.publish().expect("publish");
        assert_eq!(fs::read_to_string(&s.path).expect("read"), "api_new\n");
        let mode = fs::metadata(&s.path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o400);
        assert_eq!(
            fs::read_dir(dir.path()).expect("dir").count(),
            1,
            "no temp left"
        );
    }

    #[test]
    fn an_unpublished_stage_leaves_nothing_behind() {
        let dir = tempfile::tempdir().expect("tmp");
        let s = sink(dir.path());
        drop(stage(&s, "api_x").expect("stage"));
        assert_eq!(fs::read_dir(dir.path()).expect("dir").count(), 0);
    }

    #[test]
    fn a_missing_directory_fails_without_a_trace() {
        let dir = tempfile::tempdir().expect("tmp");
        let s = Sink {
            path: dir.path().join("missing/token"),
            owner: None,
            mode: 0o400,
        };
        assert!(stage(&s, "api_x").is_err());
    }
}
