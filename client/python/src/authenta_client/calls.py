"""What a client sends, and what it expects back: one :class:`Call` per request kind.

Both clients (blocking and asyncio) build their calls here, so the bytes, the expected
answer and the retry rule of each request are written once. A ``Call`` holds the encoded
``RequestBody`` (variant index, then fields, see docs/protocol.md section 4); the client
adds the request id and the frame.

Retry rule: when a connection that was opened before the call breaks, the client reopens
it once and sends again. That is always safe when the request never left (the daemon had
already closed the connection, so writing failed). When it may have been sent, only
requests that change nothing, or nothing more when repeated, are sent again
(``retry_safe``): a second ``CreateKey`` or ``Regenerate`` would issue a second token.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Hashable, Iterable, List, Optional, Sequence, Tuple, Type, Union, cast

from .codec import boolean, byte_string, option, string, uvarint
from .errors import ConnectionLost, DaemonBusy, ProtocolError, VersionMismatch, error_for
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
    Permission,
    PermissionsLike,
    PolicyReport,
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

PROTOCOL_VERSION = 1
"""The protocol version this client speaks; the daemon refuses any other."""

MAX_TOKEN_BYTES = 4096
"""A token longer than this cannot be a token (they are 53 bytes): it is answered
``malformed`` without asking the daemon, so that a stuffed header cannot make a request
too large for a frame (which would read as "daemon unavailable")."""

Seconds = Union[int, float, timedelta]
"""A duration: seconds, or a ``timedelta``."""


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


# ---------------------------------------------------------------------------- verify


def verify(token: str, permissions: PermissionsLike, environment: Optional[str]) -> Call:
    """Is ``token`` valid, does it hold every permission, and (when given) does its key
    carry this environment label? Verify changes only usage counters: retry-safe."""
    _check_token(token)
    body = (
        bytes((_VERIFY,)) + string(token) + _permissions(permissions) + option(environment, string)
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
"""A question for ``verify_many``: a token (asked with the batch's permissions and
environment), a :class:`VerifyQuestion`, or a tuple ``(token, permissions[, environment])``."""


class VerifyBatch:
    """``verify_many``'s plan: the questions that go to the daemon, in order, and the
    answers, filled in from the daemon's replies by :meth:`answers`."""

    def __init__(
        self,
        questions: Iterable[Question],
        permissions: PermissionsLike,
        environment: Optional[str],
    ) -> None:
        self._local: List[Optional[VerifyAnswer]] = []
        self.calls: List[Call] = []
        for question in questions:
            token, perms, env = _unpack(question, permissions, environment)
            local = local_verify_answer(token)
            self._local.append(local)
            if local is None:
                self.calls.append(verify(token, perms, env))

    def answers(self, bodies: Sequence[ResponseBody]) -> List[VerifyAnswer]:
        """Every answer in question order; raises the first error the daemon answered."""
        remote = iter([cast(VerifyAnswer, answer(c, b)) for c, b in zip(self.calls, bodies)])
        return [next(remote) if local is None else local for local in self._local]


def _unpack(
    question: Question, permissions: PermissionsLike, environment: Optional[str]
) -> Tuple[str, PermissionsLike, Optional[str]]:
    if isinstance(question, str):
        return question, permissions, environment
    if isinstance(question, VerifyQuestion):
        return question.token, question.permissions, question.environment
    if isinstance(question, tuple) and len(question) in (2, 3):
        return question[0], question[1], question[2] if len(question) == 3 else None
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
) -> Call:
    body = (
        bytes((_CREATE,))
        + string(name)
        + _permissions(permissions)
        + option(environment, string)
        + option(_seconds(expires_in, "expires_in"), uvarint)
    )
    return Call(body, NewToken, False, "create_key")


def list_keys(after: Optional[str]) -> Call:
    return Call(bytes((_LIST,)) + option(after, string), KeyPage, True, "list_keys")


def show_key(key_id: str) -> Call:
    return Call(bytes((_SHOW,)) + string(key_id), KeyInfo, True, "show_key")


def regenerate(key_id: str, grace: Optional[Seconds]) -> Call:
    body = bytes((_REGENERATE,)) + string(key_id) + option(_seconds(grace, "grace"), uvarint)
    return Call(body, NewToken, False, "regenerate")


def revoke(key_id: str, reason: Optional[str]) -> Call:
    # Revoking a revoked key succeeds and changes nothing, so a repeat is harmless.
    body = bytes((_REVOKE,)) + string(key_id) + option(reason, string)
    return Call(body, KeyInfo, True, "revoke")


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
