//! `authenta-keyd verify`: check a token as an app would. The token comes from AUTHENTA_KEY
//! or one line of stdin, never from arguments, which other users can read in `ps`.

use super::exit::{self, UsageError};
use super::output;
use super::output::say;
use super::Context;
use authenta_client::proto::{Permission, VerifyRequest};
use clap::Args;
use serde_json::json;
use std::io::{BufRead, Read};
use std::process::ExitCode;
use zeroize::Zeroizing;

/// Longest line read from stdin: far above a token's length, bounded all the same.
const MAX_LINE: u64 = 4096;

#[derive(Args)]
pub struct VerifyArgs {
    /// Permissions the key must hold: read, write, delete; a comma list or repeated.
    #[arg(
        long = "permission",
        visible_alias = "permissions",
        value_delimiter = ',',
        value_name = "P"
    )]
    permissions: Vec<Permission>,
    /// The environment label the key must carry.
    #[arg(long, value_name = "ENV")]
    environment: Option<String>,
    /// Credits this verify spends when the key (or its owner) has a balance; 0 checks
    /// without spending. Default 1.
    #[arg(long, value_name = "N")]
    cost: Option<u32>,
}

pub fn run(args: VerifyArgs, context: &Context) -> anyhow::Result<ExitCode> {
    let token = read_token().map_err(UsageError)?;
    let request = VerifyRequest {
        token: token.to_string(),
        permissions: args.permissions,
        environment: args.environment,
        cost: args.cost,
    };
    let answer = context.client().verify_answer(request)?;
    let status = answer.status();
    if context.json {
        output::print_json(&json!({
            "status": status,
            "code": answer.code.as_str(),
            "key_id": answer.key_id,
            "permissions": output::permission_names(&answer.permissions),
            "environment": answer.environment,
            "rotate_by": output::time_or_null(answer.rotate_by),
            "rotation_due": answer.rotation_due,
            "name": answer.name,
            "owner_id": answer.owner_id,
            "meta": answer.meta,
            "expires_at": output::time_or_null(answer.expires_at),
            "ratelimit": answer.ratelimit.map(|r| json!({
                "limit": r.limit,
                "remaining": r.remaining,
                "reset_at": output::time_or_null(Some(r.reset_at)),
                "retry_at": output::time_or_null(Some(r.retry_at)),
            })),
            "remaining": answer.remaining,
        }));
    } else {
        say!(
            "{status} {}{}",
            answer.code,
            answer
                .key_id
                .as_ref()
                .map(|id| format!(" ({id}: {})", output::permission_list(&answer.permissions)))
                .unwrap_or_default()
        );
    }
    if answer.rotation_due && !context.json {
        eprintln!(
            "warning: this key is due for rotation (rotate by {})",
            output::time_or(answer.rotate_by, "now")
        );
    }
    Ok(match status {
        200 => ExitCode::SUCCESS,
        403 => ExitCode::from(exit::MISSING_PERMISSION),
        429 => ExitCode::from(exit::LIMITED),
        _ => ExitCode::from(exit::INVALID_KEY),
    })
}

fn read_token() -> Result<Zeroizing<String>, String> {
    if let Some(token) = std::env::var_os("AUTHENTA_KEY") {
        return token
            .into_string()
            .map(|t| Zeroizing::new(t.trim().to_owned()))
            .map_err(|_| "AUTHENTA_KEY is not valid UTF-8".to_owned());
    }
    let mut line = Zeroizing::new(String::new());
    std::io::stdin()
        .lock()
        .take(MAX_LINE)
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the token from stdin: {e}"))?;
    let token = Zeroizing::new(line.trim().to_owned());
    if token.is_empty() {
        return Err("no token: set AUTHENTA_KEY or pipe the token on stdin".into());
    }
    Ok(token)
}
