//! `authenta-keyd serve`: open the store, load the index, listen, and shut down cleanly.

use crate::config::Config;
use crate::daemon::Daemon;
use crate::index::Index;
use crate::store::{self, Store};
use crate::{master_key, paths, server, usage_flusher, writer};
use anyhow::{Context, Result};
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

#[derive(Args)]
pub struct ServeArgs {
    /// Where the encrypted store lives [default: $STATE_DIRECTORY, else /var/lib/authenta
    /// as root, else $XDG_STATE_HOME/authenta or ~/.local/state/authenta]
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// The 32-byte master key: 32 raw bytes or 64 hex digits [default:
    /// $CREDENTIALS_DIRECTORY/master-key, else a generated DIR/master.key on first run]
    #[arg(long, value_name = "FILE")]
    master_key_file: Option<PathBuf>,
    /// The daemon's config [default: /etc/authenta/keyd.toml when present]
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

pub fn run(args: ServeArgs, socket: Option<PathBuf>) -> Result<ExitCode> {
    init_logging();
    // Everything the daemon creates (store, WAL, key file) is for its own user only.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let (config, config_path) = Config::load(args.config.as_deref())?;
    let socket = socket.unwrap_or_else(paths::default_socket);
    let data_dir = match args.data_dir {
        Some(dir) => dir,
        None => paths::default_data_dir()?,
    };
    paths::ensure_dir(&data_dir, 0o700, "data directory")?;
    if let Some(parent) = socket.parent().filter(|p| !p.as_os_str().is_empty()) {
        paths::ensure_dir(parent, 0o750, "socket directory")?;
    }

    let started = Instant::now();
    let (master, source) = master_key::load(
        args.master_key_file.as_deref(),
        &data_dir,
        store::exists(&data_dir),
    )?;
    let store = Store::open(&data_dir, &master)?;
    drop(master);
    let loaded = store.load()?;
    let key_count = loaded.keys.len();
    let index = Arc::new(Index::from_loaded(loaded.keys, loaded.retired));
    let (writer, _store_thread) =
        writer::spawn(store, index.clone()).context("cannot start the store thread")?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("authenta-worker")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let listener = server::bind(&socket, config.socket_mode_bits()?, socket_group(&config)?)?;
        let daemon = Arc::new(Daemon {
            index,
            writer,
            access: crate::peer::Access::from_config(&config),
            started,
            socket: socket.clone(),
            data_dir: data_dir.clone(),
            corrupt_keys: loaded.corrupt,
            default_grace: config.regenerate_grace,
            connections: AtomicU64::new(0),
            verifications: AtomicU64::new(0),
        });
        let (stop, stopped) = watch::channel(false);
        let flusher = tokio::spawn(usage_flusher::run(
            daemon.clone(),
            config.usage_flush_interval,
            stopped.clone(),
        ));
        let accepting = tokio::spawn(server::accept_loop(
            listener,
            daemon.clone(),
            config.max_connections,
            stopped,
        ));
        tracing::info!(
            socket = %socket.display(),
            data_dir = %data_dir.display(),
            keys = key_count,
            master_key = %source,
            config = ?config_path,
            startup_ms = started.elapsed().as_millis() as u64,
            "authenta-keyd ready"
        );

        wait_for_stop_signal().await?;
        tracing::info!("shutting down");
        let _ = stop.send(true);
        let _ = accepting.await;
        let _ = flusher.await;
        match usage_flusher::flush(&daemon).await {
            Ok(n) => tracing::info!(keys = n, "usage flushed"),
            Err(e) => tracing::error!(error = %e, "final usage flush failed"),
        }
        remove_socket(&socket);
        tracing::info!("stopped");
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Waits for SIGTERM or SIGINT. SIGHUP is caught so that it does not kill the daemon.
async fn wait_for_stop_signal() -> Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
            _ = hup.recv() => tracing::info!("SIGHUP: nothing to reload"),
        }
    }
}

fn socket_group(config: &Config) -> Result<Option<u32>> {
    let Some(group) = &config.socket_group else {
        return Ok(None);
    };
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(Some(gid));
    }
    let found = nix::unistd::Group::from_name(group)
        .with_context(|| format!("cannot look up socket_group '{group}'"))?;
    found
        .map(|g| Some(g.gid.as_raw()))
        .with_context(|| format!("socket_group '{group}' does not exist: create it or use a gid"))
}

fn remove_socket(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        tracing::debug!(error = %e, "socket file already gone");
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`). Under journald (`JOURNAL_STREAM`
/// set) timestamps are left out: the journal adds its own.
fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.without_time().with_ansi(false).init();
    } else {
        builder.init();
    }
}
