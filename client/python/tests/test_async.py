"""AsyncClient against the real daemon: verify, pipelining, admin calls, restarts."""

import asyncio
import unittest

from harness import OTHER_MASTER_HEX, Daemon, FakeDaemon, read_frame, welcome

from authenta_client import (
    AsyncClient,
    BadFrame,
    BadRequest,
    CallTimeout,
    ConnectError,
    KeyState,
    NotFound,
    UnavailableError,
    VerifyCode,
)

UNKNOWN_TOKEN = "api_0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefg1ww6Ou"


class AsyncClientTest(unittest.IsolatedAsyncioTestCase):
    async def asyncSetUp(self):
        self.daemon = Daemon()
        self.addCleanup(self.daemon.close)
        self.daemon.start()
        self.client = AsyncClient(self.daemon.socket)
        self.addAsyncCleanup(self.client.aclose)

    async def test_verify_codes(self):
        created = await self.client.create_key("async", "read", environment="production")
        valid = await self.client.verify(created.token, "read", "production")
        self.assertEqual((valid.code, valid.key_id), (VerifyCode.VALID, created.key.id))
        self.assertEqual(
            (await self.client.verify(created.token, "write")).code,
            VerifyCode.INSUFFICIENT_PERMISSIONS,
        )
        self.assertEqual(
            (await self.client.verify(created.token, (), "staging")).code,
            VerifyCode.WRONG_ENVIRONMENT,
        )
        self.assertEqual((await self.client.verify(UNKNOWN_TOKEN)).code, VerifyCode.UNKNOWN)
        self.assertEqual((await self.client.verify("api_?")).code, VerifyCode.MALFORMED)
        await self.client.revoke(created.key.id)
        self.assertEqual((await self.client.verify(created.token)).code, VerifyCode.REVOKED)

    async def test_verify_many_answers_in_order(self):
        reader = await self.client.create_key("reader", "read")
        questions = [(reader.token, "read"), (reader.token, "delete"), UNKNOWN_TOKEN] * 400
        answers = await self.client.verify_many(questions)
        expected = [VerifyCode.VALID, VerifyCode.INSUFFICIENT_PERMISSIONS, VerifyCode.UNKNOWN] * 400
        self.assertEqual([a.code for a in answers], expected)

    async def test_tasks_may_share_a_client(self):
        created = await self.client.create_key("shared", ("read", "write"))
        perms = ["read", "delete", "write"] * 30
        answers = await asyncio.gather(*(self.client.verify(created.token, p) for p in perms))
        self.assertEqual(
            [a.code for a in answers],
            [VerifyCode.VALID, VerifyCode.INSUFFICIENT_PERMISSIONS, VerifyCode.VALID] * 30,
        )

    async def test_every_admin_call(self):
        created = await self.client.create_key("admin", "read", expires_in=3600)
        self.assertIsNotNone(created.key.expires_at)
        self.assertEqual([k.id for k in await self.client.list_keys()], [created.key.id])
        self.assertIsNone((await self.client.list_keys_page()).next)
        self.assertEqual((await self.client.show_key(created.key.id)).name, "admin")
        renewed = await self.client.regenerate(created.key.id, grace=60)
        self.assertIsNotNone(renewed.key.grace_until)
        revoked = await self.client.revoke(created.key.id, reason="async test")
        self.assertEqual(revoked.state, KeyState.REVOKED)
        again, missing = await self.client.revoke_many([created.key.id, "key_0000000000000000"])
        self.assertEqual(again.revoked_at, revoked.revoked_at)
        self.assertIsInstance(missing, NotFound)
        status = await self.client.status()
        self.assertEqual((status.keys.total, status.keys.revoked), (1, 1))
        self.assertEqual(status.version, self.client.server_version)
        report = await self.client.audit(verify=True)
        self.assertTrue(report.chain.ok)
        self.assertEqual([e.action for e in report.entries], ["create", "regenerate", "revoke"])
        self.assertEqual((await self.client.audit_page(2)).entries[0].action, "revoke")
        self.assertIsNone((await self.client.policy_status()).file)
        try:
            self.assertTrue((await self.client.health()).ready)
        except BadFrame:
            pass  # a daemon that predates Health (test_admin says so with a skip)
        message = await self.client.rekey(bytes.fromhex(OTHER_MASTER_HEX))
        self.assertTrue(message)
        with self.assertRaises(NotFound):
            await self.client.show_key("key_0000000000000000")
        with self.assertRaises(BadRequest):
            await self.client.regenerate(created.key.id)

    async def test_reconnects_after_a_restart(self):
        created = await self.client.create_key("restart", "read")
        self.assertTrue((await self.client.verify(created.token)).allowed)
        self.daemon.restart()
        self.assertTrue((await self.client.verify(created.token)).allowed)
        self.daemon.restart()
        await self.client.create_key("after", "read")  # never sent on the dead connection
        self.assertEqual(len(await self.client.list_keys()), 2)

    async def test_fails_closed_while_the_daemon_is_down(self):
        created = await self.client.create_key("down", "read")
        self.daemon.stop()
        with self.assertRaises(ConnectError):
            await self.client.verify(created.token)
        self.daemon.start()
        self.assertTrue((await self.client.verify(created.token)).allowed)


class AsyncTimeouts(unittest.IsolatedAsyncioTestCase):
    async def test_a_silent_daemon_times_out(self):
        def silent(conn):
            welcome(conn)
            read_frame(conn)
            conn.recv(1)  # waits until the client gives up and closes

        fake = FakeDaemon(silent)
        self.addCleanup(fake.close)
        client = AsyncClient(fake.socket, timeout=0.3)
        with self.assertRaises(CallTimeout) as caught:
            await client.verify(UNKNOWN_TOKEN)
        self.assertIsInstance(caught.exception, UnavailableError)
        self.assertIsNone(client._conn, "a timed-out connection must not be reused")


if __name__ == "__main__":
    unittest.main()
