"""Connection and protocol errors: what a broken or foreign peer sends, from a fake daemon
(the real one never does), and where the socket is looked for."""

import os
import socket
import stat
import tempfile
import unittest
from unittest import mock

from harness import FakeDaemon, read_frame, send_frame, unknown_answer, welcome

from authenta_client import (
    AsyncClient,
    BadFrame,
    CallTimeout,
    Client,
    ConnectError,
    DaemonBusy,
    ProtocolError,
    UnavailableError,
    UnsafeSocketPath,
    VerifyCode,
    VersionMismatch,
    default_socket_path,
    resolve_socket_path,
)
from authenta_client.paths import fallback_socket_dir

TOKEN = "api_0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefg1ww6Ou"


class FakeDaemonTest(unittest.TestCase):
    def client_of(self, *scripts, timeout=5.0):
        fake = FakeDaemon(*scripts)
        self.addCleanup(fake.close)
        client = Client(fake.socket, timeout=timeout)
        self.addCleanup(client.close)
        return fake, client

    def answering(self, *frames):
        """A script: welcome, read one request, send these frames (raw, prefix included)."""

        def script(conn):
            welcome(conn)
            read_frame(conn)
            for data in frames:
                conn.sendall(data)

        return script


class Frames(FakeDaemonTest):
    def test_a_frame_over_64_kib_is_refused_unread(self):
        fake, client = self.client_of(self.answering((65537).to_bytes(4, "big")))
        with self.assertRaisesRegex(ProtocolError, "65537"):
            client.verify(TOKEN)
        self.assertIsNone(client._conn, "the connection must be dropped")

    def test_a_frame_of_exactly_64_kib_is_read(self):
        message = "m" * 65531  # id 1, Done, FB + u16 length: 65536 bytes in all
        payload = b"\x01\x07\xfb" + (65531).to_bytes(2, "little") + message.encode()
        self.assertEqual(len(payload), 65536)
        _, client = self.client_of(self.answering(len(payload).to_bytes(4, "big") + payload))
        self.assertEqual(client.rekey(b"k" * 32), message)

    def test_an_answer_to_another_request_is_refused(self):
        answer = unknown_answer(7)
        _, client = self.client_of(self.answering(len(answer).to_bytes(4, "big") + answer))
        with self.assertRaisesRegex(ProtocolError, "request 7 where 1 was due"):
            client.verify(TOKEN)

    def test_an_answer_of_the_wrong_kind_is_refused(self):
        _, client = self.client_of(self.answering(b"\x00\x00\x00\x05\x01\x07\x02ok"))
        with self.assertRaisesRegex(ProtocolError, "Done"):
            client.verify(TOKEN)

    def test_a_connection_level_error_is_raised_typed(self):
        error = b"\x00\x06\x05\x07too big"
        _, client = self.client_of(self.answering(len(error).to_bytes(4, "big") + error))
        with self.assertRaises(BadFrame) as caught:
            client.verify(TOKEN)
        self.assertIn("too big", str(caught.exception))
        self.assertIsNone(client._conn)

    def test_a_silent_daemon_times_out(self):
        def silent(conn):
            welcome(conn)
            read_frame(conn)
            conn.recv(1)

        _, client = self.client_of(silent, timeout=0.3)
        with self.assertRaises(CallTimeout) as caught:
            client.verify(TOKEN)
        self.assertIsInstance(caught.exception, UnavailableError)
        self.assertIn("0.3 s", str(caught.exception))


class Handshake(FakeDaemonTest):
    def replying(self, reply: bytes):
        def script(conn):
            read_frame(conn)
            send_frame(conn, reply)

        return script

    def test_another_protocol_version_is_a_version_mismatch(self):
        # A daemon of protocol 1, which refuses this client's Hello of version 2.
        _, client = self.client_of(self.replying(b"\x01\x01\x0eversion 1 only"))
        with self.assertRaises(VersionMismatch) as caught:
            client.connect()
        self.assertEqual((caught.exception.supported, caught.exception.ours), (1, 2))
        self.assertIn("version 1 only", str(caught.exception))

    def test_a_welcome_in_another_version_is_a_version_mismatch(self):
        _, client = self.client_of(self.replying(b"\x00\x01\x04fake"))
        with self.assertRaises(VersionMismatch):
            client.connect()

    def test_refused_in_our_own_version_means_the_hello_was_unreadable(self):
        _, client = self.client_of(self.replying(b"\x01\x02\x03bad"))
        with self.assertRaisesRegex(ProtocolError, "could not read this client's Hello"):
            client.connect()

    def test_a_busy_daemon(self):
        _, client = self.client_of(self.replying(b"\x02\x04full"))
        with self.assertRaises(DaemonBusy) as caught:
            client.verify(TOKEN)
        self.assertIsInstance(caught.exception, UnavailableError)
        self.assertIn("full", str(caught.exception))

    def test_a_busy_reply_is_read_even_when_the_hello_could_not_be_written(self):
        def busy_at_once(conn):
            send_frame(conn, b"\x02\x04full")
            conn.shutdown(socket.SHUT_RDWR)

        _, client = self.client_of(busy_at_once)
        with self.assertRaises(DaemonBusy):
            client.connect()

    def test_the_hello_names_the_client(self):
        hellos = []

        def script(conn):
            hellos.append(welcome(conn))
            send_frame(conn, unknown_answer(read_frame(conn)[0]))

        fake, client = self.client_of(script)
        self.assertEqual(client.verify(TOKEN).code, VerifyCode.UNKNOWN)
        fake.check()
        self.assertTrue(hellos[0].startswith(b"\x02"))
        self.assertIn(b"authenta-client-python/", hellos[0])
        self.assertEqual(client.server_version, "fake")


class Connecting(unittest.TestCase):
    def test_no_socket_says_what_to_do(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "keyd.sock")
            with self.assertRaises(ConnectError) as caught:
                Client(path).verify(TOKEN)
        message = str(caught.exception)
        self.assertIn(path, message)
        self.assertIn("AUTHENTA_SOCKET", message)
        self.assertNotIn(TOKEN, message)

    def test_a_socket_nobody_listens_on(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "keyd.sock")
            stale = socket.socket(socket.AF_UNIX)
            stale.bind(path)
            stale.close()
            with self.assertRaisesRegex(ConnectError, "nothing listens"):
                Client(path).connect()

    def test_the_async_client_says_the_same(self):
        import asyncio

        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "keyd.sock")
            with self.assertRaisesRegex(ConnectError, "no socket there"):
                asyncio.run(AsyncClient(path).verify(TOKEN))


class SocketPath(unittest.TestCase):
    def test_an_explicit_path_then_the_environment_then_the_default(self):
        with mock.patch.dict(os.environ, {"AUTHENTA_SOCKET": "/from/env.sock"}):
            self.assertEqual(resolve_socket_path("/given.sock"), "/given.sock")
            self.assertEqual(resolve_socket_path(), "/from/env.sock")
        with mock.patch.dict(os.environ, {"AUTHENTA_SOCKET": ""}):
            self.assertEqual(resolve_socket_path(), default_socket_path())

    def test_the_defaults(self):
        with mock.patch("os.geteuid", return_value=0):
            self.assertEqual(default_socket_path(), "/run/authenta/keyd.sock")
        with mock.patch("os.geteuid", return_value=1000):
            with mock.patch.dict(os.environ, {"XDG_RUNTIME_DIR": "/run/user/1000"}):
                self.assertEqual(default_socket_path(), "/run/user/1000/authenta/keyd.sock")
            with mock.patch.dict(os.environ, {"XDG_RUNTIME_DIR": "", "TMPDIR": "/scratch"}):
                self.assertEqual(default_socket_path(), "/scratch/authenta-1000/keyd.sock")

    def test_a_shared_fallback_directory_is_refused(self):
        with tempfile.TemporaryDirectory() as tmp, mock.patch.dict(os.environ, {"TMPDIR": tmp}):
            directory = fallback_socket_dir()
            os.mkdir(directory, 0o777)
            os.chmod(directory, 0o777)
            path = os.path.join(directory, "keyd.sock")
            with self.assertRaises(UnsafeSocketPath) as caught:
                Client(path).connect()
            self.assertIn("0777", str(caught.exception))
            os.chmod(directory, stat.S_IRWXU)
            with self.assertRaisesRegex(ConnectError, "no socket there"):
                Client(path).connect()  # private now: on to connect(), which finds nothing


if __name__ == "__main__":
    unittest.main()
