//! The running daemon: the state every connection shares, and the tasks that run beside the
//! server.
//!
//! Owns: the shared state ([`state`]: index, writer handle, access rules, counters, policy
//! and scheduler status), the usage flusher ([`usage_flusher`]), reading and applying the
//! policy file ([`policy_reload`]) and watching it ([`policy_watch`]), the rotation
//! scheduler ([`scheduler`]), and a periodic look at the store's files ([`store_watch`]).
//!
//! Never touches a socket or SQLite directly: changes go through the writer thread
//! ([`crate::store::writer`]), reads through the index.

pub(crate) mod health;
pub(crate) mod policy_reload;
pub(crate) mod policy_watch;
pub(crate) mod scheduler;
mod state;
pub(crate) mod store_watch;
pub(crate) mod usage_flusher;

pub(crate) use state::{Daemon, RotationFailure};
