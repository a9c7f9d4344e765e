//! `authenta-keyd status`.

use super::output;
use super::Context;
use anyhow::Result;
use authenta_client::proto::StatusInfo;
use serde_json::json;
use std::process::ExitCode;

pub fn run(context: &Context) -> Result<ExitCode> {
    let status = context.client().status()?;
    if context.json {
        print_json(&status);
    } else {
        print_text(&status);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_json(status: &StatusInfo) {
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
        "development_key": status.development_key,
        "newest_audit_at": output::time_or_null(status.newest_audit_at),
        "fleet": status.fleet.as_ref().map(|f| json!({
            "connected": f.connected,
            "joined": f.joined,
            "node": f.node,
            "servers": f.servers,
            "applied_seq": f.applied_seq,
            "lag": f.lag,
            "disconnected_since": f.disconnected_since,
            "refused_messages": f.refused_messages,
            "resyncs": f.resyncs,
        })),
    }));
}

fn print_text(status: &StatusInfo) {
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
    if let Some(at) = status.newest_audit_at {
        println!("newest audit:  {}", output::time(at));
    }
    if status.development_key {
        println!(
            "MASTER KEY:    the development key next to the data (every backup carries it): \
             use --master-key-file or a systemd credential in production"
        );
    }
    if let Some(fleet) = &status.fleet {
        let state = match (fleet.connected, fleet.joined) {
            (true, true) => "connected".to_owned(),
            (true, false) => "connected, not joined (see the daemon's log)".to_owned(),
            (false, _) => match fleet.disconnected_since {
                Some(at) => format!("DISCONNECTED since {}", output::time(at)),
                None => "DISCONNECTED".to_owned(),
            },
        };
        println!("fleet:         node {} ({state})", fleet.node);
        println!("               servers {}", fleet.servers.join(", "));
        println!(
            "               applied seq {}, lag {}, refused messages {}, resyncs {}",
            fleet.applied_seq, fleet.lag, fleet.refused_messages, fleet.resyncs
        );
    }
    if !status.corrupt_keys.is_empty() {
        println!(
            "CORRUPT:       {} (refused until restored from backup)",
            status.corrupt_keys.join(", ")
        );
    }
}
