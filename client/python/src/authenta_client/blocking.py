"""The blocking :class:`Client`: one Unix-socket connection, opened on first use.

Typical use, once per process (the client is thread-safe; calls take turns)::

    from authenta_client import Client

    keyd = Client()                       # AUTHENTA_SOCKET, else the default path
    answer = keyd.verify(token, "write")
    if not answer.allowed:
        return answer.status              # 401, 403 or 429; answer.code says why

A call that cannot be answered raises :class:`~authenta_client.UnavailableError` (or
another :class:`~authenta_client.AuthentaError`): refuse the request then (503).
"""

from __future__ import annotations

import errno
import os
import socket
import threading
from typing import Any, Iterable, List, Mapping, Optional, Sequence, Union, cast

from . import calls
from ._version import __version__
from .codec import FrameBuffer, batches, frame
from .errors import CallTimeout, ConnectError, ConnectionLost, DaemonError, ProtocolError, error_for
from .messages import (
    AuditReport,
    Done,
    ErrorAnswer,
    HealthReport,
    KeyInfo,
    KeyPage,
    NewToken,
    OwnerInfo,
    PermissionsLike,
    PolicyReport,
    RateLimit,
    Refill,
    ResponseBody,
    StatusInfo,
    VerifyAnswer,
    decode_hello_reply,
    decode_response,
)
from .paths import PathLike, check_socket_dir, resolve_socket_path

AGENT = f"authenta-client-python/{__version__}"
"""How this client names itself in its Hello (the daemon logs it)."""

# Without it, writing to a socket the daemon closed raises SIGPIPE, which kills a process
# that does not ignore it (Python ignores it, but an embedding server may not).
_NOSIGNAL = getattr(socket, "MSG_NOSIGNAL", 0)
_RECV_SIZE = 65536


def connect_hint(error: OSError) -> Optional[str]:
    """What to do about a failed ``connect()``, for the error message."""
    if error.errno == errno.ENOENT:
        return (
            "no socket there: is `authenta-keyd serve` running? Pass the path, or set "
            "AUTHENTA_SOCKET"
        )
    if error.errno == errno.ECONNREFUSED:
        return "nothing listens on it: the daemon stopped or is restarting"
    if error.errno in (errno.EACCES, errno.EPERM):
        return "this user may not open it: ask for the daemon's socket group (socket_group)"
    return None


class _Connection:
    """One connected and welcomed socket. Any exception leaves it unusable."""

    def __init__(self, sock: socket.socket, timeout: Optional[float]) -> None:
        self._sock = sock
        self._timeout = timeout
        self._frames = FrameBuffer()
        self.pid = os.getpid()
        self.server = ""

    @classmethod
    def open(cls, path: str, timeout: Optional[float], agent: str) -> "_Connection":
        check_socket_dir(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except socket.timeout:
            sock.close()
            raise ConnectError(path, f"no connection within {timeout} s") from None
        except OSError as e:
            sock.close()
            raise ConnectError(path, e.strerror or str(e), connect_hint(e)) from None
        connection = cls(sock, timeout)
        try:
            connection._handshake(agent)
        except BaseException:
            connection.close()
            raise
        return connection

    def _handshake(self, agent: str) -> None:
        try:
            self.send(frame(calls.hello(agent)))
            unsent: Optional[ConnectionLost] = None
        except ConnectionLost as e:
            # A busy daemon may close before it reads the Hello; its Busy reply may still
            # be waiting to be read, and says more than "broken pipe".
            unsent = e
        try:
            payload = self.read_frame()
        except ConnectionLost:
            if unsent is not None:
                raise unsent from None
            raise
        self.server = calls.check_hello_reply(decode_hello_reply(payload)).server

    def send(self, data: bytes) -> None:
        view = memoryview(data)
        sent = 0
        try:
            while sent < len(view):
                sent += self._sock.send(view[sent:], _NOSIGNAL)
        except socket.timeout:
            raise CallTimeout(self._timeout_message("take the request")) from None
        except OSError as e:
            raise ConnectionLost(
                f"the connection to authenta-keyd broke: {e.strerror or e}", request_sent=sent > 0
            ) from None

    def read_frame(self) -> bytes:
        while True:
            payload = self._frames.next_frame()
            if payload is not None:
                return payload
            try:
                chunk = self._sock.recv(_RECV_SIZE)
            except socket.timeout:
                raise CallTimeout(self._timeout_message("answer")) from None
            except OSError as e:
                raise ConnectionLost(
                    f"the connection to authenta-keyd broke: {e.strerror or e}"
                ) from None
            if not chunk:
                raise ConnectionLost(
                    "authenta-keyd closed the connection (it may have stopped or restarted)"
                )
            self._frames.feed(chunk)

    def exchange(self, bodies: Sequence[bytes], first_id: int) -> List[ResponseBody]:
        """Sends the requests (pipelined) and returns their answers in order."""
        frames = [frame(calls.request(first_id + i, body)) for i, body in enumerate(bodies)]
        answers: List[ResponseBody] = []
        for count, data in batches(frames):
            try:
                self.send(data)
            except ConnectionLost as lost:
                lost.request_sent = lost.request_sent or bool(answers)
                raise
            for _ in range(count):
                answers.append(self._answer(first_id + len(answers)))
        return answers

    def _answer(self, due: int) -> ResponseBody:
        request_id, body = decode_response(self.read_frame())
        if request_id == 0 and isinstance(body, ErrorAnswer):
            # The daemon's word on the whole connection, which it closes after this.
            raise error_for(body.code, f"{body.message} (the daemon closed the connection)")
        if request_id != due:
            raise ProtocolError(f"authenta-keyd answered request {request_id} where {due} was due")
        return body

    def _timeout_message(self, what: str) -> str:
        return (
            f"authenta-keyd did not {what} within {self._timeout} s; the connection was "
            "dropped (is the daemon overloaded or stopped?)"
        )

    def close(self) -> None:
        try:
            self._sock.close()
        except OSError:
            pass


class Client:
    """A blocking client of authenta-keyd.

    ``socket_path``: the daemon's socket (default: ``AUTHENTA_SOCKET``, else the default
    path, see :mod:`authenta_client.paths`). ``timeout``: seconds each connect, write or
    read may wait (None: forever). Nothing connects until the first call (or
    :meth:`connect`). After a failure the next call reconnects; a connection that broke
    because the daemon restarted is reopened at once, within the same call.

    One client may be shared by threads: calls take turns on its one connection. After
    ``os.fork()`` the child opens its own connection.
    """

    def __init__(
        self,
        socket_path: Optional[PathLike] = None,
        *,
        timeout: Optional[float] = 5.0,
        agent: str = AGENT,
    ) -> None:
        self.socket_path = resolve_socket_path(socket_path)
        self.timeout = timeout
        self._agent = agent
        self._conn: Optional[_Connection] = None
        self._next_id = 1
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"Client({self.socket_path!r})"

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self) -> "Client":
        """Connects and handshakes now, so that a wrong path or version shows at once."""
        with self._lock:
            self._connection()
        return self

    @property
    def server_version(self) -> Optional[str]:
        """The daemon's version, from its Welcome (None until connected)."""
        conn = self._conn
        return conn.server if conn is not None else None

    def close(self) -> None:
        """Closes the connection; a later call opens a new one."""
        with self._lock:
            self._drop()

    # ------------------------------------------------------------------------ verify

    def verify(
        self,
        token: str,
        permissions: PermissionsLike = (),
        environment: Optional[str] = None,
        *,
        cost: Optional[int] = None,
    ) -> VerifyAnswer:
        """Asks whether ``token`` is valid and holds every one of ``permissions`` (none:
        validity only), and, when ``environment`` is given, whether its key carries that
        label. ``cost``: the credits an allowed verify spends when the key (or its owner)
        has a balance (None: 1; 0 checks without spending). A denial is an answer, not an
        exception: check ``.allowed`` or ``.status``.
        """
        local = calls.local_verify_answer(token)
        if local is not None:
            return local
        call = calls.verify(token, permissions, environment, cost)
        return cast(VerifyAnswer, self._call(call))

    def verify_many(
        self,
        questions: Iterable[calls.Question],
        permissions: PermissionsLike = (),
        environment: Optional[str] = None,
        *,
        cost: Optional[int] = None,
    ) -> List[VerifyAnswer]:
        """Verifies many tokens in one round trip: every request is written, then every
        answer read (the daemon answers in order; each answer's id is checked). Items
        are tokens (asked with ``permissions``, ``environment`` and ``cost``),
        ``VerifyQuestion`` objects, or ``(token, permissions[, environment])`` tuples
        (asked with ``cost``). Answers come back in the order of the questions."""
        batch = calls.VerifyBatch(questions, permissions, environment, cost)
        if not batch.calls:
            return batch.answers([])
        bodies = self._exchange([c.body for c in batch.calls], retry_safe=True, what="verify_many")
        return batch.answers(bodies)

    # ------------------------------------------------------------------------- admin

    def create_key(
        self,
        name: str,
        permissions: PermissionsLike,
        *,
        environment: Optional[str] = None,
        expires_in: Optional[calls.Seconds] = None,
        owner_id: Optional[str] = None,
        meta: Optional[Mapping[str, str]] = None,
        ratelimit: Optional[RateLimit] = None,
        remaining: Optional[int] = None,
        refill: Optional[Refill] = None,
    ) -> NewToken:
        """Creates a key. The answer holds its token, shown this once: store it now.
        ``expires_in``: seconds or a ``timedelta`` from now (none: never expires).
        ``owner_id``: the tenant it belongs to (it shares the owner's limits). ``meta``:
        str to str, handed back with every verify. ``ratelimit``: a
        :class:`~authenta_client.RateLimit`. ``remaining``: a credit balance, spent by
        each allowed verify's cost (none: unlimited); ``refill`` sets it back every
        interval."""
        call = calls.create_key(
            name, permissions, environment, expires_in, owner_id, meta, ratelimit, remaining,
            refill,
        )  # fmt: skip
        return cast(NewToken, self._call(call))

    def list_keys(self, owner_id: Optional[str] = None) -> List[KeyInfo]:
        """Every key (only ``owner_id``'s when given), in id order, fetched page by
        page. Never a token."""
        keys: List[KeyInfo] = []
        after: Optional[str] = None
        while True:
            page = self.list_keys_page(after, owner_id=owner_id)
            keys.extend(page.keys)
            if page.next is None:
                return keys
            after = page.next

    def list_keys_page(
        self, after: Optional[str] = None, *, owner_id: Optional[str] = None
    ) -> KeyPage:
        """One page of keys, with ids after ``after`` (None: from the first key), only
        ``owner_id``'s when given."""
        return cast(KeyPage, self._call(calls.list_keys(after, owner_id)))

    def show_key(self, key_id: str) -> KeyInfo:
        """One key by id; :class:`~authenta_client.NotFound` when there is none."""
        return cast(KeyInfo, self._call(calls.show_key(key_id)))

    def regenerate(
        self,
        key_id: str,
        *,
        grace: Optional[calls.Seconds] = None,
        expires_in: Optional[calls.Seconds] = None,
    ) -> NewToken:
        """A new token for the same key id, shown this once. The old token answers
        ``revoked`` at once, or after ``grace`` (seconds or a ``timedelta``; None: the
        daemon's ``regenerate_grace``, 0 unless configured). ``expires_in`` gives the key
        a new expiry from now (None: it keeps its own; a key past its own expiry needs
        one)."""
        return cast(NewToken, self._call(calls.regenerate(key_id, grace, expires_in)))

    def update_key(self, key_id: str, **changes: Any) -> KeyInfo:
        """Changes a key in place; its token stays the same. Each argument left out keeps
        its field; None clears it; a value sets it (:data:`~authenta_client.KEEP` also
        keeps): ``name``, ``permissions`` (these two cannot be cleared),
        ``environment``, ``expires_in`` (seconds or a ``timedelta`` from now; None: no
        expiry), ``owner_id``, ``ratelimit`` (a :class:`~authenta_client.RateLimit`),
        ``remaining`` (sets the balance and starts a new refill period; None:
        unlimited), ``refill`` (a :class:`~authenta_client.Refill`). ``unset_meta``
        removes metadata keys, then ``set_meta`` adds or replaces entries."""
        return cast(KeyInfo, self._call(calls.update_key(key_id, **changes)))

    def set_owner(
        self,
        owner_id: str,
        *,
        ratelimit: Any = calls.KEEP,
        remaining: Any = calls.KEEP,
        refill: Any = calls.KEEP,
    ) -> OwnerInfo:
        """Creates an owner or changes the limits its keys share, as ``update_key`` does
        a key's (left out: kept; None: cleared)."""
        call = calls.set_owner(owner_id, ratelimit=ratelimit, remaining=remaining, refill=refill)
        return cast(OwnerInfo, self._call(call))

    def show_owner(self, owner_id: str) -> OwnerInfo:
        """One owner's limits and where they stand now;
        :class:`~authenta_client.NotFound` when there is none."""
        return cast(OwnerInfo, self._call(calls.show_owner(owner_id)))

    def revoke(self, key_id: str, *, reason: Optional[str] = None) -> KeyInfo:
        """Revokes a key for good (its tokens answer ``revoked``); ``reason`` goes to the
        audit log. Revoking a revoked key changes nothing."""
        return cast(KeyInfo, self._call(calls.revoke(key_id, reason)))

    def revoke_many(
        self, key_ids: Iterable[str], *, reason: Optional[str] = None
    ) -> List[Union[KeyInfo, DaemonError]]:
        """Revokes many keys, pipelined (256 a round trip), so that the daemon revokes them
        in shared commits: an incident's list in one call. Returns, in the order of
        ``key_ids``, each key as revoked or the :class:`~authenta_client.DaemonError` the
        daemon answered for it (:class:`~authenta_client.NotFound`, ...); raises only when
        the daemon could not be asked. Revoking a revoked key changes nothing, so asking
        again after a failure is safe."""
        results: List[Union[KeyInfo, DaemonError]] = []
        for run in calls.revokes(key_ids, reason):
            bodies = self._exchange([c.body for c in run], True, "revoke_many")
            results.extend(calls.revoke_answers(run, bodies))
        return results

    def status(self) -> StatusInfo:
        """The daemon's version, uptime, paths, key counts and health."""
        return cast(StatusInfo, self._call(calls.status()))

    def audit(self, *, verify: bool = False) -> AuditReport:
        """The whole audit log, oldest first, fetched page by page. With ``verify`` the
        daemon also checks the hash chain (``report.chain``)."""
        first = self.audit_page(0, verify=verify)
        entries = list(first.entries)
        after = first.next
        while after is not None:
            page = self.audit_page(after)
            entries.extend(page.entries)
            after = page.next
        return AuditReport(tuple(entries), first.chain, None)

    def audit_page(self, after: int = 0, *, verify: bool = False) -> AuditReport:
        """One page of the audit log: entries with ``seq > after``."""
        return cast(AuditReport, self._call(calls.audit(verify, after)))

    def policy_status(self) -> PolicyReport:
        """The policy file in force, its last error, and the coming rotations."""
        return cast(PolicyReport, self._call(calls.policy_status()))

    def health(self) -> HealthReport:
        """Whether the daemon is ready to serve, and what is wrong when it is not. Any
        user that may connect may ask (no admin rights needed)."""
        return cast(HealthReport, self._call(calls.health()))

    def rekey(self, new_master_key: bytes) -> str:
        """Re-wraps the store's data key under a new master key (32 raw bytes, or a key
        file's text: 64 hex digits). Returns the daemon's message. From then on the
        daemon must be started with the new key. The key is never logged."""
        return cast(Done, self._call(calls.rekey(new_master_key))).message

    # -------------------------------------------------------------------- the socket

    def _call(self, call: calls.Call) -> ResponseBody:
        (body,) = self._exchange([call.body], call.retry_safe, call.what)
        return calls.answer(call, body)

    def _exchange(self, bodies: Sequence[bytes], retry_safe: bool, what: str) -> List[ResponseBody]:
        with self._lock:
            reused = self._conn is not None and self._conn.pid == os.getpid()
            try:
                return self._exchange_once(bodies)
            except ConnectionLost as lost:
                calls.check_retry(lost, reused, retry_safe, what)
            # The connection was opened before this call and found broken (the daemon
            # restarted, or closed it): open a new one, with a fresh Hello, and ask again.
            return self._exchange_once(bodies)

    def _exchange_once(self, bodies: Sequence[bytes]) -> List[ResponseBody]:
        conn = self._connection()
        first_id = self._next_id
        self._next_id += len(bodies)
        try:
            return conn.exchange(bodies, first_id)
        except BaseException:
            # Whatever broke the call (even KeyboardInterrupt) may have left answers on
            # the wire, so this connection cannot be trusted to line up any more.
            self._drop()
            raise

    def _connection(self) -> _Connection:
        if self._conn is not None and self._conn.pid != os.getpid():
            self._drop()  # inherited through fork: the parent still uses it
        if self._conn is None:
            self._conn = _Connection.open(self.socket_path, self.timeout, self._agent)
        return self._conn

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
