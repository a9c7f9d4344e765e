"""The ASGI middleware, driven with hand-made scope/receive/send, against the real daemon."""

import asyncio
import json
import unittest

from harness import Daemon

from authenta_client import AsyncClient, Client, RateLimit, VerifyAnswer
from authenta_client.asgi import AuthentaASGI


class App:
    """The wrapped ASGI app: records the scope it was called with."""

    def __init__(self):
        self.scope = None

    async def __call__(self, scope, receive, send):
        self.scope = scope
        if scope["type"] == "lifespan":
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/plain")],
            }
        )
        await send({"type": "http.response.body", "body": b"served"})


async def call(middleware, method="GET", headers=(), kind="http"):
    """Runs one request through the middleware; returns (status, headers, body, messages)."""
    scope = {
        "type": kind,
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "path": "/media/1",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers],
    }
    if kind == "websocket":
        del scope["method"]
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    await middleware(scope, receive, send)
    if kind != "http":
        return None, {}, b"", sent
    start = sent[0]
    response_headers = {k.decode(): v.decode() for k, v in start["headers"]}
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], response_headers, body, sent


class ASGIMiddleware(unittest.IsolatedAsyncioTestCase):
    async def asyncSetUp(self):
        self.daemon = Daemon()
        self.addCleanup(self.daemon.close)
        self.daemon.start()
        self.admin = Client(self.daemon.socket)
        self.addCleanup(self.admin.close)
        self.app = App()
        self.client = AsyncClient(self.daemon.socket)
        self.addAsyncCleanup(self.client.aclose)
        self.middleware = AuthentaASGI(self.app, self.client)

    def assertRefused(self, response, status, code):
        got_status, headers, body, _ = response
        self.assertEqual(got_status, status, body)
        self.assertEqual(headers["content-type"], "application/json")
        self.assertEqual(json.loads(body)["error"]["code"], code)
        self.assertIsNone(self.app.scope, "a refused request must not reach the app")
        return headers

    async def test_a_valid_key_reaches_the_app_with_the_answer(self):
        created = self.admin.create_key("asgi", "read")
        status, _, body, _ = await call(
            self.middleware, "GET", [("Authorization", f"Bearer {created.token}")]
        )
        self.assertEqual((status, body), (200, b"served"))
        answer = self.app.scope["authenta"]
        self.assertIsInstance(answer, VerifyAnswer)
        self.assertEqual(answer.key_id, created.key.id)

    async def test_the_x_api_key_header_works_too(self):
        created = self.admin.create_key("asgi", "write")
        status, _, _, _ = await call(self.middleware, "PUT", [("X-API-Key", created.token)])
        self.assertEqual(status, 200)

    async def test_no_key_is_401_missing(self):
        headers = self.assertRefused(await call(self.middleware, "GET"), 401, "missing")
        self.assertEqual(headers["www-authenticate"], 'Bearer realm="authenta"')

    async def test_a_key_of_another_scheme_is_missing(self):
        response = await call(self.middleware, "GET", [("Authorization", "Basic dXNlcjpwdw==")])
        self.assertRefused(response, 401, "missing")

    async def test_a_revoked_key_is_401_revoked(self):
        created = self.admin.create_key("asgi", "read")
        self.admin.revoke(created.key.id)
        response = await call(
            self.middleware, "GET", [("Authorization", f"bearer {created.token}")]
        )
        headers = self.assertRefused(response, 401, "revoked")
        self.assertEqual(
            headers["www-authenticate"], 'Bearer realm="authenta", error="invalid_token"'
        )

    async def test_a_missing_permission_is_403(self):
        created = self.admin.create_key("asgi", "read")
        response = await call(
            self.middleware, "DELETE", [("Authorization", f"Bearer {created.token}")]
        )
        headers = self.assertRefused(response, 403, "insufficient_permissions")
        self.assertEqual(
            headers["www-authenticate"], 'Bearer realm="authenta", error="insufficient_scope"'
        )

    async def test_a_daemon_that_is_down_is_503_never_a_pass(self):
        created = self.admin.create_key("asgi", "read")
        self.daemon.stop()
        with self.assertLogs("authenta_client", "WARNING"):
            response = await call(
                self.middleware, "GET", [("Authorization", f"Bearer {created.token}")]
            )
        headers = self.assertRefused(response, 503, "unavailable")
        self.assertEqual(headers["retry-after"], "1")

    async def test_a_rate_limited_key_is_429_with_retry_after(self):
        created = self.admin.create_key("asgi", "read", ratelimit=RateLimit(2, 60_000))
        auth = [("Authorization", f"Bearer {created.token}")]
        for _ in range(2):
            self.assertEqual((await call(self.middleware, "GET", auth))[0], 200)
            self.app.scope = None
        headers = self.assertRefused(await call(self.middleware, "GET", auth), 429, "rate_limited")
        # Two a minute: the next verify may pass within 30 s.
        self.assertIn(int(headers["retry-after"]), range(1, 32))
        self.assertNotIn("www-authenticate", headers)

    async def test_a_spent_balance_is_429_without_retry_after(self):
        created = self.admin.create_key("asgi", "read", remaining=1)
        auth = [("X-API-Key", created.token)]
        self.assertEqual((await call(self.middleware, "GET", auth))[0], 200)
        self.app.scope = None
        headers = self.assertRefused(
            await call(self.middleware, "GET", auth), 429, "usage_exceeded"
        )
        self.assertNotIn("retry-after", headers)

    async def test_a_cost_may_be_set(self):
        created = self.admin.create_key("asgi", "read", remaining=5)
        free = AuthentaASGI(self.app, self.client, cost=0)
        auth = [("X-API-Key", created.token)]
        self.assertEqual((await call(free, "GET", auth))[0], 200)
        self.assertEqual(self.app.scope["authenta"].remaining, 5)

    async def test_lifespan_passes_through(self):
        await call(self.middleware, kind="lifespan")
        self.assertEqual(self.app.scope["type"], "lifespan")

    async def test_a_websocket_without_a_key_is_closed_before_it_opens(self):
        _, _, _, sent = await call(self.middleware, kind="websocket")
        self.assertEqual(sent, [{"type": "websocket.close", "code": 1008}])
        self.assertIsNone(self.app.scope)

    async def test_the_app_may_choose_the_permission(self):
        created = self.admin.create_key("asgi", "read")
        relaxed = AuthentaASGI(self.app, self.client, permission=lambda scope: "read")
        status, _, _, _ = await call(
            relaxed, "POST", [("Authorization", f"Bearer {created.token}")]
        )
        self.assertEqual(status, 200)

    async def test_concurrent_requests_share_one_connection(self):
        reader = self.admin.create_key("reader", "read")
        auth = [("Authorization", f"Bearer {reader.token}")]
        responses = await asyncio.gather(
            *(call(self.middleware, m, auth) for m in ["GET", "POST"] * 25)
        )
        self.assertEqual([r[0] for r in responses], [200, 403] * 25)


if __name__ == "__main__":
    unittest.main()
