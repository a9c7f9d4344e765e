//! The host the daemon runs on: systemd (readiness, socket activation), `--daemonize`,
//! default paths, process hygiene, and which files it may trust.
//!
//! Owns only the conversation with the operating system around the daemon; knows nothing of
//! keys, the store or the protocol.

pub(crate) mod detach;
pub(crate) mod hygiene;
pub(crate) mod log_file;
pub(crate) mod paths;
pub(crate) mod systemd;
pub(crate) mod trust;
