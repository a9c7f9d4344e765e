//! The wire types of the authenta-keyd protocol, shared by the daemon and every client.
//!
//! A connection carries frames: a 4-byte big-endian length, then that many bytes (at most
//! [`MAX_FRAME_LEN`]) holding one bincode-2 message in its `standard` configuration. The
//! client speaks first with a [`Hello`]; the daemon answers with a [`HelloReply`]. After that
//! the client sends [`Request`]s and the daemon answers each with a [`Response`] carrying the
//! same `id`, in the order the requests arrived, so a client may pipeline. `docs/protocol.md`
//! describes the bytes for authors of clients in other languages.
//!
//! bincode is unmaintained (RUSTSEC-2025-0141). It is kept behind this module: every decode
//! goes through [`decode`], which refuses payloads over a frame, bounds what decoding may
//! allocate (8 frames' worth of in-memory size) and rejects trailing bytes, so a hostile peer
//! cannot make the decoder allocate more than a small bounded amount.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// A key's metadata: string keys to string values, in key order (at most 1 KiB as JSON).
pub type Meta = BTreeMap<String, String>;

/// The protocol version this crate speaks. A daemon refuses a [`Hello`] with another one.
pub const PROTOCOL_VERSION: u16 = 2;

/// Largest payload of one frame, in bytes (the length prefix not counted).
pub const MAX_FRAME_LEN: usize = 64 * 1024;

/// Opening message of every connection, sent by the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Must equal [`PROTOCOL_VERSION`] of the daemon.
    pub version: u16,
    /// Free text naming the client, for the daemon's logs (e.g. `authenta-client/0.1.0`).
    pub agent: String,
}

/// The daemon's answer to a [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HelloReply {
    /// The versions match; requests may follow.
    Welcome {
        /// The protocol version in use.
        version: u16,
        /// The daemon's package version.
        server: String,
    },
    /// The versions do not match; the daemon closes the connection after this.
    Refused {
        /// The protocol version the daemon speaks.
        supported: u16,
        /// What went wrong, for a person.
        message: String,
    },
    /// The daemon is at its connection cap; it closes the connection after this.
    Busy {
        /// What to do, for a person.
        message: String,
    },
}

/// One request; `id` is echoed in its [`Response`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub id: u64,
    pub body: RequestBody,
}

/// What a client may ask. Everything but `Verify` is an admin request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequestBody {
    /// Is this token valid, and does it hold these permissions?
    Verify(VerifyRequest),
    /// Create a key; answered with [`ResponseBody::Created`].
    CreateKey(CreateKey),
    /// One page of keys, in key-id order, starting after the id `after` (from the start when
    /// `None`), only those of `owner_id` when set; answered with [`ResponseBody::Keys`].
    /// Pages keep every answer within a frame.
    ListKeys {
        after: Option<String>,
        owner_id: Option<String>,
    },
    /// One key by id; answered with [`ResponseBody::Key`].
    ShowKey { id: String },
    /// New token for the same key id; answered with [`ResponseBody::Created`]. The old token
    /// stays valid for `grace_secs` (none: the daemon's default, zero unless configured).
    /// `expires_in_secs` gives the key a new expiry from now (none: it keeps its own; a key
    /// whose own expiry has passed is refused without one).
    Regenerate {
        id: String,
        grace_secs: Option<u64>,
        expires_in_secs: Option<u64>,
    },
    /// Revoke a key for good; answered with [`ResponseBody::Key`].
    Revoke { id: String, reason: Option<String> },
    /// Daemon health and counts; answered with [`ResponseBody::Status`].
    Status,
    /// One page of the audit log, entries after sequence number `after` (0: from the
    /// start). With `verify`, the whole hash chain is checked too.
    Audit { verify: bool, after: u64 },
    /// Re-wrap the store's data key under a new 32-byte master key (admin); answered with
    /// [`ResponseBody::Done`]. The daemon must be started with the new key from then on.
    Rekey { new_master_key: SecretBytes },
    /// The policy file's state and the coming rotations; answered with
    /// [`ResponseBody::Policy`].
    PolicyStatus,
    /// Is the daemon ready to serve? Any peer that may connect may ask (not only admins),
    /// so a monitoring user has a check; answered with [`ResponseBody::Health`].
    Health,
    /// Changes a key in place (its token stays); answered with [`ResponseBody::Key`].
    UpdateKey(UpdateKey),
    /// Creates or changes an owner's shared limits; answered with [`ResponseBody::Owner`].
    SetOwner(OwnerUpdate),
    /// One owner's limits and live state; answered with [`ResponseBody::Owner`].
    ShowOwner { id: String },
}

/// A change of one field: `None` keeps it, `Some(None)` clears it, `Some(Some(v))` sets it.
pub type Change<T> = Option<Option<T>>;

/// What `keys update` changes; every field left `None` (or empty) stays as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateKey {
    pub id: String,
    pub name: Option<String>,
    pub permissions: Option<Vec<Permission>>,
    pub environment: Change<String>,
    /// A new lifetime from now, or no expiry.
    pub expires_in_secs: Change<u64>,
    pub owner_id: Change<String>,
    /// Metadata entries to add or replace.
    pub set_meta: Meta,
    /// Metadata entries to remove (before `set_meta` is applied).
    pub unset_meta: Vec<String>,
    pub ratelimit: Change<RateLimit>,
    /// Sets the credit balance (and starts a new refill period), or makes the key unlimited.
    pub remaining: Change<u64>,
    pub refill: Change<Refill>,
}

/// What `owners set` changes on an owner (created on first use).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerUpdate {
    pub id: String,
    pub ratelimit: Change<RateLimit>,
    pub remaining: Change<u64>,
    pub refill: Change<Refill>,
}

/// At most `limit` verifies per `window_ms`, enforced as a token bucket (GCRA): a burst of
/// `limit`, refilled evenly over the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimit {
    pub limit: u32,
    pub window_ms: u64,
}

/// Every `interval_ms` from when the balance was set, the balance is set back to `amount`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refill {
    pub amount: u64,
    pub interval_ms: u64,
}

/// A rate limit as it stands after a verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimitState {
    pub limit: u32,
    /// Verifies left before the limit answers `rate_limited`.
    pub remaining: u32,
    /// When the whole limit is available again (unix milliseconds); while limited, when the
    /// next verify may pass is `retry_at`.
    pub reset_at: i64,
    /// When the next verify may pass (unix milliseconds): now unless limited.
    pub retry_at: i64,
}

/// An owner: the tenant its keys belong to, with limits all of them share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerInfo {
    pub id: String,
    pub ratelimit: Option<RateLimit>,
    /// The shared limit as it stands now.
    pub ratelimit_state: Option<RateLimitState>,
    /// Credits left now, when the owner has a balance.
    pub remaining: Option<u64>,
    pub refill: Option<Refill>,
    /// Keys that name this owner.
    pub keys: u64,
}

/// Bytes that must not show in logs (`Debug` prints only their length), wiped on drop.
#[derive(
    Clone, PartialEq, Eq, Serialize, Deserialize, zeroize::Zeroize, zeroize::ZeroizeOnDrop,
)]
#[serde(transparent)]
pub struct SecretBytes(pub Vec<u8>);

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} secret bytes>", self.0.len())
    }
}

/// The question every app asks on every request it serves.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyRequest {
    /// The token as the app received it.
    pub token: String,
    /// Every one of these must be held by the key.
    pub permissions: Vec<Permission>,
    /// When set, the key must carry exactly this environment label.
    pub environment: Option<String>,
    /// Credits this verify spends when the key (or its owner) has a balance; none: 1. Zero
    /// checks without spending.
    pub cost: Option<u32>,
}

impl fmt::Debug for VerifyRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyRequest")
            .field("token", &"<redacted>")
            .field("permissions", &self.permissions)
            .field("environment", &self.environment)
            .field("cost", &self.cost)
            .finish()
    }
}

/// Parameters of a new key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateKey {
    /// A label for people (e.g. `Backend-Server-Key`); sealed at rest, never logged.
    pub name: String,
    /// At least one permission.
    pub permissions: Vec<Permission>,
    /// Optional environment label (`production`, `staging`, ...).
    pub environment: Option<String>,
    /// Optional lifetime from now, in seconds.
    pub expires_in_secs: Option<u64>,
    /// The tenant the key belongs to (at most 128 characters); sealed at rest like the name.
    pub owner_id: Option<String>,
    /// Free metadata handed back with every answer about the key (at most 1 KiB as JSON).
    pub meta: Meta,
    pub ratelimit: Option<RateLimit>,
    /// A credit balance: each allowed verify spends its cost; at 0 verifies answer
    /// `usage_exceeded`. None: unlimited.
    pub remaining: Option<u64>,
    /// Sets the balance back to an amount every interval (needs `remaining`).
    pub refill: Option<Refill>,
}

/// What a key may do: the seed's table of permissions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    /// Fetching media and metadata.
    Read,
    /// Uploading media.
    Write,
    /// Removing media records.
    Delete,
}

impl Permission {
    /// All permissions, in display order.
    pub const ALL: [Permission; 3] = [Permission::Read, Permission::Write, Permission::Delete];

    /// This permission's bit in a [`PermissionBits`] set.
    pub const fn bit(self) -> u8 {
        match self {
            Permission::Read => 1,
            Permission::Write => 2,
            Permission::Delete => 4,
        }
    }

    /// The lowercase name used on the command line and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::Write => "write",
            Permission::Delete => "delete",
        }
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Permission {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "read" => Ok(Permission::Read),
            "write" => Ok(Permission::Write),
            "delete" => Ok(Permission::Delete),
            other => Err(format!(
                "unknown permission '{other}': use read, write or delete"
            )),
        }
    }
}

/// One answer; `id` is the id of the request it answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    pub id: u64,
    pub body: ResponseBody,
}

/// The answers. A denied verify is an answer ([`ResponseBody::Verify`]), not an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResponseBody {
    Verify(VerifyAnswer),
    Created(NewToken),
    Keys(KeyPage),
    Key(KeyInfo),
    Status(StatusInfo),
    Audit(AuditReport),
    Error(ErrorAnswer),
    /// A change that has nothing to show but a message for a person.
    Done(String),
    Policy(PolicyReport),
    Health(HealthReport),
    Owner(OwnerInfo),
}

/// Whether the daemon is ready, and why not. `/readyz` answers the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthReport {
    /// Ready: the store answers, a policy file named is in force, and in fleet mode this
    /// node is connected.
    pub ready: bool,
    /// The store thread answered.
    pub store: bool,
    /// `none` (no policy file), `loaded`, `stale` (the file on disk failed to load; the
    /// previous version is in force), or `failed` (no version of it is in force).
    pub policy: String,
    /// Fleet mode only: connected to NATS.
    pub fleet_connected: Option<bool>,
    /// What is wrong, for a person; empty when ready.
    pub problems: Vec<String>,
}

/// The policy file in force and what it schedules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyReport {
    /// The file watched (none: no policy).
    pub file: Option<String>,
    /// SHA-256 (hex) of the content in force.
    pub content_sha256: Option<String>,
    pub loaded_at: Option<i64>,
    /// Why the file on disk is not in force, when it is not.
    pub last_error: Option<String>,
    pub last_error_at: Option<i64>,
    pub rules: u32,
    pub revoked_ids: u32,
    pub revoked_hashes: u32,
    /// Coming scheduled rotations, soonest first.
    pub next_rotations: Vec<ScheduledRotation>,
    /// Rotations that failed and will be retried.
    pub rotation_failures: Vec<RotationFailure>,
}

/// A rotation the scheduler will run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduledRotation {
    pub key_id: String,
    pub at: i64,
}

/// A rotation that failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationFailure {
    pub key_id: String,
    pub message: String,
    pub retry_at: i64,
}

/// One page of keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyPage {
    pub keys: Vec<KeyInfo>,
    /// Ask again with `after: next` for the following page; `None` on the last page.
    pub next: Option<String>,
}

/// The outcome of a verify.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyAnswer {
    pub code: VerifyCode,
    /// The key the token belongs to, when one matched (even when denied).
    pub key_id: Option<String>,
    /// The permissions the key holds (empty when no key matched).
    pub permissions: Vec<Permission>,
    /// The key's environment label.
    pub environment: Option<String>,
    /// When the key is due for rotation (unix milliseconds), if a policy says so.
    pub rotate_by: Option<i64>,
    /// The key is within its policy's `warn_before` window of `rotate_by` (or past it).
    pub rotation_due: bool,
    /// The key's name, owner and metadata, on every answer but `revoked` and `expired`.
    pub name: Option<String>,
    pub owner_id: Option<String>,
    pub meta: Meta,
    /// The key's own expiry (unix milliseconds), if it has one.
    pub expires_at: Option<i64>,
    /// The key's rate limit (else its owner's) after this verify, when it has one.
    pub ratelimit: Option<RateLimitState>,
    /// Credits left after this verify (the key's, else its owner's; for `usage_exceeded`, the
    /// balance that refused it), when it has a balance.
    pub remaining: Option<u64>,
}

impl VerifyAnswer {
    /// The HTTP-style status of this answer: 200, 401, 403 or 429.
    pub fn status(&self) -> u16 {
        self.code.status()
    }
}

/// Why a verify was allowed or denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerifyCode {
    /// 200: the key is active and holds every permission asked for.
    Valid,
    /// 401: not a well-formed token (prefix, length, alphabet or checksum).
    Malformed,
    /// 401: well-formed, but no key has this token.
    Unknown,
    /// 401: the key was revoked, or this token was replaced by a regenerate.
    Revoked,
    /// 401: the key is past its expiry or its policy's maximum age.
    Expired,
    /// 401: the key belongs to another environment.
    WrongEnvironment,
    /// 403: the key is valid but lacks a permission asked for.
    InsufficientPermissions,
    /// 429: the key's rate limit (or its owner's) is spent for now; see `ratelimit`.
    RateLimited,
    /// 429: the key's credits (or its owner's) are spent; `remaining` is 0.
    UsageExceeded,
}

impl VerifyCode {
    /// The HTTP-style status: 200, 401, 403 or 429.
    pub fn status(self) -> u16 {
        match self {
            VerifyCode::Valid => 200,
            VerifyCode::InsufficientPermissions => 403,
            VerifyCode::RateLimited | VerifyCode::UsageExceeded => 429,
            _ => 401,
        }
    }

    /// The snake_case name used in JSON and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            VerifyCode::Valid => "valid",
            VerifyCode::Malformed => "malformed",
            VerifyCode::Unknown => "unknown",
            VerifyCode::Revoked => "revoked",
            VerifyCode::Expired => "expired",
            VerifyCode::WrongEnvironment => "wrong_environment",
            VerifyCode::InsufficientPermissions => "insufficient_permissions",
            VerifyCode::RateLimited => "rate_limited",
            VerifyCode::UsageExceeded => "usage_exceeded",
        }
    }
}

impl fmt::Display for VerifyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A key as listed: everything but the token, which is never shown again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInfo {
    pub id: String,
    pub name: String,
    /// The first 8 characters after `api_`, to help a person recognise a key.
    pub start: String,
    pub permissions: Vec<Permission>,
    pub environment: Option<String>,
    pub state: KeyState,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Last regenerate, unix milliseconds.
    pub rotated_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub expires_at: Option<i64>,
    /// When the key is due for rotation, if a policy says so.
    pub rotate_by: Option<i64>,
    /// The key is within its policy's `warn_before` window of `rotate_by` (or past it).
    pub rotation_due: bool,
    pub revoked_at: Option<i64>,
    /// Until when the token replaced by the last regenerate still verifies.
    pub grace_until: Option<i64>,
    pub usage: Usage,
    pub owner_id: Option<String>,
    pub meta: Meta,
    pub ratelimit: Option<RateLimit>,
    /// Credits left now, when the key has a balance.
    pub remaining: Option<u64>,
    pub refill: Option<Refill>,
}

/// A key's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyState {
    Active,
    Revoked,
    Expired,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Active => "active",
            KeyState::Revoked => "revoked",
            KeyState::Expired => "expired",
        }
    }
}

/// Verify counts for one key, cumulative since it was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub verifications: u64,
    pub allowed: u64,
    pub denied: u64,
}

/// A freshly issued token and its key. The token is shown this once.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewToken {
    pub key: KeyInfo,
    pub token: String,
}

impl fmt::Debug for NewToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewToken")
            .field("key", &self.key)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// Daemon health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusInfo {
    pub version: String,
    pub uptime_secs: u64,
    pub socket: String,
    pub data_dir: String,
    pub keys: KeyCounts,
    /// Keys whose sealed row did not open: they fail closed until restored.
    pub corrupt_keys: Vec<String>,
    pub connections: u64,
    pub verifications: u64,
    /// Why the policy file on disk is not in force, when it is not.
    pub policy_error: Option<String>,
    /// Scheduled rotations failing now.
    pub rotation_failures: u64,
    /// Fleet mode only: where this node stands.
    pub fleet: Option<FleetStatus>,
    /// The master key in use is the development key next to the data (fine on a developer
    /// machine; in production every backup of the data would carry it).
    pub development_key: bool,
    /// When the newest audit entry was made (unix milliseconds), if there is one: a store
    /// rolled back whole to an older copy shows an older time than expected.
    pub newest_audit_at: Option<i64>,
    /// How many keys' rows did not open; `corrupt_keys` names at most the first 100.
    pub corrupt_total: u64,
}

/// A fleet node's view of its fleet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetStatus {
    /// Connected to the fleet's NATS servers now.
    pub connected: bool,
    pub node: String,
    pub servers: Vec<String>,
    /// The last stream sequence applied to this node's replica.
    pub applied_seq: u64,
    /// Changes the stream is known to hold that this node has not applied yet.
    pub lag: u64,
    /// When the connection was lost (unix milliseconds), while it is.
    pub disconnected_since: Option<i64>,
    /// Messages of the stream refused since start (bad seal, or changing another key).
    pub refused_messages: u64,
    /// Times the stream no longer held the changes this node needed next (purged or
    /// trimmed), so that it resynced from the last change of every key, since start.
    pub resyncs: u64,
    /// Holding the fleet's data key (admin writes need it).
    pub joined: bool,
}

/// Keys by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyCounts {
    pub total: u64,
    pub active: u64,
    pub revoked: u64,
    pub expired: u64,
}

/// The audit log, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditReport {
    pub entries: Vec<AuditEntry>,
    /// Present when the request asked for a check of the hash chain.
    pub chain: Option<ChainCheck>,
    /// Ask again with `after: next` for the following page; `None` on the last page.
    pub next: Option<u64>,
}

/// One admin change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub seq: u64,
    /// Unix milliseconds.
    pub at: i64,
    pub actor: Actor,
    /// `create`, `regenerate`, `revoke`, ...
    pub action: String,
    pub key_id: Option<String>,
    pub detail: Option<String>,
}

/// Who made a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Actor {
    /// A client on the socket, by its peer credentials.
    Peer { uid: u32, pid: Option<i32> },
    /// The policy file.
    Policy,
    /// The daemon itself (e.g. expiry housekeeping).
    Daemon,
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::Peer {
                uid,
                pid: Some(pid),
            } => write!(f, "uid={uid} pid={pid}"),
            Actor::Peer { uid, pid: None } => write!(f, "uid={uid}"),
            Actor::Policy => f.write_str("policy"),
            Actor::Daemon => f.write_str("daemon"),
        }
    }
}

/// The outcome of checking the audit hash chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainCheck {
    pub ok: bool,
    pub checked: u64,
    /// What broke the chain, when it is broken.
    pub problem: Option<String>,
}

/// A request that could not be carried out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorAnswer {
    pub code: ErrorCode,
    /// For a person: what went wrong and what to do.
    pub message: String,
}

/// Kinds of [`ErrorAnswer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request's arguments are invalid.
    BadRequest,
    /// No key with that id.
    NotFound,
    /// The peer may not make this request (admin requests; verify when `verify_gids` is set).
    PermissionDenied,
    /// The daemon is shutting down (at the connection cap, the answer is
    /// [`HelloReply::Busy`]).
    Busy,
    /// The store could not commit the change; nothing was changed.
    Storage,
    /// A frame or message could not be decoded, did not arrive whole within the deadline, or
    /// an answer would not fit a frame; the connection is closed after this.
    BadFrame,
    /// Something the daemon did not expect.
    Internal,
    /// Fleet mode: another node changed the key at the same time; nothing was changed.
    Conflict,
    /// Fleet mode: the fleet's NATS servers cannot be reached; nothing was changed.
    FleetUnavailable,
}

/// Decoding or encoding failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    #[error("message does not decode: {0}")]
    Decode(String),
    #[error("message has {0} trailing bytes")]
    TrailingBytes(usize),
    #[error("message of {0} bytes exceeds the frame limit of {MAX_FRAME_LEN}")]
    TooLarge(usize),
    #[error("message does not encode: {0}")]
    Encode(String),
}

/// bincode's limit counts decoded (in-memory) bytes, not wire bytes: a `u64` counts 8 even
/// when it took 1 byte on the wire. So the limit is a multiple of the frame size: every
/// message that fits a frame decodes, and allocation stays bounded all the same.
const DECODE_LIMIT: usize = 8 * MAX_FRAME_LEN;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<DECODE_LIMIT>()
}

/// Encodes a message into a fresh buffer, refusing one larger than a frame.
pub fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, ProtoError> {
    let mut out = Vec::with_capacity(64);
    encode_into(message, &mut out)?;
    Ok(out)
}

/// Appends the encoding of a message to `out` (no length prefix), refusing one larger than a
/// frame. Reusing `out` saves an allocation per message on the hot path.
pub fn encode_into<T: Serialize>(message: &T, out: &mut Vec<u8>) -> Result<(), ProtoError> {
    let before = out.len();
    bincode::serde::encode_into_std_write(message, out, config())
        .map_err(|e| ProtoError::Encode(e.to_string()))?;
    let len = out.len() - before;
    if len > MAX_FRAME_LEN {
        out.truncate(before);
        return Err(ProtoError::TooLarge(len));
    }
    Ok(())
}

/// Appends `message` to `out` as one whole frame: the 4-byte big-endian length, then the
/// encoding. On error `out` is left as it was.
pub fn push_frame<T: Serialize>(message: &T, out: &mut Vec<u8>) -> Result<(), ProtoError> {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    if let Err(e) = encode_into(message, out) {
        out.truncate(at);
        return Err(e);
    }
    // At most MAX_FRAME_LEN, which encode_into checked.
    let len = (out.len() - at - 4) as u32;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// Decodes exactly one message, borrowing its strings from `payload`: see
/// [`crate::verify_wire`].
pub fn decode_borrowed<'a, T: Deserialize<'a>>(payload: &'a [u8]) -> Result<T, ProtoError> {
    exactly_one(payload, |p| {
        bincode::serde::borrow_decode_from_slice(p, config())
    })
}

/// Decodes exactly one message from a frame's payload: bounded allocation, no trailing bytes.
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, ProtoError> {
    exactly_one(payload, |p| bincode::serde::decode_from_slice(p, config()))
}

/// The checks both decoders make around bincode: at most one frame in, no bytes left over.
fn exactly_one<'a, T>(
    payload: &'a [u8],
    decode: impl FnOnce(&'a [u8]) -> Result<(T, usize), bincode::error::DecodeError>,
) -> Result<T, ProtoError> {
    if payload.len() > MAX_FRAME_LEN {
        return Err(ProtoError::TooLarge(payload.len()));
    }
    let (value, used) = decode(payload).map_err(|e| ProtoError::Decode(e.to_string()))?;
    if used != payload.len() {
        return Err(ProtoError::TrailingBytes(payload.len() - used));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trips() {
        let request = Request {
            id: 7,
            body: RequestBody::Verify(VerifyRequest {
                token: "api_x".into(),
                permissions: vec![Permission::Read, Permission::Delete],
                environment: Some("production".into()),
                cost: Some(3),
            }),
        };
        let bytes = encode(&request).expect("encodes");
        assert_eq!(decode::<Request>(&bytes).expect("decodes"), request);
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let mut bytes = encode(&Request {
            id: 1,
            body: RequestBody::Status,
        })
        .expect("encodes");
        bytes.push(0);
        assert_eq!(decode::<Request>(&bytes), Err(ProtoError::TrailingBytes(1)));
    }

    #[test]
    fn huge_length_inside_a_message_does_not_allocate() {
        // A Verify whose token claims to be 2^40 bytes long.
        let mut bytes = vec![1u8, 0]; // id 1, variant 0 (Verify)
        bytes.push(253); // bincode varint: u64 follows
        bytes.extend_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(matches!(
            decode::<Request>(&bytes),
            Err(ProtoError::Decode(_))
        ));
    }

    #[test]
    fn debug_never_shows_a_token() {
        let request = VerifyRequest {
            token: "api_secret".into(),
            permissions: vec![],
            environment: None,
            cost: None,
        };
        assert!(!format!("{request:?}").contains("api_secret"));
    }

    #[test]
    fn statuses_follow_the_seed() {
        assert_eq!(VerifyCode::Valid.status(), 200);
        assert_eq!(VerifyCode::Revoked.status(), 401);
        assert_eq!(VerifyCode::Malformed.status(), 401);
        assert_eq!(VerifyCode::InsufficientPermissions.status(), 403);
        assert_eq!(VerifyCode::RateLimited.status(), 429);
        assert_eq!(VerifyCode::UsageExceeded.status(), 429);
    }
}
