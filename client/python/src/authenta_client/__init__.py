"""Python client of authenta-keyd, the local API-key daemon.

Apps on the same host ask the daemon, over its Unix socket, whether an API key is valid
and holds the permission a request needs::

    from authenta_client import Client

    keyd = Client()                      # AUTHENTA_SOCKET, else the default socket
    answer = keyd.verify(token, "read")  # or ("read", "write"), Permission.DELETE, ...
    if answer.allowed:
        ...                              # serve; answer.key_id names the caller
    else:
        ...                              # refuse with answer.status (401/403/429), answer.code

- :class:`Client` is blocking and thread-safe; :class:`AsyncClient` is the same for
  asyncio. Both reconnect after a daemon restart, and pipeline with ``verify_many``.
- A call that cannot be answered raises an :class:`AuthentaError` (the daemon is down:
  :class:`UnavailableError`): refuse the request then, with 503.
- :mod:`authenta_client.wsgi` and :mod:`authenta_client.asgi` hold middleware that does
  all of this for a web app.
- Admin calls (``create_key``, ``list_keys``, ``update_key``, ``regenerate``, ``revoke``,
  ``set_owner``, ``audit``...)
  need an admin user, as the ``authenta-keyd`` CLI does.

The wire protocol is docs/protocol.md of the authenta-keyd repository.
"""

from ._version import __version__
from .asynchronous import AsyncClient
from .blocking import AGENT, Client
from .calls import KEEP, PROTOCOL_VERSION
from .codec import MAX_FRAME_LEN
from .errors import (
    AuthentaError,
    BadFrame,
    BadRequest,
    CallTimeout,
    Conflict,
    ConnectError,
    ConnectionLost,
    DaemonBusy,
    DaemonError,
    ErrorCode,
    FleetUnavailable,
    InternalError,
    NotFound,
    PermissionDenied,
    ProtocolError,
    StorageError,
    UnavailableError,
    UnsafeSocketPath,
    VersionMismatch,
)
from .messages import (
    Actor,
    AuditEntry,
    AuditReport,
    ChainCheck,
    FleetStatus,
    HealthReport,
    KeyCounts,
    KeyInfo,
    KeyPage,
    KeyState,
    NewToken,
    OwnerInfo,
    Permission,
    PolicyReport,
    RateLimit,
    RateLimitState,
    Refill,
    RotationFailure,
    ScheduledRotation,
    StatusInfo,
    Usage,
    VerifyAnswer,
    VerifyCode,
    VerifyQuestion,
    to_datetime,
)
from .paths import default_socket_path, resolve_socket_path

__all__ = [
    "__version__",
    "AGENT",
    "PROTOCOL_VERSION",
    "KEEP",
    "MAX_FRAME_LEN",
    "Client",
    "AsyncClient",
    "Permission",
    "VerifyCode",
    "VerifyAnswer",
    "VerifyQuestion",
    "KeyState",
    "KeyInfo",
    "KeyPage",
    "Usage",
    "NewToken",
    "RateLimit",
    "Refill",
    "RateLimitState",
    "OwnerInfo",
    "StatusInfo",
    "KeyCounts",
    "FleetStatus",
    "AuditReport",
    "AuditEntry",
    "Actor",
    "ChainCheck",
    "PolicyReport",
    "HealthReport",
    "ScheduledRotation",
    "RotationFailure",
    "ErrorCode",
    "AuthentaError",
    "UnavailableError",
    "ConnectError",
    "UnsafeSocketPath",
    "ConnectionLost",
    "CallTimeout",
    "ProtocolError",
    "VersionMismatch",
    "DaemonError",
    "BadRequest",
    "NotFound",
    "PermissionDenied",
    "DaemonBusy",
    "StorageError",
    "BadFrame",
    "InternalError",
    "Conflict",
    "FleetUnavailable",
    "to_datetime",
    "default_socket_path",
    "resolve_socket_path",
]
