//! `authenta-keyd owners ...`: the limits all keys of one owner (tenant) share.

use super::limits::{ratelimit_text, refill_text, LimitArgs};
use super::output::{self, say};
use super::Context;
use anyhow::Result;
use authenta_client::proto::{OwnerInfo, OwnerUpdate};
use clap::{Args, Subcommand};
use serde_json::json;

#[derive(Subcommand)]
pub enum OwnersCommand {
    /// Set an owner's shared limits (made on first use); what is not named stays.
    Set(SetArgs),
    /// An owner's limits, where they stand now, and how many keys name it.
    Show {
        /// The owner id, as keys name it (`keys create --owner ID`).
        id: String,
    },
}

#[derive(Args)]
#[command(after_help = "Examples:\n  \
    authenta-keyd owners set acme --ratelimit 1000/1m\n  \
    authenta-keyd owners set acme --remaining 100000 --refill 100000/30d\n\n\
    A verify of any key of the owner takes from the owner's limits after the key's own:\n\
    over either, it answers 429 rate_limited or usage_exceeded.")]
pub struct SetArgs {
    /// The owner id.
    id: String,
    #[command(flatten)]
    limits: LimitArgs,
}

pub fn run(command: OwnersCommand, context: &Context) -> Result<()> {
    let mut client = context.client();
    let owner = match command {
        OwnersCommand::Set(args) => {
            let (ratelimit, remaining, refill) = args.limits.changes();
            client.set_owner(OwnerUpdate {
                id: args.id,
                ratelimit,
                remaining,
                refill,
            })?
        }
        OwnersCommand::Show { id } => client.show_owner(&id)?,
    };
    print_owner(&owner, context.json);
    Ok(())
}

fn print_owner(owner: &OwnerInfo, json: bool) {
    if json {
        output::print_json(&json!({
            "id": owner.id,
            "keys": owner.keys,
            "ratelimit": owner.ratelimit.as_ref().map(ratelimit_text),
            "ratelimit_remaining": owner.ratelimit_state.map(|s| s.remaining),
            "remaining": owner.remaining,
            "refill": owner.refill.as_ref().map(refill_text),
        }));
        return;
    }
    say!("owner:        {}", owner.id);
    say!("keys:         {}", owner.keys);
    match (&owner.ratelimit, owner.ratelimit_state) {
        (Some(rule), Some(state)) => say!(
            "rate limit:   {} ({} left now)",
            ratelimit_text(rule),
            state.remaining
        ),
        _ => say!("rate limit:   none"),
    }
    match owner.remaining {
        Some(left) => {
            let refill = owner
                .refill
                .as_ref()
                .map(|r| format!(" (refill {})", refill_text(r)))
                .unwrap_or_default();
            say!("remaining:    {left}{refill}");
        }
        None => say!("remaining:    unlimited"),
    }
}
