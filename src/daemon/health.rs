//! Is the daemon ready? One answer for `/readyz` and for the socket's `Health` request.
//!
//! Ready means: the store thread answers (a wedged or dead writer would make every admin
//! change hang), the policy file named is in force, and in fleet mode the node is connected.
//! A policy file that failed to load while an earlier version stays in force is reported
//! (`stale`) but does not make the daemon unready: a bad push of the policy to every host
//! must not take every host out of its load balancer at once.

use crate::daemon::Daemon;
use crate::store::writer::Command;
use authenta_client::proto::HealthReport;
use std::time::Duration;

/// How long the store thread has to answer before the store counts as not answering.
const STORE_PATIENCE: Duration = Duration::from_secs(2);

/// The daemon's readiness now.
pub async fn check(daemon: &Daemon) -> HealthReport {
    let mut problems = Vec::new();
    let store =
        match tokio::time::timeout(STORE_PATIENCE, daemon.writer.submit(Command::Ping)).await {
            Ok(Ok(_)) => true,
            // The store thread answers, but its file is out of place ([`crate::store`]).
            Ok(Err(why)) => {
                problems.push(why.to_string());
                false
            }
            Err(_) => {
                problems.push("the store thread does not answer: see the daemon's log".to_string());
                false
            }
        };
    let policy = policy_state(daemon, &mut problems);
    let fleet_connected = daemon.fleet.as_ref().map(|fleet| fleet.status().connected);
    if fleet_connected == Some(false) {
        problems.push("not connected to the fleet's NATS servers".to_string());
    }
    HealthReport {
        ready: problems.is_empty(),
        store,
        policy: policy.to_string(),
        fleet_connected,
        problems,
    }
}

fn policy_state(daemon: &Daemon, problems: &mut Vec<String>) -> &'static str {
    let state = daemon.policy_state();
    match (&state.file, state.loaded_at, &state.last_error) {
        (None, _, _) => "none",
        (Some(_), None, Some(error)) => {
            problems.push(format!(
                "no version of the policy file is in force: {error}"
            ));
            "failed"
        }
        (Some(_), None, None) => "loading",
        (Some(_), Some(_), Some(_)) => "stale",
        (Some(_), Some(_), None) => "loaded",
    }
}
