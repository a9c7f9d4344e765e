"""Starts the real ``authenta-keyd`` binary on a temporary directory and socket, like a
user would (the Python twin of the Rust tests' ``tests/common/mod.rs``).

The binary is ``$AUTHENTA_KEYD_BIN`` (``cargo test`` sets it to the one it built), else
``/tmp/keyd-bin/authenta-keyd``. The package under test is this checkout's ``src``, put
first on ``sys.path``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from typing import Callable, List, Optional, Sequence

SRC = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "src"))
if SRC not in sys.path:
    sys.path.insert(0, SRC)

import authenta_client  # noqa: E402
from authenta_client import AuthentaError, Client, NewToken  # noqa: E402

BIN = os.environ.get("AUTHENTA_KEYD_BIN") or "/tmp/keyd-bin/authenta-keyd"

MASTER_HEX = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
"""The master key of test daemons, as a key file holds it."""

OTHER_MASTER_HEX = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100"


def check_binary() -> None:
    if not (os.path.isfile(BIN) and os.access(BIN, os.X_OK)):
        raise RuntimeError(
            f"no authenta-keyd binary at {BIN}: build it (cargo build) and set "
            "AUTHENTA_KEYD_BIN to its path (cargo test --workspace sets it)"
        )


def serve_supports(flag: str) -> bool:
    """Whether this binary's ``serve`` takes ``flag`` (newer daemons have more)."""
    check_binary()
    out = subprocess.run([BIN, "serve", "--help"], capture_output=True, text=True, timeout=30)
    return flag in out.stdout


class Daemon:
    """One daemon on its own temporary directory; :meth:`start` it, :meth:`close` it."""

    def __init__(self, policy: Optional[str] = None, extra_args: Sequence[str] = ()) -> None:
        check_binary()
        self.extra_args = list(extra_args)
        self.dir = tempfile.mkdtemp(prefix="keyd-py-")
        self.socket = os.path.join(self.dir, "run", "keyd.sock")
        self.data_dir = os.path.join(self.dir, "data")
        self.master_key = self.write_key("master.hex", MASTER_HEX)
        self.log_path = os.path.join(self.dir, "daemon.log")
        self.policy: Optional[str] = None
        if policy is not None:
            os.mkdir(os.path.join(self.dir, "policy"))
            self.policy = os.path.join(self.dir, "policy", "policy.toml")
            with open(self.policy, "w") as f:
                f.write(policy)
        os.mkdir(os.path.join(self.dir, "run"))
        self.process: Optional[subprocess.Popen] = None

    def write_key(self, name: str, hex_digits: str) -> str:
        """A master key file (0600) in the daemon's directory."""
        path = os.path.join(self.dir, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(hex_digits + "\n")
        return path

    def start(self, master_key: Optional[str] = None) -> "Daemon":
        """Starts ``serve`` (again) and waits until a client is welcomed."""
        assert self.process is None, "daemon already running"
        command = [
            BIN, "serve",
            "--socket", self.socket,
            "--data-dir", self.data_dir,
            "--master-key-file", master_key or self.master_key,
        ]  # fmt: skip
        if self.policy:
            command += ["--policy", self.policy]
        command += self.extra_args
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("AUTHENTA_SOCKET", "CREDENTIALS_DIRECTORY")
        }
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env
            )
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                self.process = None
                raise RuntimeError(f"authenta-keyd exited early:\n{self.log()}")
            try:
                Client(self.socket, timeout=2).connect().close()
                return
            except AuthentaError:
                time.sleep(0.02)
        raise RuntimeError(f"authenta-keyd did not listen within 20 s:\n{self.log()}")

    def stop(self) -> int:
        """SIGTERM, and the exit status."""
        assert self.process is not None, "daemon not running"
        process, self.process = self.process, None
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise

    def restart(self) -> None:
        self.stop()
        self.start()

    def log(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def cli(self, *args: str, token: Optional[str] = None) -> subprocess.CompletedProcess:
        """Runs the ``authenta-keyd`` CLI against this daemon (a second opinion)."""
        env = dict(os.environ, AUTHENTA_SOCKET=self.socket)
        env.pop("AUTHENTA_KEY", None)
        if token is not None:
            env["AUTHENTA_KEY"] = token
        return subprocess.run(
            [BIN, *args],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=30,
        )

    def close(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None
        shutil.rmtree(self.dir, ignore_errors=True)


class DaemonTestCase(unittest.TestCase):
    """Each test gets a fresh daemon (``self.daemon``) and a client of it
    (``self.client``). On failure, the daemon's log is printed."""

    policy: Optional[str] = None

    def setUp(self) -> None:
        self.daemon = Daemon(self.policy)
        self.addCleanup(self.daemon.close)  # before start: a failed start leaves no files
        self.daemon.start()
        self.addCleanup(self._log_on_failure)
        self.client = Client(self.daemon.socket)
        self.addCleanup(self.client.close)

    def _log_on_failure(self) -> None:
        if self._failed():
            sys.stderr.write(f"\n--- authenta-keyd log of {self.id()}:\n{self.daemon.log()}\n")

    def _failed(self) -> bool:
        # unittest has no public "did this test fail" for cleanups; its internals differ
        # between 3.9-3.10 (outcome.errors) and 3.11+ (reported to the result at once).
        outcome = getattr(self, "_outcome", None)
        if hasattr(outcome, "errors"):
            return any(exc for test, exc in outcome.errors if test is self)
        result = getattr(outcome, "result", None)
        reported: List = list(getattr(result, "errors", [])) + list(getattr(result, "failures", []))
        return any(test is self for test, _ in reported)

    def create(self, name: str = "test-key", permissions="read", **kwargs) -> NewToken:
        return self.client.create_key(name, permissions, **kwargs)


class FakeDaemon:
    """A socket that speaks for authenta-keyd from scripts, to test what the real one never
    sends. Each script serves one connection, in order, in a thread: ``script(conn)``."""

    def __init__(self, *scripts: Callable[[socket.socket], None]) -> None:
        self.dir = tempfile.mkdtemp(prefix="keyd-fake-")
        self.socket = os.path.join(self.dir, "fake.sock")
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(self.socket)
        self._listener.listen(len(scripts))
        self.error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._serve, args=(scripts,), daemon=True)
        self._thread.start()

    def _serve(self, scripts) -> None:
        try:
            for script in scripts:
                conn, _ = self._listener.accept()
                with conn:
                    conn.settimeout(5)
                    script(conn)
        except BaseException as e:  # the test reads it with check()
            self.error = e

    def check(self) -> None:
        """Waits for the scripts to end and raises what failed in them."""
        self._thread.join(10)
        if self.error is not None:
            raise AssertionError(f"the fake daemon failed: {self.error!r}")

    def close(self) -> None:
        self._listener.close()
        self._thread.join(5)
        shutil.rmtree(self.dir, ignore_errors=True)


def read_frame(conn: socket.socket) -> bytes:
    """One frame's payload, read by a fake daemon."""
    prefix = _read_exact(conn, 4)
    return _read_exact(conn, int.from_bytes(prefix, "big"))


def _read_exact(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise EOFError("the client closed the connection")
        data += chunk
    return data


def send_frame(conn: socket.socket, payload: bytes) -> None:
    conn.sendall(len(payload).to_bytes(4, "big") + payload)


def welcome(conn: socket.socket) -> bytes:
    """Reads the Hello, answers ``Welcome { version: 2, server: "fake" }``, and returns
    the Hello's payload."""
    hello = read_frame(conn)
    send_frame(conn, b"\x00\x02\x04fake")
    return hello


def unknown_answer(request_id: int) -> bytes:
    """``Response { id, Verify(VerifyAnswer { code: Unknown, .. }) }``, as the daemon
    encodes it (id below 251): code, then 11 fields all None, empty or false."""
    return bytes([request_id, 0, 2]) + bytes(11)


__all__ = [
    "authenta_client",
    "Daemon",
    "DaemonTestCase",
    "serve_supports",
    "FakeDaemon",
    "read_frame",
    "send_frame",
    "welcome",
    "unknown_answer",
]
