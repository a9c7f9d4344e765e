"""Protocol 2 against the real daemon: what verify answers carry about a key, credits,
rate limits, changing a key in place, and owners."""

import time
import unittest

from harness import DaemonTestCase

from authenta_client import (
    KEEP,
    BadRequest,
    NotFound,
    Permission,
    RateLimit,
    RateLimitState,
    Refill,
    VerifyAnswer,
    VerifyCode,
)
from authenta_client.forward_auth import judge, retry_after


def now_ms() -> int:
    return int(time.time() * 1000)


class WhatAnswersCarry(DaemonTestCase):
    def test_a_valid_answer_carries_name_owner_meta_and_expiry(self):
        meta = {"plan": "pro", "region": "eu"}
        created = self.create("billing", "read", owner_id="acme", meta=meta, expires_in=3600)
        answer = self.client.verify(created.token, "read")
        self.assertTrue(answer.allowed)
        self.assertEqual(answer.name, "billing")
        self.assertEqual(answer.owner_id, "acme")
        self.assertEqual(answer.meta, meta)
        self.assertEqual(answer.expires_at, created.key.expires_at)
        self.assertAlmostEqual(answer.expires_at, now_ms() + 3_600_000, delta=60_000)
        self.assertIsNone(answer.ratelimit)
        self.assertIsNone(answer.remaining)

    def test_denials_about_a_live_key_carry_them_too(self):
        created = self.create("billing", "read", environment="staging", owner_id="acme")
        for answer in [
            self.client.verify(created.token, "write"),
            self.client.verify(created.token, "read", "production"),
        ]:
            with self.subTest(code=answer.code):
                self.assertFalse(answer.allowed)
                self.assertEqual((answer.name, answer.owner_id), ("billing", "acme"))

    def test_revoked_and_unknown_answers_do_not(self):
        created = self.create("billing", "read", owner_id="acme", meta={"plan": "pro"})
        self.client.revoke(created.key.id)
        answer = self.client.verify(created.token)
        self.assertEqual(answer.code, VerifyCode.REVOKED)
        self.assertEqual((answer.name, answer.owner_id, answer.meta), (None, None, {}))

    def test_a_key_shows_its_owner_meta_and_limits(self):
        created = self.create(
            "metered",
            "read",
            owner_id="acme",
            meta={"plan": "pro"},
            ratelimit=RateLimit(100, 60_000),
            remaining=1000,
            refill=Refill(1000, 86_400_000),
        )
        for key in (created.key, self.client.show_key(created.key.id)):
            self.assertEqual(key.owner_id, "acme")
            self.assertEqual(key.meta, {"plan": "pro"})
            self.assertEqual(key.ratelimit, RateLimit(100, 60_000))
            self.assertEqual(key.remaining, 1000)
            self.assertEqual(key.refill, Refill(1000, 86_400_000))

    def test_list_keys_of_one_owner(self):
        ours = {self.create(f"a{i}", owner_id="acme").key.id for i in range(3)}
        self.create("b", owner_id="other")
        self.create("c")
        self.assertEqual({k.id for k in self.client.list_keys(owner_id="acme")}, ours)
        self.assertEqual(len(self.client.list_keys()), 5)


class Credits(DaemonTestCase):
    def test_a_balance_of_two_is_spent_by_two_verifies(self):
        created = self.create(remaining=2)
        self.assertEqual(self.client.verify(created.token).remaining, 1)
        self.assertEqual(self.client.verify(created.token).remaining, 0)
        answer = self.client.verify(created.token)
        self.assertEqual(answer.code, VerifyCode.USAGE_EXCEEDED)
        self.assertEqual((answer.status, answer.allowed, answer.remaining), (429, False, 0))
        self.assertEqual(answer.key_id, created.key.id)
        self.assertEqual(self.client.show_key(created.key.id).remaining, 0)

    def test_cost_zero_spends_nothing(self):
        created = self.create(remaining=2)
        for _ in range(3):
            answer = self.client.verify(created.token, cost=0)
            self.assertEqual((answer.code, answer.remaining), (VerifyCode.VALID, 2))
        self.assertEqual(self.client.verify(created.token, cost=2).remaining, 0)
        self.assertEqual(self.client.verify(created.token).code, VerifyCode.USAGE_EXCEEDED)

    def test_a_denied_verify_spends_nothing(self):
        created = self.create(permissions="read", remaining=2)
        answer = self.client.verify(created.token, "write")
        self.assertEqual(answer.code, VerifyCode.INSUFFICIENT_PERMISSIONS)
        self.assertEqual(self.client.show_key(created.key.id).remaining, 2)

    def test_verify_many_spends_each_questions_cost(self):
        created = self.create(remaining=10)
        answers = self.client.verify_many([created.token] * 3, cost=2)
        self.assertEqual([a.remaining for a in answers], [8, 6, 4])
        self.assertEqual(self.client.show_key(created.key.id).remaining, 4)

    def test_a_key_without_a_balance_is_unlimited(self):
        created = self.create()
        self.assertIsNone(self.client.verify(created.token, cost=1000).remaining)


class RateLimits(DaemonTestCase):
    def test_the_third_verify_of_two_a_minute_is_rate_limited(self):
        created = self.create(ratelimit=RateLimit(2, 60_000))
        first, second = (self.client.verify(created.token) for _ in range(2))
        self.assertTrue(first.allowed and second.allowed)
        self.assertEqual((first.ratelimit.limit, first.ratelimit.remaining), (2, 1))
        self.assertEqual(second.ratelimit.remaining, 0)
        before = now_ms()
        third = self.client.verify(created.token)
        self.assertEqual(third.code, VerifyCode.RATE_LIMITED)
        self.assertEqual((third.status, third.allowed), (429, False))
        self.assertEqual(third.ratelimit.remaining, 0)
        # A bucket of 2 a minute gains a verify every 30 s.
        self.assertGreater(third.ratelimit.retry_at, before)
        self.assertLessEqual(third.ratelimit.retry_at, before + 30_000 + 1000)
        self.assertGreaterEqual(third.ratelimit.reset_at, third.ratelimit.retry_at)
        self.assertIn(retry_after(third), range(1, 32))

    def test_the_middleware_refusal_of_a_rate_limited_key(self):
        created = self.create(ratelimit=RateLimit(1, 60_000))
        self.client.verify(created.token)
        refusal = judge(self.client.verify(created.token))
        self.assertEqual((refusal.status, refusal.code), (429, "rate_limited"))
        headers = dict(refusal.headers())
        self.assertIn(int(headers["Retry-After"]), range(1, 62))
        self.assertNotIn("WWW-Authenticate", headers)


class UpdateKey(DaemonTestCase):
    def test_permissions_change_and_the_token_stays(self):
        created = self.create("reader", "read")
        self.assertEqual(
            self.client.verify(created.token, "write").code, VerifyCode.INSUFFICIENT_PERMISSIONS
        )
        key = self.client.update_key(created.key.id, permissions=("read", "write"))
        self.assertEqual(key.permissions, (Permission.READ, Permission.WRITE))
        self.assertEqual((key.id, key.start), (created.key.id, created.key.start))
        self.assertIsNone(key.rotated_at)
        self.assertTrue(self.client.verify(created.token, "write").allowed)

    def test_what_is_left_out_is_kept_and_none_clears(self):
        created = self.create(
            "web", "read", environment="staging", owner_id="acme", meta={"plan": "pro", "x": "1"}
        )
        key = self.client.update_key(created.key.id, name="renamed", environment=KEEP)
        self.assertEqual((key.name, key.environment, key.owner_id), ("renamed", "staging", "acme"))
        key = self.client.update_key(
            created.key.id, environment=None, owner_id=None, unset_meta=["x"], set_meta={"y": "2"}
        )
        self.assertEqual((key.name, key.environment, key.owner_id), ("renamed", None, None))
        self.assertEqual(key.meta, {"plan": "pro", "y": "2"})
        answer = self.client.verify(created.token)
        self.assertEqual((answer.name, answer.owner_id, answer.meta), ("renamed", None, key.meta))

    def test_limits_are_set_and_cleared(self):
        created = self.create()
        key = self.client.update_key(created.key.id, ratelimit=RateLimit(1, 60_000), remaining=5)
        self.assertEqual((key.ratelimit, key.remaining), (RateLimit(1, 60_000), 5))
        self.assertTrue(self.client.verify(created.token).allowed)
        self.assertEqual(self.client.verify(created.token).code, VerifyCode.RATE_LIMITED)
        key = self.client.update_key(created.key.id, ratelimit=None, remaining=None)
        self.assertEqual((key.ratelimit, key.remaining), (None, None))
        answer = self.client.verify(created.token)
        self.assertTrue(answer.allowed)
        self.assertEqual((answer.ratelimit, answer.remaining), (None, None))

    def test_expiry_is_set_from_now_and_cleared(self):
        created = self.create()
        key = self.client.update_key(created.key.id, expires_in=3600)
        self.assertAlmostEqual(key.expires_at, now_ms() + 3_600_000, delta=60_000)
        self.assertIsNone(self.client.update_key(created.key.id, expires_in=None).expires_at)

    def test_refusals(self):
        with self.assertRaises(NotFound):
            self.client.update_key("key_0000000000000000", name="x")
        created = self.create()
        with self.assertRaises(BadRequest):
            self.client.update_key(created.key.id, permissions=())

    def test_regenerate_may_set_a_new_expiry(self):
        created = self.create(expires_in=60)
        renewed = self.client.regenerate(created.key.id, expires_in=7200)
        self.assertAlmostEqual(renewed.key.expires_at, now_ms() + 7_200_000, delta=60_000)
        kept = self.client.regenerate(created.key.id)
        self.assertEqual(kept.key.expires_at, renewed.key.expires_at)


class Owners(DaemonTestCase):
    def test_set_and_show(self):
        owner = self.client.set_owner("acme", ratelimit=RateLimit(1000, 60_000), remaining=100)
        self.assertEqual(owner.id, "acme")
        self.assertEqual(
            (owner.ratelimit, owner.remaining, owner.refill), (RateLimit(1000, 60_000), 100, None)
        )
        self.assertEqual(owner.keys, 0)
        created = self.create(owner_id="acme")
        answer = self.client.verify(created.token)
        self.assertEqual(answer.remaining, 99)  # the owner's balance: the key has none
        self.assertEqual(answer.ratelimit.limit, 1000)
        shown = self.client.show_owner("acme")
        self.assertEqual((shown.keys, shown.remaining), (1, 99))
        self.assertEqual(shown.ratelimit_state.remaining, 999)

    def test_what_is_left_out_is_kept_and_none_clears(self):
        self.client.set_owner("acme", ratelimit=RateLimit(10, 1000), remaining=5)
        owner = self.client.set_owner("acme", refill=Refill(5, 60_000))
        self.assertEqual((owner.ratelimit, owner.remaining), (RateLimit(10, 1000), 5))
        self.assertEqual(owner.refill, Refill(5, 60_000))
        owner = self.client.set_owner("acme", ratelimit=None, refill=None, remaining=None)
        self.assertEqual((owner.ratelimit, owner.remaining, owner.refill), (None, None, None))

    def test_an_owners_balance_is_shared_by_its_keys(self):
        self.client.set_owner("acme", remaining=1)
        one, two = self.create("one", owner_id="acme"), self.create("two", owner_id="acme")
        self.assertTrue(self.client.verify(one.token).allowed)
        answer = self.client.verify(two.token)
        self.assertEqual((answer.code, answer.remaining), (VerifyCode.USAGE_EXCEEDED, 0))

    def test_an_unknown_owner_is_not_found(self):
        with self.assertRaises(NotFound):
            self.client.show_owner("nobody")


class RetryAfter(unittest.TestCase):
    """The ``Retry-After`` of a 429, from an answer (no daemon needed)."""

    def answer(self, code, retry_at=None):
        state = None if retry_at is None else RateLimitState(2, 0, retry_at + 30_000, retry_at)
        return VerifyAnswer(code, "key_x", (), None, None, False, ratelimit=state)

    def test_whole_seconds_rounded_up_and_at_least_one(self):
        now = 1_000_000
        cases = [(1, 1), (999, 1), (1000, 1), (1001, 2), (29_500, 30), (0, 1), (-5000, 1)]
        for wait_ms, seconds in cases:
            with self.subTest(wait_ms=wait_ms):
                answer = self.answer(VerifyCode.RATE_LIMITED, now + wait_ms)
                self.assertEqual(retry_after(answer, now), seconds)
                self.assertIn(("Retry-After", str(seconds)), judge(answer, now).headers())

    def test_usage_exceeded_has_none(self):
        # Its wait is until a refill, which the answer does not say; a rate limit's
        # retry_at would invite a retry that the spent balance refuses again.
        for answer in [
            self.answer(VerifyCode.USAGE_EXCEEDED),
            self.answer(VerifyCode.USAGE_EXCEEDED, retry_at=5_000_000),
        ]:
            refusal = judge(answer, 1_000_000)
            self.assertEqual((refusal.status, refusal.reason), (429, "Too Many Requests"))
            self.assertNotIn("Retry-After", dict(refusal.headers()))
            self.assertIsNone(refusal.challenge)


if __name__ == "__main__":
    unittest.main()
