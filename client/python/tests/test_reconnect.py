"""A client outlives daemon restarts: a broken connection is reopened once, with a fresh
Hello, before a call fails; a change that may have been made is not sent twice."""

import unittest

from harness import DaemonTestCase, FakeDaemon, read_frame, send_frame, unknown_answer, welcome

from authenta_client import (
    Client,
    ConnectError,
    ConnectionLost,
    UnavailableError,
    VerifyCode,
    calls,
)
from authenta_client.blocking import AGENT


class DaemonRestart(DaemonTestCase):
    def test_a_client_carries_on_after_a_restart(self):
        created = self.create()
        self.assertTrue(self.client.verify(created.token).allowed)
        first_connection = self.client._conn
        self.daemon.restart()
        # The old connection is dead; the same call reconnects and answers.
        self.assertTrue(self.client.verify(created.token).allowed)
        self.assertIsNot(self.client._conn, first_connection)
        self.assertEqual(self.client.status().connections, 1)

    def test_a_change_right_after_a_restart_is_made_once(self):
        self.create("before")
        self.daemon.restart()
        # Writing on the dead connection fails before the daemon could read anything, so
        # even a create is safe to send again on the new connection.
        self.client.create_key("after", "read")
        self.assertEqual(sorted(k.name for k in self.client.list_keys()), ["after", "before"])

    def test_while_the_daemon_is_down_calls_fail_closed_and_say_why(self):
        created = self.create()
        self.daemon.stop()
        with self.assertRaises(UnavailableError) as caught:
            self.client.verify(created.token)
        self.assertIsInstance(caught.exception, ConnectError)
        message = str(caught.exception)
        self.assertIn(self.daemon.socket, message)
        self.assertIn("authenta-keyd serve", message)
        self.assertNotIn(created.token, message)
        self.daemon.start()
        self.assertTrue(self.client.verify(created.token).allowed)


class BrokenMidCall(unittest.TestCase):
    """What the real daemon cannot be made to do on cue: break after reading a request."""

    def test_a_verify_is_asked_again_on_a_fresh_connection(self):
        hellos = []

        def first(conn):
            hellos.append(welcome(conn))
            read_frame(conn)
            send_frame(conn, unknown_answer(1))
            read_frame(conn)  # request 2: read, never answered

        def second(conn):
            hellos.append(welcome(conn))
            request = read_frame(conn)
            send_frame(conn, unknown_answer(request[0]))

        fake = FakeDaemon(first, second)
        self.addCleanup(fake.close)
        client = Client(fake.socket)
        self.addCleanup(client.close)
        self.assertEqual(client.verify("api_x").code, VerifyCode.UNKNOWN)
        self.assertEqual(client.verify("api_x").code, VerifyCode.UNKNOWN)
        fake.check()
        self.assertEqual(hellos, [calls.hello(AGENT)] * 2)

    def test_a_change_that_may_have_been_made_is_not_sent_again(self):
        def only(conn):
            welcome(conn)
            read_frame(conn)
            send_frame(conn, b"\x01\x07\x02ok")  # Response { id 1, Done("ok") }
            read_frame(conn)  # the second rekey: read, then the connection breaks

        fake = FakeDaemon(only)
        self.addCleanup(fake.close)
        client = Client(fake.socket)
        self.addCleanup(client.close)
        self.assertEqual(client.rekey(b"k" * 32), "ok")
        with self.assertRaises(ConnectionLost) as caught:
            client.rekey(b"k" * 32)
        fake.check()
        self.assertTrue(caught.exception.request_sent)
        self.assertIn("may or may not have been carried out", str(caught.exception))
        self.assertNotIn("kkkk", str(caught.exception))


if __name__ == "__main__":
    unittest.main()
