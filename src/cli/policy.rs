//! `authenta-keyd policy check FILE` and `authenta-keyd policy status`.

use super::output::say;
use super::output::{self, time, time_or};
use super::Context;
use crate::key::{KeyRecord, Permissions};
use crate::policy::{parse::parse, Policy};
use anyhow::{Context as _, Result};
use clap::Subcommand;
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Validate a policy file and print what it would do; exit 1 when it is invalid. When
    /// the daemon answers (as an admin), also shows the effect on each of its keys.
    Check {
        /// The policy file (TOML).
        file: PathBuf,
        /// The daemon's config, for where sinks may go (`sink_dirs`, `sink_owners`)
        /// [default: /etc/authenta/keyd.toml when present]
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// The policy in force: file, content hash, loaded at, last error, next rotations.
    Status,
}

pub fn run(command: PolicyCommand, context: &Context) -> Result<ExitCode> {
    match command {
        PolicyCommand::Check { file, config } => check(&file, config.as_deref(), context),
        PolicyCommand::Status => status(context),
    }
}

fn check(file: &PathBuf, config: Option<&std::path::Path>, context: &Context) -> Result<ExitCode> {
    if let Err(untrusted) = crate::host::trust::check(file) {
        eprintln!("error: {untrusted}");
        return Ok(ExitCode::FAILURE);
    }
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let policy = match parse(&text) {
        Ok(policy) => policy,
        Err(e) => {
            eprintln!("error: {}: {e}", file.display());
            return Ok(ExitCode::FAILURE);
        }
    };
    let (config, _) = crate::config::Config::load(config)?;
    if let Err(refused) = config.sink_rules()?.check(&policy) {
        eprintln!("error: {}: {refused}", file.display());
        return Ok(ExitCode::FAILURE);
    }
    // The daemon's keys, when it can be asked; the file is checked either way.
    let keys = context.client().list_keys().ok();
    let now = crate::time::now_ms();
    let effects: Vec<serde_json::Value> = keys
        .iter()
        .flatten()
        .map(|key| {
            let record = record_of(key);
            let times = policy.times(&record);
            let revoked_by_file = policy.revocations.ids.contains(&key.id);
            json!({
                "id": key.id,
                "rule": policy.rotation.iter().position(|r| r.matches(&record)).map(|i| i + 1),
                "revoked_by_this_file": revoked_by_file,
                "expired_by_max_age": times.expires_at.is_some_and(|at| at <= now),
                "rotate_by": output::time_or_null(times.rotate_by),
                "next_scheduled_rotation": output::time_or_null(times.scheduled_at),
            })
        })
        .collect();
    if context.json {
        output::print_json(&json!({
            "file": file.display().to_string(),
            "valid": true,
            "rules": policy.rotation.len(),
            "revoke_ids": policy.revocations.ids,
            "revoke_token_sha256": policy.revocations.token_sha256.len(),
            "keys": effects,
        }));
    } else {
        print_summary(file, &policy);
        if keys.is_some() {
            for effect in &effects {
                say!(
                    "  {}: rule {}, rotate by {}{}{}",
                    effect["id"].as_str().unwrap_or_default(),
                    effect["rule"]
                        .as_u64()
                        .map_or("-".into(), |n| n.to_string()),
                    effect["rotate_by"].as_str().unwrap_or("never"),
                    if effect["expired_by_max_age"] == true {
                        ", EXPIRED by max_age"
                    } else {
                        ""
                    },
                    if effect["revoked_by_this_file"] == true {
                        ", REVOKED by this file"
                    } else {
                        ""
                    },
                );
            }
        } else {
            say!("(the daemon was not asked: its keys are not shown)");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_summary(file: &std::path::Path, policy: &Policy) {
    let show = |d: Option<std::time::Duration>| {
        d.map_or("-".to_owned(), |d| crate::time::format_secs(d.as_secs()))
    };
    say!("{}: valid", file.display());
    say!(
        "defaults: max_age {}, warn_before {}, regenerate_grace {}",
        show(policy.defaults.max_age),
        show(policy.defaults.warn_before),
        show(policy.defaults.regenerate_grace)
    );
    for (n, rule) in policy.rotation.iter().enumerate() {
        let mut matchers = Vec::new();
        if let Some(id) = &rule.id {
            matchers.push(format!("id {id}"));
        }
        if let Some(name) = &rule.name {
            matchers.push(format!("name {}", name.as_str()));
        }
        if let Some(env) = &rule.environment {
            matchers.push(format!("environment {env}"));
        }
        let schedule = match (&rule.every, &rule.sink) {
            (Some(every), Some(sink)) => format!(
                ", regenerate every {} with overlap {} into {}",
                crate::time::format_secs(every.as_secs()),
                crate::time::format_secs(rule.overlap.as_secs()),
                sink.path.display()
            ),
            _ => String::new(),
        };
        say!(
            "rule {}: {}: max_age {}, warn_before {}{schedule}",
            n + 1,
            matchers.join(", "),
            show(rule.max_age),
            show(rule.warn_before)
        );
    }
    say!(
        "revocations: {} key ids, {} token hashes (applied durably)",
        policy.revocations.ids.len(),
        policy.revocations.token_sha256.len()
    );
}

/// Enough of a key record to evaluate a policy against a listed key.
fn record_of(key: &authenta_client::proto::KeyInfo) -> KeyRecord {
    KeyRecord {
        id: key.id.clone(),
        token_hash: [0; 32],
        name: key.name.clone(),
        start: key.start.clone(),
        permissions: Permissions::from_list(&key.permissions),
        environment: key.environment.clone(),
        created_at: key.created_at,
        rotated_at: key.rotated_at,
        expires_at: key.expires_at,
        revoked_at: key.revoked_at,
        revoke_reason: None,
        grace: None,
        details: Default::default(),
    }
}

fn status(context: &Context) -> Result<ExitCode> {
    let report = context.client().policy_status()?;
    if context.json {
        output::print_json(&json!({
            "file": report.file,
            "content_sha256": report.content_sha256,
            "loaded_at": output::time_or_null(report.loaded_at),
            "last_error": report.last_error,
            "last_error_at": output::time_or_null(report.last_error_at),
            "rules": report.rules,
            "revoked_ids": report.revoked_ids,
            "revoked_hashes": report.revoked_hashes,
            "next_rotations": report.next_rotations.iter().map(|r| json!({
                "key_id": r.key_id, "at": time(r.at),
            })).collect::<Vec<_>>(),
            "rotation_failures": report.rotation_failures.iter().map(|f| json!({
                "key_id": f.key_id, "message": f.message, "retry_at": time(f.retry_at),
            })).collect::<Vec<_>>(),
        }));
        return Ok(ExitCode::SUCCESS);
    }
    say!(
        "file:        {}",
        report.file.as_deref().unwrap_or("(no policy)")
    );
    say!(
        "sha256:      {}",
        report.content_sha256.as_deref().unwrap_or("-")
    );
    say!("loaded at:   {}", time_or(report.loaded_at, "never"));
    say!(
        "rules:       {} ({} ids and {} token hashes revoked)",
        report.rules,
        report.revoked_ids,
        report.revoked_hashes
    );
    if let Some(error) = &report.last_error {
        say!(
            "LAST ERROR:  {error} (at {})",
            time_or(report.last_error_at, "?")
        );
    }
    for rotation in &report.next_rotations {
        say!("next:        {} at {}", rotation.key_id, time(rotation.at));
    }
    for failure in &report.rotation_failures {
        say!(
            "FAILING:     {}: {} (retry at {})",
            failure.key_id,
            failure.message,
            time(failure.retry_at)
        );
    }
    Ok(ExitCode::SUCCESS)
}
