//! `authenta-keyd rekey`: wrap the store's data key under a new master key. Only one value
//! changes (the wrapped data key), so no row is rewritten and none can be lost.
//!
//! Online when the daemon answers on its socket (the new key travels over the local,
//! peer-authenticated socket to an admin-only request); offline otherwise, opening the store
//! directly with the current master key.

use super::output::say;
use super::Context;
use crate::host::{paths, trust};
use crate::store::audit::AuditRecord;
use crate::store::{self, master_key};
use crate::time;
use anyhow::{bail, Context as _, Result};
use authenta_client::proto::Actor;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct RekeyArgs {
    /// The new master key: 32 raw bytes or 64 hex digits (e.g. `openssl rand -hex 32`).
    #[arg(long, value_name = "FILE")]
    new_master_key_file: PathBuf,
    /// Rekey the store directly even if a daemon answers on the socket.
    #[arg(long)]
    offline: bool,
    /// Offline: the data directory (defaults as for `serve`).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Offline: the current master key (found as for `serve` when not given).
    #[arg(long, value_name = "FILE")]
    master_key_file: Option<PathBuf>,
}

pub fn run(args: RekeyArgs, context: &Context) -> Result<ExitCode> {
    // Held to `serve`'s rule: a key file another user could have written would hand them
    // the store. (The data directory is not: under systemd it is the service user's, and
    // a store planted by someone else would not open with the current key anyway.)
    trust::check_as(&args.new_master_key_file, "the new master key file")?;
    if trust::readable_by_others(&args.new_master_key_file) {
        eprintln!(
            "warning: {} is readable by group or others; chmod 600 it",
            args.new_master_key_file.display()
        );
    }
    let new_key = master_key::read_key_file(&args.new_master_key_file)?;
    let online = !args.offline && std::os::unix::net::UnixStream::connect(&context.socket).is_ok();
    if online {
        let message = context.client().rekey(new_key.to_vec())?;
        done(context, "online", &message);
        return Ok(ExitCode::SUCCESS);
    }
    let data_dir = match args.data_dir {
        Some(dir) => dir,
        None => paths::default_data_dir()?,
    };
    if !store::exists(&data_dir) {
        bail!(
            "no store in {} and no daemon on {}: pass --data-dir, or --socket of the running daemon",
            data_dir.display(),
            context.socket.display()
        );
    }
    if let Some(key_file) = &args.master_key_file {
        trust::check_as(key_file, "the master key file")?;
    }
    let (old_key, source) = master_key::load(args.master_key_file.as_deref(), &data_dir, true)?;
    let mut store = store::Store::open(&data_dir, &old_key)?;
    store.begin()?;
    let actor = Actor::Peer {
        uid: nix::unistd::getuid().as_raw(),
        pid: i32::try_from(std::process::id()).ok(),
    };
    let changed = store.rewrap_data_key(&new_key).and_then(|()| {
        store.append_audit(&AuditRecord {
            at: time::now_ms(),
            actor,
            action: "rekey".into(),
            key_id: None,
            detail: Some("offline".into()),
        })
    });
    if let Err(e) = changed.and_then(|()| store.commit()) {
        store.rollback();
        return Err(e.context("rekey failed; the store is unchanged"));
    }
    if let master_key::Source::Generated(path) = &source {
        master_key::replace_key_file(path, &new_key).with_context(|| {
            format!(
                "the store is rekeyed, but {} still holds the old key: copy the new key there",
                path.display()
            )
        })?;
    }
    let message = format!(
        "rekeyed the store in {}: start the daemon with the new master key from now on (the \
         old one, from {source}, no longer opens it)",
        data_dir.display()
    );
    done(context, "offline", &message);
    Ok(ExitCode::SUCCESS)
}

/// Says a rekey is done: a sentence, or with `--json` an object saying how.
fn done(context: &Context, how: &str, message: &str) {
    if context.json {
        super::output::print_json(&serde_json::json!({
            "rekeyed": true,
            "mode": how,
            "message": message,
        }));
    } else {
        say!("{message}");
    }
}
