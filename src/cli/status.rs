//! `authenta-keyd status`.

use super::output;
use super::Context;
use anyhow::Result;
use serde_json::json;
use std::process::ExitCode;

pub fn run(context: &Context) -> Result<ExitCode> {
    let status = context.client().status()?;
    if context.json {
        output::print_json(&json!({
            "version": status.version,
            "uptime_secs": status.uptime_secs,
            "socket": status.socket,
            "data_dir": status.data_dir,
            "keys": {
                "total": status.keys.total,
                "active": status.keys.active,
                "revoked": status.keys.revoked,
                "expired": status.keys.expired,
            },
            "corrupt_keys": status.corrupt_keys,
            "connections": status.connections,
            "verifications": status.verifications,
            "policy_error": status.policy_error,
            "rotation_failures": status.rotation_failures,
        }));
    } else {
        println!("authenta-keyd {}", status.version);
        println!(
            "uptime:        {}",
            crate::time::format_secs(status.uptime_secs)
        );
        println!("socket:        {}", status.socket);
        println!("data dir:      {}", status.data_dir);
        println!(
            "keys:          {} ({} active, {} revoked, {} expired)",
            status.keys.total, status.keys.active, status.keys.revoked, status.keys.expired
        );
        println!("connections:   {}", status.connections);
        println!("verifications: {}", status.verifications);
        if let Some(error) = &status.policy_error {
            println!("POLICY ERROR:  {error}");
        }
        if status.rotation_failures > 0 {
            println!(
                "ROTATIONS:     {} failing (see `authenta-keyd policy status`)",
                status.rotation_failures
            );
        }
        if !status.corrupt_keys.is_empty() {
            println!(
                "CORRUPT:       {} (refused until restored from backup)",
                status.corrupt_keys.join(", ")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
