"""What can go wrong when talking to authenta-keyd, as a small exception hierarchy.

A *denied verify is not an exception*: ``verify`` returns a :class:`VerifyAnswer` whose
``code`` says 401 or 403. Exceptions mean the question could not be answered at all, and
an app must then refuse the request (fail closed, 503)::

    AuthentaError                   every error of this package
    ├── UnavailableError            the daemon could not be asked (answer 503, retry later)
    │   ├── ConnectError            no connection: socket missing, refused, not permitted
    │   │   └── UnsafeSocketPath    the default socket directory could be someone else's
    │   ├── ConnectionLost          the connection broke during a call
    │   ├── CallTimeout             no answer in time
    │   └── DaemonBusy              (also a DaemonError) at its connection cap, or stopping
    ├── ProtocolError               bytes that break the wire protocol (a bug, or not keyd)
    │   └── VersionMismatch         the daemon speaks another protocol version
    └── DaemonError                 the daemon answered with an ErrorAnswer: .code, .message
        ├── BadRequest, NotFound, PermissionDenied, StorageError, BadFrame,
        └── InternalError, Conflict, FleetUnavailable, DaemonBusy

Messages never contain a token or a master key.
"""

from __future__ import annotations

from enum import Enum
from typing import Dict, Optional, Type

__all__ = [
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
    "error_for",
]


class ErrorCode(Enum):
    """Kinds of ``ErrorAnswer``, in wire order (the wire carries the index). The value is
    the daemon's snake_case name."""

    BAD_REQUEST = "bad_request"
    NOT_FOUND = "not_found"
    PERMISSION_DENIED = "permission_denied"
    BUSY = "busy"
    STORAGE = "storage"
    BAD_FRAME = "bad_frame"
    INTERNAL = "internal"
    CONFLICT = "conflict"
    FLEET_UNAVAILABLE = "fleet_unavailable"


class AuthentaError(Exception):
    """Base class of every error raised by this package."""


class UnavailableError(AuthentaError):
    """The daemon could not be asked. A caller serving a request must refuse it (503)."""


class ConnectError(UnavailableError):
    """No connection could be opened to the daemon's socket."""

    def __init__(self, socket_path: str, reason: str, hint: Optional[str] = None) -> None:
        self.socket_path = socket_path
        self.reason = reason
        hint = hint or (
            "is `authenta-keyd serve` running? Pass the socket path, or set AUTHENTA_SOCKET"
        )
        super().__init__(f"cannot reach authenta-keyd at {socket_path}: {reason} ({hint})")


class UnsafeSocketPath(ConnectError):
    """The socket lies in the shared temporary directory, in a directory that is not this
    user's alone: another user could have put a socket there to collect tokens."""


class ConnectionLost(UnavailableError):
    """The connection broke during a call. The next call opens a new one.

    ``request_sent`` tells whether the request may have reached the daemon: when it did, a
    change (create, regenerate, rekey) may or may not have been made.
    """

    def __init__(self, message: str, request_sent: bool = True) -> None:
        self.request_sent = request_sent
        super().__init__(message)


class CallTimeout(UnavailableError):
    """The daemon did not answer within the client's timeout; the connection is dropped."""


class ProtocolError(AuthentaError):
    """The peer sent bytes that break the protocol: an oversize or undecodable frame, or
    an answer to another request. The connection is dropped. If it persists, the socket
    may not be authenta-keyd's, or client and daemon disagree on the protocol."""


class VersionMismatch(ProtocolError):
    """The daemon speaks another protocol version; upgrade the client or the daemon."""

    def __init__(self, supported: int, ours: int, message: str) -> None:
        self.supported = supported
        self.ours = ours
        super().__init__(
            f"authenta-keyd speaks protocol version {supported}, this client {ours}: {message}"
            " (install the client release that matches the daemon)"
        )


class DaemonError(AuthentaError):
    """The daemon refused or failed a request and said why (an ``ErrorAnswer``)."""

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str, code: Optional[ErrorCode] = None) -> None:
        if code is not None:
            self.code = code
        self.message = message
        super().__init__(f"authenta-keyd: {message} [{self.code.value}]")


class BadRequest(DaemonError):
    """Invalid arguments (a blank name, no permission...), or a change that is not allowed
    (regenerating a revoked key). The message says which; fix the call."""

    code = ErrorCode.BAD_REQUEST


class NotFound(DaemonError):
    """No key has that id (or the id is not shaped like ``key_`` + 16 characters)."""

    code = ErrorCode.NOT_FOUND


class PermissionDenied(DaemonError):
    """This process's user may not make the request: admin calls need an admin uid or gid,
    and verify may be limited to ``verify_gids`` (see the daemon's config)."""

    code = ErrorCode.PERMISSION_DENIED


class DaemonBusy(DaemonError, UnavailableError):
    """The daemon is at its connection cap, or shutting down: try again shortly."""

    code = ErrorCode.BUSY


class StorageError(DaemonError):
    """The store could not commit; nothing changed. See the daemon's log."""

    code = ErrorCode.STORAGE


class BadFrame(DaemonError):
    """The daemon could not read a frame of this connection and closed it."""

    code = ErrorCode.BAD_FRAME


class InternalError(DaemonError):
    """The daemon met a state it did not expect. See its log."""

    code = ErrorCode.INTERNAL


class Conflict(DaemonError):
    """Fleet mode: another node changed the key at the same time; nothing changed. Read
    the key again and retry."""

    code = ErrorCode.CONFLICT


class FleetUnavailable(DaemonError):
    """Fleet mode: the fleet's NATS servers cannot be reached, so no change can be made
    (verify still answers)."""

    code = ErrorCode.FLEET_UNAVAILABLE


_BY_CODE: Dict[ErrorCode, Type[DaemonError]] = {
    cls.code: cls
    for cls in (
        BadRequest,
        NotFound,
        PermissionDenied,
        DaemonBusy,
        StorageError,
        BadFrame,
        InternalError,
        Conflict,
        FleetUnavailable,
    )
}


def error_for(code: ErrorCode, message: str) -> DaemonError:
    """The exception for an ``ErrorAnswer`` of this code."""
    return _BY_CODE[code](message)
