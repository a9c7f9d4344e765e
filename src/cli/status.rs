//! `authenta-keyd status`.

use super::output;
use super::output::say;
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
        "corrupt_total": status.corrupt_total,
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
    say!("authenta-keyd {}", status.version);
    say!(
        "uptime:        {}",
        crate::time::format_secs(status.uptime_secs)
    );
    say!("socket:        {}", status.socket);
    say!("data dir:      {}", status.data_dir);
    say!(
        "keys:          {} ({} active, {} revoked, {} expired)",
        status.keys.total,
        status.keys.active,
        status.keys.revoked,
        status.keys.expired
    );
    say!("connections:   {}", status.connections);
    say!("verifications: {}", status.verifications);
    if let Some(error) = &status.policy_error {
        say!("POLICY ERROR:  {error}");
    }
    if status.rotation_failures > 0 {
        say!(
            "ROTATIONS:     {} failing (see `authenta-keyd policy status`)",
            status.rotation_failures
        );
    }
    if let Some(at) = status.newest_audit_at {
        say!("newest audit:  {}", output::time(at));
    }
    if status.development_key {
        say!(
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
        say!("fleet:         node {} ({state})", fleet.node);
        say!("               servers {}", fleet.servers.join(", "));
        say!(
            "               applied seq {}, lag {}, refused messages {}, resyncs {}",
            fleet.applied_seq,
            fleet.lag,
            fleet.refused_messages,
            fleet.resyncs
        );
    }
    if status.corrupt_total > 0 {
        let listed = status.corrupt_keys.len() as u64;
        let cut = if listed < status.corrupt_total {
            format!(" (the first {listed} listed; the daemon's log names every one)")
        } else {
            String::new()
        };
        say!(
            "CORRUPT:       {} keys, refused until restored from backup{cut}: {}",
            status.corrupt_total,
            status.corrupt_keys.join(", ")
        );
    }
}
