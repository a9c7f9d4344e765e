//! Where the master key comes from. First found wins:
//! 1. `--master-key-file FILE`;
//! 2. `$CREDENTIALS_DIRECTORY/master-key` (systemd `LoadCredential[Encrypted]=`);
//! 3. `master.key` in the data directory, generated on the very first run (mode 0600, with a
//!    warning): convenient on a developer machine, never what production should use.
//!
//! A file holds 32 raw bytes, or 64 hex digits with an optional trailing newline.

use crate::store::barrier::{random_key, KeyBytes};
use anyhow::{bail, Context, Result};
use ring::rand::SystemRandom;
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// File name of the generated development key inside the data directory.
pub const GENERATED_FILE: &str = "master.key";

/// Where the master key in use came from, for logs and status (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    Credential(PathBuf),
    Generated(PathBuf),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::File(p) => write!(f, "file {}", p.display()),
            Source::Credential(p) => write!(f, "systemd credential {}", p.display()),
            Source::Generated(p) => write!(f, "development key {}", p.display()),
        }
    }
}

/// Whether [`load`] would use (or make) the development key: no `--master-key-file` and no
/// systemd credential. Told before `--daemonize` detaches, while a terminal still listens.
pub fn would_use_development_key(flag: Option<&Path>) -> bool {
    let credential = std::env::var_os("CREDENTIALS_DIRECTORY")
        .is_some_and(|dir| Path::new(&dir).join("master-key").exists());
    flag.is_none() && !credential
}

/// Finds and reads the master key. `store_exists` forbids generating a key for a store that
/// some other key already sealed: that would only lock its owner out.
pub fn load(
    flag: Option<&Path>,
    data_dir: &Path,
    store_exists: bool,
) -> Result<(KeyBytes, Source)> {
    if let Some(path) = flag {
        return Ok((read_key_file(path)?, Source::File(path.to_path_buf())));
    }
    if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
        let path = Path::new(&dir).join("master-key");
        if path.exists() {
            return Ok((read_key_file(&path)?, Source::Credential(path)));
        }
    }
    let generated = data_dir.join(GENERATED_FILE);
    if generated.exists() {
        // At every start, not only the first: a development key beside the data goes into
        // every backup of it.
        tracing::warn!(
            path = %generated.display(),
            "using the development master key next to the data (every backup of the data \
             carries it); in production pass --master-key-file or a systemd credential"
        );
        return Ok((read_key_file(&generated)?, Source::Generated(generated)));
    }
    if store_exists {
        bail!(
            "no master key found for the existing store in {}: pass --master-key-file or \
             provide the systemd credential 'master-key'",
            data_dir.display()
        );
    }
    let key = random_key(&SystemRandom::new())
        .map_err(|_| anyhow::anyhow!("the system random number generator failed"))?;
    write_key_file(&generated, &key)?;
    tracing::warn!(
        path = %generated.display(),
        "generated a development master key next to the data; in production pass \
         --master-key-file or a systemd credential instead"
    );
    Ok((key, Source::Generated(generated)))
}

/// Reads a key file: 32 raw bytes, or 64 hex digits and an optional trailing newline.
pub fn read_key_file(path: &Path) -> Result<KeyBytes> {
    let bytes = Zeroizing::new(
        fs::read(path)
            .with_context(|| format!("cannot read master key file {}", path.display()))?,
    );
    if crate::host::trust::readable_by_others(path) {
        tracing::warn!(path = %path.display(), "master key file is readable by group or others; chmod 600 it");
    }
    parse_key(&bytes).with_context(|| {
        format!(
            "master key file {} must hold 32 raw bytes or 64 hex digits",
            path.display()
        )
    })
}

/// Parses the content of a key file.
pub fn parse_key(bytes: &[u8]) -> Result<KeyBytes> {
    let mut key = Zeroizing::new([0u8; 32]);
    if bytes.len() == 32 {
        key.copy_from_slice(bytes);
        return Ok(key);
    }
    let text = bytes
        .strip_suffix(b"\r\n")
        .or_else(|| bytes.strip_suffix(b"\n"))
        .unwrap_or(bytes);
    if text.len() != 64 {
        bail!("found {} bytes", bytes.len());
    }
    hex::decode_to_slice(text, key.as_mut()).map_err(|_| anyhow::anyhow!("not hex"))?;
    Ok(key)
}

/// Writes a key as hex to a new file of mode 0600.
pub fn write_key_file(path: &Path, key: &KeyBytes) -> Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create master key file {}", path.display()))?;
    let mut text = Zeroizing::new(hex::encode(key.as_ref()));
    text.push('\n');
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    Ok(())
}

/// Replaces a key file atomically (temp file, fsync, rename), keeping mode 0600.
pub fn replace_key_file(path: &Path, key: &KeyBytes) -> Result<()> {
    let temp = path.with_extension("new");
    let _ = fs::remove_file(&temp);
    write_key_file(&temp, key)?;
    fs::rename(&temp, path)
        .with_context(|| format!("cannot replace master key file {}", path.display()))?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_and_hex_forms_parse_to_the_same_key() {
        let raw = [7u8; 32];
        let hex = hex::encode(raw);
        assert_eq!(*parse_key(&raw).expect("raw"), raw);
        assert_eq!(*parse_key(hex.as_bytes()).expect("hex"), raw);
        assert_eq!(
            *parse_key(format!("{hex}\n").as_bytes()).expect("hex+nl"),
            raw
        );
    }

    #[test]
    fn other_shapes_are_refused() {
        assert!(parse_key(b"").is_err());
        assert!(parse_key(&[1u8; 31]).is_err());
        assert!(parse_key(&[b'g'; 64]).is_err());
        assert!(parse_key(format!("{}\n\n", "ab".repeat(32)).as_bytes()).is_err());
    }
}
