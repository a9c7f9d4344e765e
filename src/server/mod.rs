//! The server: the listening socket, the connection threads, and everything between a
//! client's bytes and an answer.
//!
//! Owns: binding the socket and accepting ([`accept`]), the connection threads
//! ([`workers`]), one connection's handshake and request loop ([`connection`]), framing
//! ([`input`], [`socket`]), adaptive busy polling ([`busy_poll`]) and turning a decoded
//! request into an answer ([`admin`], [`lifecycle`], [`verify_batch`]; changes to one key
//! checked, then answered once committed: [`key_change`], and handed over together when
//! pipelined on one connection: [`pipelined_changes`]).
//!
//! Never touches SQLite or the policy file: verifies are answered from the index, admin
//! changes go to the writer thread through [`crate::daemon::Daemon`]. Nothing below this
//! part knows that sockets exist.

mod accept;
mod admin;
pub(crate) mod busy_poll;
pub(crate) mod connection;
mod input;
mod key_change;
mod lifecycle;
mod pipelined_changes;
pub(crate) mod slots;
mod socket;
mod verify_batch;
pub(crate) mod workers;

pub(crate) use accept::{accept_loop, bind};
pub use connection::codec;
