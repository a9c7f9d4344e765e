//! `authenta-keyd health`: is the daemon ready? For monitoring: any user that may connect to
//! the socket may ask, not only admins.

use super::output;
use super::output::say;
use super::Context;
use anyhow::Result;
use serde_json::json;
use std::process::ExitCode;

/// Exit 0 when ready, 1 when the daemon answers but is not ready; an unreachable daemon
/// fails like every other command.
pub fn run(context: &Context) -> Result<ExitCode> {
    let mut client = context.client();
    client.set_timeout(Some(std::time::Duration::from_secs(5)));
    let report = client.health()?;
    if context.json {
        output::print_json(&json!({
            "ready": report.ready,
            "store": report.store,
            "policy": report.policy,
            "fleet_connected": report.fleet_connected,
            "problems": report.problems,
        }));
    } else {
        say!("{}", if report.ready { "ready" } else { "not ready" });
        say!(
            "store:  {}",
            if report.store {
                "answers"
            } else {
                "does not answer"
            }
        );
        say!("policy: {}", report.policy);
        if let Some(connected) = report.fleet_connected {
            say!(
                "fleet:  {}",
                if connected {
                    "connected"
                } else {
                    "disconnected"
                }
            );
        }
        for problem in &report.problems {
            say!("problem: {problem}");
        }
    }
    Ok(if report.ready {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
