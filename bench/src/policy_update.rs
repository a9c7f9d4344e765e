//! The two ways a new policy file reaches a host in practice, each on a directory of its
//! own (the daemon watches the file's whole parent directory, so the two must not share
//! one): an atomic rename, as config management, `mv` and editors do, and a Kubernetes
//! ConfigMap volume's `..data` symlink swap, as kubelet's atomic writer does. The layout
//! is the one `tests/policy.rs` uses.

use anyhow::{Context, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// How an update is put in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Style {
    /// Write `.policy.toml.tmp` next to `policy.toml`, then rename it over.
    AtomicRename,
    /// `policy.toml -> ..data/policy.toml` and `..data -> ..<timestamp>`: write a new
    /// timestamped directory, point a new `..data_tmp` at it and rename that over `..data`.
    ConfigmapSwap,
}

impl Style {
    pub const ALL: [Style; 2] = [Style::AtomicRename, Style::ConfigmapSwap];

    /// The name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Style::AtomicRename => "atomic rename",
            Style::ConfigmapSwap => "configmap swap",
        }
    }
}

/// A policy file laid out in `dir` the way `style` updates it.
pub struct PolicyDir {
    style: Style,
    dir: PathBuf,
    /// The ConfigMap style's versions so far: names its directories, and lets the previous
    /// one be removed after a swap, as kubelet does.
    generation: u32,
}

impl PolicyDir {
    /// Lays out `dir` (which must exist and be empty) with `text` as the first policy.
    pub fn create(style: Style, dir: &Path, text: &str) -> Result<PolicyDir> {
        let mut policy = PolicyDir {
            style,
            dir: dir.to_path_buf(),
            generation: 0,
        };
        match style {
            Style::AtomicRename => {
                std::fs::write(policy.path(), text).context("writing the first policy")?
            }
            Style::ConfigmapSwap => {
                policy.swap(text)?;
                std::os::unix::fs::symlink("..data/policy.toml", policy.path())
                    .context("linking policy.toml to ..data/policy.toml")?;
            }
        }
        Ok(policy)
    }

    /// The path the daemon is given (`serve --policy`).
    pub fn path(&self) -> PathBuf {
        self.dir.join("policy.toml")
    }

    /// Puts `text` in place; when this returns, the last syscall of the update (the rename)
    /// has returned and the daemon's directory watch has been told.
    pub fn update(&mut self, text: &str) -> Result<()> {
        match self.style {
            Style::AtomicRename => {
                let temp = self.dir.join(".policy.toml.tmp");
                std::fs::write(&temp, text).context("writing the new policy")?;
                std::fs::rename(&temp, self.path()).context("renaming over policy.toml")
            }
            Style::ConfigmapSwap => self.swap(text),
        }
    }

    /// What kubelet does after a swap, and what an update must not be timed with: removing
    /// the previous version's directory. Nothing for the rename style.
    pub fn tidy(&self) -> Result<()> {
        if self.style == Style::ConfigmapSwap && self.generation > 1 {
            let previous = self.dir.join(version_name(self.generation - 1));
            std::fs::remove_dir_all(&previous)
                .with_context(|| format!("removing {}", previous.display()))?;
        }
        Ok(())
    }

    /// A new `..<timestamp>` directory holding `text`, and `..data` switched to it with one
    /// rename (the first time, `..data` is simply created the same way).
    fn swap(&mut self, text: &str) -> Result<()> {
        self.generation += 1;
        let name = version_name(self.generation);
        let versioned = self.dir.join(&name);
        std::fs::create_dir(&versioned)
            .with_context(|| format!("creating {}", versioned.display()))?;
        std::fs::write(versioned.join("policy.toml"), text).context("writing the new policy")?;
        let temp_link = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&name, &temp_link).context("linking ..data_tmp")?;
        std::fs::rename(&temp_link, self.dir.join("..data")).context("renaming over ..data")
    }
}

/// kubelet names versions `..2006_01_02_15_04_05.<random>`; a counter keeps them unique here.
fn version_name(generation: u32) -> String {
    format!("..2026_11_28_00_00_00.{generation:04}")
}

/// A policy revoking `ids`, one per line, like a file that collects a host's revocations
/// over time, with the defaults most files carry.
pub fn revoking(ids: &[String]) -> String {
    let mut text = String::from(
        "# written by authenta-bench --policy-latency\n\
         [defaults]\nmax_age = \"365d\"\nwarn_before = \"30d\"\n\n[revocations]\nids = [\n",
    );
    for id in ids {
        text.push_str(&format!("  \"{id}\",\n"));
    }
    text.push_str("]\n");
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configmap_layout_resolves_to_the_latest_version() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut policy =
            PolicyDir::create(Style::ConfigmapSwap, dir.path(), "first").expect("layout");
        assert_eq!(
            std::fs::read_to_string(policy.path()).expect("read"),
            "first"
        );
        policy.update("second").expect("swap");
        policy.tidy().expect("tidy");
        assert_eq!(
            std::fs::read_to_string(policy.path()).expect("read"),
            "second"
        );
        assert!(!dir.path().join(version_name(1)).exists());
        assert!(!dir.path().join("..data_tmp").exists());
    }

    #[test]
    fn rename_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut policy =
            PolicyDir::create(Style::AtomicRename, dir.path(), "first").expect("layout");
        policy.update("second").expect("rename");
        assert_eq!(
            std::fs::read_to_string(policy.path()).expect("read"),
            "second"
        );
        assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 1);
    }

    #[test]
    fn the_daemon_reads_the_revocations() {
        let ids = vec![
            "key_AAAAAAAAAAAAAAAA".to_owned(),
            "key_BBBBBBBBBBBBBBBB".to_owned(),
        ];
        let policy = authenta_keyd::policy::parse::parse(&revoking(&ids)).expect("valid policy");
        assert_eq!(policy.revocations.ids, ids);
    }
}
