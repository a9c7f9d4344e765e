"""WSGI middleware: every request must carry a key the daemon accepts.

Flask::

    from authenta_client.wsgi import AuthentaWSGI
    app.wsgi_app = AuthentaWSGI(app.wsgi_app)
    # in a view: request.environ["authenta.key"].key_id

Django (``wsgi.py``)::

    application = AuthentaWSGI(get_wsgi_application())
    # in a view: request.META["authenta.key"]

Refused requests never reach the app; see :mod:`authenta_client.forward_auth` for the
answers (401, 403, 429, 503). An allowed request reaches it with the daemon's
:class:`~authenta_client.VerifyAnswer` in ``environ["authenta.key"]``.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, Union

from .blocking import Client
from .errors import AuthentaError
from .forward_auth import PermissionRule, Refusal, judge, question_for, unavailable
from .messages import VerifyAnswer
from .paths import PathLike

ENVIRON_KEY = "authenta.key"

StartResponse = Callable[..., Any]
WSGIApp = Callable[[Dict[str, Any], StartResponse], Iterable[bytes]]


class AuthentaWSGI:
    """Wraps a WSGI app. ``client``: a :class:`~authenta_client.Client` to share (default:
    one on ``socket_path``, else ``AUTHENTA_SOCKET`` or the default path). ``permission``:
    a :data:`~authenta_client.forward_auth.PermissionRule` (default: from the method).
    ``environment``: when set, keys must carry this environment label. ``cost``: the
    credits each request spends from a key with a balance (None: 1)."""

    def __init__(
        self,
        app: WSGIApp,
        client: Optional[Client] = None,
        *,
        socket_path: Optional[PathLike] = None,
        permission: PermissionRule = None,
        environment: Optional[str] = None,
        cost: Optional[int] = None,
    ) -> None:
        self.app = app
        self.client = client if client is not None else Client(socket_path)
        self.permission = permission
        self.environment = environment
        self.cost = cost

    def __call__(self, environ: Dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        outcome = self._judge(environ, method)
        if isinstance(outcome, Refusal):
            return _refuse(outcome, method, start_response)
        environ[ENVIRON_KEY] = outcome
        return self.app(environ, start_response)

    def _judge(self, environ: Dict[str, Any], method: str) -> Union[VerifyAnswer, Refusal]:
        """The daemon's answer when it lets the request through, else the refusal."""
        asked = question_for(
            method,
            environ.get("HTTP_AUTHORIZATION"),
            environ.get("HTTP_X_API_KEY"),
            self.permission,
            environ,
        )
        if isinstance(asked, Refusal):
            return asked
        try:
            answer = self.client.verify(
                asked.token, asked.permissions, self.environment, cost=self.cost
            )
        except AuthentaError as error:
            return unavailable(error)
        return judge(answer) or answer


def _refuse(refusal: Refusal, method: str, start_response: StartResponse) -> List[bytes]:
    headers: List[Tuple[str, str]] = refusal.headers()
    start_response(f"{refusal.status} {refusal.reason}", headers)
    return [] if method.upper() == "HEAD" else [refusal.body()]
