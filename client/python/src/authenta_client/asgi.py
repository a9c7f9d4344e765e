"""ASGI middleware: every request must carry a key the daemon accepts.

FastAPI / Starlette::

    from authenta_client.asgi import AuthentaASGI
    app.add_middleware(AuthentaASGI)                 # or AuthentaASGI(app)
    # in an endpoint: request.scope["authenta"].key_id

HTTP requests and WebSocket handshakes (judged as GET) are checked; other scopes
(``lifespan``) pass through. Refused requests never reach the app; see
:mod:`authenta_client.forward_auth` for the answers (401, 403, 429, 503). A refused
WebSocket is closed before it is accepted (code 1008), which servers send as HTTP 403. An
allowed request reaches the app with the daemon's :class:`~authenta_client.VerifyAnswer`
in ``scope["authenta"]`` (on a copy of the scope).
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Dict, MutableMapping, Optional, Union

from .asynchronous import AsyncClient
from .errors import AuthentaError
from .forward_auth import PermissionRule, Refusal, judge, question_for, unavailable
from .messages import VerifyAnswer
from .paths import PathLike

SCOPE_KEY = "authenta"

Scope = MutableMapping[str, Any]
Message = Dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class AuthentaASGI:
    """Wraps an ASGI app. ``client``: an :class:`~authenta_client.AsyncClient` to share
    (default: one on ``socket_path``, else ``AUTHENTA_SOCKET`` or the default path).
    ``permission``: a :data:`~authenta_client.forward_auth.PermissionRule` (default: from
    the method; the callable gets the scope). ``environment``: when set, keys must carry
    this environment label. ``cost``: the credits each request spends from a key with a
    balance (None: 1)."""

    def __init__(
        self,
        app: ASGIApp,
        client: Optional[AsyncClient] = None,
        *,
        socket_path: Optional[PathLike] = None,
        permission: PermissionRule = None,
        environment: Optional[str] = None,
        cost: Optional[int] = None,
    ) -> None:
        self.app = app
        self.client = client if client is not None else AsyncClient(socket_path)
        self.permission = permission
        self.environment = environment
        self.cost = cost

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        outcome = await self._judge(scope)
        if isinstance(outcome, Refusal):
            await _refuse(outcome, scope, send)
            return
        await self.app(dict(scope, **{SCOPE_KEY: outcome}), receive, send)

    async def _judge(self, scope: Scope) -> Union[VerifyAnswer, Refusal]:
        """The daemon's answer when it lets the request through, else the refusal."""
        headers = _headers(scope)
        asked = question_for(
            scope.get("method", "GET"),  # a WebSocket handshake is a GET
            headers.get("authorization"),
            headers.get("x-api-key"),
            self.permission,
            scope,
        )
        if isinstance(asked, Refusal):
            return asked
        try:
            answer = await self.client.verify(
                asked.token, asked.permissions, self.environment, cost=self.cost
            )
        except AuthentaError as error:
            return unavailable(error)
        return judge(answer) or answer


def _headers(scope: Scope) -> Dict[str, str]:
    """The request's headers by lowercase name (the first of repeated ones)."""
    headers: Dict[str, str] = {}
    for name, value in scope.get("headers", ()):
        headers.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
    return headers


async def _refuse(refusal: Refusal, scope: Scope, send: Send) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})
        return
    headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in refusal.headers()]
    await send({"type": "http.response.start", "status": refusal.status, "headers": headers})
    head = str(scope.get("method", "")).upper() == "HEAD"
    await send({"type": "http.response.body", "body": b"" if head else refusal.body()})
