//! `authenta-keyd keys update`: change a key in place; its token stays the same.

use super::limits::{change, LimitArgs};
use super::{keys, Context};
use anyhow::{Context as _, Result};
use authenta_client::proto::{Permission, UpdateKey};
use clap::Args;

#[derive(Args)]
#[command(after_help = "Examples:\n  \
    authenta-keyd keys update key_XXXXXXXXXXXXXXXX --permissions read\n  \
    authenta-keyd keys update key_XXXXXXXXXXXXXXXX --owner acme --meta plan=pro --unset-meta trial\n  \
    authenta-keyd keys update key_XXXXXXXXXXXXXXXX --ratelimit 100/1s\n  \
    authenta-keyd keys update key_XXXXXXXXXXXXXXXX --remaining 10000 --refill 10000/30d\n  \
    authenta-keyd keys update key_XXXXXXXXXXXXXXXX --no-expiry --no-ratelimit\n\n\
    The token does not change. Every verify after the command returns sees the change\n\
    (as after a revoke). The audit log names the fields changed, never their secret values.")]
pub struct UpdateArgs {
    /// The key id (key_...).
    id: String,
    /// A new label for people.
    #[arg(long)]
    name: Option<String>,
    /// Replace the permissions: read, write, delete, comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "PERMISSIONS")]
    permissions: Option<Vec<Permission>>,
    /// A new environment label.
    #[arg(long, value_name = "ENV", conflicts_with = "no_environment")]
    environment: Option<String>,
    /// Remove the environment label.
    #[arg(long)]
    no_environment: bool,
    /// Expire this long from now (e.g. 90d).
    #[arg(long, value_parser = keys::parse_secs, value_name = "DURATION", conflicts_with = "no_expiry")]
    expires_in: Option<u64>,
    /// Never expire.
    #[arg(long)]
    no_expiry: bool,
    /// The tenant the key belongs to (at most 128 characters).
    #[arg(long, value_name = "ID", conflicts_with = "no_owner")]
    owner: Option<String>,
    /// Take the key away from its owner.
    #[arg(long)]
    no_owner: bool,
    /// Add or replace a metadata entry (repeatable).
    #[arg(long, value_name = "KEY=VALUE")]
    meta: Vec<String>,
    /// Remove a metadata entry (repeatable).
    #[arg(long, value_name = "KEY")]
    unset_meta: Vec<String>,
    #[command(flatten)]
    limits: LimitArgs,
}

pub fn run(args: UpdateArgs, context: &Context) -> Result<()> {
    let id = args.id.clone();
    let (ratelimit, remaining, refill) = args.limits.changes();
    let update = UpdateKey {
        id: args.id,
        name: args.name,
        permissions: args.permissions,
        environment: change(args.environment, args.no_environment),
        expires_in_secs: change(args.expires_in, args.no_expiry),
        owner_id: change(args.owner, args.no_owner),
        set_meta: super::limits::meta_of(args.meta)?,
        unset_meta: args.unset_meta,
        ratelimit,
        remaining,
        refill,
    };
    let key = context
        .client()
        .update_key(update)
        .with_context(|| format!("cannot update {}", keys::shown_id(&id)))?;
    keys::print_shown(&key, context.json);
    Ok(())
}
