//! `authenta-keyd verify`: check a token as an app would. The token comes from AUTHENTA_KEY
//! or one line of stdin, never from arguments, which other users can read in `ps`.

use super::output;
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
    /// A permission the key must hold; repeat for several (read, write, delete).
    #[arg(long = "permission", value_name = "P")]
    permissions: Vec<Permission>,
    /// The environment label the key must carry.
    #[arg(long, value_name = "ENV")]
    environment: Option<String>,
}

pub fn run(args: VerifyArgs, context: &Context) -> ExitCode {
    let token = match read_token() {
        Ok(token) => token,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::FAILURE;
        }
    };
    let request = VerifyRequest {
        token: token.to_string(),
        permissions: args.permissions,
        environment: args.environment,
    };
    let answer = match context.client().verify_answer(request) {
        Ok(answer) => answer,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
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
        }));
    } else {
        println!(
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
    match status {
        200 => ExitCode::SUCCESS,
        403 => ExitCode::from(43),
        _ => ExitCode::from(41),
    }
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
