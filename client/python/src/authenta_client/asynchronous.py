"""The asyncio :class:`AsyncClient`: the blocking client's twin, for async apps.

::

    from authenta_client import AsyncClient

    keyd = AsyncClient()
    answer = await keyd.verify(token, "read")

It has the same methods, arguments and errors as :class:`~authenta_client.Client`, as
coroutines. Concurrent tasks may share one client: calls take turns on its connection
(an ``asyncio.Lock``). A client belongs to the event loop it first runs in; used from
another loop, it opens a new connection there.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any, Awaitable, Iterable, List, Mapping, Optional, Sequence, TypeVar, Union, cast

from . import calls
from .blocking import AGENT, connect_hint
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

T = TypeVar("T")
_READ_SIZE = 65536
_HAS_TIMEOUT_SCOPE = sys.version_info >= (3, 11)


class _AsyncConnection:
    """One connected and welcomed stream pair. Any exception leaves it unusable."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._frames = FrameBuffer()
        self.server = ""

    @classmethod
    async def open(cls, path: str, agent: str) -> "_AsyncConnection":
        check_socket_dir(path)
        try:
            reader, writer = await asyncio.open_unix_connection(path)
        except OSError as e:
            raise ConnectError(path, e.strerror or str(e), connect_hint(e)) from None
        connection = cls(reader, writer)
        try:
            await connection._handshake(agent)
        except BaseException:
            connection.close()
            raise
        return connection

    async def _handshake(self, agent: str) -> None:
        try:
            await self.send(frame(calls.hello(agent)))
            unsent: Optional[ConnectionLost] = None
        except ConnectionLost as e:
            unsent = e  # a Busy daemon's reply may still be readable: see blocking.py
        try:
            payload = await self.read_frame()
        except ConnectionLost:
            if unsent is not None:
                raise unsent from None
            raise
        self.server = calls.check_hello_reply(decode_hello_reply(payload)).server

    def stale(self) -> bool:
        """The daemon closed this connection while it was idle (it stopped or restarted):
        nothing can have been sent on it since."""
        return self._reader.at_eof() or self._writer.is_closing()

    async def send(self, data: bytes) -> None:
        try:
            self._writer.write(data)
            await self._writer.drain()
        except OSError as e:
            raise ConnectionLost(
                f"the connection to authenta-keyd broke: {e.strerror or e}",
                request_sent=not self._refused_unread(e),
            ) from None

    def _refused_unread(self, error: OSError) -> bool:
        """EPIPE: the daemon had closed its side before this write, so it read none of it.
        asyncio may report it as "connection lost" and keep the EPIPE on the reader."""
        return isinstance(error, BrokenPipeError) or isinstance(
            self._reader.exception(), BrokenPipeError
        )

    async def read_frame(self) -> bytes:
        while True:
            payload = self._frames.next_frame()
            if payload is not None:
                return payload
            try:
                chunk = await self._reader.read(_READ_SIZE)
            except OSError as e:
                raise ConnectionLost(
                    f"the connection to authenta-keyd broke: {e.strerror or e}"
                ) from None
            if not chunk:
                raise ConnectionLost(
                    "authenta-keyd closed the connection (it may have stopped or restarted)"
                )
            self._frames.feed(chunk)

    async def exchange(self, bodies: Sequence[bytes], first_id: int) -> List[ResponseBody]:
        """Sends the requests (pipelined) and returns their answers in order."""
        frames = [frame(calls.request(first_id + i, body)) for i, body in enumerate(bodies)]
        answers: List[ResponseBody] = []
        for count, data in batches(frames):
            try:
                await self.send(data)
            except ConnectionLost as lost:
                lost.request_sent = lost.request_sent or bool(answers)
                raise
            for _ in range(count):
                answers.append(await self._answer(first_id + len(answers)))
        return answers

    async def _answer(self, due: int) -> ResponseBody:
        request_id, body = decode_response(await self.read_frame())
        if request_id == 0 and isinstance(body, ErrorAnswer):
            raise error_for(body.code, f"{body.message} (the daemon closed the connection)")
        if request_id != due:
            raise ProtocolError(f"authenta-keyd answered request {request_id} where {due} was due")
        return body

    def close(self) -> None:
        try:
            self._writer.close()
        except RuntimeError:
            pass  # its event loop is closed already; the socket goes with it


class AsyncClient:
    """An asyncio client of authenta-keyd; see :class:`~authenta_client.Client` for the
    arguments. ``timeout`` bounds each whole call (connecting included)."""

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
        self._conn: Optional[_AsyncConnection] = None
        self._next_id = 1
        # Made in the loop that first uses the client (a Lock belongs to one loop).
        self._lock: Optional[asyncio.Lock] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._pid = os.getpid()

    def __repr__(self) -> str:
        return f"AsyncClient({self.socket_path!r})"

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def connect(self) -> "AsyncClient":
        """Connects and handshakes now, so that a wrong path or version shows at once."""
        async with self._turn():
            await self._within_timeout(self._connection())
        return self

    @property
    def server_version(self) -> Optional[str]:
        conn = self._conn
        return conn.server if conn is not None else None

    async def aclose(self) -> None:
        """Closes the connection; a later call opens a new one."""
        self._drop()

    # ------------------------------------------------------------------------ verify

    async def verify(
        self,
        token: str,
        permissions: PermissionsLike = (),
        environment: Optional[str] = None,
        *,
        cost: Optional[int] = None,
    ) -> VerifyAnswer:
        """See :meth:`Client.verify <authenta_client.Client.verify>`."""
        local = calls.local_verify_answer(token)
        if local is not None:
            return local
        call = calls.verify(token, permissions, environment, cost)
        return cast(VerifyAnswer, await self._call(call))

    async def verify_many(
        self,
        questions: Iterable[calls.Question],
        permissions: PermissionsLike = (),
        environment: Optional[str] = None,
        *,
        cost: Optional[int] = None,
    ) -> List[VerifyAnswer]:
        """See :meth:`Client.verify_many <authenta_client.Client.verify_many>`."""
        batch = calls.VerifyBatch(questions, permissions, environment, cost)
        if not batch.calls:
            return batch.answers([])
        bodies = await self._exchange([c.body for c in batch.calls], True, "verify_many")
        return batch.answers(bodies)

    # ------------------------------------------------------------------------- admin

    async def create_key(
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
        """See :meth:`Client.create_key <authenta_client.Client.create_key>`."""
        call = calls.create_key(
            name, permissions, environment, expires_in, owner_id, meta, ratelimit, remaining,
            refill,
        )  # fmt: skip
        return cast(NewToken, await self._call(call))

    async def list_keys(self, owner_id: Optional[str] = None) -> List[KeyInfo]:
        """Every key (only ``owner_id``'s when given), in id order, page by page."""
        keys: List[KeyInfo] = []
        after: Optional[str] = None
        while True:
            page = await self.list_keys_page(after, owner_id=owner_id)
            keys.extend(page.keys)
            if page.next is None:
                return keys
            after = page.next

    async def list_keys_page(
        self, after: Optional[str] = None, *, owner_id: Optional[str] = None
    ) -> KeyPage:
        return cast(KeyPage, await self._call(calls.list_keys(after, owner_id)))

    async def show_key(self, key_id: str) -> KeyInfo:
        return cast(KeyInfo, await self._call(calls.show_key(key_id)))

    async def regenerate(
        self,
        key_id: str,
        *,
        grace: Optional[calls.Seconds] = None,
        expires_in: Optional[calls.Seconds] = None,
    ) -> NewToken:
        """See :meth:`Client.regenerate <authenta_client.Client.regenerate>`."""
        return cast(NewToken, await self._call(calls.regenerate(key_id, grace, expires_in)))

    async def update_key(self, key_id: str, **changes: Any) -> KeyInfo:
        """See :meth:`Client.update_key <authenta_client.Client.update_key>`."""
        return cast(KeyInfo, await self._call(calls.update_key(key_id, **changes)))

    async def set_owner(
        self,
        owner_id: str,
        *,
        ratelimit: Any = calls.KEEP,
        remaining: Any = calls.KEEP,
        refill: Any = calls.KEEP,
    ) -> OwnerInfo:
        """See :meth:`Client.set_owner <authenta_client.Client.set_owner>`."""
        call = calls.set_owner(owner_id, ratelimit=ratelimit, remaining=remaining, refill=refill)
        return cast(OwnerInfo, await self._call(call))

    async def show_owner(self, owner_id: str) -> OwnerInfo:
        return cast(OwnerInfo, await self._call(calls.show_owner(owner_id)))

    async def revoke(self, key_id: str, *, reason: Optional[str] = None) -> KeyInfo:
        return cast(KeyInfo, await self._call(calls.revoke(key_id, reason)))

    async def revoke_many(
        self, key_ids: Iterable[str], *, reason: Optional[str] = None
    ) -> List[Union[KeyInfo, DaemonError]]:
        """See :meth:`Client.revoke_many <authenta_client.Client.revoke_many>`."""
        results: List[Union[KeyInfo, DaemonError]] = []
        for run in calls.revokes(key_ids, reason):
            bodies = await self._exchange([c.body for c in run], True, "revoke_many")
            results.extend(calls.revoke_answers(run, bodies))
        return results

    async def status(self) -> StatusInfo:
        return cast(StatusInfo, await self._call(calls.status()))

    async def audit(self, *, verify: bool = False) -> AuditReport:
        """The whole audit log, fetched page by page (``verify``: check the chain too)."""
        first = await self.audit_page(0, verify=verify)
        entries = list(first.entries)
        after = first.next
        while after is not None:
            page = await self.audit_page(after)
            entries.extend(page.entries)
            after = page.next
        return AuditReport(tuple(entries), first.chain, None)

    async def audit_page(self, after: int = 0, *, verify: bool = False) -> AuditReport:
        return cast(AuditReport, await self._call(calls.audit(verify, after)))

    async def policy_status(self) -> PolicyReport:
        return cast(PolicyReport, await self._call(calls.policy_status()))

    async def health(self) -> HealthReport:
        """See :meth:`Client.health <authenta_client.Client.health>`."""
        return cast(HealthReport, await self._call(calls.health()))

    async def rekey(self, new_master_key: bytes) -> str:
        """See :meth:`Client.rekey <authenta_client.Client.rekey>`."""
        return cast(Done, await self._call(calls.rekey(new_master_key))).message

    # -------------------------------------------------------------------- the socket

    async def _call(self, call: calls.Call) -> ResponseBody:
        (body,) = await self._exchange([call.body], call.retry_safe, call.what)
        return calls.answer(call, body)

    async def _exchange(
        self, bodies: Sequence[bytes], retry_safe: bool, what: str
    ) -> List[ResponseBody]:
        async with self._turn():
            return await self._within_timeout(self._exchange_retrying(bodies, retry_safe, what))

    async def _exchange_retrying(
        self, bodies: Sequence[bytes], retry_safe: bool, what: str
    ) -> List[ResponseBody]:
        conn = self._conn
        if conn is not None and conn.stale():
            self._drop()  # closed by the daemon while idle: nothing was sent on it
        reused = self._conn is not None
        try:
            return await self._exchange_once(bodies)
        except ConnectionLost as lost:
            calls.check_retry(lost, reused, retry_safe, what)
        # Opened before this call and found broken: reopen once, with a fresh Hello.
        return await self._exchange_once(bodies)

    async def _exchange_once(self, bodies: Sequence[bytes]) -> List[ResponseBody]:
        conn = await self._connection()
        first_id = self._next_id
        self._next_id += len(bodies)
        try:
            return await conn.exchange(bodies, first_id)
        except BaseException:
            # Including cancellation: answers may be left on the wire, so this
            # connection cannot be trusted to line up any more.
            self._drop()
            raise

    async def _connection(self) -> _AsyncConnection:
        if self._conn is None:
            self._conn = await _AsyncConnection.open(self.socket_path, self._agent)
        return self._conn

    async def _within_timeout(self, work: Awaitable[T]) -> T:
        try:
            if _HAS_TIMEOUT_SCOPE:
                # No extra task per call, unlike wait_for before 3.12: verify is hot.
                async with asyncio.timeout(self.timeout):  # type: ignore[attr-defined,unused-ignore]
                    return await work
            return await asyncio.wait_for(work, self.timeout)
        except asyncio.TimeoutError:
            self._drop()
            raise CallTimeout(
                f"authenta-keyd did not answer within {self.timeout} s; the connection was "
                "dropped (is the daemon overloaded or stopped?)"
            ) from None

    def _turn(self) -> asyncio.Lock:
        """The lock for this loop; a client moved to another loop (or forked) starts over
        with a new connection."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._pid != os.getpid():
            self._conn = None  # its streams belong to the old loop; do not touch them
            self._lock = asyncio.Lock()
            self._loop = loop
            self._pid = os.getpid()
        return cast(asyncio.Lock, self._lock)

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
