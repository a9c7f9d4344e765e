//! Starts the real `authenta-keyd` binary on a temporary directory and socket, like a user.
//! [`strategies`] holds the proptest strategies of the property tests.
#![allow(dead_code)]

pub mod fleet;
pub mod http;
pub mod nats;
pub mod strategies;

use serde_json::Value;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_authenta-keyd");

/// A master key for tests, as 64 hex digits.
pub const MASTER_HEX: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// One daemon on its own temporary directory.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub data_dir: PathBuf,
    pub master_key: PathBuf,
    pub config: Option<PathBuf>,
    /// The policy file passed with --policy, if any (in its own directory `policy/`).
    pub policy: Option<PathBuf>,
    /// Started with the HTTP side on `DIR/run/http.sock` and this loopback port.
    pub http_port: Option<u16>,
    /// Extra environment for `serve`, kept across restarts.
    pub env: Vec<(String, std::ffi::OsString)>,
    child: Option<Child>,
}

impl Daemon {
    /// Starts a daemon with a fresh store and waits until its socket answers.
    pub fn start() -> Daemon {
        Daemon::start_with_config(None)
    }

    /// Starts a daemon with the given config file text.
    pub fn start_with_config(config: Option<&str>) -> Daemon {
        Daemon::start_with(config, None)
    }

    /// Starts a daemon watching a policy file with this text (in `DIR/policy/policy.toml`).
    pub fn start_with_policy(policy: &str) -> Daemon {
        Daemon::start_with(None, Some(policy))
    }

    /// Starts a daemon with an optional config and an optional policy.
    pub fn start_with(config: Option<&str>, policy: Option<&str>) -> Daemon {
        let mut daemon = Daemon::prepare(config, policy);
        daemon.restart();
        daemon
    }

    /// Starts a daemon with extra environment variables for `serve`.
    pub fn start_with_env(vars: &[(&str, &Path)]) -> Daemon {
        let mut daemon = Daemon::prepare(None, None);
        daemon.env = vars
            .iter()
            .map(|(name, value)| (name.to_string(), value.as_os_str().to_owned()))
            .collect();
        daemon.restart();
        daemon
    }

    /// Starts a daemon with its HTTP side on `DIR/run/http.sock` and a free loopback port.
    pub fn start_http(config: Option<&str>, policy: Option<&str>) -> Daemon {
        let mut daemon = Daemon::prepare(config, policy);
        daemon.http_port = Some(free_port());
        daemon.restart();
        daemon
    }

    /// The HTTP side's Unix socket (see [`Daemon::start_http`]).
    pub fn http_socket(&self) -> PathBuf {
        self.dir.path().join("run/http.sock")
    }

    /// The HTTP side's TCP address (see [`Daemon::start_http`]).
    pub fn http_address(&self) -> String {
        format!(
            "127.0.0.1:{}",
            self.http_port.expect("started with start_http")
        )
    }

    /// A daemon set up on a new directory, not started.
    fn prepare(config: Option<&str>, policy: Option<&str>) -> Daemon {
        let dir = tempfile::tempdir().expect("temp dir");
        // Let a test's unprivileged child reach the socket inside.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let master_key = dir.path().join("master.hex");
        std::fs::write(&master_key, format!("{MASTER_HEX}\n")).expect("write key");
        std::fs::set_permissions(&master_key, std::fs::Permissions::from_mode(0o600))
            .expect("chmod");
        let config = config.map(|text| {
            let path = dir.path().join("keyd.toml");
            std::fs::write(&path, text).expect("write config");
            path
        });
        // Made here (0755) rather than by the daemon (0750), so a test's unprivileged child
        // can reach the socket.
        std::fs::create_dir(dir.path().join("run")).expect("run dir");
        std::fs::set_permissions(
            dir.path().join("run"),
            std::fs::Permissions::from_mode(0o755),
        )
        .expect("chmod");
        let policy = policy.map(|text| {
            let policy_dir = dir.path().join("policy");
            std::fs::create_dir(&policy_dir).expect("policy dir");
            let path = policy_dir.join("policy.toml");
            std::fs::write(&path, text).expect("write policy");
            path
        });
        Daemon {
            policy,
            socket: dir.path().join("run/keyd.sock"),
            data_dir: dir.path().join("data"),
            master_key,
            config,
            http_port: None,
            env: Vec::new(),
            dir,
            child: None,
        }
    }

    /// The log file the daemon's stderr goes to.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("daemon.log")
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The `serve` command for this daemon, with extra arguments.
    pub fn serve_command(&self, master_key: &Path) -> Command {
        let mut command = Command::new(BIN);
        command
            .arg("serve")
            .arg("--socket")
            .arg(&self.socket)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--master-key-file")
            .arg(master_key)
            .env("RUST_LOG", "debug")
            .env_remove("CREDENTIALS_DIRECTORY")
            .env_remove("AUTHENTA_SOCKET")
            .envs(self.env.iter().map(|(name, value)| (name, value)))
            .stdin(Stdio::null());
        if let Some(config) = &self.config {
            command.arg("--config").arg(config);
        }
        if let Some(policy) = &self.policy {
            command.arg("--policy").arg(policy);
        }
        if self.http_port.is_some() {
            command
                .arg("--http-listen")
                .arg(format!("unix:{}", self.http_socket().display()))
                .arg("--http-listen")
                .arg(self.http_address());
        }
        command
    }

    /// Runs `serve` with `master_key`, asserts that it refuses to start, and returns what it
    /// printed on stderr.
    pub fn serve_refused(&self, master_key: &Path) -> String {
        let out = self.serve_command(master_key).output().expect("run serve");
        assert!(!out.status.success(), "serve must refuse to start here");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// How many keys `keys list --json` shows.
    pub fn key_count(&self) -> usize {
        self.cli_json(&["keys", "list", "--json"])
            .as_array()
            .expect("an array")
            .len()
    }

    /// Starts (again) on the same directory and waits for the socket.
    pub fn restart(&mut self) {
        if let Err(log) = self.try_restart() {
            panic!("{log}");
        }
    }

    /// Starts (again) like [`Daemon::restart`]; when the daemon exits instead of listening,
    /// what it logged.
    pub fn try_restart(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "daemon already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("log file");
        let child = self
            .serve_command(&self.master_key)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start authenta-keyd");
        self.child = Some(child);
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(format!("daemon exited early with {status}: {}", self.log()));
                }
            }
            if authenta_client::Client::connect(&self.socket).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("daemon did not listen within 20 s: {}", self.log());
    }

    /// SIGTERM, and the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("daemon running");
        signal(&child, libc::SIGTERM);
        wait_timeout(&mut child, Duration::from_secs(15)).expect("daemon stops after SIGTERM")
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("daemon running");
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Collects a daemon killed from outside (by pid), so that it can be restarted.
    pub fn reap(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon running").id()
    }

    /// A CLI command against this daemon.
    pub fn cli_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(BIN);
        command
            .args(args)
            .env("AUTHENTA_SOCKET", &self.socket)
            .env_remove("AUTHENTA_KEY")
            .stdin(Stdio::null());
        command
    }

    /// Runs the CLI and returns its output.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_command(args).output().expect("run authenta-keyd")
    }

    /// Runs the CLI, asserts success, and parses its stdout as JSON.
    pub fn cli_json(&self, args: &[&str]) -> Value {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{args:?} printed no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// Creates a key; returns (id, token).
    pub fn create(&self, name: &str, permissions: &str, extra: &[&str]) -> (String, String) {
        let mut args = vec![
            "keys",
            "create",
            "--name",
            name,
            "--permissions",
            permissions,
            "--json",
        ];
        args.extend_from_slice(extra);
        let created = self.cli_json(&args);
        (
            created["id"].as_str().expect("id").to_owned(),
            created["token"].as_str().expect("token").to_owned(),
        )
    }

    /// `verify --json` with the token in AUTHENTA_KEY; returns (exit code, answer).
    pub fn verify(&self, token: &str, extra: &[&str]) -> (i32, Value) {
        let mut args = vec!["verify", "--json"];
        args.extend_from_slice(extra);
        let out = self
            .cli_command(&args)
            .env("AUTHENTA_KEY", token)
            .output()
            .expect("run verify");
        let answer = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (out.status.code().unwrap_or(-1), answer)
    }

    /// The (allowed, denied) counts of the key a token belongs to, from `keys list`.
    pub fn show_usage(&self, token: &str) -> (u64, u64) {
        let (_, answer) = self.verify(token, &["--cost", "0"]);
        let id = answer["key_id"].as_str().expect("a key matched").to_owned();
        let key = self.show(&id);
        (
            key["usage"]["allowed"].as_u64().unwrap_or(0),
            key["usage"]["denied"].as_u64().unwrap_or(0),
        )
    }

    /// The verify code for a token and permissions.
    pub fn verify_code(&self, token: &str, extra: &[&str]) -> String {
        let (_, answer) = self.verify(token, extra);
        answer["code"].as_str().unwrap_or("none").to_owned()
    }

    /// The verify code of `token` (no permissions asked), straight through the client library.
    pub fn answer_code(&self, token: &str) -> authenta_client::VerifyCode {
        authenta_client::Client::new(&self.socket)
            .verify_answer(authenta_client::proto::VerifyRequest {
                token: token.into(),
                permissions: vec![],
                environment: None,
                cost: None,
            })
            .expect("daemon answers")
            .code
    }

    /// Runs the CLI as `nobody` (uid and gid 65534); tests run as root, so they can drop.
    pub fn cli_as_nobody(&self, args: &[&str], token: Option<&str>) -> Output {
        use std::os::unix::process::CommandExt;
        let mut command = self.cli_command(args);
        let mut as_others = Command::new(bin_for_others());
        as_others.args(args);
        for (name, value) in command.get_envs() {
            match value {
                Some(value) => as_others.env(name, value),
                None => as_others.env_remove(name),
            };
        }
        command = as_others;
        command.stdin(Stdio::null());
        command.uid(65534).gid(65534).env("HOME", "/");
        if let Some(token) = token {
            command.env("AUTHENTA_KEY", token);
        }
        retry_busy_text(|| command.output()).expect("run as nobody")
    }

    /// `keys show ID --json`.
    pub fn show(&self, id: &str) -> Value {
        self.cli_json(&["keys", "show", id, "--json"])
    }

    /// Every byte of every file in the data directory.
    pub fn data_dir_bytes(&self) -> Vec<(PathBuf, Vec<u8>)> {
        std::fs::read_dir(&self.data_dir)
            .expect("data dir")
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_file())
            .map(|e| (e.path(), std::fs::read(e.path()).expect("read")))
            .collect()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Whether this test process can drop to another uid (it runs as root); when it cannot, the
/// test says so and returns.
pub fn can_drop_privileges() -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        eprintln!("not root: cannot act as another uid, so this test cannot run here");
    }
    root
}

/// The binary at a path other users (`nobody`) can run: [`BIN`] itself when every directory
/// above it lets others through, else a copy in a world-readable directory under the
/// system's temporary directory, made once per build (a clone under a `0700` home, as
/// root's is, must still pass the tests that act as another user).
pub fn bin_for_others() -> PathBuf {
    static PATH: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PATH.get_or_init(|| runnable_by_others(Path::new(BIN)))
        .clone()
}

/// `bin` itself when other users may run it where it is, else a copy they may run (see
/// [`bin_for_others`]), made once per build of `bin`.
pub fn runnable_by_others(bin: &Path) -> PathBuf {
    if others_can_run(bin) {
        return bin.to_path_buf();
    }
    let meta = std::fs::metadata(bin).expect("the binary");
    let mtime = meta
        .modified()
        .expect("mtime")
        .duration_since(std::time::UNIX_EPOCH);
    let stamp = format!("{}-{}", meta.len(), mtime.map_or(0, |d| d.as_nanos()));
    let dir = std::env::temp_dir().join(format!("authenta-keyd-tests-{stamp}"));
    let copy = dir.join("authenta-keyd");
    if !copy.exists() {
        std::fs::create_dir_all(&dir).expect("a directory for the binary");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let partial = dir.join(format!(".partial-{}", std::process::id()));
        std::fs::copy(bin, &partial).expect("copy the binary");
        std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::rename(&partial, &copy).expect("put the copy in place");
    }
    copy
}

/// Runs `attempt` again while it fails with "text file busy": a binary copied by this test
/// process cannot be run while another thread's fork still holds the copy's write handle
/// (open only between that fork and its exec).
pub fn retry_busy_text<T>(mut attempt: impl FnMut() -> std::io::Result<T>) -> std::io::Result<T> {
    for _ in 0..50 {
        match attempt() {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
    attempt()
}

/// Whether users other than the owner may run `bin`: it and every directory above it are
/// open to others (mode bits only; ACLs are not read).
fn others_can_run(bin: &Path) -> bool {
    let Ok(bin) = bin.canonicalize() else {
        return false;
    };
    bin.ancestors().all(|path| {
        std::fs::metadata(path).is_ok_and(|meta| meta.permissions().mode() & 0o001 != 0)
    })
}

/// `serve` on `socket`, with its store in `dir/data` and the master key in `key`: for tests
/// that run a daemon of their own making rather than a [`Daemon`].
pub fn serve_at(dir: &Path, socket: &Path, key: &Path) -> Command {
    let mut command = Command::new(BIN);
    command
        .args(["serve", "--socket"])
        .arg(socket)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--master-key-file")
        .arg(key);
    command
}

/// A loopback port nothing listens on now (the OS picks it; it is free until someone
/// binds it, which a test then does at once).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    listener.local_addr().expect("local address").port()
}

/// Polls `ready` every 25 ms until it holds; panics naming `what` after 15 s.
pub fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if ready() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("timed out waiting for {what}");
}

/// Sends a signal to a child.
pub fn signal(child: &Child, signal: i32) {
    signal_pid(child.id(), signal);
}

/// Sends a signal to a process.
pub fn signal_pid(pid: u32, signal: i32) {
    let signal = nix::sys::signal::Signal::try_from(signal).expect("a signal");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal).expect("kill");
}

/// Waits for a child up to `limit`.
pub fn wait_timeout(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    None
}

/// Whether `haystack` contains `needle`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Writes `input` to a command's stdin and returns its output.
pub fn run_with_stdin(mut command: Command, input: &str) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait")
}

/// Verify requests for `token` asking `read`, one per id, as length-prefixed frames back to
/// back: what a client pipelining them writes.
pub fn verify_frames(token: &str, ids: impl IntoIterator<Item = u64>) -> Vec<u8> {
    use authenta_client::proto::{self, Request, RequestBody, VerifyRequest};
    use authenta_client::Permission;
    let mut bytes = Vec::new();
    for id in ids {
        let request = Request {
            id,
            body: RequestBody::Verify(VerifyRequest {
                token: token.to_owned(),
                permissions: vec![Permission::Read],
                environment: None,
                cost: None,
            }),
        };
        let payload = proto::encode(&request).expect("encode");
        bytes.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&payload);
    }
    bytes
}

/// The barrier of the store `db`, opened with the tests' master key.
pub fn barrier(db: &rusqlite::Connection) -> authenta_keyd::store::barrier::Barrier {
    let wrapped: Vec<u8> = db
        .query_row("SELECT value FROM meta WHERE name = 'data_key'", [], |r| {
            r.get(0)
        })
        .expect("wrapped data key");
    let master: [u8; 32] = hex::decode(MASTER_HEX)
        .expect("hex")
        .try_into()
        .expect("32 bytes");
    let data_key =
        authenta_keyd::store::barrier::unwrap_data_key(&zeroize::Zeroizing::new(master), &wrapped)
            .expect("unwraps");
    authenta_keyd::store::barrier::Barrier::new(&data_key)
}

/// Seals the audit chain's head as versions before the sum of its entries did: its
/// sequence number and link only.
pub fn write_head_as_before_entry_sums(
    db: &rusqlite::Connection,
    barrier: &authenta_keyd::store::barrier::Barrier,
) {
    use authenta_keyd::store::record_codec::{from_bytes, to_bytes};
    let sealed: Vec<u8> = db
        .query_row(
            "SELECT value FROM meta WHERE name = 'audit_head'",
            [],
            |r| r.get(0),
        )
        .expect("the head");
    let plain = barrier
        .open("meta", "audit_head", &sealed)
        .expect("the head opens");
    let (seq, link, _sum): (u64, [u8; 32], u128) = from_bytes(&plain).expect("a head");
    db.execute(
        "UPDATE meta SET value = ?1 WHERE name = 'audit_head'",
        [barrier.seal("meta", "audit_head", &to_bytes(&(seq, link)))],
    )
    .expect("write the head back");
}

/// Links the audit chain again as version 0.1 did, binding no rows (its entries carried no
/// key id or row digest), and seals its head in 0.1's form: for a store set back to
/// schema 1, the chain such a store had.
pub fn relink_chain_as_0_1_did(
    db: &rusqlite::Connection,
    barrier: &authenta_keyd::store::barrier::Barrier,
) {
    use authenta_keyd::store::audit;
    use authenta_keyd::store::record_codec::to_bytes;
    let entries: Vec<(i64, Vec<u8>)> = db
        .prepare("SELECT seq, sealed FROM audit ORDER BY seq")
        .expect("prepare")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("entries");
    let mut link = audit::GENESIS;
    let mut last = 0u64;
    for (seq, sealed) in entries {
        last = seq as u64;
        link = audit::link(&link, last, &sealed);
        db.execute(
            "UPDATE audit SET link = ?1 WHERE seq = ?2",
            rusqlite::params![link.as_slice(), seq],
        )
        .expect("relink");
    }
    db.execute(
        "UPDATE meta SET value = ?1 WHERE name = 'audit_head'",
        [barrier.seal("meta", "audit_head", &to_bytes(&(last, link)))],
    )
    .expect("write the head back");
}

/// Creates `count` keys that may read, named `Key-N`, over one connection of `client`, 100
/// pipelined at a time; returns each one's (id, token).
pub fn create_pipelined(
    client: &mut authenta_client::Client,
    count: usize,
) -> Vec<(String, String)> {
    use authenta_client::proto::{CreateKey, RequestBody, ResponseBody};
    let mut keys = Vec::with_capacity(count);
    while keys.len() < count {
        let requests = (keys.len()..count.min(keys.len() + 100))
            .map(|i| {
                RequestBody::CreateKey(CreateKey {
                    name: format!("Key-{i}"),
                    permissions: vec![authenta_client::Permission::Read],
                    ..Default::default()
                })
            })
            .collect();
        for answer in client.call_many(requests).expect("a batch of creates") {
            let ResponseBody::Created(created) = answer else {
                panic!("create answered {answer:?}");
            };
            keys.push((created.key.id, created.token.to_string()));
        }
    }
    keys
}

/// Puts an online copy of the running daemon's store (`VACUUM INTO`) in place of its file,
/// as a backup restored without stopping the daemon would be.
pub fn replace_store_with_a_copy(daemon: &Daemon) {
    let db = daemon.data_dir.join("keys.db");
    let copy = daemon.dir.path().join("copy.db");
    let online = rusqlite::Connection::open(&db).expect("opens");
    online
        .execute("VACUUM INTO ?1", [copy.to_str().expect("utf-8")])
        .expect("copied");
    drop(online);
    std::fs::rename(&copy, &db).expect("moved over the store");
}

/// Flips the last bit of `id`'s sealed row in `table`, as someone with the data files could,
/// through SQLite (while the daemon runs too: it waits for the daemon's transactions).
pub fn flip_a_bit_of_the_row(daemon: &Daemon, table: &str, id: &str) {
    let db = rusqlite::Connection::open(daemon.data_dir.join("keys.db")).expect("open");
    db.busy_timeout(std::time::Duration::from_secs(5))
        .expect("busy timeout");
    let mut sealed: Vec<u8> = db
        .query_row(
            &format!("SELECT sealed FROM {table} WHERE id = ?1"),
            [id],
            |r| r.get(0),
        )
        .expect("the row");
    let last = sealed.len() - 1;
    sealed[last] ^= 0x01;
    db.execute(
        &format!("UPDATE {table} SET sealed = ?1 WHERE id = ?2"),
        rusqlite::params![sealed, id],
    )
    .expect("update");
}
