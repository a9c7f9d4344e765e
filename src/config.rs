//! The daemon's config file (`--config FILE`, else `/etc/authenta/keyd.toml` when present):
//! who may administer and verify, and how the socket is made.

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Read when `--config` is not given and the file exists.
pub const DEFAULT_PATH: &str = "/etc/authenta/keyd.toml";

/// Every field is optional; unknown fields are an error, so a typo is not silently ignored.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Uids allowed admin requests besides root and the daemon's own uid.
    #[serde(default)]
    pub admin_uids: Vec<u32>,
    /// Gids (primary or supplementary) allowed admin requests.
    #[serde(default)]
    pub admin_gids: Vec<u32>,
    /// When non-empty, only members of these gids (and admins) may verify.
    #[serde(default)]
    pub verify_gids: Vec<u32>,
    /// Mode of the socket file when the daemon binds it, as octal text (default "0660").
    #[serde(default = "default_socket_mode")]
    pub socket_mode: String,
    /// Group (name or gid) of the socket file when the daemon binds it.
    pub socket_group: Option<String>,
    /// Most client connections at once; more are refused with `busy`.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Most connections one uid may hold at once (default: half of `max_connections`), so
    /// that one uid cannot lock the others out.
    pub max_connections_per_uid: Option<usize>,
    /// How often live usage counters are written to the store (e.g. "5s").
    #[serde(default = "default_flush_interval", with = "humantime_serde_compat")]
    pub usage_flush_interval: Duration,
    /// Grace of `keys regenerate` when the request names none (e.g. "1h"; default "0s").
    /// The policy file's `[defaults] regenerate_grace` takes precedence.
    #[serde(default, with = "humantime_serde_compat")]
    pub regenerate_grace: Duration,
    /// The policy file (default: /etc/authenta/policy.toml when present).
    pub policy: Option<PathBuf>,
    /// Threads serving connections (default: half the cores, rounded up).
    pub worker_threads: Option<usize>,
    /// Longest a connection thread keeps polling its sockets after answering, when its
    /// requests arrive close together, before it sleeps (default "75us"; "0" never polls).
    /// See `busy_poll.rs`.
    #[serde(default = "default_busy_poll", with = "humantime_serde_compat")]
    pub busy_poll: Duration,
    /// Directories a rotation's sink may be written in (default: none, so a policy with a
    /// sink is refused until the operator allows its directory here).
    #[serde(default)]
    pub sink_dirs: Vec<PathBuf>,
    /// Users (names or uids) a sink may be given to with the policy's `sink_owner`.
    #[serde(default)]
    pub sink_owners: Vec<String>,
    /// Where the HTTP side listens (forward-auth, `/metrics`, health): `unix:/PATH` or
    /// `IP:PORT` (default: nowhere). Only loopback addresses unless `http_allow_remote`.
    #[serde(default)]
    pub http_listen: Vec<String>,
    /// Lets `http_listen` name an address other hosts can reach. Over TCP no peer
    /// credentials exist: anyone who reaches the port may verify.
    #[serde(default)]
    pub http_allow_remote: bool,
    /// Most HTTP connections at once; past it, the oldest is closed to let a new one in.
    #[serde(default = "default_max_connections")]
    pub http_max_connections: usize,
    /// Fleet mode: every daemon of the fleet serves the same keys, replicated through NATS
    /// JetStream. Absent: this host's store alone.
    pub fleet: Option<FleetConfig>,
}

/// `[fleet]`: where the fleet's NATS servers are and who this node is.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetConfig {
    /// NATS server URLs, e.g. `nats://127.0.0.1:4222`.
    pub servers: Vec<String>,
    /// The fleet's key space: its stream and subjects derive from it.
    pub name: String,
    /// This node's name in audit entries and status (default: the host name).
    pub node: Option<String>,
    /// Stream replicas when this daemon creates the stream (1 for a lone server).
    #[serde(default = "default_replicas")]
    pub replicas: usize,
    /// A NATS credentials file (JWT and nkey seed).
    pub credentials: Option<PathBuf>,
    /// A file holding an nkey seed.
    pub nkey_seed_file: Option<PathBuf>,
    pub user: Option<String>,
    /// A file holding the password for `user`.
    pub password_file: Option<PathBuf>,
    /// A file holding a NATS token.
    pub token_file: Option<PathBuf>,
    /// TLS: the CA to trust, and this node's certificate and key (mutual TLS).
    pub tls_ca: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

fn default_replicas() -> usize {
    3
}

impl FleetConfig {
    /// Checks what the config can check alone; the error says what to write instead.
    fn check(&self) -> Result<()> {
        if self.servers.is_empty() {
            bail!("[fleet] servers is empty: name at least one NATS server, e.g. \"nats://127.0.0.1:4222\"");
        }
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 32
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !name_ok {
            bail!("[fleet] name must be 1 to 32 letters, digits, '-' or '_' (it names the NATS stream)");
        }
        if let Some(node) = &self.node {
            let node_ok = !node.is_empty()
                && node.len() <= 64
                && node
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
            if !node_ok {
                bail!("[fleet] node must be 1 to 64 letters, digits, '-', '_' or '.'");
            }
        }
        if !(1..=5).contains(&self.replicas) {
            bail!(
                "[fleet] replicas must be 1 to 5 (JetStream's limit); 3 tolerates one server down"
            );
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            bail!("[fleet] tls_cert and tls_key go together");
        }
        Ok(())
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            admin_uids: Vec::new(),
            admin_gids: Vec::new(),
            verify_gids: Vec::new(),
            socket_mode: default_socket_mode(),
            socket_group: None,
            max_connections: default_max_connections(),
            max_connections_per_uid: None,
            usage_flush_interval: default_flush_interval(),
            regenerate_grace: Duration::ZERO,
            policy: None,
            worker_threads: None,
            busy_poll: default_busy_poll(),
            sink_dirs: Vec::new(),
            sink_owners: Vec::new(),
            http_listen: Vec::new(),
            http_allow_remote: false,
            http_max_connections: default_max_connections(),
            fleet: None,
        }
    }
}

fn default_socket_mode() -> String {
    "0660".into()
}

fn default_max_connections() -> usize {
    1024
}

/// Past this, polling is no longer about skipping a wake-up (tens of microseconds).
pub const MOST_BUSY_POLL: Duration = Duration::from_millis(10);

fn default_busy_poll() -> Duration {
    Duration::from_micros(75)
}

fn default_flush_interval() -> Duration {
    Duration::from_secs(5)
}

impl Config {
    /// Reads `path`, or the default file when present, or uses the defaults.
    pub fn load(path: Option<&Path>) -> Result<(Config, Option<PathBuf>)> {
        let path = match path {
            Some(p) => p.to_path_buf(),
            None if Path::new(DEFAULT_PATH).exists() => PathBuf::from(DEFAULT_PATH),
            None => return Ok((Config::default(), None)),
        };
        crate::host::trust::check(&path)
            .map_err(|untrusted| anyhow::anyhow!("config {untrusted}"))?;
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read config {}", path.display()))?;
        let config: Config = toml::from_str(&text)
            .with_context(|| format!("config {} is invalid", path.display()))?;
        config.socket_mode_bits()?;
        config.sink_rules()?;
        if config.max_connections == 0 {
            bail!(
                "config {}: max_connections must be at least 1",
                path.display()
            );
        }
        if config.http_max_connections == 0 {
            bail!(
                "config {}: http_max_connections must be at least 1",
                path.display()
            );
        }
        config
            .http_addresses(&[])
            .with_context(|| format!("config {}", path.display()))?;
        if config.max_connections_per_uid == Some(0) {
            bail!(
                "config {}: max_connections_per_uid must be at least 1",
                path.display()
            );
        }
        if config.worker_threads == Some(0) {
            bail!(
                "config {}: worker_threads must be at least 1",
                path.display()
            );
        }
        if config.busy_poll > MOST_BUSY_POLL {
            bail!(
                "config {}: busy_poll must be at most {} (it is how long a connection thread \
                 may keep a core busy between two requests; the default is {})",
                path.display(),
                crate::time::format_duration(MOST_BUSY_POLL),
                crate::time::format_duration(default_busy_poll())
            );
        }
        if let Some(fleet) = &config.fleet {
            fleet
                .check()
                .with_context(|| format!("config {}", path.display()))?;
        }
        if config.usage_flush_interval.is_zero() {
            bail!(
                "config {}: usage_flush_interval must be above zero",
                path.display()
            );
        }
        Ok((config, Some(path)))
    }

    /// Where rotations may write tokens; names in `sink_owners` resolved to uids.
    pub fn sink_rules(&self) -> Result<crate::policy::SinkRules> {
        let owners = self
            .sink_owners
            .iter()
            .map(|user| match user.parse::<u32>() {
                Ok(uid) => Ok(uid),
                Err(_) => nix::unistd::User::from_name(user)
                    .ok()
                    .flatten()
                    .map(|u| u.uid.as_raw())
                    .with_context(|| format!("sink_owners: no user named '{user}' on this host")),
            })
            .collect::<Result<Vec<u32>>>()?;
        Ok(crate::policy::SinkRules {
            dirs: self.sink_dirs.clone(),
            owners,
        })
    }

    /// Most connections one uid may hold at once.
    pub fn connections_per_uid(&self) -> usize {
        self.max_connections_per_uid
            .unwrap_or(self.max_connections / 2)
            .max(1)
    }

    /// Where the HTTP side listens: `flags` (`serve --http-listen`) when any, else the
    /// config's `http_listen`. A non-loopback address is refused unless
    /// `http_allow_remote`.
    pub fn http_addresses(&self, flags: &[String]) -> Result<Vec<HttpAddress>> {
        let texts = if flags.is_empty() {
            &self.http_listen
        } else {
            flags
        };
        texts
            .iter()
            .map(|text| HttpAddress::parse(text, self.http_allow_remote))
            .collect()
    }

    /// The socket mode as permission bits.
    pub fn socket_mode_bits(&self) -> Result<u32> {
        let bits = u32::from_str_radix(self.socket_mode.trim_start_matches("0o"), 8)
            .ok()
            .filter(|b| *b <= 0o777)
            .with_context(|| {
                format!(
                    "socket_mode '{}' is not an octal mode like \"0660\"",
                    self.socket_mode
                )
            })?;
        Ok(bits)
    }
}

/// Where the HTTP side listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpAddress {
    /// `unix:/run/authenta/http.sock`: peer credentials apply, as on the main socket.
    Unix(PathBuf),
    /// `127.0.0.1:9180`: no peer credentials; anyone who reaches the port may verify.
    Tcp(std::net::SocketAddr),
}

impl HttpAddress {
    /// Reads `unix:/PATH` or `IP:PORT`; an address off this host only with `allow_remote`.
    pub fn parse(text: &str, allow_remote: bool) -> Result<HttpAddress> {
        if let Some(path) = text.strip_prefix("unix:") {
            if !path.starts_with('/') {
                bail!("http_listen '{text}': the socket path must be absolute, like unix:/run/authenta/http.sock");
            }
            return Ok(HttpAddress::Unix(PathBuf::from(path)));
        }
        let Ok(address) = text.parse::<std::net::SocketAddr>() else {
            bail!("http_listen '{text}' is neither unix:/PATH nor IP:PORT (like 127.0.0.1:9180 or [::1]:9180)");
        };
        if !address.ip().is_loopback() && !allow_remote {
            bail!(
                "http_listen '{text}' is reachable from other hosts, where anyone who reaches \
                 the port may verify tokens: listen on 127.0.0.1 or a unix: socket, or set \
                 http_allow_remote = true"
            );
        }
        Ok(HttpAddress::Tcp(address))
    }
}

impl std::fmt::Display for HttpAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpAddress::Unix(path) => write!(f, "unix:{}", path.display()),
            HttpAddress::Tcp(address) => write!(f, "http://{address}"),
        }
    }
}

/// Durations in the config are text like "5s" or "90d".
mod humantime_serde_compat {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        crate::time::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_in_the_repository_is_valid() {
        let example: Config = toml::from_str(include_str!("../systemd/keyd.example.toml"))
            .expect("systemd/keyd.example.toml parses");
        assert_eq!(example.busy_poll, Duration::from_micros(75));
        assert_eq!(example.usage_flush_interval, Duration::from_secs(5));
    }

    #[test]
    fn a_busy_poll_of_more_than_ten_milliseconds_is_refused_with_the_limit() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("keyd.toml");
        std::fs::write(&path, "busy_poll = \"1h\"\n").expect("write config");
        let e = Config::load(Some(&path)).expect_err("an hour of polling");
        assert!(
            e.to_string().contains("busy_poll must be at most 10ms"),
            "{e}"
        );
        std::fs::write(&path, "busy_poll = \"10ms\"\n").expect("write config");
        assert!(Config::load(Some(&path)).is_ok());
    }

    #[test]
    fn http_addresses_off_this_host_need_the_operator_to_say_so() {
        let mut config = Config {
            http_listen: vec![
                "unix:/run/authenta/http.sock".into(),
                "127.0.0.1:9180".into(),
            ],
            ..Config::default()
        };
        assert_eq!(
            config.http_addresses(&[]).expect("loopback and unix").len(),
            2
        );
        let remote = ["0.0.0.0:9180".to_string()];
        let e = config.http_addresses(&remote).expect_err("every interface");
        assert!(e.to_string().contains("http_allow_remote"), "{e}");
        for bad in ["localhost:9180", "unix:relative.sock", "9180"] {
            assert!(config.http_addresses(&[bad.to_string()]).is_err(), "{bad}");
        }
        config.http_allow_remote = true;
        assert_eq!(
            config.http_addresses(&remote).expect("allowed"),
            vec![HttpAddress::Tcp("0.0.0.0:9180".parse().expect("address"))]
        );
    }

    #[test]
    fn busy_poll_defaults_on_and_can_be_turned_off() {
        let default: Config = toml::from_str("").expect("empty config");
        assert_eq!(default.busy_poll, Duration::from_micros(75));
        let off: Config = toml::from_str("busy_poll = \"0\"").expect("zero");
        assert!(off.busy_poll.is_zero());
        let bad = toml::from_str::<Config>("busy_poll = \"fast\"").expect_err("not a duration");
        assert!(bad.to_string().contains("busy_poll"), "{bad}");
    }
}
