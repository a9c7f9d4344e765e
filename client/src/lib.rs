//! Client for authenta-keyd, the local API-key daemon.
//!
//! Apps on the same host ask the daemon, over its Unix socket, whether a key is valid and
//! holds the permissions a request needs:
//!
//! ```no_run
//! use authenta_client::{Client, Permission};
//!
//! let mut client = Client::new("/run/authenta/keyd.sock");
//! match client.verify("api_...", &[Permission::Read]) {
//!     Ok(verified) => println!("allowed: key {}", verified.key_id),
//!     // Denied covers a revoked or unknown key (401), a missing permission (403) and an
//!     // unreachable daemon (503): every error is a refusal, so a caller fails closed.
//!     Err(denied) => println!("refused with {}: {denied}", denied.status()),
//! }
//! ```
//!
//! [`Client`] is blocking; [`AsyncClient`] (feature `async`, on by default) uses tokio. Both
//! reconnect on the next call after the daemon restarts. The wire types are in [`proto`].

#![forbid(unsafe_code)]

pub mod answer_frame;
mod error;
mod frame;
mod outcome;
pub mod proto;
pub mod verify_wire;

#[cfg(feature = "async")]
mod asynchronous;
mod blocking;

#[cfg(feature = "async")]
pub use asynchronous::AsyncClient;
pub use blocking::Client;
pub use error::Error;
pub use outcome::{Denied, Verified};
pub use proto::{Permission, VerifyCode};

/// How this crate names itself in its [`proto::Hello`].
pub const AGENT: &str = concat!("authenta-client/", env!("CARGO_PKG_VERSION"));
