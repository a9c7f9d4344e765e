//! authenta-keyd: the API-key sidecar, as a library so that fuzz targets, benchmarks and
//! tests can reach its parts. The binary (`src/main.rs`) is only `cli::main`.
//!
//! # Layout
//!
//! One folder per part. Data flows one way, from the top of this list to the bottom; a part
//! never imports one above it.
//!
//! | part | owns |
//! |---|---|
//! | [`cli`] | the command line: `serve` and every client command, one file per group |
//! | [`http`] | the HTTP side: forward-auth for reverse proxies, `/metrics`, `/healthz` and `/readyz` |
//! | [`server`] | the socket, connection threads, framing, busy polling, request dispatch |
//! | [`daemon`] | the shared state, and what runs beside the server: usage flusher, policy reload and watch, rotation scheduler |
//! | [`fleet`] | fleet mode: the same keys on every host, replicated through NATS JetStream |
//! | [`store`] | the encrypted SQLite file, its writer thread (group commit), the barrier, the audit chain, the master key |
//! | [`index`] | the in-memory index, its tag table, and the one verify decision |
//! | [`policy`] | the policy file's rules: parse, evaluate, sinks |
//! | [`access`], [`config`], [`key`], [`metrics`], [`random`], [`token`], [`time`] | who may do what, `keyd.toml`, key records, what `/metrics` counts, random bytes, the token format, clocks and durations |
//! | [`host`] | systemd, `--daemonize`, default paths, process hygiene |

#![deny(unsafe_code)]
// The two places that need it say why it is sound (prefetching, registering a socket).
#![deny(clippy::undocumented_unsafe_blocks)]

pub(crate) mod access;
pub mod cli;
pub(crate) mod config;
pub(crate) mod daemon;
pub(crate) mod fleet;
pub(crate) mod host;
pub(crate) mod http;
pub(crate) mod index;
pub mod key;
pub(crate) mod metrics;
pub mod policy;
pub mod random;
pub mod server;
pub mod store;
pub(crate) mod time;
pub mod token;
