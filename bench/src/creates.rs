//! Durable `create` throughput: several admin clients, each waiting for its create to be
//! committed (WAL, `synchronous=FULL`) before sending the next, as operators' scripts or a
//! provisioning service would. The daemon's group commit is what lets them share fsyncs.

use crate::stats::{nanos, Latency};
use anyhow::{bail, Context, Result};
use authenta_client::proto::{CreateKey, Permission};
use authenta_client::Client;
use serde::Serialize;
use std::path::Path;
use std::sync::Barrier;
use std::time::{Duration, Instant};

/// What the create run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Creates {
    pub clients: usize,
    pub creates: u64,
    pub secs: f64,
    pub per_sec: f64,
    /// From sending a create to its answer, which comes after the commit.
    pub latency: Latency,
}

/// Runs `clients` create loops against the daemon at `socket` for `duration`.
pub fn run(socket: &Path, clients: usize, duration: Duration) -> Result<Creates> {
    let ready = Barrier::new(clients + 1);
    let (results, secs) = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..clients)
            .map(|c| {
                let ready = &ready;
                scope.spawn(move || -> Result<Vec<u32>> {
                    let client = Client::connect(socket);
                    ready.wait();
                    let mut client = client.context("connecting an admin client")?;
                    client.set_timeout(Some(Duration::from_secs(30)));
                    let deadline = Instant::now() + duration;
                    let mut samples = Vec::new();
                    while Instant::now() < deadline {
                        let sent = Instant::now();
                        client
                            .create_key(CreateKey {
                                name: format!("bench-create-{c}-{}", samples.len()),
                                permissions: vec![Permission::Read],
                                environment: Some("staging".into()),
                                expires_in_secs: None,
                                ..Default::default()
                            })
                            .context("a durable create failed")?;
                        samples.push(nanos(sent.elapsed()));
                    }
                    Ok(samples)
                })
            })
            .collect();
        ready.wait();
        let started = Instant::now();
        let results: Vec<Result<Vec<u32>>> = threads
            .into_iter()
            .map(|t| {
                t.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a create thread panicked")))
            })
            .collect();
        (results, started.elapsed().as_secs_f64())
    });
    let mut samples = Vec::new();
    for r in results {
        samples.extend(r?);
    }
    if samples.is_empty() {
        bail!("no create completed");
    }
    let creates = samples.len() as u64;
    Ok(Creates {
        clients,
        creates,
        secs,
        per_sec: creates as f64 / secs,
        latency: Latency::from_nanos(&mut samples),
    })
}
