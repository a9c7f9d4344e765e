//! Writing a rotated token to the file its service reads: never half-written. The token is
//! written to a temporary file in the same directory (created exclusively, with the sink's
//! mode and owner), fsynced, and only renamed over the sink once the rotation is committed.

use crate::policy::Sink;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

/// A token written to a temporary file next to its sink, not yet published. Dropping it
/// unpublished removes the temporary file.
pub struct StagedSink {
    temp: PathBuf,
    target: PathBuf,
    published: bool,
}

/// Writes `token` next to `sink` and fsyncs it. Fails when the directory is missing or
/// unwritable, or the owner cannot be set.
pub fn stage(sink: &Sink, token: &str) -> io::Result<StagedSink> {
    let dir = sink
        .path
        .parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "sink has no directory"))?;
    let name = sink
        .path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "sink has no file name"))?;
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(name);
    temp_name.push(format!(".tmp-{}", std::process::id()));
    let temp = dir.join(temp_name);
    let _ = fs::remove_file(&temp);
    let staged = StagedSink {
        temp: temp.clone(),
        target: sink.path.clone(),
        published: false,
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(sink.mode)
        .open(&temp)?;
    file.write_all(token.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    if let Some(uid) = sink.owner {
        nix::unistd::fchown(
            std::os::fd::AsRawFd::as_raw_fd(&file),
            Some(nix::unistd::Uid::from_raw(uid)),
            None,
        )
        .map_err(io::Error::from)?;
    }
    Ok(staged)
}

impl StagedSink {
    /// Renames the staged file over the sink and fsyncs the directory: readers see the old
    /// token or the new one, never a mix.
    pub fn publish(mut self) -> io::Result<()> {
        fs::rename(&self.temp, &self.target)?;
        self.published = true;
        if let Some(dir) = self.target.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

impl Drop for StagedSink {
    fn drop(&mut self) {
        if !self.published {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
