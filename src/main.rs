//! authenta-keyd: the API-key sidecar. One binary: the daemon (`serve`) and its admin CLI.

#![forbid(unsafe_code)]

mod audit;
mod barrier;
mod cli;
mod clock;
mod config;
mod connection;
mod daemon;
mod dispatch;
mod duration;
mod index;
mod key;
mod master_key;
mod paths;
mod peer;
mod record_codec;
mod server;
mod store;
mod token;
mod usage_flusher;
mod verify;
mod writer;

fn main() -> std::process::ExitCode {
    cli::main()
}
