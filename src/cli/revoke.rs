//! `authenta-keyd keys revoke ID... [--reason TEXT]`: one key, or many at once (an incident's
//! list, `-` for ids on stdin), pipelined so that the daemon revokes them in shared commits.

use super::exit;
use super::keys::shown_id;
use super::output::{self, key_json, say, time_or};
use super::Context;
use anyhow::{Context as _, Result};
use authenta_client::proto::KeyInfo;
use serde_json::{json, Value};
use std::io::BufRead;
use std::process::ExitCode;

/// Most ids one command takes: stdin is read whole before anything is sent, so it is bounded.
const MOST_IDS: usize = 1_000_000;

/// Revokes `ids` (`-` alone: read them from stdin, one a line).
pub fn run(ids: Vec<String>, reason: Option<String>, context: &Context) -> Result<ExitCode> {
    let ids = match ids.as_slice() {
        [dash] if dash == "-" => read_ids(std::io::stdin().lock())?,
        _ => ids,
    };
    let mut client = context.client();
    if let [id] = ids.as_slice() {
        let key = client
            .revoke(id, reason)
            .with_context(|| format!("cannot revoke {}", shown_id(id)))?;
        print_revoked(&key, context.json);
        return Ok(ExitCode::SUCCESS);
    }
    let results = client.revoke_many(&ids, reason).context(
        "cannot revoke the keys: some may be revoked already; running the same command again \
         is safe",
    )?;
    let (mut failed, mut first_code) = (0, None);
    let mut json = Vec::new();
    for (id, result) in ids.iter().zip(results) {
        match result {
            Ok(key) if context.json => json.push(key_json(&key)),
            Ok(key) => print_revoked(&key, false),
            Err(e) => {
                let message = e.to_string();
                let (code, word) = exit::classify(&anyhow::Error::new(e));
                failed += 1;
                first_code.get_or_insert(code);
                let id = shown_id(id);
                if context.json {
                    json.push(json!({ "id": id, "error": { "code": word, "message": message } }));
                } else {
                    eprintln!("error: cannot revoke {id}: {message}");
                }
            }
        }
    }
    if context.json {
        output::print_json(&Value::Array(json));
    } else if failed > 0 {
        let revoked = ids.len() - failed;
        eprintln!(
            "Revoked {revoked} of {} keys; {failed} failed (above).",
            ids.len()
        );
    }
    Ok(first_code.map_or(ExitCode::SUCCESS, ExitCode::from))
}

fn print_revoked(key: &KeyInfo, json: bool) {
    if json {
        output::print_json(&key_json(key));
    } else {
        say!(
            "Revoked {} at {}: its token now verifies as 401 revoked.",
            key.id,
            time_or(key.revoked_at, "now")
        );
    }
}

/// Key ids from `input`, one a line; blank lines and `#` comments are skipped.
fn read_ids(input: impl BufRead) -> Result<Vec<String>> {
    let mut ids = Vec::new();
    for line in input.lines() {
        let line = line.context("cannot read key ids from stdin")?;
        let id = line.split('#').next().unwrap_or_default().trim();
        if id.is_empty() {
            continue;
        }
        if ids.len() == MOST_IDS {
            return Err(exit::UsageError(format!(
                "more than {MOST_IDS} key ids: revoke them in parts"
            ))
            .into());
        }
        ids.push(id.to_owned());
    }
    if ids.is_empty() {
        return Err(exit::UsageError("no key ids on stdin (one a line)".into()).into());
    }
    Ok(ids)
}
