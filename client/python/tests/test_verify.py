"""Every verify code, against the real daemon, with the fields the Rust client carries."""

import threading
import time
import unittest

from harness import DaemonTestCase

from authenta_client import Permission, VerifyAnswer, VerifyCode, VerifyQuestion

# Well-formed (prefix, length, alphabet, checksum: docs/protocol.md section 7), held by no key.
UNKNOWN_TOKEN = "api_0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefg1ww6Ou"


class VerifyCodes(DaemonTestCase):
    def test_valid_carries_the_key(self):
        created = self.create("backend", ("read", "write"), environment="production")
        answer = self.client.verify(created.token, "read")
        self.assertIsInstance(answer, VerifyAnswer)
        self.assertEqual(answer.code, VerifyCode.VALID)
        self.assertTrue(answer.allowed)
        self.assertEqual(answer.status, 200)
        self.assertEqual(answer.key_id, created.key.id)
        self.assertEqual(answer.permissions, (Permission.READ, Permission.WRITE))
        self.assertEqual(answer.environment, "production")
        self.assertIsNone(answer.rotate_by)
        self.assertFalse(answer.rotation_due)

    def test_no_permission_asked_checks_validity_only(self):
        created = self.create(permissions="delete")
        self.assertEqual(self.client.verify(created.token).code, VerifyCode.VALID)
        self.assertEqual(self.client.verify(created.token, ()).code, VerifyCode.VALID)

    def test_every_permission_asked_must_be_held(self):
        created = self.create(permissions=("read", "write"))
        self.assertTrue(self.client.verify(created.token, ("read", "write")).allowed)
        answer = self.client.verify(created.token, ("read", Permission.DELETE))
        self.assertEqual(answer.code, VerifyCode.INSUFFICIENT_PERMISSIONS)
        self.assertEqual(answer.status, 403)
        self.assertEqual(answer.key_id, created.key.id)
        self.assertFalse(answer.allowed)

    def test_unknown(self):
        answer = self.client.verify(UNKNOWN_TOKEN, "read")
        self.assertEqual((answer.code, answer.status), (VerifyCode.UNKNOWN, 401))
        self.assertIsNone(answer.key_id)
        self.assertEqual(answer.permissions, ())

    def test_malformed(self):
        for token in ["", "api_short", UNKNOWN_TOKEN[:-1] + "v", "Bearer x", "api_" + "é" * 49]:
            with self.subTest(token=token[:10]):
                answer = self.client.verify(token, "read")
                self.assertEqual((answer.code, answer.status), (VerifyCode.MALFORMED, 401))
                self.assertIsNone(answer.key_id)

    def test_an_oversize_token_is_malformed_and_the_connection_lives_on(self):
        created = self.create()
        self.assertEqual(self.client.verify("api_" + "A" * 70_000).code, VerifyCode.MALFORMED)
        self.assertTrue(self.client.verify(created.token).allowed)

    def test_revoked(self):
        created = self.create()
        self.client.revoke(created.key.id, reason="test")
        answer = self.client.verify(created.token, "read")
        self.assertEqual((answer.code, answer.status), (VerifyCode.REVOKED, 401))
        self.assertEqual(answer.key_id, created.key.id)

    def test_expired(self):
        created = self.create(expires_in=1)
        self.assertTrue(self.client.verify(created.token).allowed)
        time.sleep(1.1)
        answer = self.client.verify(created.token, "read")
        self.assertEqual((answer.code, answer.status), (VerifyCode.EXPIRED, 401))
        self.assertEqual(answer.key_id, created.key.id)

    def test_wrong_environment(self):
        created = self.create(environment="production")
        self.assertTrue(self.client.verify(created.token, "read", "production").allowed)
        answer = self.client.verify(created.token, "read", "staging")
        self.assertEqual((answer.code, answer.status), (VerifyCode.WRONG_ENVIRONMENT, 401))
        self.assertEqual(answer.environment, "production")
        unlabelled = self.create()
        answer = self.client.verify(unlabelled.token, "read", "production")
        self.assertEqual(answer.code, VerifyCode.WRONG_ENVIRONMENT)

    def test_a_token_replaced_by_regenerate_is_revoked(self):
        created = self.create()
        renewed = self.client.regenerate(created.key.id)
        self.assertEqual(renewed.key.id, created.key.id)
        self.assertNotEqual(renewed.token, created.token)
        self.assertEqual(self.client.verify(created.token).code, VerifyCode.REVOKED)
        self.assertTrue(self.client.verify(renewed.token).allowed)

    def test_a_replaced_token_verifies_during_its_grace(self):
        created = self.create()
        renewed = self.client.regenerate(created.key.id, grace=3600)
        self.assertTrue(self.client.verify(created.token).allowed)
        self.assertTrue(self.client.verify(renewed.token).allowed)
        self.assertIsNotNone(renewed.key.grace_until)

    def test_verify_is_counted_on_the_key(self):
        created = self.create()
        self.client.verify(created.token, "read")
        self.client.verify(created.token, "delete")
        usage = self.client.show_key(created.key.id).usage
        self.assertEqual((usage.verifications, usage.allowed, usage.denied), (2, 1, 1))

    def test_the_cli_agrees(self):
        created = self.create(permissions="read")
        out = self.daemon.cli("verify", "--json", "--permission", "write", token=created.token)
        self.assertEqual(out.returncode, 43, out.stderr)
        self.assertIn('"insufficient_permissions"', out.stdout)
        self.assertEqual(
            self.client.verify(created.token, "write").code.value, "insufficient_permissions"
        )


class SharedClient(DaemonTestCase):
    def test_threads_may_share_a_client(self):
        reader = self.create("reader", "read")
        results = []

        def ask(permission):
            for _ in range(50):
                results.append((permission, self.client.verify(reader.token, permission).code))

        threads = [threading.Thread(target=ask, args=(p,)) for p in ["read", "write"] * 4]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.assertEqual(len(results), 400)
        expected = {"read": VerifyCode.VALID, "write": VerifyCode.INSUFFICIENT_PERMISSIONS}
        self.assertTrue(all(code == expected[p] for p, code in results))


class RotationHints(DaemonTestCase):
    # A year's maximum age, warned of two years before: every key is due at once.
    policy = '[defaults]\nmax_age = "365d"\nwarn_before = "730d"\n'

    def test_the_policy_rotation_hint_is_carried(self):
        created = self.create()
        before = int(time.time() * 1000)
        answer = self.client.verify(created.token, "read")
        self.assertTrue(answer.allowed)
        self.assertTrue(answer.rotation_due)
        self.assertIsNotNone(answer.rotate_by)
        year_ms = 365 * 24 * 3600 * 1000
        self.assertAlmostEqual(answer.rotate_by, before + year_ms, delta=60_000)
        self.assertEqual(self.client.show_key(created.key.id).rotate_by, answer.rotate_by)


class VerifyManyQuestions(DaemonTestCase):
    def test_questions_may_be_tokens_tuples_or_objects(self):
        reader = self.create(permissions="read", environment="staging")
        answers = self.client.verify_many(
            [
                reader.token,
                (reader.token, "write"),
                (reader.token, "read", "production"),
                VerifyQuestion(reader.token, ("read",), "staging"),
                UNKNOWN_TOKEN,
            ],
            permissions="read",
        )
        self.assertEqual(
            [a.code for a in answers],
            [
                VerifyCode.VALID,
                VerifyCode.INSUFFICIENT_PERMISSIONS,
                VerifyCode.WRONG_ENVIRONMENT,
                VerifyCode.VALID,
                VerifyCode.UNKNOWN,
            ],
        )
        self.assertNotIn(reader.token, repr(VerifyQuestion(reader.token)))

    def test_no_questions_no_answers(self):
        self.assertEqual(self.client.verify_many([]), [])


if __name__ == "__main__":
    unittest.main()
