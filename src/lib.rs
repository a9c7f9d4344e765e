//! authenta-keyd: the API-key sidecar, as a library so that fuzz targets, benchmarks and
//! tests can reach its parts. The binary (`src/main.rs`) is only `cli::main`.

#![deny(unsafe_code)]
// The two places that need it say why it is sound (prefetching, registering a socket).
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod audit;
pub mod barrier;
pub mod busy_poll;
pub mod cli;
pub mod clock;
pub mod config;
pub mod connection;
pub mod daemon;
pub mod detach;
pub mod dispatch;
pub mod duration;
pub mod hygiene;
pub mod index;
pub mod input;
pub mod key;
pub mod master_key;
pub mod paths;
pub mod peer;
pub mod policy;
pub mod record_codec;
pub mod scheduler;
pub mod server;
pub mod sink;
pub mod socket;
pub mod store;
pub mod systemd;
pub mod tag_table;
pub mod token;
pub mod usage_flusher;
pub mod verify;
pub mod workers;
pub mod writer;
