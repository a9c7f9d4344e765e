//! `--fleet`: a 3-server JetStream cluster and three daemons on loopback. How long a
//! revocation on one node takes to reach the others, and durable creates and verify
//! throughput on a fleet node next to a single-host daemon in the same run.

use crate::creates::{self, Creates};
use crate::daemon::Keyd;
use crate::load::{self, Measured, Shape, Timing};
use crate::nats::Cluster;
use crate::report::Figures;
use crate::seed;
use crate::stats::{nanos, Latency};
use crate::workload::Workload;
use anyhow::{bail, Context, Result};
use authenta_client::proto::VerifyCode;
use authenta_client::Client;
use serde::Serialize;
use std::path::Path;
use std::time::{Duration, Instant};

#[derive(Debug, Serialize)]
pub struct FleetFigures {
    pub trials: usize,
    /// Revoke sent on node a -> first 401 on node b, and on node c.
    pub propagation_b: Latency,
    pub propagation_c: Latency,
    pub creates_fleet: Creates,
    pub creates_single: Creates,
    pub verify: Vec<VerifyRow>,
}

#[derive(Debug, Serialize)]
pub struct VerifyRow {
    pub shape: &'static str,
    pub fleet: Measured,
    pub single: Measured,
}

pub fn run(
    bin: &Path,
    shapes: &[Shape],
    timing: Timing,
    rounds: usize,
    trials: usize,
    create_clients: usize,
    keys: usize,
) -> Result<FleetFigures> {
    let cluster = Cluster::start(3)?;
    let master = crate::daemon::random_master_key()?;
    let nodes = ["a", "b", "c"]
        .iter()
        .map(|n| Keyd::start_with_master_key(bin, &cluster.fleet_config(n), master))
        .collect::<Result<Vec<_>>>()?;
    for node in &nodes {
        wait_joined(node.socket())?;
    }
    let single = Keyd::start(bin, "")?;
    eprintln!("fleet: propagation over {trials} revocations...");
    let (propagation_b, propagation_c) = propagation(&nodes, trials)?;
    eprintln!("fleet: durable creates, {create_clients} clients, fleet then single host...");
    let creates_fleet = creates::run(nodes[0].socket(), create_clients, timing.duration)?;
    let creates_single = creates::run(single.socket(), create_clients, timing.duration)?;
    eprintln!("fleet: verify, {keys} keys on a fleet node and on a single host...");
    let verify = verify(&nodes, &single, shapes, timing, rounds, keys)?;
    Ok(FleetFigures {
        trials,
        propagation_b,
        propagation_c,
        creates_fleet,
        creates_single,
        verify,
    })
}

fn wait_joined(socket: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = Client::connect(socket).and_then(|mut c| c.status());
        if status.is_ok_and(|s| s.fleet.is_some_and(|f| f.joined && f.connected)) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("a fleet node did not join within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until every node has applied everything any node has.
fn wait_settled(nodes: &[Keyd]) -> Result<()> {
    let applied = |node: &Keyd| -> Result<u64> {
        let status = Client::connect(node.socket())?.status()?;
        Ok(status.fleet.map_or(0, |f| f.applied_seq))
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let seqs = nodes.iter().map(applied).collect::<Result<Vec<_>>>()?;
        if seqs.iter().all(|s| Some(s) == seqs.iter().max()) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the fleet's nodes did not catch up within 120 s: {seqs:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Each trial revokes a fresh key on a while b and c ask for it in a loop.
fn propagation(nodes: &[Keyd], trials: usize) -> Result<(Latency, Latency)> {
    let seeded = seed::seed(nodes[0].socket(), trials, 2, false)?;
    for key in &seeded.keys {
        for node in &nodes[1..] {
            until_code(node.socket(), &key.token, VerifyCode::Valid, Instant::now())?;
        }
    }
    let mut admin = Client::connect(nodes[0].socket())?;
    let (mut b, mut c) = (Vec::new(), Vec::new());
    for key in &seeded.keys {
        let started = Instant::now();
        let poll =
            |node: &Keyd| until_code(node.socket(), &key.token, VerifyCode::Revoked, started);
        let (to_b, to_c, revoked) = std::thread::scope(|scope| {
            let to_b = scope.spawn(|| poll(&nodes[1]));
            let to_c = scope.spawn(|| poll(&nodes[2]));
            let revoked = admin.revoke(&key.id, None);
            (to_b.join(), to_c.join(), revoked)
        });
        revoked.context("revoke on node a")?;
        b.push(nanos(joined(to_b)?));
        c.push(nanos(joined(to_c)?));
    }
    Ok((Latency::from_nanos(&mut b), Latency::from_nanos(&mut c)))
}

fn joined(poller: std::thread::Result<Result<Duration>>) -> Result<Duration> {
    poller.map_err(|_| anyhow::anyhow!("a poller panicked"))?
}

/// Asks `socket` for `token` until it answers `code`; the time since `started`.
fn until_code(socket: &Path, token: &str, code: VerifyCode, started: Instant) -> Result<Duration> {
    let mut client = Client::connect(socket)?;
    let request = authenta_client::proto::VerifyRequest {
        token: token.to_owned(),
        permissions: vec![],
        environment: None,
        cost: None,
    };
    loop {
        if client.verify_answer(request.clone())?.code == code {
            return Ok(started.elapsed());
        }
        if started.elapsed() > Duration::from_secs(10) {
            bail!("a node did not answer {code:?} within 10 s");
        }
    }
}

/// The same verify load on a fleet node and on the single host, alternating rounds.
fn verify(
    nodes: &[Keyd],
    single: &Keyd,
    shapes: &[Shape],
    timing: Timing,
    rounds: usize,
    keys: usize,
) -> Result<Vec<VerifyRow>> {
    let fleet = &nodes[1];
    let on_fleet = seed::seed(fleet.socket(), keys, 4, false)?;
    // The other nodes apply the seeded keys too: measured only once they are done, so that
    // their catching up does not take the cores from the measured node.
    wait_settled(nodes)?;
    let on_single = seed::seed(single.socket(), keys, 4, false)?;
    let fleet_work = Workload::build(&on_fleet.keys)?;
    let single_work = Workload::build(&on_single.keys)?;
    let mut rows = Vec::new();
    for &shape in shapes {
        let (mut f, mut s) = (Vec::new(), Vec::new());
        for _ in 0..rounds.max(1) {
            f.push(load::drive(
                fleet.socket(),
                &fleet_work,
                shape,
                timing,
                fleet.pid(),
            )?);
            s.push(load::drive(
                single.socket(),
                &single_work,
                shape,
                timing,
                single.pid(),
            )?);
        }
        rows.push(VerifyRow {
            shape: shape.name,
            fleet: load::median(f),
            single: load::median(s),
        });
    }
    Ok(rows)
}

impl Figures for FleetFigures {
    fn text(&self) -> String {
        let mut out = String::new();
        let line = |name: &str, l: &Latency| {
            format!("  revoke on a -> first 401 on {name}: p50 {:.2} ms, p99 {:.2} ms, worst {:.2} ms\n", l.p50_us / 1000.0, l.p99_us / 1000.0, l.max_us / 1000.0)
        };
        out.push_str(&format!(
            "fleet: 3 nats-server (R3) and 3 daemons on loopback; {} trials\n",
            self.trials
        ));
        out.push_str(&line("b", &self.propagation_b));
        out.push_str(&line("c", &self.propagation_c));
        out.push_str(&format!(
            "  durable creates, {} clients: fleet {:.0}/s (p50 {:.2} ms), single host {:.0}/s (p50 {:.2} ms), ratio {:.2}\n",
            self.creates_fleet.clients,
            self.creates_fleet.per_sec,
            self.creates_fleet.latency.p50_us / 1000.0,
            self.creates_single.per_sec,
            self.creates_single.latency.p50_us / 1000.0,
            self.creates_fleet.per_sec / self.creates_single.per_sec.max(1e-9)
        ));
        for row in &self.verify {
            out.push_str(&format!(
                "  verify {}: fleet node {:.0} ops/s, single host {:.0} ops/s, ratio {:.2}\n",
                row.shape,
                row.fleet.ops_per_sec,
                row.single.ops_per_sec,
                row.fleet.ops_per_sec / row.single.ops_per_sec.max(1e-9)
            ));
        }
        out
    }

    fn wrong_answers(&self) -> u64 {
        self.verify
            .iter()
            .map(|r| r.fleet.wrong_answers + r.single.wrong_answers)
            .sum()
    }
}
