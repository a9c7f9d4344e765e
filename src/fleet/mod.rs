//! Fleet mode: every host's daemon serves the same keys, replicated through NATS JetStream.
//!
//! Owns: the fleet's subjects ([`subjects`]), sealing changes for the wire ([`seal`]), the
//! replication engine's interface ([`engine`]) and its NATS implementation ([`nats`]), and
//! the node that joins, publishes and applies ([`node`]), and the changes it refused as
//! copies ([`refused`]).
//!
//! The shape: an admin write on any node is computed by that node's writer thread against
//! its replica, published as a sealed change on its key's subject expecting the key's last
//! sequence (two writers of one key: one wins, one gets `conflict`), and answered once this
//! node has applied it from the stream. Every node applies the stream in order into its
//! SQLite replica (with the last applied sequence, in the same transaction) and its index,
//! so verify stays local and keeps answering while NATS is down.
//!
//! Never touches a socket of the daemon or the index directly: changes reach the replica
//! through the writer thread ([`crate::store::writer`]).

pub(crate) mod engine;
pub(crate) mod nats;
pub(crate) mod node;
pub(crate) mod refused;
pub(crate) mod seal;
pub(crate) mod setup;
pub(crate) mod subjects;
pub(crate) mod trusted_files;

pub(crate) use node::FleetState;
