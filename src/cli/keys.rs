//! `authenta-keyd keys ...`: create, list, show, update, regenerate and revoke.

use super::output::say;
use super::output::{self, key_json, permission_list, time, time_or};
use super::Context;
use anyhow::{Context as _, Result};
use authenta_client::proto::{CreateKey, KeyInfo, NewToken, Permission, RateLimit, Refill};
use clap::{Args, Subcommand};
use serde_json::json;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Create a key. Its token is printed once, on stdout, and never again.
    Create(CreateArgs),
    /// List keys, by creation time (newest last): created, last used, expiry, permissions,
    /// usage. Never tokens.
    List {
        /// Only the keys of this owner.
        #[arg(long, value_name = "ID")]
        owner: Option<String>,
    },
    /// Show one key.
    Show {
        /// The key id (key_...).
        id: String,
    },
    /// Change a key in place (name, permissions, environment, expiry, owner, metadata,
    /// limits); its token stays the same.
    Update(super::update::UpdateArgs),
    /// Issue a new token for a key; the old token stops working at once unless --grace.
    Regenerate {
        /// The key id (key_...).
        id: String,
        /// Keep the old token valid this long (e.g. 1h) so consumers can switch over.
        #[arg(long, value_parser = parse_secs, value_name = "DURATION", allow_hyphen_values = true)]
        grace: Option<u64>,
        /// Give the key a new expiry this long from now (needed for a key past its own).
        #[arg(long, value_parser = parse_secs, value_name = "DURATION", allow_hyphen_values = true)]
        expires_in: Option<u64>,
    },
    /// Revoke keys for good: their tokens then verify as 401 revoked.
    ///
    /// Several ids (or `-` to read them from stdin, one a line, `#` comments allowed) are
    /// sent together, so the daemon revokes them in shared commits. Revoking a revoked key
    /// changes nothing, so a command that failed part-way can be run again. Exit 0 only
    /// when every key was revoked; else the code of the first that failed (66: no such key).
    ///
    /// Examples:
    ///   authenta-keyd keys revoke key_XXXXXXXXXXXXXXXX --reason "staff change"
    ///   authenta-keyd keys revoke key_AAAAAAAAAAAAAAAA key_BBBBBBBBBBBBBBBB
    ///   grep -o 'key_[A-Za-z0-9]*' incident.txt | authenta-keyd keys revoke - --reason INC-42
    #[command(verbatim_doc_comment)]
    Revoke {
        /// The key ids (key_...), or `-` to read them from stdin.
        #[arg(required = true, value_name = "ID")]
        ids: Vec<String>,
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
    #[arg(long, value_parser = parse_secs, value_name = "DURATION", allow_hyphen_values = true)]
    expires_in: Option<u64>,
    /// The tenant the key belongs to (at most 128 characters); verify answers carry it.
    #[arg(long, value_name = "ID")]
    owner: Option<String>,
    /// Metadata handed back with every verify answer (repeatable; at most 1 KiB as JSON).
    #[arg(long, value_name = "KEY=VALUE")]
    meta: Vec<String>,
    /// Rate limit: requests per window, e.g. 100/1s (over it: 429 rate_limited).
    #[arg(long, value_parser = super::limits::parse_ratelimit, value_name = "LIMIT/WINDOW")]
    ratelimit: Option<RateLimit>,
    /// A credit balance: each verify spends its cost (default 1); at 0, 429 usage_exceeded.
    #[arg(long, value_name = "N")]
    remaining: Option<u64>,
    /// Set the balance back to AMOUNT every INTERVAL, e.g. 1000/1d (needs --remaining).
    #[arg(long, value_parser = super::limits::parse_refill, value_name = "AMOUNT/INTERVAL", requires = "remaining")]
    refill: Option<Refill>,
}

pub(super) fn parse_secs(text: &str) -> Result<u64, String> {
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
                owner_id: args.owner,
                meta: super::limits::meta_of(args.meta)?,
                ratelimit: args.ratelimit,
                remaining: args.remaining,
                refill: args.refill,
            })?;
            print_issued(&created, context.json, "Created");
        }
        KeysCommand::List { owner } => {
            let mut keys = client.list_keys_of(owner.as_deref())?;
            keys.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
            if context.json {
                output::print_json(&json!(keys.iter().map(key_json).collect::<Vec<_>>()));
            } else if keys.is_empty() {
                say!("No keys yet: create one with `authenta-keyd keys create --name NAME --permissions read`.");
            } else {
                print_list(&keys);
            }
        }
        KeysCommand::Show { id } => {
            let key = client.show_key(&id)?;
            print_shown(&key, context.json);
        }
        KeysCommand::Update(args) => super::update::run(args, context)?,
        KeysCommand::Regenerate {
            id,
            grace,
            expires_in,
        } => {
            let issued = client
                .regenerate_with_expiry(&id, grace, expires_in)
                .with_context(|| format!("cannot regenerate {}", shown_id(&id)))?;
            print_issued(&issued, context.json, "Regenerated");
        }
        KeysCommand::Revoke { ids, reason } => return super::revoke::run(ids, reason, context),
    }
    Ok(ExitCode::SUCCESS)
}

/// One key: its fields for people, or its JSON.
pub(super) fn print_shown(key: &KeyInfo, json: bool) {
    if json {
        output::print_json(&key_json(key));
    } else {
        print_key(key);
    }
}

/// An id as it may appear in a message: only when it has a key id's shape, never a token.
pub(super) fn shown_id(id: &str) -> &str {
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
            "start": output::start(key),
            "permissions": output::permission_names(&key.permissions),
            "environment": key.environment,
            "created_at": time(key.created_at),
            "rotated_at": output::time_or_null(key.rotated_at),
            "expires_at": output::time_or_null(key.expires_at),
            "grace_until": output::time_or_null(key.grace_until),
        }));
    } else {
        eprintln!("{verb} key {} ({})", key.id, output::shown(&key.name));
        eprintln!("  permissions: {}", permission_list(&key.permissions));
        eprintln!(
            "  environment: {}",
            key.environment.as_deref().unwrap_or("(none)")
        );
        eprintln!("  expires:     {}", time_or(key.expires_at, "never"));
        if let Some(until) = key.grace_until {
            eprintln!("  old token valid until {}", time(until));
        }
        say!("{}", issued.token);
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
    let now = crate::time::now_ms();
    let rows: Vec<Vec<String>> = keys.iter().map(|k| list_row(k, now)).collect();
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
            "EXPIRES",
            "ROTATE BY",
            "USAGE",
        ],
        &rows,
    );
}

/// One key's cells, in the order of the header above.
fn list_row(k: &KeyInfo, now: i64) -> Vec<String> {
    vec![
        k.id.clone(),
        output::shown(&k.name).into_owned(),
        output::start(k),
        permission_list(&k.permissions),
        k.environment.clone().unwrap_or_else(|| "-".into()),
        k.state.as_str().into(),
        output::time_ago(Some(k.created_at), "-", now),
        output::time_ago(k.last_used_at, "never", now),
        output::time_ago(k.expires_at, "never", now),
        match (k.rotate_by, k.rotation_due) {
            (Some(at), true) => format!("{} DUE", time(at)),
            (Some(at), false) => time(at),
            (None, _) => "-".into(),
        },
        usage_text(k),
    ]
}

fn print_key(key: &KeyInfo) {
    say!("id:           {}", key.id);
    say!("name:         {}", output::shown(&key.name));
    say!("start:        {}", output::start(key));
    say!("permissions:  {}", permission_list(&key.permissions));
    say!(
        "environment:  {}",
        key.environment.as_deref().unwrap_or("(none)")
    );
    say!("state:        {}", key.state.as_str());
    say!("created:      {}", time(key.created_at));
    say!("rotated:      {}", time_or(key.rotated_at, "never"));
    say!("last used:    {}", time_or(key.last_used_at, "never"));
    say!("expires:      {}", time_or(key.expires_at, "never"));
    if let Some(at) = key.rotate_by {
        let due = if key.rotation_due {
            " (DUE: rotate it now)"
        } else {
            ""
        };
        say!("rotate by:    {}{due}", time(at));
    }
    if let Some(at) = key.revoked_at {
        say!("revoked:      {}", time(at));
    }
    if let Some(until) = key.grace_until {
        say!("old token ok: until {}", time(until));
    }
    say!("usage:        {}", usage_text(key));
    for line in super::limits::key_lines(key) {
        say!("{line}");
    }
}
