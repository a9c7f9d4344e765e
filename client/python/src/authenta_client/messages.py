"""The daemon's answers, as Python values: enums, frozen dataclasses, and their decoders.

Each class mirrors a type of ``client/src/proto.rs`` field for field, in wire order, and
decodes itself from a :class:`~authenta_client.codec.Reader` with ``_read``. Times are
``int`` unix milliseconds, as on the wire; :func:`to_datetime` turns one into a
``datetime``. Enums carry the daemon's snake_case names as values (as in its JSON); on the
wire they travel as their index in declaration order.

Fields that protocol 2 appended to a struct have defaults (None, an empty dict), so code
that builds these values by hand, such as an app's tests, keeps working.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from typing import Callable, Dict, Iterable, Optional, Tuple, Type, TypeVar, Union, cast

from .codec import Reader
from .errors import ErrorCode, ProtocolError

E = TypeVar("E", bound=Enum)


def to_datetime(ms: int) -> datetime:
    """A wire timestamp (unix milliseconds) as an aware UTC ``datetime``."""
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


def _read_enum(reader: Reader, cls: Type[E]) -> E:
    members = _MEMBERS[cls]
    return cast(E, members[reader.variant(len(members), cls.__name__)])


def enum_index(member: Enum) -> int:
    """The wire index of an enum member (its position in declaration order)."""
    return _INDEX[member]


# ------------------------------------------------------------------------------- enums


class Permission(Enum):
    """What a key may do. Methods take a member or its name (``"read"``)."""

    READ = "read"
    WRITE = "write"
    DELETE = "delete"

    @classmethod
    def parse(cls, value: Union["Permission", str]) -> "Permission":
        """A member from itself or its name, any case: ``Permission.parse("Write")``."""
        if isinstance(value, Permission):
            return value
        if isinstance(value, str):
            try:
                return cls(value.strip().lower())
            except ValueError:
                pass
        raise ValueError(f"unknown permission {value!r}: use read, write or delete")


PermissionsLike = Union[Permission, str, Iterable[Union[Permission, str]]]
"""One permission, or several: ``"read"``, ``Permission.WRITE``, ``("read", "delete")``."""


def permissions_tuple(value: Optional[PermissionsLike]) -> Tuple[Permission, ...]:
    """Normalises :data:`PermissionsLike` to a tuple of members (no duplicates, in the
    order read, write, delete). None means none."""
    if value is None:
        return ()
    if isinstance(value, (Permission, str)):
        value = (value,)
    wanted = {Permission.parse(p) for p in value}
    return tuple(p for p in Permission if p in wanted)


class VerifyCode(Enum):
    """Why a verify was allowed or denied; :attr:`status` is its HTTP-style status."""

    VALID = "valid"
    MALFORMED = "malformed"
    UNKNOWN = "unknown"
    REVOKED = "revoked"
    EXPIRED = "expired"
    WRONG_ENVIRONMENT = "wrong_environment"
    INSUFFICIENT_PERMISSIONS = "insufficient_permissions"
    RATE_LIMITED = "rate_limited"
    """The key's rate limit (or its owner's) is spent for now: see ``ratelimit.retry_at``."""
    USAGE_EXCEEDED = "usage_exceeded"
    """The key's credits (or its owner's) are spent: ``remaining`` is 0."""

    @property
    def status(self) -> int:
        """200 valid, 403 insufficient_permissions, 429 rate_limited and usage_exceeded,
        401 for every other code."""
        return _STATUS.get(self, 401)


_STATUS = {
    VerifyCode.VALID: 200,
    VerifyCode.INSUFFICIENT_PERMISSIONS: 403,
    VerifyCode.RATE_LIMITED: 429,
    VerifyCode.USAGE_EXCEEDED: 429,
}


class KeyState(Enum):
    """A key's lifecycle state, computed when the daemon answers."""

    ACTIVE = "active"
    REVOKED = "revoked"
    EXPIRED = "expired"


_MEMBERS: Dict[type, Tuple[Enum, ...]] = {
    cls: tuple(cls) for cls in (Permission, VerifyCode, KeyState, ErrorCode)
}
_INDEX: Dict[Enum, int] = {m: i for ms in _MEMBERS.values() for i, m in enumerate(ms)}


_PERMISSIONS = tuple(Permission)


def _read_permissions(r: Reader) -> Tuple[Permission, ...]:
    # Read on every verify answer, so without the generic enum reader: each valid index
    # (0, 1, 2) is one byte, and any other byte is an error.
    raw = r.raw(r.length())
    if any(b >= len(_PERMISSIONS) for b in raw):
        raise ProtocolError("an unknown Permission variant from authenta-keyd")
    return tuple(_PERMISSIONS[b] for b in raw)


Meta = Dict[str, str]
"""A key's metadata: string keys to string values (at most 1 KiB as JSON)."""


def _read_meta(r: Reader) -> Meta:
    return r.mapping(r.string, r.string)


# ---------------------------------------------------------------------------- limits


@dataclass(frozen=True)
class RateLimit:
    """At most ``limit`` verifies per ``window_ms`` milliseconds, as a token bucket: a
    burst of ``limit``, refilled evenly over the window. ``RateLimit(100, 60_000)`` is
    100 a minute."""

    limit: int
    window_ms: int

    @classmethod
    def _read(cls, r: Reader) -> "RateLimit":
        return cls(r.u32(), r.u64())


@dataclass(frozen=True)
class Refill:
    """Every ``interval_ms`` from when the balance was set, the balance is set back to
    ``amount`` credits."""

    amount: int
    interval_ms: int

    @classmethod
    def _read(cls, r: Reader) -> "Refill":
        return cls(r.u64(), r.u64())


@dataclass(frozen=True)
class RateLimitState:
    """A rate limit as it stands after a verify. ``remaining``: verifies left before it
    answers ``rate_limited``. ``reset_at``: when the whole limit is back (unix ms).
    ``retry_at``: when the next verify may pass (unix ms; now unless limited)."""

    limit: int
    remaining: int
    reset_at: int
    retry_at: int

    @classmethod
    def _read(cls, r: Reader) -> "RateLimitState":
        return cls(r.u32(), r.u32(), r.i64(), r.i64())


@dataclass(frozen=True)
class OwnerInfo:
    """An owner: the tenant keys belong to, with limits all its keys share.
    ``ratelimit_state`` and ``remaining`` are where the shared limits stand now; ``keys``
    counts the keys that name this owner."""

    id: str
    ratelimit: Optional[RateLimit]
    ratelimit_state: Optional[RateLimitState]
    remaining: Optional[int]
    refill: Optional[Refill]
    keys: int

    @classmethod
    def _read(cls, r: Reader) -> "OwnerInfo":
        return cls(
            id=r.string(),
            ratelimit=r.option(lambda: RateLimit._read(r)),
            ratelimit_state=r.option(lambda: RateLimitState._read(r)),
            remaining=r.option(r.u64),
            refill=r.option(lambda: Refill._read(r)),
            keys=r.u64(),
        )


# ------------------------------------------------------------------------- the verify


@dataclass(frozen=True)
class VerifyAnswer:
    """The daemon's answer to a verify: the same fields as the Rust client's.

    ``code`` says allowed (``VALID``) or why not; ``status`` is 200, 401, 403 or 429.
    ``key_id`` names the matched key even when denied (None for malformed or unknown
    tokens). ``rotate_by`` (unix ms) and ``rotation_due`` come from the policy file: when
    ``rotation_due`` is true, rotate the key soon.

    ``name``, ``owner_id`` and ``meta`` describe the key on every answer but malformed,
    unknown, revoked and expired ones. ``expires_at`` is the key's own expiry (unix ms).
    ``ratelimit`` is the key's rate limit (else its owner's) after this verify, and
    ``remaining`` its credits left (the key's, else its owner's); None when there is none.
    """

    code: VerifyCode
    key_id: Optional[str]
    permissions: Tuple[Permission, ...]
    environment: Optional[str]
    rotate_by: Optional[int]
    rotation_due: bool
    name: Optional[str] = None
    owner_id: Optional[str] = None
    # A dict cannot be hashed: the answer hashes without it.
    meta: Meta = field(default_factory=dict, hash=False)
    expires_at: Optional[int] = None
    ratelimit: Optional[RateLimitState] = None
    remaining: Optional[int] = None

    @property
    def status(self) -> int:
        """The HTTP-style status: 200, 401, 403 or 429."""
        return self.code.status

    @property
    def allowed(self) -> bool:
        """True only for ``VALID``: the key may do everything that was asked."""
        return self.code is VerifyCode.VALID

    @classmethod
    def _read(cls, r: Reader) -> "VerifyAnswer":
        return cls(
            code=_read_enum(r, VerifyCode),
            key_id=r.option(r.string),
            permissions=_read_permissions(r),
            environment=r.option(r.string),
            rotate_by=r.option(r.i64),
            rotation_due=r.boolean(),
            name=r.option(r.string),
            owner_id=r.option(r.string),
            meta=_read_meta(r),
            expires_at=r.option(r.i64),
            ratelimit=r.option(lambda: RateLimitState._read(r)),
            remaining=r.option(r.u64),
        )


@dataclass(frozen=True)
class VerifyQuestion:
    """One verify for :meth:`Client.verify_many`: a token, the permissions it must hold,
    optionally the environment label its key must carry, and the credits it spends
    (``cost``; None: 1). Its repr hides the token."""

    token: str = field(repr=False)
    permissions: PermissionsLike = ()
    environment: Optional[str] = None
    cost: Optional[int] = None


# -------------------------------------------------------------------------------- keys


@dataclass(frozen=True)
class Usage:
    """Verify counts of a key, cumulative since it was created."""

    verifications: int
    allowed: int
    denied: int

    @classmethod
    def _read(cls, r: Reader) -> "Usage":
        return cls(r.u64(), r.u64(), r.u64())


@dataclass(frozen=True)
class KeyInfo:
    """A key as listed: everything but its token, which is never shown again."""

    id: str
    name: str
    start: str
    """The 8 characters after ``api_``, to recognise a key."""
    permissions: Tuple[Permission, ...]
    environment: Optional[str]
    state: KeyState
    created_at: int
    rotated_at: Optional[int]
    last_used_at: Optional[int]
    expires_at: Optional[int]
    rotate_by: Optional[int]
    rotation_due: bool
    revoked_at: Optional[int]
    grace_until: Optional[int]
    """Until when the token replaced by the last regenerate still verifies."""
    usage: Usage
    owner_id: Optional[str] = None
    meta: Meta = field(default_factory=dict, hash=False)
    ratelimit: Optional[RateLimit] = None
    remaining: Optional[int] = None
    """Credits left now, when the key has a balance (None: unlimited)."""
    refill: Optional[Refill] = None

    @classmethod
    def _read(cls, r: Reader) -> "KeyInfo":
        return cls(
            id=r.string(),
            name=r.string(),
            start=r.string(),
            permissions=_read_permissions(r),
            environment=r.option(r.string),
            state=_read_enum(r, KeyState),
            created_at=r.i64(),
            rotated_at=r.option(r.i64),
            last_used_at=r.option(r.i64),
            expires_at=r.option(r.i64),
            rotate_by=r.option(r.i64),
            rotation_due=r.boolean(),
            revoked_at=r.option(r.i64),
            grace_until=r.option(r.i64),
            usage=Usage._read(r),
            owner_id=r.option(r.string),
            meta=_read_meta(r),
            ratelimit=r.option(lambda: RateLimit._read(r)),
            remaining=r.option(r.u64),
            refill=r.option(lambda: Refill._read(r)),
        )


@dataclass(frozen=True)
class KeyPage:
    """One page of keys in id order; pass ``next`` as ``after`` for the following one."""

    keys: Tuple[KeyInfo, ...]
    next: Optional[str]

    @classmethod
    def _read(cls, r: Reader) -> "KeyPage":
        return cls(tuple(r.sequence(lambda: KeyInfo._read(r))), r.option(r.string))


@dataclass(frozen=True)
class NewToken:
    """A freshly issued token and its key. This is the only time the token is shown:
    store it now. The repr hides it, so logging this object does not leak it."""

    key: KeyInfo
    token: str = field(repr=False)

    @classmethod
    def _read(cls, r: Reader) -> "NewToken":
        return cls(KeyInfo._read(r), r.string())


# ---------------------------------------------------------------------------- status


@dataclass(frozen=True)
class KeyCounts:
    total: int
    active: int
    revoked: int
    expired: int

    @classmethod
    def _read(cls, r: Reader) -> "KeyCounts":
        return cls(r.u64(), r.u64(), r.u64(), r.u64())


@dataclass(frozen=True)
class FleetStatus:
    """A fleet node's view of its fleet (see docs/fleet.md)."""

    connected: bool
    node: str
    servers: Tuple[str, ...]
    applied_seq: int
    lag: int
    disconnected_since: Optional[int]
    refused_messages: int
    resyncs: int
    joined: bool

    @classmethod
    def _read(cls, r: Reader) -> "FleetStatus":
        return cls(
            connected=r.boolean(),
            node=r.string(),
            servers=tuple(r.sequence(r.string)),
            applied_seq=r.u64(),
            lag=r.u64(),
            disconnected_since=r.option(r.i64),
            refused_messages=r.u64(),
            resyncs=r.u64(),
            joined=r.boolean(),
        )


@dataclass(frozen=True)
class StatusInfo:
    """Daemon health and counts, as ``authenta-keyd status`` shows them."""

    version: str
    uptime_secs: int
    socket: str
    data_dir: str
    keys: KeyCounts
    corrupt_keys: Tuple[str, ...]
    connections: int
    verifications: int
    policy_error: Optional[str]
    rotation_failures: int
    fleet: Optional[FleetStatus]
    development_key: bool
    newest_audit_at: Optional[int]
    #: How many keys' rows did not open; ``corrupt_keys`` names at most the first 100.
    corrupt_total: int

    @classmethod
    def _read(cls, r: Reader) -> "StatusInfo":
        return cls(
            version=r.string(),
            uptime_secs=r.u64(),
            socket=r.string(),
            data_dir=r.string(),
            keys=KeyCounts._read(r),
            corrupt_keys=tuple(r.sequence(r.string)),
            connections=r.u64(),
            verifications=r.u64(),
            policy_error=r.option(r.string),
            rotation_failures=r.u64(),
            fleet=r.option(lambda: FleetStatus._read(r)),
            development_key=r.boolean(),
            newest_audit_at=r.option(r.i64),
            corrupt_total=r.u64(),
        )


# ----------------------------------------------------------------------------- audit


@dataclass(frozen=True)
class Actor:
    """Who made a change: ``kind`` is ``"peer"`` (a socket client, with its ``uid`` and
    ``pid``), ``"policy"`` (the policy file) or ``"daemon"`` (housekeeping)."""

    kind: str
    uid: Optional[int] = None
    pid: Optional[int] = None

    @classmethod
    def _read(cls, r: Reader) -> "Actor":
        index = r.variant(3, "Actor")
        if index == 0:
            return cls("peer", r.u32(), r.option(r.i32))
        return cls("policy" if index == 1 else "daemon")


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    at: int
    actor: Actor
    action: str
    """``create``, ``regenerate``, ``revoke``, ``rekey``, ``retire-token``, ..."""
    key_id: Optional[str]
    detail: Optional[str]

    @classmethod
    def _read(cls, r: Reader) -> "AuditEntry":
        return cls(
            seq=r.u64(),
            at=r.i64(),
            actor=Actor._read(r),
            action=r.string(),
            key_id=r.option(r.string),
            detail=r.option(r.string),
        )


@dataclass(frozen=True)
class ChainCheck:
    """The audit hash chain's check: ``ok``, the last ``seq`` checked, what broke it."""

    ok: bool
    checked: int
    problem: Optional[str]

    @classmethod
    def _read(cls, r: Reader) -> "ChainCheck":
        return cls(r.boolean(), r.u64(), r.option(r.string))


@dataclass(frozen=True)
class AuditReport:
    """Audit entries, oldest first. ``chain`` is set when a check was asked for;
    ``next`` is the ``after`` of the following page (None on the last page)."""

    entries: Tuple[AuditEntry, ...]
    chain: Optional[ChainCheck]
    next: Optional[int]

    @classmethod
    def _read(cls, r: Reader) -> "AuditReport":
        return cls(
            entries=tuple(r.sequence(lambda: AuditEntry._read(r))),
            chain=r.option(lambda: ChainCheck._read(r)),
            next=r.option(r.u64),
        )


# ---------------------------------------------------------------------------- policy


@dataclass(frozen=True)
class ScheduledRotation:
    key_id: str
    at: int

    @classmethod
    def _read(cls, r: Reader) -> "ScheduledRotation":
        return cls(r.string(), r.i64())


@dataclass(frozen=True)
class RotationFailure:
    key_id: str
    message: str
    retry_at: int

    @classmethod
    def _read(cls, r: Reader) -> "RotationFailure":
        return cls(r.string(), r.string(), r.i64())


@dataclass(frozen=True)
class PolicyReport:
    """The policy file in force (``file`` None: no policy) and what it schedules."""

    file: Optional[str]
    content_sha256: Optional[str]
    loaded_at: Optional[int]
    last_error: Optional[str]
    last_error_at: Optional[int]
    rules: int
    revoked_ids: int
    revoked_hashes: int
    next_rotations: Tuple[ScheduledRotation, ...]
    rotation_failures: Tuple[RotationFailure, ...]

    @classmethod
    def _read(cls, r: Reader) -> "PolicyReport":
        return cls(
            file=r.option(r.string),
            content_sha256=r.option(r.string),
            loaded_at=r.option(r.i64),
            last_error=r.option(r.string),
            last_error_at=r.option(r.i64),
            rules=r.u32(),
            revoked_ids=r.u32(),
            revoked_hashes=r.u32(),
            next_rotations=tuple(r.sequence(lambda: ScheduledRotation._read(r))),
            rotation_failures=tuple(r.sequence(lambda: RotationFailure._read(r))),
        )


@dataclass(frozen=True)
class HealthReport:
    """Whether the daemon is ready to serve, and why not (``/readyz`` answers the same).

    ``store``: the store thread answered. ``policy``: ``none`` (no policy file),
    ``loaded``, ``stale`` (the file on disk failed to load; the previous version is in
    force) or ``failed``. ``fleet_connected``: fleet mode only. ``problems``: what is
    wrong, for a person (empty when ready)."""

    ready: bool
    store: bool
    policy: str
    fleet_connected: Optional[bool]
    problems: Tuple[str, ...]

    @classmethod
    def _read(cls, r: Reader) -> "HealthReport":
        return cls(
            ready=r.boolean(),
            store=r.boolean(),
            policy=r.string(),
            fleet_connected=r.option(r.boolean),
            problems=tuple(r.sequence(r.string)),
        )


# ---------------------------------------------------------------------- other answers


@dataclass(frozen=True)
class ErrorAnswer:
    """A request the daemon refused or failed; clients raise it as a ``DaemonError``."""

    code: ErrorCode
    message: str

    @classmethod
    def _read(cls, r: Reader) -> "ErrorAnswer":
        return cls(_read_enum(r, ErrorCode), r.string())


@dataclass(frozen=True)
class Done:
    """A change with nothing to show but a message for a person (``rekey``)."""

    message: str

    @classmethod
    def _read(cls, r: Reader) -> "Done":
        return cls(r.string())


ResponseBody = Union[
    VerifyAnswer,
    NewToken,
    KeyPage,
    KeyInfo,
    StatusInfo,
    AuditReport,
    ErrorAnswer,
    Done,
    PolicyReport,
    HealthReport,
    OwnerInfo,
]

# ResponseBody's variants in wire order: every one is a newtype around these.
_RESPONSE_VARIANTS: Tuple[Callable[[Reader], ResponseBody], ...] = (
    VerifyAnswer._read,
    NewToken._read,
    KeyPage._read,
    KeyInfo._read,
    StatusInfo._read,
    AuditReport._read,
    ErrorAnswer._read,
    Done._read,
    PolicyReport._read,
    HealthReport._read,
    OwnerInfo._read,
)


def decode_response(payload: bytes) -> Tuple[int, ResponseBody]:
    """A ``Response`` frame's payload as ``(id, body)``; id 0 is a connection-level error."""
    r = Reader(payload)
    request_id = r.u64()
    read = _RESPONSE_VARIANTS[r.variant(len(_RESPONSE_VARIANTS), "ResponseBody")]
    body = read(r)
    r.finish()
    return request_id, body


# ------------------------------------------------------------------------- handshake


@dataclass(frozen=True)
class Welcome:
    version: int
    server: str
    """The daemon's package version."""


@dataclass(frozen=True)
class Refused:
    supported: int
    message: str


@dataclass(frozen=True)
class Busy:
    message: str


HelloReply = Union[Welcome, Refused, Busy]


def decode_hello_reply(payload: bytes) -> HelloReply:
    r = Reader(payload)
    index = r.variant(3, "HelloReply")
    reply: HelloReply
    if index == 0:
        reply = Welcome(r.u16(), r.string())
    elif index == 1:
        reply = Refused(r.u16(), r.string())
    else:
        reply = Busy(r.string())
    r.finish()
    return reply


__all__ = [
    "Permission",
    "PermissionsLike",
    "VerifyCode",
    "KeyState",
    "ErrorCode",
    "VerifyAnswer",
    "VerifyQuestion",
    "Meta",
    "RateLimit",
    "Refill",
    "RateLimitState",
    "OwnerInfo",
    "Usage",
    "KeyInfo",
    "KeyPage",
    "NewToken",
    "KeyCounts",
    "FleetStatus",
    "StatusInfo",
    "Actor",
    "AuditEntry",
    "ChainCheck",
    "AuditReport",
    "ScheduledRotation",
    "RotationFailure",
    "PolicyReport",
    "HealthReport",
    "ErrorAnswer",
    "Done",
    "Welcome",
    "Refused",
    "Busy",
    "decode_response",
    "decode_hello_reply",
    "to_datetime",
]
