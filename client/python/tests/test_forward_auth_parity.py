"""The middleware answers as the daemon's own forward-auth endpoint (``/v1/auth``) does:
the same requests go to both, and status, error code and challenge must agree.

Needs a daemon with an HTTP side (``serve --http-listen``); skipped on an older one.
"""

import asyncio
import http.client
import json
import os
import socket
import time
import unittest
from wsgiref.util import setup_testing_defaults

from harness import Daemon, serve_supports

from authenta_client import AsyncClient, Client, RateLimit
from authenta_client.asgi import AuthentaASGI
from authenta_client.wsgi import AuthentaWSGI

UNKNOWN_TOKEN = "api_0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefg1ww6Ou"


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over a Unix socket."""

    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=5)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


def summary(status, headers, body):
    """What must agree: status, the error code (or "valid"), the challenge, and whether
    there is a Retry-After (its value depends on the moment it was asked)."""
    code = json.loads(body)["error"]["code"] if status != 200 else "valid"
    return status, code, headers.get("www-authenticate"), "retry-after" in headers


async def ok_app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


def ok_wsgi(environ, start_response):
    start_response("200 OK", [])
    return [b"{}"]


@unittest.skipUnless(serve_supports("--http-listen"), "this authenta-keyd has no HTTP side")
class ForwardAuthParity(unittest.TestCase):
    def setUp(self):
        self.daemon = Daemon()
        # The HTTP side's socket goes next to the main one, in the daemon's directory.
        self.http_socket = os.path.join(self.daemon.dir, "run", "http.sock")
        self.daemon.extra_args = ["--http-listen", f"unix:{self.http_socket}"]
        self.addCleanup(self.daemon.close)
        self.daemon.start()
        deadline = time.monotonic() + 10
        while not os.path.exists(self.http_socket) and time.monotonic() < deadline:
            time.sleep(0.02)
        self.admin = Client(self.daemon.socket)
        self.addCleanup(self.admin.close)

    def daemon_says(self, method, headers, environment):
        if environment:
            headers = headers + [("X-Authenta-Environment", environment)]
        conn = UnixHTTPConnection(self.http_socket)
        try:
            conn.request(method, "/v1/auth", headers=dict(headers))
            response = conn.getresponse()
            body = response.read()
            lowered = {k.lower(): v for k, v in response.getheaders()}
            return summary(response.status, lowered, body)
        finally:
            conn.close()

    def wsgi_says(self, method, headers, environment):
        middleware = AuthentaWSGI(ok_wsgi, self.admin, environment=environment)
        environ = {"REQUEST_METHOD": method}
        for name, value in headers:
            environ["HTTP_" + name.upper().replace("-", "_")] = value
        setup_testing_defaults(environ)
        started = {}

        def start_response(status, response_headers, exc_info=None):
            started["status"] = int(status.split()[0])
            started["headers"] = {k.lower(): v for k, v in response_headers}

        body = b"".join(middleware(environ, start_response))
        return summary(started["status"], started["headers"], body)

    def asgi_says(self, method, headers, environment):
        async def run():
            client = AsyncClient(self.daemon.socket)
            middleware = AuthentaASGI(ok_app, client, environment=environment)
            scope = {
                "type": "http",
                "method": method,
                "path": "/",
                "headers": [(k.lower().encode(), v.encode()) for k, v in headers],
            }
            sent = []

            async def receive():
                return {"type": "http.request", "body": b""}

            async def send(message):
                sent.append(message)

            await middleware(scope, receive, send)
            await client.aclose()
            response_headers = {k.decode(): v.decode() for k, v in sent[0]["headers"]}
            return summary(sent[0]["status"], response_headers, sent[1]["body"])

        return asyncio.run(run())

    def test_the_middleware_answers_as_the_daemon_does(self):
        reader = self.admin.create_key("reader", "read", environment="production")
        writer = self.admin.create_key("writer", ("read", "write", "delete"))
        revoked = self.admin.create_key("revoked", "read")
        self.admin.revoke(revoked.key.id)
        # Spent before the cases, so that each of the three asked answers 429.
        limited = self.admin.create_key("limited", "read", ratelimit=RateLimit(1, 60_000))
        spent = self.admin.create_key("spent", "read", remaining=1)
        self.admin.verify(limited.token)
        self.admin.verify(spent.token)
        cases = [
            ("GET", [], None),
            ("GET", [("Authorization", "Basic dXNlcjpwdw==")], None),
            ("GET", [("Authorization", "Bearer ")], None),
            ("GET", [("Authorization", f"Bearer {reader.token}")], None),
            ("GET", [("Authorization", f"bearer {reader.token}")], "production"),
            ("GET", [("Authorization", f"Bearer {reader.token}")], "staging"),
            ("GET", [("X-API-Key", reader.token)], None),
            ("GET", [("Authorization", "Bearer "), ("X-API-Key", reader.token)], None),
            ("POST", [("Authorization", f"Bearer {reader.token}")], None),
            ("DELETE", [("Authorization", f"Bearer {reader.token}")], None),
            ("PATCH", [("Authorization", f"Bearer {writer.token}")], None),
            ("DELETE", [("Authorization", f"Bearer {writer.token}")], None),
            ("OPTIONS", [("Authorization", f"Bearer {writer.token}")], None),
            ("PROPFIND", [("Authorization", f"Bearer {writer.token}")], None),
            ("GET", [("Authorization", f"Bearer {revoked.token}")], None),
            ("GET", [("Authorization", f"Bearer {UNKNOWN_TOKEN}")], None),
            ("GET", [("Authorization", "Bearer api_nope")], None),
            ("GET", [("Authorization", f"Bearer {limited.token}")], None),
            ("GET", [("X-API-Key", spent.token)], None),
        ]
        statuses = set()
        for method, headers, environment in cases:
            with self.subTest(
                method=method, headers=[h for h, _ in headers], environment=environment
            ):
                expected = self.daemon_says(method, headers, environment)
                statuses.add(expected[0])
                self.assertEqual(self.wsgi_says(method, headers, environment), expected)
                self.assertEqual(self.asgi_says(method, headers, environment), expected)
        self.assertEqual(statuses, {200, 401, 403, 429}, "the cases must cover every status")


if __name__ == "__main__":
    unittest.main()
