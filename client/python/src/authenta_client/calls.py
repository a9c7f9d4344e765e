"""What a client sends, and what it expects back: one :class:`Call` per request kind.

Both clients (blocking and asyncio) build their calls here, so the bytes, the expected
answer and the retry rule of each request are written once. A ``Call`` holds the encoded
``RequestBody`` (variant index, then fields, see docs/protocol.md section 4); the client
adds the request id and the frame.

Retry rule: when a connection that was opened before the call breaks, the client reopens
it once and sends again. That is always safe when the request never left (the daemon had
already closed the connection, so writing failed). When it may have been sent, only
requests that change nothing, or nothing more when repeated, are sent again
(``retry_safe``): a second ``CreateKey`` or ``Regenerate`` would issue a second token. A
verify is the exception, as in the Rust client: sent again, it may spend its ``cost`` in
credits twice, which is rarer and less harmful than refusing the request with a 503.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import timedelta
from typing import (
    Any,
    Callable,
    Hashable,
    Iterable,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Type,
    TypeVar,
    Union,
    cast,
)

from .codec import boolean, byte_string, option, sequence, string, string_map, uvarint
from .errors import (
    ConnectionLost,
    DaemonBusy,
    DaemonError,
    ProtocolError,
    VersionMismatch,
    error_for,
)
from .messages import (
    AuditReport,
    Busy,
    Done,
    ErrorAnswer,
    HealthReport,
    HelloReply,
    KeyInfo,
    KeyPage,
    NewToken,
    OwnerInfo,
    Permission,
    PermissionsLike,
    PolicyReport,
    RateLimit,
    Refill,
    Refused,
    ResponseBody,
    StatusInfo,
    VerifyAnswer,
    VerifyCode,
    VerifyQuestion,
    Welcome,
    enum_index,
    permissions_tuple,
)

PROTOCOL_VERSION = 2
"""The protocol version this client speaks; the daemon refuses any other."""

MAX_TOKEN_BYTES = 4096
"""A token longer than this cannot be a token (they are 53 bytes): it is answered
``malformed`` without asking the daemon, so that a stuffed header cannot make a request
too large for a frame (which would read as "daemon unavailable")."""

Seconds = Union[int, float, timedelta]
"""A duration: seconds, or a ``timedelta``."""

T = TypeVar("T")


class _Keep:
    """The type of :data:`KEEP`."""

    def __repr__(self) -> str:
        return "KEEP"

    def __reduce__(self) -> str:
        # Copied or pickled, it stays this module's KEEP, so that ``is KEEP`` still holds.
        return "KEEP"


KEEP: Any = _Keep()
"""The default of ``update_key`` and ``set_owner`` arguments: leave the field as it is.
None clears a field; any other value sets it."""

_U32_MAX = 0xFFFF_FFFF


@dataclass(frozen=True)
class Call:
    """One request: its encoded body, the answer type it expects, and whether it may be
    sent again after a connection broke with the request possibly sent."""

    body: bytes
    expect: Type[ResponseBody]
    retry_safe: bool
    what: str


# RequestBody variant indexes, in declaration order.
_VERIFY, _CREATE, _LIST, _SHOW, _REGENERATE, _REVOKE = 0, 1, 2, 3, 4, 5
_STATUS, _AUDIT, _REKEY, _POLICY_STATUS, _HEALTH = 6, 7, 8, 9, 10
_UPDATE_KEY, _SET_OWNER, _SHOW_OWNER = 11, 12, 13


def hello(agent: str) -> bytes:
    """The ``Hello`` payload every connection opens with."""
    return uvarint(PROTOCOL_VERSION) + string(agent)


def request(request_id: int, body: bytes) -> bytes:
    """A ``Request`` payload: the id (never 0, which the daemon keeps for itself), then
    the body."""
    return uvarint(request_id) + body


def _permissions(permissions: PermissionsLike) -> bytes:
    """The wire form of a permission list. Apps ask the same few on every request, so
    the encodings of hashable arguments (``"read"``, tuples) are remembered."""
    try:
        return _permissions_cached(cast(Hashable, permissions))
    except TypeError:  # unhashable, such as a list
        return _encode_permissions(permissions_tuple(permissions))


@functools.lru_cache(maxsize=64)
def _permissions_cached(permissions: Any) -> bytes:
    return _encode_permissions(permissions_tuple(permissions))


def _encode_permissions(perms: Tuple[Permission, ...]) -> bytes:
    # Variant indexes are below 251, so each one is a single byte.
    return uvarint(len(perms)) + bytes(enum_index(p) for p in perms)


def _seconds(value: Optional[Seconds], what: str) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"{what} must be a number of seconds or a timedelta, not {value!r}")
    return int(-(-value // 1))  # whole seconds, rounded up


def _count(value: int, what: str, most: int = 0xFFFF_FFFF_FFFF_FFFF) -> int:
    """A whole number for a u32 or u64 field, checked here: a value out of its range would
    make a message the daemon cannot decode, and it would close the connection."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= most:
        raise ValueError(f"{what} must be a whole number from 0 to {most}, not {value!r}")
    return value


def _ratelimit(value: RateLimit) -> bytes:
    if not isinstance(value, RateLimit):
        raise TypeError(f"a rate limit is a RateLimit(limit, window_ms), not {value!r}")
    return uvarint(_count(value.limit, "RateLimit.limit", _U32_MAX)) + uvarint(
        _count(value.window_ms, "RateLimit.window_ms")
    )


def _refill(value: Refill) -> bytes:
    if not isinstance(value, Refill):
        raise TypeError(f"a refill is a Refill(amount, interval_ms), not {value!r}")
    return uvarint(_count(value.amount, "Refill.amount")) + uvarint(
        _count(value.interval_ms, "Refill.interval_ms")
    )


def _lifetime(value: Seconds) -> bytes:
    """A set ``expires_in`` of an update: seconds from now."""
    return uvarint(cast(int, _seconds(value, "expires_in")))


def _credits(value: int) -> bytes:
    return uvarint(_count(value, "remaining"))


def _cost(value: int) -> bytes:
    return uvarint(_count(value, "cost", _U32_MAX))


def _meta(value: Optional[Mapping[str, str]], what: str = "meta") -> bytes:
    """A metadata map; None is an empty one."""
    value = value or {}
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise TypeError(f"{what} maps str to str")
    return string_map(value)


def _change(value: Any, encode: Callable[[T], bytes]) -> bytes:
    """A ``Change<T>``, an ``Option<Option<T>>``: KEEP is ``00``, None (clear) ``01 00``,
    a value ``01 01`` then the value."""
    if value is KEEP:
        return b"\x00"
    return b"\x01" + option(value, encode)


def _keep_or_set(value: Any, encode: Callable[[T], bytes], what: str) -> bytes:
    """An ``Option<T>`` of an update whose field cannot be cleared: KEEP or a value."""
    if value is None:
        raise ValueError(f"{what} cannot be cleared: leave it out to keep it")
    return b"\x00" if value is KEEP else b"\x01" + encode(value)


# ---------------------------------------------------------------------------- verify


def verify(
    token: str,
    permissions: PermissionsLike,
    environment: Optional[str],
    cost: Optional[int] = None,
) -> Call:
    """Is ``token`` valid, does it hold every permission, and (when given) does its key
    carry this environment label? ``cost``: the credits it spends when the key (or its
    owner) has a balance (None: 1; 0 checks without spending). Retry-safe: see above."""
    _check_token(token)
    body = (
        bytes((_VERIFY,))
        + string(token)
        + _permissions(permissions)
        + option(environment, string)
        + option(cost, _cost)
    )
    return Call(body, VerifyAnswer, True, "verify")


def local_verify_answer(token: str) -> Optional[VerifyAnswer]:
    """The answer to a verify that needs no daemon: an over-long token is malformed."""
    _check_token(token)
    # n characters encode to at most 4n bytes: most tokens are cleared without encoding.
    if len(token) > MAX_TOKEN_BYTES // 4 and len(token.encode("utf-8")) > MAX_TOKEN_BYTES:
        return VerifyAnswer(VerifyCode.MALFORMED, None, (), None, None, False)
    return None


def _check_token(token: object) -> None:
    if not isinstance(token, str):
        raise TypeError(f"a token is a str, not {type(token).__name__}")


Question = Union[str, VerifyQuestion, Tuple[Any, ...]]
"""A question for ``verify_many``: a token (asked with the batch's permissions, environment
and cost), a :class:`VerifyQuestion`, or a tuple ``(token, permissions[, environment])``
(asked with the batch's cost)."""


class VerifyBatch:
    """``verify_many``'s plan: the questions that go to the daemon, in order, and the
    answers, filled in from the daemon's replies by :meth:`answers`."""

    def __init__(
        self,
        questions: Iterable[Question],
        permissions: PermissionsLike,
        environment: Optional[str],
        cost: Optional[int] = None,
    ) -> None:
        self._local: List[Optional[VerifyAnswer]] = []
        self.calls: List[Call] = []
        for question in questions:
            token, perms, env, spend = _unpack(question, permissions, environment, cost)
            local = local_verify_answer(token)
            self._local.append(local)
            if local is None:
                self.calls.append(verify(token, perms, env, spend))

    def answers(self, bodies: Sequence[ResponseBody]) -> List[VerifyAnswer]:
        """Every answer in question order; raises the first error the daemon answered."""
        remote = iter([cast(VerifyAnswer, answer(c, b)) for c, b in zip(self.calls, bodies)])
        return [next(remote) if local is None else local for local in self._local]


def _unpack(
    question: Question,
    permissions: PermissionsLike,
    environment: Optional[str],
    cost: Optional[int],
) -> Tuple[str, PermissionsLike, Optional[str], Optional[int]]:
    if isinstance(question, str):
        return question, permissions, environment, cost
    if isinstance(question, VerifyQuestion):
        return question.token, question.permissions, question.environment, question.cost
    if isinstance(question, tuple) and len(question) in (2, 3):
        return question[0], question[1], question[2] if len(question) == 3 else None, cost
    raise TypeError(
        "verify_many takes tokens, VerifyQuestion objects, or (token, permissions"
        "[, environment]) tuples"
    )


# ----------------------------------------------------------------------------- admin


def create_key(
    name: str,
    permissions: PermissionsLike,
    environment: Optional[str],
    expires_in: Optional[Seconds],
    owner_id: Optional[str] = None,
    meta: Optional[Mapping[str, str]] = None,
    ratelimit: Optional[RateLimit] = None,
    remaining: Optional[int] = None,
    refill: Optional[Refill] = None,
) -> Call:
    body = (
        bytes((_CREATE,))
        + string(name)
        + _permissions(permissions)
        + option(environment, string)
        + option(_seconds(expires_in, "expires_in"), uvarint)
        + option(owner_id, string)
        + _meta(meta)
        + option(ratelimit, _ratelimit)
        + option(remaining, _credits)
        + option(refill, _refill)
    )
    return Call(body, NewToken, False, "create_key")


def list_keys(after: Optional[str], owner_id: Optional[str] = None) -> Call:
    body = bytes((_LIST,)) + option(after, string) + option(owner_id, string)
    return Call(body, KeyPage, True, "list_keys")


def show_key(key_id: str) -> Call:
    return Call(bytes((_SHOW,)) + string(key_id), KeyInfo, True, "show_key")


def regenerate(key_id: str, grace: Optional[Seconds], expires_in: Optional[Seconds] = None) -> Call:
    body = (
        bytes((_REGENERATE,))
        + string(key_id)
        + option(_seconds(grace, "grace"), uvarint)
        + option(_seconds(expires_in, "expires_in"), uvarint)
    )
    return Call(body, NewToken, False, "regenerate")


def revoke(key_id: str, reason: Optional[str]) -> Call:
    # Revoking a revoked key succeeds and changes nothing, so a repeat is harmless.
    body = bytes((_REVOKE,)) + string(key_id) + option(reason, string)
    return Call(body, KeyInfo, True, "revoke")


# Changes written together by ``revoke_many``: the most the daemon hands its store thread
# from one connection at a time.
CHANGES_TOGETHER = 256


def revokes(key_ids: Iterable[str], reason: Optional[str]) -> List[List[Call]]:
    """``revoke_many``'s calls, in runs of ``CHANGES_TOGETHER``."""
    every = [revoke(key_id, reason) for key_id in key_ids]
    return [every[at : at + CHANGES_TOGETHER] for at in range(0, len(every), CHANGES_TOGETHER)]


def revoke_answers(
    run: Sequence[Call], bodies: Sequence[ResponseBody]
) -> List[Union[KeyInfo, DaemonError]]:
    """Each revoke's key, or the daemon's refusal of it returned rather than raised."""
    results: List[Union[KeyInfo, DaemonError]] = []
    for call, body in zip(run, bodies):
        try:
            results.append(cast(KeyInfo, answer(call, body)))
        except DaemonError as refused:
            results.append(refused)
    return results


def update_key(
    key_id: str,
    *,
    name: Any = KEEP,
    permissions: Any = KEEP,
    environment: Any = KEEP,
    expires_in: Any = KEEP,
    owner_id: Any = KEEP,
    set_meta: Optional[Mapping[str, str]] = None,
    unset_meta: Iterable[str] = (),
    ratelimit: Any = KEEP,
    remaining: Any = KEEP,
    refill: Any = KEEP,
) -> Call:
    """An ``UpdateKey``. Not retry-safe: a repeat would set ``remaining`` and
    ``expires_in`` again from a later moment, and log a second change."""
    if isinstance(unset_meta, str):
        raise TypeError("unset_meta is a list of metadata keys, not one string")
    unset = list(unset_meta)
    if not all(isinstance(k, str) for k in unset):
        raise TypeError("unset_meta holds metadata keys (str)")
    body = (
        bytes((_UPDATE_KEY,))
        + string(key_id)
        + _keep_or_set(name, string, "a key's name")
        + _keep_or_set(permissions, _permissions, "a key's permissions")
        + _change(environment, string)
        + _change(expires_in, _lifetime)
        + _change(owner_id, string)
        + _meta(set_meta, "set_meta")
        + sequence(unset, string)
        + _change(ratelimit, _ratelimit)
        + _change(remaining, _credits)
        + _change(refill, _refill)
    )
    return Call(body, KeyInfo, False, "update_key")


def set_owner(
    owner_id: str, *, ratelimit: Any = KEEP, remaining: Any = KEEP, refill: Any = KEEP
) -> Call:
    """An ``OwnerUpdate`` (the owner is made on first use). Not retry-safe, for the reason
    ``update_key`` is not."""
    body = (
        bytes((_SET_OWNER,))
        + string(owner_id)
        + _change(ratelimit, _ratelimit)
        + _change(remaining, _credits)
        + _change(refill, _refill)
    )
    return Call(body, OwnerInfo, False, "set_owner")


def show_owner(owner_id: str) -> Call:
    return Call(bytes((_SHOW_OWNER,)) + string(owner_id), OwnerInfo, True, "show_owner")


def status() -> Call:
    return Call(bytes((_STATUS,)), StatusInfo, True, "status")


def audit(verify_chain: bool, after: int) -> Call:
    body = bytes((_AUDIT,)) + boolean(verify_chain) + uvarint(after)
    return Call(body, AuditReport, True, "audit")


def rekey(new_master_key: bytes) -> Call:
    if not isinstance(new_master_key, (bytes, bytearray, memoryview)):
        raise TypeError("the new master key is bytes: 32 raw bytes, or a key file's hex text")
    return Call(bytes((_REKEY,)) + byte_string(bytes(new_master_key)), Done, False, "rekey")


def policy_status() -> Call:
    return Call(bytes((_POLICY_STATUS,)), PolicyReport, True, "policy_status")


def health() -> Call:
    """Not an admin request: any peer the daemon lets in may ask."""
    return Call(bytes((_HEALTH,)), HealthReport, True, "health")


# --------------------------------------------------------------------------- answers


def answer(call: Call, body: ResponseBody) -> ResponseBody:
    """The answer a call expects, or the error the daemon answered with, raised."""
    if isinstance(body, ErrorAnswer):
        raise error_for(body.code, body.message)
    if not isinstance(body, call.expect):
        raise ProtocolError(
            f"authenta-keyd answered {call.what} with a {type(body).__name__}, "
            f"not a {call.expect.__name__}"
        )
    if isinstance(body, VerifyAnswer) and body.allowed and body.key_id is None:
        # The Rust client treats this as unusable too: never let it through.
        raise ProtocolError("authenta-keyd answered a verify valid without a key id")
    return body


def check_retry(lost: ConnectionLost, reused: bool, retry_safe: bool, what: str) -> None:
    """Returns when a call whose connection broke may be sent again on a new one (see the
    retry rule above); else raises what the caller should see."""
    if not reused:
        raise lost  # a fresh connection failed: the daemon is not there, asking again won't help
    if lost.request_sent and not retry_safe:
        raise ConnectionLost(
            f"{lost}; {what} may or may not have been carried out: check (list_keys, audit) "
            "before trying again"
        ) from lost


def check_hello_reply(reply: HelloReply) -> Welcome:
    """The ``Welcome``, or the handshake's failure raised."""
    if isinstance(reply, Welcome):
        if reply.version != PROTOCOL_VERSION:
            raise VersionMismatch(reply.version, PROTOCOL_VERSION, "welcomed with another version")
        return reply
    if isinstance(reply, Busy):
        raise DaemonBusy(f"{reply.message} (the daemon is at its connection cap: retry later)")
    assert isinstance(reply, Refused)
    if reply.supported == PROTOCOL_VERSION:
        # Same version, yet refused: the daemon could not read our Hello.
        raise ProtocolError(f"authenta-keyd could not read this client's Hello: {reply.message}")
    raise VersionMismatch(reply.supported, PROTOCOL_VERSION, reply.message)
