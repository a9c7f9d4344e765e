//! `authenta-keyd serve`: open the store, load the index, listen, and shut down cleanly.
//!
//! Order matters: `--daemonize` forks first (no thread may exist yet); socket activation's
//! `LISTEN_*` variables are read before any thread starts; the store is opened and loaded
//! before the socket is bound or systemd is told READY=1, so a client that can connect is
//! served the full index.

use crate::access::Access;
use crate::config::{Config, HttpAddress};
use crate::daemon::usage_flusher;
use crate::daemon::Daemon;
use crate::host::detach::{self, ReadyPipe};
use crate::host::log_file::LogFile;
use crate::host::{hygiene, paths, systemd, trust};
use crate::http::{self, Admission};
use crate::index::Index;
use crate::metrics::Metrics;
use crate::server;
use crate::server::busy_poll::BusyPoll;
use crate::server::workers::Workers;
use crate::store::{self, Store};
use crate::store::{master_key, writer};
use anyhow::{Context, Result};
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
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
    /// The policy file, watched and applied live [default: the config's `policy`, else
    /// /etc/authenta/policy.toml when present]
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Detach into the background (hosts without systemd); the command returns once the
    /// daemon is ready, or fails with its error.
    #[arg(long, requires = "pidfile")]
    daemonize: bool,
    /// With --daemonize: the pidfile, held under flock so a second instance refuses to start.
    #[arg(long, value_name = "FILE", requires = "daemonize")]
    pidfile: Option<PathBuf>,
    /// Serve forward-auth, /metrics and health over HTTP at ADDR: `unix:/PATH` or
    /// `127.0.0.1:PORT` (repeatable; replaces the config's `http_listen`). Off by default.
    #[arg(long = "http-listen", value_name = "ADDR")]
    http_listen: Vec<String>,
    /// Append the log here instead of stderr; SIGHUP reopens it (for logrotate). With
    /// --daemonize and no --log-file, the log is discarded.
    #[arg(long, value_name = "FILE")]
    log_file: Option<PathBuf>,
}

pub fn run(args: ServeArgs, socket: Option<PathBuf>) -> Result<ExitCode> {
    if args.daemonize && master_key::would_use_development_key(args.master_key_file.as_deref()) {
        // Said here: once detached, nobody may read the log.
        eprintln!(
            "warning: no --master-key-file or systemd credential: the daemon will use a \
             development master key next to its data (every backup of the data carries it)"
        );
    }
    let mut ready_pipe = match (&args.daemonize, &args.pidfile) {
        (true, Some(pidfile)) => Some(detach::detach(pidfile, args.log_file.as_deref())?),
        _ => None,
    };
    let log_file = match args.log_file.as_deref().map(LogFile::open).transpose() {
        Ok(log_file) => log_file,
        Err(e) => {
            if let Some(pipe) = ready_pipe.as_mut() {
                pipe.failed(&format!("{e:#}"));
            }
            return Err(e);
        }
    };
    init_logging();
    let result = serve(args, socket, log_file, &mut ready_pipe);
    if let (Err(e), Some(pipe)) = (&result, ready_pipe.as_mut()) {
        pipe.failed(&format!("{e:#}"));
    }
    result
}

fn serve(
    args: ServeArgs,
    socket: Option<PathBuf>,
    log_file: Option<LogFile>,
    ready_pipe: &mut Option<ReadyPipe>,
) -> Result<ExitCode> {
    let opened = open(args, socket)?;
    // This runtime accepts connections and runs the housekeeping (signals, policy, usage
    // flushes, rotations); connections are served on their own threads (`workers`).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let running = start(opened).await?;
        if let Some(pipe) = ready_pipe.as_mut() {
            pipe.ready();
        }
        run_until_stopped(
            &running.daemon,
            running.config_path.as_deref(),
            running.policy_path.as_deref(),
            log_file.as_ref(),
        )
        .await?;
        shut_down(running).await;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Everything opened before the runtime starts: the config, the store loaded into the
/// index, and the store thread.
struct Opened {
    started: Instant,
    config: Config,
    config_path: Option<PathBuf>,
    policy_path: Option<PathBuf>,
    socket: PathBuf,
    activated: systemd::Activated,
    data_dir: PathBuf,
    master_key_source: master_key::Source,
    index: Arc<Index>,
    key_count: usize,
    corrupt: Vec<String>,
    writer: writer::WriterHandle,
    fleet: Option<crate::fleet::setup::Pending>,
    metrics: Arc<Metrics>,
    http: Vec<HttpAddress>,
    /// The store's file, when start-up read the index from its snapshot and not from the
    /// file: warmed once the daemon is ready, for the writes to come, so that the disk
    /// serves the snapshot first.
    warm_after_ready: Option<PathBuf>,
}

/// Hardens the process, reads the config, opens the store and loads every key into the
/// index, and starts the store thread. Nothing is listening yet.
fn open(args: ServeArgs, socket: Option<PathBuf>) -> Result<Opened> {
    let started = Instant::now();
    hygiene::harden_process();
    // Everything the daemon creates (store, WAL, key file) is for its own user only.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let activated = systemd::take_activated()?;
    let (config, config_path) = Config::load(args.config.as_deref())?;
    let socket = socket.unwrap_or_else(paths::default_socket);
    let http = config.http_addresses(&args.http_listen)?;
    warn_of_open_files(&config, !http.is_empty());
    let data_dir = match args.data_dir {
        Some(dir) => dir,
        None => paths::default_data_dir()?,
    };
    paths::ensure_dir(&data_dir, 0o700, "data directory")?;
    trust::check_data_dir(&data_dir).map_err(anyhow::Error::msg)?;
    if let Some(key_file) = &args.master_key_file {
        // Whoever could write it could give a new store a key they know, or lock an old
        // one's owner out. A systemd credential is systemd's own, private to the unit.
        trust::check_as(key_file, "the master key file")?;
    }
    if activated.main.is_none() {
        ensure_socket_dir(&socket, &config)?;
    }
    for address in &http {
        if let HttpAddress::Unix(path) = address {
            ensure_socket_dir(path, &config)?;
        }
    }
    let exists = store::exists(&data_dir);
    let snapshot_waiting = data_dir.join(store::index_snapshot::FILE_NAME).exists();
    if exists && !snapshot_waiting {
        // While the master key is read and the store opened, the disk gets busy.
        store::warm_page_cache(&store::db_path(&data_dir));
    }
    let at_rest = store::index_snapshot::AtRest::observe(&store::db_path(&data_dir));
    let (master, source) = master_key::load(args.master_key_file.as_deref(), &data_dir, exists)?;
    let mut store = Store::open(&data_dir, &master)?;
    let (link, fleet) = match &config.fleet {
        Some(fleet) => {
            let (link, pending) = crate::fleet::setup::prepare(fleet, &store, &master)?;
            (Some(link), Some(pending))
        }
        None => (None, None),
    };
    drop(master);
    let policy_path = policy_path(args.policy, config.policy.as_deref());
    let ((index, key_count, corrupt), from_snapshot) = super::load_index::load_index(
        &store,
        at_rest,
        policy_path.as_deref(),
        &config.sink_rules()?,
    )?;
    if let Err(e) = store.forget_index_snapshot() {
        // Safe to go on: the snapshot was taken, and any write changes the file it names.
        tracing::warn!(error = %e, "cannot remove the last stop's snapshot token from the store");
    }
    let warm_after_ready = from_snapshot.then(|| store::db_path(&data_dir));
    let newest = store.newest_audit_at()?.unwrap_or(0);
    index
        .newest_audit_at
        .store(newest, std::sync::atomic::Ordering::Relaxed);
    let metrics = Arc::new(Metrics::new(config.fleet.is_some()));
    let (writer, _store_thread) =
        writer::spawn(store, index.clone(), link, metrics.commit_seconds.clone())
            .context("cannot start the store thread")?;
    Ok(Opened {
        started,
        config,
        config_path,
        policy_path,
        socket,
        activated,
        data_dir,
        master_key_source: source,
        index,
        key_count,
        corrupt,
        writer,
        fleet,
        metrics,
        http,
        warm_after_ready,
    })
}

/// Says when the connection caps together could run the daemon out of file descriptors,
/// where accepting would fail instead of refusing politely.
fn warn_of_open_files(config: &Config, http: bool) {
    let limit = hygiene::raise_open_files_limit();
    let http_cap = if http { config.http_max_connections } else { 0 };
    // The store, its WAL, the policy watch, the log and the listeners, with room to spare.
    let wanted = (config.max_connections + http_cap + 64) as u64;
    if wanted > limit {
        tracing::warn!(
            limit,
            wanted,
            "the open-files limit is below what max_connections and http_max_connections \
             allow: raise LimitNOFILE (systemd) or ulimit -n, or lower the caps"
        );
    }
}

/// Makes the directory a socket the daemon binds sits in, unless it exists: private in the
/// fallback place, else reachable by the socket's group.
fn ensure_socket_dir(socket: &Path, config: &Config) -> Result<()> {
    let Some(parent) = socket.parent().filter(|p| !p.as_os_str().is_empty()) else {
        return Ok(());
    };
    if parent == paths::fallback_socket_dir() {
        return paths::ensure_private_dir(parent);
    }
    let made_now = std::fs::symlink_metadata(parent).is_err();
    paths::ensure_dir(parent, 0o750, "socket directory")?;
    // Whoever else could write the directory could put their own socket in the daemon's
    // place and collect the tokens apps send (a sticky one, such as /tmp, is safe).
    trust::check(parent).map_err(|why| {
        anyhow::anyhow!(
            "the socket directory: {why}; another user could put their own socket there"
        )
    })?;
    // The socket's group must be able to reach it through its directory. Only a directory
    // the daemon makes gets that group: one that was there (such as /run) keeps its own, or
    // the group would gain whatever the directory's group had.
    if let Some(gid) = socket_group(config)? {
        if made_now {
            paths::give_group(parent, gid)?;
        } else {
            warn_if_unreachable(parent, gid);
        }
    }
    Ok(())
}

/// Warns when members of `gid` cannot pass through `dir` to the socket.
fn warn_if_unreachable(dir: &Path, gid: u32) {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(dir) else {
        return;
    };
    let passable = meta.mode() & 0o001 != 0 || (meta.gid() == gid && meta.mode() & 0o010 != 0);
    if !passable {
        tracing::warn!(dir = %dir.display(), gid, "socket_group cannot reach the socket through its directory, which the daemon did not make: give the directory that group (chgrp) or o+x");
    }
}

/// The running daemon, and what shutting it down waits for.
struct Running {
    daemon: Arc<Daemon>,
    config_path: Option<PathBuf>,
    policy_path: Option<PathBuf>,
    bound_here: bool,
    stop: watch::Sender<bool>,
    accepting: tokio::task::JoinHandle<()>,
    http: Vec<(Option<HttpAddress>, tokio::task::JoinHandle<()>)>,
    flusher: tokio::task::JoinHandle<()>,
}

/// Listens, puts the policy in force, starts the connection threads and the tasks beside
/// them, and tells systemd the daemon is ready.
async fn start(opened: Opened) -> Result<Running> {
    let bound_here = opened.activated.main.is_none();
    let listener = listen(opened.activated.main, &opened.socket, &opened.config)?;
    let mut http_listeners = http::bind_all(
        &opened.http,
        opened.config.socket_mode_bits()?,
        socket_group(&opened.config)?,
    )?;
    for activated in opened.activated.http {
        http_listeners.push(http::HttpListener::activated(
            activated,
            opened.config.http_allow_remote,
        )?);
    }
    let (stop, stopped) = watch::channel(false);
    let fleet = match opened.fleet {
        Some(pending) => Some(
            pending
                .start(opened.writer.clone(), opened.index.clone(), stopped.clone())
                .await?,
        ),
        None => None,
    };
    let daemon = Arc::new(Daemon::new(
        opened.started,
        opened.index,
        opened.writer,
        Access::from_config(&opened.config),
        opened.socket.clone(),
        opened.data_dir.clone(),
        opened.corrupt,
        opened.config.regenerate_grace,
        opened.config.sink_rules()?,
        matches!(opened.master_key_source, master_key::Source::Generated(_)),
        fleet,
        opened.metrics,
    ));
    // The policy is in force (revocations written) before anyone is told "ready".
    if let Some(path) = &opened.policy_path {
        crate::daemon::policy_reload::reload(&daemon, path).await;
    }
    let flusher = tokio::spawn(usage_flusher::run(
        daemon.clone(),
        opened.config.usage_flush_interval,
        stopped.clone(),
    ));
    let threads = connection_threads(&opened.config);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let busy_poll = BusyPoll::new(opened.config.busy_poll, cores, threads);
    let workers = Arc::new(Workers::start(threads, &busy_poll, &daemon, &stopped)?);
    let admission = Arc::new(Admission::new(opened.config.http_max_connections));
    let http = http_listeners
        .into_iter()
        .map(|listener| {
            // Only a socket bound here is removed at shutdown; systemd's stay with systemd.
            let address = listener.bound_here().cloned();
            tracing::info!(address = %listener, "HTTP side listening (forward-auth, /metrics, health)");
            let serving = listener.serve(daemon.clone(), workers.clone(), admission.clone(), stopped.clone());
            (address, tokio::spawn(serving))
        })
        .collect();
    let accepting = tokio::spawn(server::accept_loop(
        listener,
        daemon.clone(),
        workers,
        opened.config.max_connections,
        opened.config.connections_per_uid(),
        stopped.clone(),
    ));
    spawn_housekeeping(&daemon, opened.policy_path.clone(), stopped);
    tracing::info!(
        socket = %opened.socket.display(),
        socket_activated = !bound_here,
        data_dir = %opened.data_dir.display(),
        keys = opened.key_count,
        master_key = %opened.master_key_source,
        config = ?opened.config_path,
        startup_ms = opened.started.elapsed().as_millis() as u64,
        "authenta-keyd ready"
    );
    systemd::ready(&format!(
        "serving {} keys on {}",
        opened.key_count,
        opened.socket.display()
    ));
    if let Some(db) = &opened.warm_after_ready {
        store::warm_page_cache(db);
    }
    Ok(Running {
        daemon,
        config_path: opened.config_path,
        policy_path: opened.policy_path,
        bound_here,
        stop,
        accepting,
        http,
        flusher,
    })
}

/// The tasks beside the server that need no handle at shutdown: they stop on `stopped`.
fn spawn_housekeeping(
    daemon: &Arc<Daemon>,
    policy_path: Option<PathBuf>,
    stopped: watch::Receiver<bool>,
) {
    if let Some(path) = policy_path {
        let watcher = crate::daemon::policy_watch::run(daemon.clone(), path, stopped.clone());
        tokio::spawn(watcher);
    }
    tokio::spawn(crate::daemon::scheduler::run(
        daemon.clone(),
        stopped.clone(),
    ));
    tokio::spawn(crate::daemon::store_watch::run(
        daemon.clone(),
        stopped.clone(),
    ));
    if let Some(period) = systemd::watchdog_interval() {
        tokio::spawn(watchdog(daemon.clone(), period, stopped));
    }
}

/// The listener systemd handed over, else the socket bound here.
fn listen(
    activated: Option<std::os::unix::net::UnixListener>,
    socket: &Path,
    config: &Config,
) -> Result<tokio::net::UnixListener> {
    match activated {
        Some(listener) => {
            listener.set_nonblocking(true)?;
            Ok(tokio::net::UnixListener::from_std(listener)?)
        }
        None => server::bind(socket, config.socket_mode_bits()?, socket_group(config)?),
    }
}

/// Connection threads: the config's `worker_threads`, else `AUTHENTA_WORKER_THREADS`, else
/// half the cores (rounded up).
///
/// Half, not one per core: a sidecar shares its host with the apps that call it, and their
/// callers need cores too. With one thread per core, the daemon's threads and the callers
/// took turns on the same cores: on two cores, 50 callers with one verify each got 290,000
/// answers/s at a p99 of 525 µs from two threads, and 345,000 at 198 µs from one, for less
/// CPU per verify (docs/performance.md).
fn connection_threads(config: &Config) -> usize {
    config
        .worker_threads
        .or_else(|| {
            std::env::var("AUTHENTA_WORKER_THREADS")
                .ok()
                .and_then(|t| t.parse().ok())
        })
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get().div_ceil(2)))
        .max(1)
}

/// Stops accepting, flushes usage, checkpoints the WAL, and removes the socket it bound.
async fn shut_down(running: Running) {
    tracing::info!("shutting down");
    systemd::stopping();
    let _ = running.stop.send(true);
    for (address, serving) in running.http {
        let _ = serving.await;
        if let Some(HttpAddress::Unix(path)) = address {
            remove_socket(&path);
        }
    }
    let _ = running.accepting.await;
    let _ = running.flusher.await;
    let daemon = &running.daemon;
    let flushed = match usage_flusher::flush(daemon, None).await {
        Ok(n) => {
            tracing::info!(keys = n, "usage flushed");
            true
        }
        Err(e) => {
            tracing::error!(error = %e, "final usage flush failed");
            false
        }
    };
    match daemon.writer.submit(writer::Command::Checkpoint).await {
        Ok(_) if flushed => save_index_snapshot(daemon).await,
        Ok(_) => {}
        Err(e) => tracing::warn!(
            error = %e,
            "final checkpoint failed; the WAL will be replayed at start-up"
        ),
    }
    if running.bound_here {
        remove_socket(&daemon.socket);
    }
    tracing::info!("stopped");
}

/// Writes the index snapshot the next start reads instead of every key row; without it
/// that start only takes longer.
async fn save_index_snapshot(daemon: &Daemon) {
    let refused = daemon.corrupt_keys.clone();
    match daemon
        .writer
        .submit(writer::Command::SaveIndexSnapshot { refused })
        .await
    {
        Ok(_) => tracing::info!("index snapshot written for the next start"),
        Err(e) => tracing::warn!(
            error = %e,
            "cannot write the index snapshot; the next start reads every key row"
        ),
    }
}

/// Serves until SIGTERM or SIGINT; SIGHUP reopens the log file and reloads the config's
/// access rules and the policy.
async fn run_until_stopped(
    daemon: &Daemon,
    config_path: Option<&Path>,
    policy_path: Option<&Path>,
    log_file: Option<&LogFile>,
) -> Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
            _ = hup.recv() => {
                if let Some(log_file) = log_file {
                    log_file.reopen();
                }
                reload(daemon, config_path, policy_path).await
            }
        }
    }
}

/// Re-reads the config. Access rules take effect at once; socket settings and limits need a
/// restart. An invalid file leaves the rules in force unchanged.
async fn reload(daemon: &Daemon, config_path: Option<&Path>, policy_path: Option<&Path>) {
    systemd::reloading();
    if let Some(path) = policy_path {
        crate::daemon::policy_reload::reload(daemon, path).await;
    }
    match Config::load(config_path) {
        Ok((config, _)) => {
            daemon.set_access(Access::from_config(&config));
            tracing::info!(config = ?config_path, "reloaded the access rules (socket settings and limits apply at restart)");
        }
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "config reload failed; the previous rules stay in force")
        }
    }
    systemd::ready(&format!(
        "serving {} keys",
        daemon.index.counts(crate::time::now_ms()).total
    ));
}

/// Pings systemd's watchdog while the index answers, so a wedged daemon gets restarted.
async fn watchdog(
    daemon: Arc<Daemon>,
    period: std::time::Duration,
    mut stopped: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(period);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                drop(daemon.index.read());
                systemd::watchdog();
            }
            _ = stopped.changed() => return,
        }
    }
}

/// The policy file: `--policy`, else the config's `policy`, else the default when present.
fn policy_path(flag: Option<PathBuf>, config: Option<&Path>) -> Option<PathBuf> {
    flag.or_else(|| config.map(Path::to_path_buf)).or_else(|| {
        let default = Path::new(crate::policy::DEFAULT_PATH);
        default.exists().then(|| default.to_path_buf())
    })
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
/// set) timestamps and colours are left out: the journal adds its own.
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
        // https://no-color.org: any non-empty NO_COLOR turns colours off.
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
        builder.with_ansi(terminal && !no_color).init();
    }
}
