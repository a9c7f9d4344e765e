//! The files a fleet node obeys besides its config: NATS credentials and TLS roots. Whoever
//! can write one can speak for the node or pose as its servers (a root certificate of
//! theirs lets them stand between the node and NATS), and so change the keys every host of
//! the fleet serves. Each is held to the config's own rule (`host::trust`) before the node
//! reads it; secrets others can read are only warned about, as the master key is.

use crate::config::FleetConfig;
use crate::host::trust;
use anyhow::Result;
use std::path::Path;

/// Refuses a fleet config that names a file someone other than root or the daemon's user
/// could write, saying which setting and why.
pub fn check(config: &FleetConfig) -> Result<()> {
    for (setting, path, secret) in files(config) {
        trust::check_as(path, &format!("[fleet] {setting}"))?;
        if secret && trust::readable_by_others(path) {
            tracing::warn!(setting, path = %path.display(), "a fleet secret is readable by group or others; chmod 600 it");
        }
    }
    Ok(())
}

/// Every file the config names: (setting, path, whether it holds a secret).
fn files(config: &FleetConfig) -> impl Iterator<Item = (&'static str, &Path, bool)> {
    [
        ("credentials", &config.credentials, true),
        ("nkey_seed_file", &config.nkey_seed_file, true),
        ("password_file", &config.password_file, true),
        ("token_file", &config.token_file, true),
        ("tls_ca", &config.tls_ca, false),
        ("tls_cert", &config.tls_cert, false),
        ("tls_key", &config.tls_key, true),
    ]
    .into_iter()
    .filter_map(|(setting, path, secret)| Some((setting, path.as_deref()?, secret)))
}
