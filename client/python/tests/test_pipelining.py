"""verify_many: many requests written before any answer is read, answers in order."""

import random
import unittest

from harness import DaemonTestCase

from authenta_client import VerifyCode, VerifyQuestion

UNKNOWN_TOKEN = "api_0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefg1ww6Ou"


class SocketSpy:
    """Stands in for a client's socket and records its sends and receives, in order."""

    def __init__(self, sock):
        self._sock = sock
        self.ops = []

    def send(self, data, flags=0):
        self.ops.append("send")
        return self._sock.send(data, flags)

    def recv(self, size):
        self.ops.append("recv")
        return self._sock.recv(size)

    def close(self):
        self._sock.close()


class Pipelining(DaemonTestCase):
    def questions(self, count):
        """``count`` mixed questions (seeded), and the (code, key id) each must get."""
        reader = self.create("reader", "read")
        writer = self.create("writer", ("read", "write"), environment="production")
        revoked = self.create("revoked", "read")
        self.client.revoke(revoked.key.id)
        kinds = [
            (reader.token, "read", None, VerifyCode.VALID, reader.key.id),
            (reader.token, "write", None, VerifyCode.INSUFFICIENT_PERMISSIONS, reader.key.id),
            (writer.token, "write", "production", VerifyCode.VALID, writer.key.id),
            (writer.token, "read", "staging", VerifyCode.WRONG_ENVIRONMENT, writer.key.id),
            (revoked.token, "read", None, VerifyCode.REVOKED, revoked.key.id),
            (UNKNOWN_TOKEN, "read", None, VerifyCode.UNKNOWN, None),
            ("api_nope", "read", None, VerifyCode.MALFORMED, None),
        ]
        rng = random.Random(1000)
        picked = [rng.choice(kinds) for _ in range(count)]
        questions = [VerifyQuestion(token, perm, env) for token, perm, env, _, _ in picked]
        return questions, [(code, key_id) for *_, code, key_id in picked]

    def test_a_thousand_verifies_answered_correctly_and_in_order(self):
        questions, expected = self.questions(1000)
        before = self.client.status().verifications
        answers = self.client.verify_many(questions)
        self.assertEqual(len(answers), 1000)
        self.assertEqual([(a.code, a.key_id) for a in answers], expected)
        self.assertEqual(self.client.status().verifications, before + 1000)

    def test_requests_are_written_before_answers_are_read(self):
        questions, expected = self.questions(1000)
        self.client.connect()
        spy = SocketSpy(self.client._conn._sock)
        self.client._conn._sock = spy
        answers = self.client.verify_many(questions)
        self.assertEqual([(a.code, a.key_id) for a in answers], expected)
        # ~65 bytes a request: two writes of at most 64 KiB, the first before any read.
        self.assertEqual(spy.ops[0], "send")
        self.assertLessEqual(spy.ops.count("send"), 2)
        self.assertLess(spy.ops.count("recv"), 100, "answers were read one at a time")

    def test_a_batch_larger_than_the_socket_buffers(self):
        # ~650 KB of requests: written in 64 KiB groups, each group's answers read before
        # the next, so neither side's buffer fills up.
        questions, expected = self.questions(10_000)
        answers = self.client.verify_many(questions)
        self.assertEqual([(a.code, a.key_id) for a in answers], expected)


if __name__ == "__main__":
    unittest.main()
