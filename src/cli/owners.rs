//! `authenta-keyd owners ...`: the limits all keys of one owner (tenant) share.

use super::limits::{parse_ratelimit, parse_refill, ratelimit_text, refill_text};
use super::output::{self, say};
use super::Context;
use anyhow::Result;
use authenta_client::proto::{OwnerInfo, OwnerUpdate, RateLimit, Refill};
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
    /// Shared rate limit: requests per window, e.g. 1000/1m.
    #[arg(long, value_parser = parse_ratelimit, value_name = "LIMIT/WINDOW", conflicts_with = "no_ratelimit")]
    ratelimit: Option<RateLimit>,
    #[arg(long)]
    no_ratelimit: bool,
    /// Shared credit balance (starts a new balance).
    #[arg(long, value_name = "N", conflicts_with = "no_remaining")]
    remaining: Option<u64>,
    #[arg(long)]
    no_remaining: bool,
    /// Set the balance back to AMOUNT every INTERVAL, e.g. 100000/30d.
    #[arg(long, value_parser = parse_refill, value_name = "AMOUNT/INTERVAL", conflicts_with = "no_refill")]
    refill: Option<Refill>,
    #[arg(long)]
    no_refill: bool,
}

pub fn run(command: OwnersCommand, context: &Context) -> Result<()> {
    let mut client = context.client();
    let owner = match command {
        OwnersCommand::Set(args) => client.set_owner(OwnerUpdate {
            id: args.id,
            ratelimit: super::update::change(args.ratelimit, args.no_ratelimit),
            remaining: super::update::change(args.remaining, args.no_remaining),
            refill: super::update::change(args.refill, args.no_refill),
        })?,
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
