"""How a web request is judged; shared by the WSGI and ASGI middleware.

The answers are those of the daemon's own forward-auth endpoint (``/v1/auth``, in
``src/http/forward_auth.rs``), so an app behind this middleware and one behind a proxy
asking the daemon look the same to their callers:

1. The token: ``Authorization: Bearer <token>``, else ``X-API-Key: <token>``. None at all
   is ``401 missing``.
2. The permission: from the method (GET, HEAD, OPTIONS: read; POST, PUT, PATCH: write;
   DELETE: delete), unless the app gives a rule. A method without one is ``403
   unmapped_method``, without asking the daemon. (Unlike the daemon's endpoint, which
   serves trusted proxies, the caller cannot choose the permission with a header.)
3. The daemon's answer: ``valid`` lets the request through; any other code is refused
   with the status of that code (``VerifyCode.status``: 403 for
   ``insufficient_permissions``, 429 for ``rate_limited`` and ``usage_exceeded``, 401 for
   the others, ``wrong_environment`` included) and a JSON body naming it:
   ``{"error": {"code": "revoked", "message": "..."}}``.
4. A daemon that cannot be asked is ``503 unavailable``: the request never goes through
   (fail closed).

Challenges follow RFC 6750: ``WWW-Authenticate: Bearer realm="authenta"`` on a 401,
with ``error="invalid_token"`` when a token was sent (none when the request had no
credentials), and ``error="insufficient_scope"`` on the 403 of a missing permission. A
429 has no challenge (the token is good). A ``rate_limited`` one has ``Retry-After``:
whole seconds until the rate limit's ``retry_at``. A ``usage_exceeded`` one has none: the
answer does not say when a refill comes, and the rate limit's time (when the key has one)
would invite a retry that the spent balance refuses again.
Bodies never repeat the token.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, List, Mapping, Optional, Tuple, Union

from .messages import Permission, PermissionsLike, VerifyAnswer, VerifyCode, permissions_tuple

log = logging.getLogger("authenta_client")

METHOD_PERMISSIONS: Mapping[str, Permission] = {
    "GET": Permission.READ,
    "HEAD": Permission.READ,
    "OPTIONS": Permission.READ,
    "POST": Permission.WRITE,
    "PUT": Permission.WRITE,
    "PATCH": Permission.WRITE,
    "DELETE": Permission.DELETE,
}
"""The permission each method needs by default."""

PermissionRule = Union[None, PermissionsLike, Callable[[Any], Optional[PermissionsLike]]]
"""What a request needs: None (from its method), fixed permissions (``"read"``,
``("read", "write")``; ``()`` checks only that the key is valid), or a callable given the
WSGI environ or ASGI scope that returns permissions, or None to refuse (403)."""

REALM = 'Bearer realm="authenta"'


@dataclass(frozen=True)
class Refusal:
    """An HTTP answer that refuses the request."""

    status: int
    code: str
    message: str
    challenge: Optional[str] = None
    """The ``WWW-Authenticate`` value, if any."""
    retry_after: Optional[int] = None
    """The ``Retry-After`` of a 429, in seconds, if known."""

    @property
    def reason(self) -> str:
        return _REASONS[self.status]

    def body(self) -> bytes:
        error = {"error": {"code": self.code, "message": self.message}}
        return json.dumps(error, separators=(",", ":")).encode()

    def headers(self) -> List[Tuple[str, str]]:
        headers = [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(self.body()))),
            ("Cache-Control", "no-store"),
        ]
        if self.challenge:
            headers.append(("WWW-Authenticate", self.challenge))
        if self.status == 503:
            headers.append(("Retry-After", "1"))
        elif self.retry_after is not None:
            headers.append(("Retry-After", str(self.retry_after)))
        return headers


_REASONS = {
    401: "Unauthorized",
    403: "Forbidden",
    429: "Too Many Requests",
    503: "Service Unavailable",
}


MISSING = Refusal(
    401,
    "missing",
    "no API key: send Authorization: Bearer <token> or X-API-Key: <token>",
    REALM,
)
UNAVAILABLE = Refusal(503, "unavailable", "the API key service is unavailable: try again shortly")

# The daemon's own wording (src/http/forward_auth.rs).
_MESSAGES = {
    VerifyCode.MALFORMED: "this is not an authenta token (prefix, length or checksum)",
    VerifyCode.UNKNOWN: "no key has this token",
    VerifyCode.REVOKED: "this key was revoked, or this token replaced by a new one",
    VerifyCode.EXPIRED: "this key has expired",
    VerifyCode.WRONG_ENVIRONMENT: "this key belongs to another environment",
    VerifyCode.INSUFFICIENT_PERMISSIONS: "this key lacks the permission this request needs",
    VerifyCode.RATE_LIMITED: "this key's rate limit (or its owner's) is spent: retry later",
    VerifyCode.USAGE_EXCEEDED: "this key's credits (or its owner's) are spent",
}


@dataclass(frozen=True)
class Question:
    """What to ask the daemon about a request."""

    token: str
    permissions: Tuple[Permission, ...]


def token_from(authorization: Optional[str], api_key: Optional[str]) -> Optional[str]:
    """The token of ``Authorization: Bearer <token>``, else of ``X-API-Key``."""
    if authorization:
        scheme, _, rest = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and rest.strip():
            return rest.strip()
    if api_key and api_key.strip():
        return api_key.strip()
    return None


def unmapped_method() -> Refusal:
    return Refusal(403, "unmapped_method", "no permission maps to this method")


def question_for(
    method: str,
    authorization: Optional[str],
    api_key: Optional[str],
    rule: PermissionRule,
    request: Any,
) -> Union[Question, Refusal]:
    """What to ask the daemon about this request, or why it is refused at once."""
    token = token_from(authorization, api_key)
    if token is None:
        return MISSING
    if rule is None:
        needed = METHOD_PERMISSIONS.get(method.upper())
        wanted: Optional[PermissionsLike] = needed
    elif callable(rule):
        wanted = rule(request)
    else:
        wanted = rule
    if wanted is None:
        return unmapped_method()
    return Question(token, permissions_tuple(wanted))


def judge(answer: VerifyAnswer, now_ms: Optional[int] = None) -> Optional[Refusal]:
    """None when the daemon allows the request, else the refusal to send. ``now_ms``
    (default: the clock) is what a 429's ``Retry-After`` counts from."""
    if answer.allowed:
        return None
    message = _MESSAGES[answer.code]
    if answer.status == 429:
        return Refusal(429, answer.code.value, message, None, retry_after(answer, now_ms))
    if answer.code is VerifyCode.INSUFFICIENT_PERMISSIONS:
        challenge = f'{REALM}, error="insufficient_scope"'
    else:
        challenge = f'{REALM}, error="invalid_token"'
    return Refusal(answer.status, answer.code.value, message, challenge)


def retry_after(answer: VerifyAnswer, now_ms: Optional[int] = None) -> Optional[int]:
    """For a ``rate_limited`` answer, whole seconds until its rate limit lets a verify
    pass (rounded up, at least 1, so a client never retries at once); else None."""
    if answer.code is not VerifyCode.RATE_LIMITED or answer.ratelimit is None:
        return None
    if now_ms is None:
        now_ms = int(time.time() * 1000)
    wait_ms = answer.ratelimit.retry_at - now_ms
    return max(1, -(-wait_ms // 1000))


def unavailable(error: Exception) -> Refusal:
    """The 503 for a daemon that could not be asked; the reason goes to the log only."""
    log.warning("authenta-keyd could not verify a request, refusing it (503): %s", error)
    return UNAVAILABLE
