//! `authenta-keyd keys ...`: create, list, show, regenerate and revoke.

use super::output::{self, key_json, permission_list, time, time_or};
use super::Context;
use anyhow::{Context as _, Result};
use authenta_client::proto::{CreateKey, KeyInfo, NewToken, Permission};
use clap::{Args, Subcommand};
use serde_json::json;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Create a key. Its token is printed once, on stdout, and never again.
    Create(CreateArgs),
    /// List keys: created, last used, permissions, usage. Never tokens.
    List,
    /// Show one key.
    Show {
        /// The key id (key_...).
        id: String,
    },
    /// Issue a new token for a key; the old token stops working at once unless --grace.
    Regenerate {
        /// The key id (key_...).
        id: String,
        /// Keep the old token valid this long (e.g. 1h) so consumers can switch over.
        #[arg(long, value_parser = parse_secs, value_name = "DURATION")]
        grace: Option<u64>,
    },
    /// Revoke a key for good: its token then verifies as 401 revoked.
    Revoke {
        /// The key id (key_...).
        id: String,
        /// Why, for the audit log.
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
    },
}

#[derive(Args)]
pub struct CreateArgs {
    /// A label for people, e.g. Backend-Server-Key.
    #[arg(long)]
    name: String,
    /// What the key may do: read, write, delete, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        required = true,
        value_name = "PERMISSIONS"
    )]
    permissions: Vec<Permission>,
    /// An environment label (production, staging, ...); verify can require it.
    #[arg(long, value_name = "ENV")]
    environment: Option<String>,
    /// Make the key expire after this long, e.g. 90d or 365d.
    #[arg(long, value_parser = parse_secs, value_name = "DURATION")]
    expires_in: Option<u64>,
}

fn parse_secs(text: &str) -> Result<u64, String> {
    crate::time::parse_duration(text).map(|d| d.as_secs())
}

pub fn run(command: KeysCommand, context: &Context) -> Result<ExitCode> {
    let mut client = context.client();
    match command {
        KeysCommand::Create(args) => {
            let created = client.create_key(CreateKey {
                name: args.name,
                permissions: args.permissions,
                environment: args.environment,
                expires_in_secs: args.expires_in,
            })?;
            print_issued(&created, context.json, "Created");
        }
        KeysCommand::List => {
            let keys = client.list_keys()?;
            if context.json {
                output::print_json(&json!(keys.iter().map(key_json).collect::<Vec<_>>()));
            } else if keys.is_empty() {
                println!("No keys yet: create one with `authenta-keyd keys create --name NAME --permissions read`.");
            } else {
                print_list(&keys);
            }
        }
        KeysCommand::Show { id } => {
            let key = client.show_key(&id)?;
            if context.json {
                output::print_json(&key_json(&key));
            } else {
                print_key(&key);
            }
        }
        KeysCommand::Regenerate { id, grace } => {
            let issued = client
                .regenerate(&id, grace)
                .with_context(|| format!("cannot regenerate {}", shown_id(&id)))?;
            print_issued(&issued, context.json, "Regenerated");
        }
        KeysCommand::Revoke { id, reason } => {
            let key = client
                .revoke(&id, reason)
                .with_context(|| format!("cannot revoke {}", shown_id(&id)))?;
            if context.json {
                output::print_json(&key_json(&key));
            } else {
                println!(
                    "Revoked {} at {}: its token now verifies as 401 revoked.",
                    key.id,
                    time_or(key.revoked_at, "now")
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// An id as it may appear in a message: only when it has a key id's shape, never a token.
fn shown_id(id: &str) -> &str {
    if id.starts_with("key_")
        && id.len() <= 40
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        id
    } else {
        "that key"
    }
}

/// Prints a fresh token: on stdout alone (so `TOKEN=$(authenta-keyd keys create ...)` works),
/// with the details and the warning on stderr; or one JSON object.
fn print_issued(issued: &NewToken, json: bool, verb: &str) {
    let key = &issued.key;
    if json {
        output::print_json(&json!({
            "id": key.id,
            "name": key.name,
            "token": issued.token,
            "start": key.start,
            "permissions": output::permission_names(&key.permissions),
            "environment": key.environment,
            "created_at": time(key.created_at),
            "rotated_at": output::time_or_null(key.rotated_at),
            "expires_at": output::time_or_null(key.expires_at),
            "grace_until": output::time_or_null(key.grace_until),
        }));
    } else {
        eprintln!("{verb} key {} ({})", key.id, key.name);
        eprintln!("  permissions: {}", permission_list(&key.permissions));
        eprintln!(
            "  environment: {}",
            key.environment.as_deref().unwrap_or("(none)")
        );
        eprintln!("  expires:     {}", time_or(key.expires_at, "never"));
        if let Some(until) = key.grace_until {
            eprintln!("  old token valid until {}", time(until));
        }
        println!("{}", issued.token);
    }
    eprintln!(
        "warning: this token is shown only once and cannot be shown again; store it in a \
         secret manager or environment variable now."
    );
}

fn usage_text(key: &KeyInfo) -> String {
    format!(
        "{} ({} ok, {} denied)",
        key.usage.verifications, key.usage.allowed, key.usage.denied
    )
}

fn print_list(keys: &[KeyInfo]) {
    let rows: Vec<Vec<String>> = keys
        .iter()
        .map(|k| {
            vec![
                k.id.clone(),
                k.name.clone(),
                format!("api_{}...", k.start),
                permission_list(&k.permissions),
                k.environment.clone().unwrap_or_else(|| "-".into()),
                k.state.as_str().into(),
                time(k.created_at),
                time_or(k.last_used_at, "never"),
                match (k.rotate_by, k.rotation_due) {
                    (Some(at), true) => format!("{} DUE", time(at)),
                    (Some(at), false) => time(at),
                    (None, _) => "-".into(),
                },
                usage_text(k),
            ]
        })
        .collect();
    output::print_table(
        &[
            "ID",
            "NAME",
            "START",
            "PERMISSIONS",
            "ENV",
            "STATE",
            "CREATED",
            "LAST USED",
            "USAGE",
        ],
        &rows,
    );
}

fn print_key(key: &KeyInfo) {
    println!("id:           {}", key.id);
    println!("name:         {}", key.name);
    println!("start:        api_{}...", key.start);
    println!("permissions:  {}", permission_list(&key.permissions));
    println!(
        "environment:  {}",
        key.environment.as_deref().unwrap_or("(none)")
    );
    println!("state:        {}", key.state.as_str());
    println!("created:      {}", time(key.created_at));
    println!("rotated:      {}", time_or(key.rotated_at, "never"));
    println!("last used:    {}", time_or(key.last_used_at, "never"));
    println!("expires:      {}", time_or(key.expires_at, "never"));
    if let Some(at) = key.rotate_by {
        let due = if key.rotation_due {
            " (DUE: rotate it now)"
        } else {
            ""
        };
        println!("rotate by:    {}{due}", time(at));
    }
    if let Some(at) = key.revoked_at {
        println!("revoked:      {}", time(at));
    }
    if let Some(until) = key.grace_until {
        println!("old token ok: until {}", time(until));
    }
    println!("usage:        {}", usage_text(key));
}
