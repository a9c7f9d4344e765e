//! Wiring a fleet node into `serve`: before the store thread starts, its link to the fleet
//! (the replica's position, where proposals go); once the runtime runs, the node itself.

use crate::config::FleetConfig;
use crate::fleet::nats::Nats;
use crate::fleet::node::{self, FleetState, NodeParts};
use crate::fleet::refused::RefusedChanges;
use crate::fleet::subjects::Subjects;
use crate::index::Index;
use crate::store::barrier::KeyBytes;
use crate::store::locked_key::LockedKey;
use crate::store::writer::{FleetLink, Proposal, WriterHandle};
use crate::store::Store;
use anyhow::{Context, Result};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// How long `serve` waits for the fleet at start before serving its replica without it.
const FIRST_TRY: Duration = Duration::from_secs(5);

/// A node set up but not started: what `start` needs once the runtime runs.
pub struct Pending {
    config: FleetConfig,
    node: String,
    master: LockedKey,
    proposals: mpsc::UnboundedReceiver<Proposal>,
    applied: watch::Receiver<u64>,
    kept_data_key: Option<Vec<u8>>,
    subjects: Subjects,
    /// The replica has applied no change in the current form yet.
    unbound: bool,
    refused_changes: Arc<RefusedChanges>,
}

/// The store thread's link to the fleet, and the node to start.
pub fn prepare(
    config: &FleetConfig,
    store: &Store,
    master: &KeyBytes,
) -> Result<(FleetLink, Pending)> {
    super::trusted_files::check(config)?;
    let position = store.fleet_position()?;
    let (proposals_tx, proposals) = mpsc::unbounded_channel();
    let (applied_tx, applied) = watch::channel(position.applied);
    let node = match &config.node {
        Some(node) => node.clone(),
        None => nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .context("cannot read the host name: set [fleet] node")?,
    };
    let subjects = Subjects::new(&config.name);
    let unbound = position.bound_since.is_none();
    let refused_changes = Arc::new(RefusedChanges::default());
    let link = FleetLink {
        node: node.clone(),
        subjects: subjects.clone(),
        refused_changes: refused_changes.clone(),
        proposals: proposals_tx,
        position,
        applied: applied_tx,
    };
    let pending = Pending {
        config: config.clone(),
        node,
        master: LockedKey::new(master.clone()),
        proposals,
        applied,
        kept_data_key: store.fleet_data_key()?,
        subjects,
        unbound,
        refused_changes,
    };
    Ok((link, pending))
}

impl Pending {
    /// Connects and starts the node's tasks; refuses a master key the fleet does not share.
    pub async fn start(
        self,
        writer: WriterHandle,
        index: Arc<Index>,
        stopped: watch::Receiver<bool>,
    ) -> Result<Arc<FleetState>> {
        let engine = Nats::connect(&self.config, &self.node, self.subjects.clone()).await?;
        let parts = NodeParts {
            engine: Arc::new(engine),
            subjects: self.subjects,
            unbound: self.unbound,
            refused_changes: self.refused_changes,
            fleet_name: self.config.name.clone(),
            node: self.node,
            servers: self.config.servers.clone(),
            writer,
            proposals: self.proposals,
            applied: self.applied,
            kept_data_key: self.kept_data_key,
            index,
        };
        Ok(node::start(parts, self.master, FIRST_TRY, stopped).await?)
    }
}
