//! Starting and stopping the real `authenta-keyd` on a temporary directory, like an operator
//! would, and reading what it costs in memory.

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use ring::rand::SecureRandom;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a start (loading a million keys) or a stop (flushing their usage) may take
/// before the bench gives up.
const START_LIMIT: Duration = Duration::from_secs(120);
const STOP_LIMIT: Duration = Duration::from_secs(120);

/// The daemon binary: `--keyd`, else the `authenta-keyd` built beside this executable (one
/// workspace, one target directory).
pub fn find_binary(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = explicit {
        return Ok(path.to_path_buf());
    }
    let me = std::env::current_exe().context("cannot locate the bench executable")?;
    let beside = me.with_file_name("authenta-keyd");
    if beside.is_file() {
        Ok(beside)
    } else {
        bail!(
            "no authenta-keyd beside {}: build it with `cargo build --release -p authenta-keyd \
             -p authenta-bench`, or pass --keyd PATH",
            me.display()
        )
    }
}

/// Memory of a process, from `/proc/PID/status`.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Memory {
    /// Resident now (VmRSS).
    pub rss_mib: f64,
    /// Highest resident so far (VmHWM).
    pub peak_rss_mib: f64,
}

/// The resident memory of process `pid` now.
pub fn process_memory(pid: u32) -> Result<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    let field = |name: &str| -> Result<f64> {
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("no {name} in /proc/{pid}/status"))?;
        Ok(kib / 1024.0)
    };
    Ok(Memory {
        rss_mib: field("VmRSS:")?,
        peak_rss_mib: field("VmHWM:")?,
    })
}

/// One daemon on its own temporary directory (store, socket, master key, config, log).
pub struct Keyd {
    dir: tempfile::TempDir,
    bin: PathBuf,
    socket: PathBuf,
    /// `serve --policy`: the caller owns the file and its directory, because the daemon
    /// watches that whole directory and its own log must not be written there.
    policy: Option<PathBuf>,
    child: Option<Child>,
}

/// A fresh random master key.
pub fn random_master_key() -> Result<[u8; 32]> {
    let mut key = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| anyhow::anyhow!("the system random number generator failed"))?;
    Ok(key)
}

impl Keyd {
    /// Starts a daemon on a fresh store with `config` (TOML text; empty for the defaults).
    pub fn start(bin: &Path, config: &str) -> Result<Keyd> {
        Keyd::start_with(bin, config, None, random_master_key()?)
    }

    /// Starts a daemon on a fresh store with `config` that watches the policy file `policy`.
    pub fn start_with_policy(bin: &Path, config: &str, policy: &Path) -> Result<Keyd> {
        Keyd::start_with(
            bin,
            config,
            Some(policy.to_path_buf()),
            random_master_key()?,
        )
    }

    /// Starts a daemon with this master key: every node of a fleet shares one.
    pub fn start_with_master_key(bin: &Path, config: &str, key: [u8; 32]) -> Result<Keyd> {
        Keyd::start_with(bin, config, None, key)
    }

    fn start_with(
        bin: &Path,
        config: &str,
        policy: Option<PathBuf>,
        key: [u8; 32],
    ) -> Result<Keyd> {
        let dir = tempfile::Builder::new()
            .prefix("authenta-bench-")
            .tempdir()
            .context("cannot make a temporary directory")?;
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        let key_path = dir.path().join("master.hex");
        std::fs::write(&key_path, format!("{hex}\n")).context("writing the master key")?;
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600))?;
        let mut keyd = Keyd {
            socket: dir.path().join("keyd.sock"),
            dir,
            bin: bin.to_path_buf(),
            policy,
            child: None,
        };
        keyd.launch(config)?;
        Ok(keyd)
    }

    /// Where the daemon listens.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Removes the index snapshot a clean stop left, so that the next launch reads every
    /// row, as after a crash.
    pub fn remove_index_snapshot(&self) -> Result<()> {
        let path = self.dir.path().join("data").join("index.snapshot");
        std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))
    }

    /// Starts the daemon with `config` and returns how long it took until its socket
    /// answered a handshake: the start-up time an app waits.
    pub fn launch(&mut self, config: &str) -> Result<Duration> {
        if self.child.is_some() {
            bail!("the daemon is already running");
        }
        let config_path = self.dir.path().join("keyd.toml");
        std::fs::write(&config_path, config).context("writing the daemon's config")?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .context("opening the daemon's log")?;
        let mut command = Command::new(&self.bin);
        command.arg("serve");
        if let Some(policy) = &self.policy {
            command.arg("--policy").arg(policy);
        }
        let started = Instant::now();
        let child = command
            .arg("--socket")
            .arg(&self.socket)
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .arg("--master-key-file")
            .arg(self.dir.path().join("master.hex"))
            .arg("--config")
            .arg(&config_path)
            // Per-request logging would be measured too: keep the daemon at its default level.
            .env("RUST_LOG", "info")
            .env("GLIBC_TUNABLES", daemon_tunables())
            .env_remove("CREDENTIALS_DIRECTORY")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", self.bin.display()))?;
        self.child = Some(child);
        while started.elapsed() < START_LIMIT {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    self.child = None;
                    bail!(
                        "authenta-keyd exited at start with {status}:\n{}",
                        self.log()
                    );
                }
            }
            if authenta_client::Client::connect(&self.socket).is_ok() {
                return Ok(started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        bail!(
            "authenta-keyd did not answer within {START_LIMIT:?}:\n{}",
            self.log()
        )
    }

    /// SIGTERM, and waits for the clean exit (which flushes usage); returns how long it took.
    pub fn stop(&mut self) -> Result<Duration> {
        let Some(mut child) = self.child.take() else {
            bail!("the daemon is not running");
        };
        let started = Instant::now();
        kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM)
            .context("cannot signal the daemon")?;
        while started.elapsed() < STOP_LIMIT {
            if let Some(status) = child.try_wait()? {
                if !status.success() {
                    bail!("authenta-keyd stopped with {status}:\n{}", self.log());
                }
                return Ok(started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = child.kill();
        let _ = child.wait();
        bail!("authenta-keyd did not stop within {STOP_LIMIT:?} of SIGTERM")
    }

    /// Stops and starts again on the same store with `config`; returns the start-up time.
    pub fn restart(&mut self, config: &str) -> Result<Duration> {
        self.stop()?;
        self.launch(config)
    }

    /// Freezes the daemon (SIGSTOP) until [`Keyd::resume`], so that its background work
    /// takes no CPU from runs against another server: after a load over a million keys, its
    /// usage flush goes on for half a minute or more, and it slowed the 10,000-key daemon's
    /// pipelined runs between its own by 5-7%, which flattered the million-key ratio.
    pub fn pause(&self) -> Result<()> {
        self.signal(Signal::SIGSTOP)
    }

    /// Lets a daemon frozen by [`Keyd::pause`] run again.
    pub fn resume(&self) -> Result<()> {
        self.signal(Signal::SIGCONT)
    }

    fn signal(&self, signal: Signal) -> Result<()> {
        let Some(pid) = self.pid() else {
            bail!("the daemon is not running");
        };
        kill(Pid::from_raw(pid as i32), signal)
            .with_context(|| format!("cannot send {signal} to the daemon"))
    }

    /// Runs `bin` from the next launch on (the store stays): for A/B runs of two builds.
    pub fn use_binary(&mut self, bin: &Path) {
        self.bin = bin.to_path_buf();
    }

    /// The daemon's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The daemon's resident memory now.
    pub fn memory(&self) -> Result<Memory> {
        process_memory(self.pid().context("the daemon is not running")?)
    }

    /// The start-up time the daemon itself logged last (`startup_ms=`): from opening the
    /// store to listening, without process start and the first handshake.
    pub fn logged_startup_ms(&self) -> Option<u64> {
        let log = strip_ansi(&self.log());
        leading_number(log.rsplit_once("startup_ms=")?.1)
    }

    /// How many keys' usage the daemon's last shutdown flushed (`usage flushed keys=`).
    pub fn logged_flushed_keys(&self) -> Option<u64> {
        let log = strip_ansi(&self.log());
        let line = log.lines().rev().find(|l| l.contains("usage flushed"))?;
        leading_number(line.split_once("keys=")?.1)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("daemon.log")
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

/// The number `text` starts with.
fn leading_number(text: &str) -> Option<u64> {
    text.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// The daemon colours its log even into a file: drop the escape sequences before parsing.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC '[' parameters, then one final letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl Drop for Keyd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The glibc tunables the shipped systemd unit runs the daemon with (transparent huge pages
/// for malloc's memory: see `systemd/authenta-keyd.service`), added to any the caller set,
/// so that the bench measures the daemon as installed.
fn daemon_tunables() -> String {
    const HUGE_PAGES: &str = "glibc.malloc.hugetlb=1";
    match std::env::var("GLIBC_TUNABLES") {
        Ok(set) if set.contains("glibc.malloc.hugetlb") => set,
        Ok(set) if !set.is_empty() => format!("{set}:{HUGE_PAGES}"),
        _ => HUGE_PAGES.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences_are_dropped() {
        let logged = "\u{1b}[3mstartup_ms\u{1b}[0m\u{1b}[2m=\u{1b}[0m31 done";
        assert_eq!(strip_ansi(logged), "startup_ms=31 done");
    }

    #[test]
    fn a_logged_field_reads_as_the_number_after_it() {
        let line = strip_ansi("INFO \u{1b}[3mkeys\u{1b}[0m=1000000 usage flushed");
        assert_eq!(
            leading_number(line.split_once("keys=").expect("field").1),
            Some(1_000_000)
        );
        assert_eq!(leading_number("ms"), None);
    }
}
