"""Every admin call against the real daemon, and the typed errors it answers with."""

import hashlib
import json
import os
import time
import unittest
from datetime import timedelta

from harness import OTHER_MASTER_HEX, DaemonTestCase

from authenta_client import (
    BadFrame,
    BadRequest,
    DaemonError,
    ErrorCode,
    KeyState,
    NotFound,
    Permission,
    VerifyCode,
    to_datetime,
)

# A well-formed token no key holds, revoked ahead by its hash in the policy file.
LEAKED = "api_0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefg1ww6Ou"


def health_or_skip(test):
    """The daemon's health; skips the test on a daemon that predates the Health request
    (it cannot decode it, and says so with a BadFrame)."""
    try:
        return test.client.health()
    except BadFrame:
        test.skipTest("this authenta-keyd predates the Health request")


class Keys(DaemonTestCase):
    def test_create_key_shows_the_token_once(self):
        now_ms = int(time.time() * 1000)
        created = self.client.create_key(
            "Backend-Server-Key",
            ("write", "read"),
            environment="production",
            expires_in=timedelta(days=90),
        )
        key = created.key
        self.assertRegex(created.token, r"^api_[0-9A-Za-z]{49}$")
        self.assertEqual(key.start, created.token[4:12])
        self.assertRegex(key.id, r"^key_[0-9A-Za-z]{16}$")
        self.assertEqual(key.name, "Backend-Server-Key")
        self.assertEqual(key.permissions, (Permission.READ, Permission.WRITE))
        self.assertEqual(key.environment, "production")
        self.assertEqual(key.state, KeyState.ACTIVE)
        self.assertAlmostEqual(key.created_at, now_ms, delta=60_000)
        self.assertEqual(key.expires_at - key.created_at, 90 * 24 * 3600 * 1000)
        self.assertIsNone(key.last_used_at)
        self.assertNotIn(created.token, repr(created))
        self.assertEqual(to_datetime(key.created_at).year, time.gmtime(now_ms / 1000).tm_year)

    def test_create_key_refusals_are_bad_requests(self):
        for name, permissions, environment in [
            ("", "read", None),
            ("x", (), None),
            ("x", "read", "not an environment!"),
        ]:
            with self.subTest(name=name, permissions=permissions, environment=environment):
                with self.assertRaises(BadRequest) as caught:
                    self.client.create_key(name, permissions, environment=environment)
                self.assertEqual(caught.exception.code, ErrorCode.BAD_REQUEST)
                self.assertTrue(caught.exception.message)
        # The connection survives an error answer.
        self.assertEqual(self.client.status().keys.total, 0)

    def test_list_keys_pages_through_every_key(self):
        names = [f"{i:03d}-" + "n" * 190 for i in range(300)]  # ~250 bytes a key
        ids = {self.client.create_key(name, "read").key.id for name in names}
        first = self.client.list_keys_page()
        self.assertIsNotNone(first.next, "300 keys of ~250 bytes need more than one page")
        self.assertLess(len(first.keys), 300)
        keys = self.client.list_keys()
        self.assertEqual(len(keys), 300)
        self.assertEqual({k.id for k in keys}, ids)
        self.assertEqual([k.id for k in keys], sorted(k.id for k in keys))
        after_first = self.client.list_keys_page(after=keys[0].id)
        self.assertEqual(after_first.keys[0].id, keys[1].id)

    def test_list_keys_of_an_empty_store(self):
        self.assertEqual(self.client.list_keys(), [])
        self.assertIsNone(self.client.list_keys_page().next)

    def test_list_matches_the_cli(self):
        created = self.create("listed", ("read", "delete"))
        out = self.daemon.cli("keys", "list", "--json")
        self.assertEqual(out.returncode, 0, out.stderr)
        (cli_key,) = json.loads(out.stdout)
        (key,) = self.client.list_keys()
        # The CLI shows the start with the token's prefix, as a person sees the token.
        self.assertEqual(
            (cli_key["id"], cli_key["name"], cli_key["start"]),
            (key.id, key.name, "api_" + key.start),
        )
        self.assertEqual(cli_key["permissions"], [p.value for p in key.permissions])
        self.assertEqual(key.id, created.key.id)

    def test_show_key(self):
        created = self.create("shown", "read", environment="staging")
        self.client.verify(created.token, "read")
        key = self.client.show_key(created.key.id)
        self.assertEqual((key.id, key.name, key.environment), (created.key.id, "shown", "staging"))
        self.assertIsNotNone(key.last_used_at)
        self.assertEqual(key.usage.verifications, 1)

    def test_show_key_not_found(self):
        for key_id in ["key_0000000000000000", "not-a-key-id"]:
            with self.subTest(key_id=key_id):
                with self.assertRaises(NotFound) as caught:
                    self.client.show_key(key_id)
                self.assertIsInstance(caught.exception, DaemonError)
                self.assertEqual(caught.exception.code, ErrorCode.NOT_FOUND)

    def test_regenerate(self):
        created = self.create()
        renewed = self.client.regenerate(created.key.id)
        self.assertEqual(renewed.key.id, created.key.id)
        self.assertNotEqual(renewed.token, created.token)
        self.assertIsNotNone(renewed.key.rotated_at)
        self.assertIsNone(renewed.key.grace_until)
        self.assertEqual(self.client.verify(created.token).code, VerifyCode.REVOKED)
        with_grace = self.client.regenerate(created.key.id, grace=timedelta(hours=1))
        self.assertAlmostEqual(
            with_grace.key.grace_until - int(time.time() * 1000), 3_600_000, delta=60_000
        )
        self.assertTrue(self.client.verify(renewed.token).allowed)

    def test_revoke(self):
        created = self.create()
        key = self.client.revoke(created.key.id, reason="staff change")
        self.assertEqual(key.state, KeyState.REVOKED)
        self.assertIsNotNone(key.revoked_at)
        again = self.client.revoke(created.key.id)
        self.assertEqual(again.revoked_at, key.revoked_at)
        with self.assertRaises(BadRequest):
            self.client.regenerate(created.key.id)
        with self.assertRaises(NotFound):
            self.client.revoke("key_0000000000000000")

    def test_revoke_many_revokes_together_and_names_each_failure(self):
        keys = [self.create(f"incident-{i}") for i in range(300)]
        kept = self.create("kept")
        ids = [k.key.id for k in keys]
        ids.insert(150, "key_0000000000000000")
        results = self.client.revoke_many(ids, reason="INC-42")
        self.assertEqual(len(results), 301)
        missing = results.pop(150)
        self.assertIsInstance(missing, NotFound)
        for created, result in zip(keys, results):
            self.assertEqual((result.id, result.state), (created.key.id, KeyState.REVOKED))
            self.assertEqual(self.client.verify(created.token).code, VerifyCode.REVOKED)
        self.assertTrue(self.client.verify(kept.token).allowed)
        # Again: nothing changes, and each key is answered as it stands.
        again = self.client.revoke_many([keys[0].key.id, keys[299].key.id])
        self.assertEqual([k.revoked_at for k in again], [results[0].revoked_at, results[299].revoked_at])
        self.assertEqual(self.client.revoke_many([]), [])


class Daemon(DaemonTestCase):
    def test_status(self):
        kept = self.create("kept")
        gone = self.create("gone")
        self.client.revoke(gone.key.id)
        self.client.verify(kept.token)
        status = self.client.status()
        self.assertRegex(status.version, r"^\d+\.\d+\.\d+")
        self.assertEqual(status.version, self.client.server_version)
        self.assertEqual(status.socket, self.daemon.socket)
        self.assertEqual(os.path.realpath(status.data_dir), os.path.realpath(self.daemon.data_dir))
        counts = status.keys
        self.assertEqual(
            (counts.total, counts.active, counts.revoked, counts.expired), (2, 1, 1, 0)
        )
        self.assertEqual(status.corrupt_keys, ())
        self.assertEqual(status.verifications, 1)
        self.assertGreaterEqual(status.connections, 1)
        self.assertIsNone(status.fleet)
        self.assertFalse(status.development_key)
        self.assertIsNotNone(status.newest_audit_at)

    def test_audit_records_every_change_and_its_chain_holds(self):
        created = self.create("audited")
        self.client.regenerate(created.key.id)
        self.client.revoke(created.key.id, reason="done")
        report = self.client.audit(verify=True)
        self.assertTrue(report.chain.ok, report.chain.problem)
        self.assertEqual(report.chain.checked, report.entries[-1].seq)
        actions = [(e.action, e.key_id) for e in report.entries]
        for action in ("create", "regenerate", "revoke"):
            self.assertIn((action, created.key.id), actions)
        self.assertEqual([e.seq for e in report.entries], list(range(1, len(report.entries) + 1)))
        peer = report.entries[0].actor
        self.assertEqual((peer.kind, peer.uid, peer.pid), ("peer", os.geteuid(), os.getpid()))
        self.assertIsNone(self.client.audit().chain)

    def test_audit_pages_through_a_long_log(self):
        # 200 keys created and revoked with 400-byte reasons: some 100 KB of entries.
        reason = "r" * 400
        for i in range(200):
            key_id = self.client.create_key(f"k{i}", "read").key.id
            self.client.revoke(key_id, reason=reason)
        first = self.client.audit_page(0, verify=True)
        self.assertIsNotNone(first.next, "the log should need more than one page")
        self.assertTrue(first.chain.ok)
        report = self.client.audit()
        self.assertEqual(len(report.entries), 400)
        self.assertEqual([e.seq for e in report.entries], list(range(1, 401)))
        self.assertIsNone(report.next)
        rest = self.client.audit_page(after=first.next)
        self.assertEqual(rest.entries[0].seq, first.next + 1)

    def test_health(self):
        report = health_or_skip(self)
        self.assertTrue(report.ready, report.problems)
        self.assertTrue(report.store)
        self.assertEqual(report.policy, "none")
        self.assertIsNone(report.fleet_connected)
        self.assertEqual(report.problems, ())

    def test_policy_status_without_a_policy(self):
        report = self.client.policy_status()
        self.assertIsNone(report.file)
        self.assertEqual((report.rules, report.revoked_ids, report.revoked_hashes), (0, 0, 0))

    def test_rekey_then_restart_with_the_new_key(self):
        created = self.create()
        new_key = bytes.fromhex(OTHER_MASTER_HEX)
        message = self.client.rekey(new_key)
        self.assertIsInstance(message, str)
        self.assertNotIn(OTHER_MASTER_HEX, message)
        self.assertIn("rekey", [e.action for e in self.client.audit().entries])
        self.daemon.stop()
        with self.assertRaises(RuntimeError):
            self.daemon.start()  # the old key no longer opens the store
        self.daemon.start(master_key=self.daemon.write_key("new.hex", OTHER_MASTER_HEX))
        self.assertTrue(self.client.verify(created.token).allowed)

    def test_rekey_takes_a_key_files_text_and_refuses_anything_else(self):
        self.assertTrue(self.client.rekey(f"{OTHER_MASTER_HEX}\n".encode()))
        for wrong in (b"short", b"k" * 33, f"{OTHER_MASTER_HEX}\n\n".encode()):
            with self.subTest(length=len(wrong)):
                with self.assertRaises(BadRequest):
                    self.client.rekey(wrong)


class Policy(DaemonTestCase):
    policy = (
        '[defaults]\nmax_age = "365d"\n\n'
        f'[revocations]\ntoken_sha256 = ["{hashlib.sha256(LEAKED.encode()).hexdigest()}"]\n'
    )

    def test_policy_status_reports_the_file_in_force(self):
        report = self.client.policy_status()
        self.assertEqual(report.file, self.daemon.policy)
        self.assertEqual(report.content_sha256, hashlib.sha256(self.policy.encode()).hexdigest())
        self.assertIsNotNone(report.loaded_at)
        self.assertIsNone(report.last_error)
        self.assertEqual(report.revoked_hashes, 1)
        self.assertEqual(report.next_rotations, ())

    def test_health_shows_the_policy_loaded(self):
        self.assertEqual(health_or_skip(self).policy, "loaded")

    def test_a_token_revoked_by_hash_never_verifies(self):
        self.assertEqual(self.client.verify(LEAKED).code, VerifyCode.REVOKED)


if __name__ == "__main__":
    unittest.main()
