"""The WSGI middleware, driven as a WSGI server would, against the real daemon."""

import json
import unittest
from wsgiref.util import setup_testing_defaults

from harness import DaemonTestCase

from authenta_client import Permission, RateLimit, VerifyAnswer
from authenta_client.wsgi import AuthentaWSGI

UNKNOWN_TOKEN = "api_0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefg1ww6Ou"


class App:
    """The wrapped app: records the environ it was called with."""

    def __init__(self):
        self.environ = None

    def __call__(self, environ, start_response):
        self.environ = environ
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"served"]


class WSGIMiddleware(DaemonTestCase):
    def setUp(self):
        super().setUp()
        self.app = App()
        self.middleware = AuthentaWSGI(self.app, socket_path=self.daemon.socket)
        self.addCleanup(self.middleware.client.close)

    def request(self, method="GET", token=None, header="Authorization", middleware=None):
        environ = {"REQUEST_METHOD": method}
        if token is not None and header == "Authorization":
            environ["HTTP_AUTHORIZATION"] = f"Bearer {token}"
        elif token is not None:
            environ["HTTP_X_API_KEY"] = token
        setup_testing_defaults(environ)
        started = {}

        def start_response(status, headers, exc_info=None):
            started["status"] = status
            started["headers"] = dict(headers)

        body = b"".join((middleware or self.middleware)(environ, start_response))
        return started["status"], started["headers"], body

    def assertRefused(self, response, status, code):
        got_status, headers, body = response
        self.assertEqual(int(got_status.split()[0]), status, body)
        self.assertEqual(headers["Content-Type"], "application/json")
        error = json.loads(body)["error"]
        self.assertEqual(error["code"], code)
        self.assertTrue(error["message"])
        self.assertEqual(int(headers["Content-Length"]), len(body))
        self.assertIsNone(self.app.environ, "a refused request must not reach the app")
        return headers

    def test_a_valid_key_reaches_the_app_with_the_answer(self):
        created = self.create("web", ("read", "write"))
        status, _, body = self.request("POST", created.token)
        self.assertEqual((status, body), ("200 OK", b"served"))
        answer = self.app.environ["authenta.key"]
        self.assertIsInstance(answer, VerifyAnswer)
        self.assertEqual(answer.key_id, created.key.id)
        self.assertEqual(answer.permissions, (Permission.READ, Permission.WRITE))

    def test_the_x_api_key_header_works_too(self):
        created = self.create()
        status, _, _ = self.request("GET", created.token, header="X-API-Key")
        self.assertEqual(status, "200 OK")

    def test_no_key_is_401_missing(self):
        headers = self.assertRefused(self.request("GET"), 401, "missing")
        self.assertEqual(headers["WWW-Authenticate"], 'Bearer realm="authenta"')

    def test_a_revoked_key_is_401_revoked(self):
        created = self.create()
        self.client.revoke(created.key.id)
        headers = self.assertRefused(self.request("GET", created.token), 401, "revoked")
        self.assertEqual(
            headers["WWW-Authenticate"], 'Bearer realm="authenta", error="invalid_token"'
        )

    def test_unknown_and_malformed_keys_are_401(self):
        self.assertRefused(self.request("GET", UNKNOWN_TOKEN), 401, "unknown")
        self.assertRefused(self.request("GET", "api_nope"), 401, "malformed")

    def test_the_method_decides_the_permission(self):
        reader = self.create("reader", "read")
        for method in ("GET", "HEAD", "OPTIONS"):
            with self.subTest(method=method):
                self.assertEqual(self.request(method, reader.token)[0], "200 OK")
                self.app.environ = None
        for method in ("POST", "PUT", "PATCH", "DELETE"):
            with self.subTest(method=method):
                headers = self.assertRefused(
                    self.request(method, reader.token), 403, "insufficient_permissions"
                )
                self.assertIn('error="insufficient_scope"', headers["WWW-Authenticate"])
        deleter = self.create("deleter", "delete")
        self.assertEqual(self.request("DELETE", deleter.token)[0], "200 OK")

    def test_a_method_without_a_permission_is_403(self):
        created = self.create(permissions=("read", "write", "delete"))
        self.assertRefused(self.request("TRACE", created.token), 403, "unmapped_method")

    def test_a_head_refusal_has_no_body(self):
        status, headers, body = self.request("HEAD")
        self.assertEqual((status, body), ("401 Unauthorized", b""))
        self.assertGreater(int(headers["Content-Length"]), 0)

    def test_the_app_may_choose_the_permission(self):
        reader = self.create("reader", "read")
        fixed = AuthentaWSGI(self.app, self.client, permission="read")
        self.assertEqual(self.request("POST", reader.token, middleware=fixed)[0], "200 OK")
        self.app.environ = None
        by_path = AuthentaWSGI(
            self.app,
            self.client,
            permission=lambda environ: (
                "delete" if environ["PATH_INFO"].startswith("/admin") else "read"
            ),
        )
        self.assertEqual(self.request("POST", reader.token, middleware=by_path)[0], "200 OK")
        self.app.environ = None
        refuse_all = AuthentaWSGI(self.app, self.client, permission=lambda environ: None)
        self.assertRefused(
            self.request("GET", reader.token, middleware=refuse_all), 403, "unmapped_method"
        )

    def test_an_environment_can_be_required(self):
        staging = self.create("staging", "read", environment="staging")
        production_only = AuthentaWSGI(self.app, self.client, environment="production")
        self.assertRefused(
            self.request("GET", staging.token, middleware=production_only), 401, "wrong_environment"
        )

    def test_a_rate_limited_key_is_429_with_retry_after(self):
        created = self.create(ratelimit=RateLimit(2, 60_000))
        for _ in range(2):
            self.assertEqual(self.request("GET", created.token)[0], "200 OK")
            self.app.environ = None
        response = self.request("GET", created.token)
        self.assertEqual(response[0], "429 Too Many Requests")
        headers = self.assertRefused(response, 429, "rate_limited")
        # Two a minute: the next verify may pass within 30 s.
        self.assertIn(int(headers["Retry-After"]), range(1, 32))
        self.assertNotIn("WWW-Authenticate", headers)

    def test_a_spent_balance_is_429_without_retry_after(self):
        created = self.create(remaining=1)
        self.assertEqual(self.request("GET", created.token)[0], "200 OK")
        self.app.environ = None
        headers = self.assertRefused(self.request("GET", created.token), 429, "usage_exceeded")
        self.assertNotIn("Retry-After", headers)

    def test_a_cost_may_be_set(self):
        created = self.create(remaining=5)
        costly = AuthentaWSGI(self.app, self.client, cost=5)
        self.assertEqual(self.request("GET", created.token, middleware=costly)[0], "200 OK")
        self.assertEqual(self.app.environ["authenta.key"].remaining, 0)

    def test_a_daemon_that_is_down_is_503_never_a_pass(self):
        created = self.create()
        self.assertEqual(self.request("GET", created.token)[0], "200 OK")
        self.app.environ = None
        self.daemon.stop()
        with self.assertLogs("authenta_client", "WARNING") as logs:
            headers = self.assertRefused(self.request("GET", created.token), 503, "unavailable")
        self.assertEqual(headers["Retry-After"], "1")
        self.assertNotIn(created.token, "".join(logs.output))


if __name__ == "__main__":
    unittest.main()
