"""The messages protocol 2 added or grew, byte for byte (no daemon needed).

Every expected encoding below was written out field by field, and checked once against
what the Rust crate's ``proto::encode`` makes of the same values. docs/protocol.md
section 5 shows several of them.
"""

import unittest

import harness  # noqa: F401  (puts the package under test on sys.path)

from authenta_client import (
    KEEP,
    KeyInfo,
    KeyState,
    OwnerInfo,
    Permission,
    ProtocolError,
    RateLimit,
    RateLimitState,
    Refill,
    Usage,
    VerifyAnswer,
    VerifyCode,
    calls,
)
from authenta_client.codec import Reader, frame, string_map
from authenta_client.messages import decode_response

TOKEN = "api_0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefg1ww6Ou"
KEY = "key_0123456789abcdef"
KEY_HEX = KEY.encode().hex()  # 20 bytes
T0 = 1_735_689_600_000  # 2025-01-01T00:00:00Z; zigzagged: FD 00 F8 52 3E 28 03 00 00
ACME = "04 61 63 6D 65"  # "acme"
PLAN_PRO = "04 70 6C 61 6E 03 70 72 6F"  # "plan" -> "pro"


def hx(text: str) -> bytes:
    return bytes.fromhex(text.replace("\n", " "))


def wire(request_id: int, call: calls.Call) -> bytes:
    return frame(calls.request(request_id, call.body))


class Requests(unittest.TestCase):
    def test_verify_cost(self):
        head = f"01 00 35 {TOKEN.encode().hex()} 01 00 00"  # id, Verify, token, [Read], env
        for cost, tail in [(None, "00"), (0, "01 00"), (300, "01 FB 2C 01")]:
            with self.subTest(cost=cost):
                payload = hx(head + tail)
                expected = len(payload).to_bytes(4, "big") + payload
                self.assertEqual(wire(1, calls.verify(TOKEN, "read", None, cost)), expected)
        with self.assertRaises(ValueError):
            calls.verify(TOKEN, "read", None, 2**32)  # cost is a u32
        with self.assertRaises(ValueError):
            calls.verify(TOKEN, "read", None, -1)

    def test_list_keys_of_an_owner(self):
        self.assertEqual(
            wire(3, calls.list_keys(None, "acme")),
            hx(f"00 00 00 09  03 02  00  01 {ACME}"),
        )

    def test_regenerate_with_a_new_expiry(self):
        self.assertEqual(
            wire(8, calls.regenerate(KEY, None, 86400)),
            hx(
                f"00 00 00 1E  08 04  14 {KEY_HEX} 00"  # id 8, Regenerate, id, grace None
                " 01 FC 80 51 01 00"  # expires_in_secs: Some(86400), a u32-wide varint
            ),
        )

    def test_create_key_with_every_new_field(self):
        call = calls.create_key(
            "web",
            "read",
            None,
            None,
            owner_id="acme",
            meta={"region": "eu", "plan": "pro"},
            ratelimit=RateLimit(100, 60_000),
            remaining=1000,
            refill=Refill(1000, 86_400_000),
        )
        self.assertEqual(
            wire(9, call),
            hx(
                "00 00 00 36  09 01"  # id 9, CreateKey
                " 03 77 65 62  01 00  00  00"  # "web", [Read], environment, expires_in_secs
                f" 01 {ACME}"  # owner_id
                f" 02 {PLAN_PRO} 06 72 65 67 69 6F 6E 02 65 75"  # meta, in key order
                " 01 64 FB 60 EA"  # ratelimit: Some { limit 100, window_ms 60000 }
                " 01 FB E8 03"  # remaining: Some(1000)
                " 01 FB E8 03 FC 00 5C 26 05"  # refill: Some { 1000, 86_400_000 }
            ),
        )
        plain = calls.create_key("web", "read", None, None)
        self.assertEqual(wire(9, plain), hx("00 00 00 0F  09 01  03 77 65 62  01 00" + " 00" * 7))

    def test_update_key_keeps_clears_and_sets(self):
        call = calls.update_key(
            KEY,
            permissions=("read", "write"),
            environment=None,
            expires_in=3600,
            set_meta={"tier": "gold"},
            unset_meta=["plan"],
            ratelimit=None,
            remaining=50,
        )
        self.assertEqual(
            wire(10, call),
            hx(
                f"00 00 00 3B  0A 0B  14 {KEY_HEX}"  # id 10, UpdateKey (11), id
                " 00"  # name: keep
                " 01 02 00 01"  # permissions: Some([Read, Write])
                " 01 00"  # environment: clear
                " 01 01 FB 10 0E"  # expires_in_secs: set 3600
                " 00"  # owner_id: keep
                " 01 04 74 69 65 72 04 67 6F 6C 64"  # set_meta: {"tier": "gold"}
                " 01 04 70 6C 61 6E"  # unset_meta: ["plan"]
                " 01 00"  # ratelimit: clear
                " 01 01 32"  # remaining: set 50
                " 00"  # refill: keep
            ),
        )
        nothing = hx(f"00 00 00 21  0A 0B  14 {KEY_HEX}" + " 00" * 10)
        self.assertEqual(wire(10, calls.update_key(KEY)), nothing)
        every_keep = {
            name: KEEP
            for name in ("name", "permissions", "environment", "expires_in", "owner_id")
            + ("ratelimit", "remaining", "refill")
        }
        self.assertEqual(wire(10, calls.update_key(KEY, **every_keep)), nothing)

    def test_update_key_refusals(self):
        for changes in [{"name": None}, {"permissions": None}]:
            with self.subTest(changes=changes):
                with self.assertRaisesRegex(ValueError, "cannot be cleared"):
                    calls.update_key(KEY, **changes)
        with self.assertRaises(TypeError):
            calls.update_key(KEY, unset_meta="plan")  # one string, not a list of keys
        with self.assertRaises(TypeError):
            calls.update_key(KEY, ratelimit=(2, 60_000))  # a RateLimit, not a tuple
        with self.assertRaises(TypeError):
            calls.update_key(KEY, colour="red")
        with self.assertRaises(ValueError):
            calls.update_key(KEY, ratelimit=RateLimit(2**32, 1))  # limit is a u32

    def test_set_and_show_owner(self):
        call = calls.set_owner("acme", ratelimit=RateLimit(1000, 60_000), refill=None)
        self.assertEqual(
            wire(11, call),
            hx(
                f"00 00 00 12  0B 0C {ACME}"  # id 11, SetOwner (12), id
                " 01 01 FB E8 03 FB 60 EA"  # ratelimit: set { 1000, 60000 }
                " 00"  # remaining: keep
                " 01 00"  # refill: clear
            ),
        )
        self.assertEqual(wire(12, calls.show_owner("acme")), hx(f"00 00 00 07  0C 0D {ACME}"))

    def test_meta_is_written_in_key_order(self):
        # Rust's BTreeMap writes its keys sorted by their UTF-8 bytes: the same map always
        # makes the same bytes, whatever order the dict was built in.
        self.assertEqual(string_map({"b": "2", "a": "1"}), hx("02 01 61 01 31 01 62 01 32"))
        self.assertEqual(string_map({"é": "", "z": ""}), string_map({"z": "", "é": ""}))
        self.assertEqual(string_map({"z": "", "é": ""})[:3], hx("02 01 7A"))


class Answers(unittest.TestCase):
    def decode(self, payload: str):
        data = hx(payload)
        with self.assertRaises(ProtocolError):
            decode_response(data[:-1])  # every byte is needed
        with self.assertRaisesRegex(ProtocolError, "trailing"):
            decode_response(data + b"\x00")
        return decode_response(data)

    def test_rate_limited(self):
        request_id, answer = self.decode(
            "01 00 07"  # id 1, Verify, RateLimited
            f" 01 14 {KEY_HEX} 01 00 00 00 00"  # key_id, [Read], env, rotate_by, due
            " 01 03 77 65 62"  # name: "web"
            f" 01 {ACME}"  # owner_id
            f" 01 {PLAN_PRO}"  # meta: one entry
            " 00"  # expires_at: None
            " 01 02 00"  # ratelimit: Some { limit 2, remaining 0,
            " FD C0 CC 54 3E 28 03 00 00"  # reset_at T0 + 60 s,
            " FD 60 E2 53 3E 28 03 00 00"  # retry_at T0 + 30 s }
            " 00"  # remaining: None
        )
        self.assertEqual(request_id, 1)
        self.assertEqual(
            answer,
            VerifyAnswer(
                VerifyCode.RATE_LIMITED,
                KEY,
                (Permission.READ,),
                None,
                None,
                False,
                name="web",
                owner_id="acme",
                meta={"plan": "pro"},
                ratelimit=RateLimitState(2, 0, T0 + 60_000, T0 + 30_000),
            ),
        )
        self.assertEqual((answer.status, answer.allowed), (429, False))

    def test_usage_exceeded(self):
        _, answer = self.decode(
            f"01 00 08  01 14 {KEY_HEX} 01 00 00 00 00"  # UsageExceeded, key, [Read]
            " 00 00 00 00 00"  # name, owner_id, meta, expires_at, ratelimit
            " 01 00"  # remaining: Some(0)
        )
        self.assertEqual(
            (answer.code, answer.status, answer.remaining), (VerifyCode.USAGE_EXCEEDED, 429, 0)
        )

    def test_owner(self):
        _, owner = self.decode(
            f"0C 0A {ACME}"  # id 12, Owner (10), id
            " 01 FB E8 03 FB 60 EA"  # ratelimit: Some { 1000, 60000 }
            " 01 FB E8 03 FB E7 03"  # ratelimit_state: Some { limit 1000, remaining 999,
            " FD 78 F8 52 3E 28 03 00 00"  # reset_at T0 + 60 ms,
            " FD 00 F8 52 3E 28 03 00 00"  # retry_at T0 }
            " 00 00 03"  # remaining: None, refill: None, keys: 3
        )
        self.assertEqual(
            owner,
            OwnerInfo(
                "acme",
                RateLimit(1000, 60_000),
                RateLimitState(1000, 999, T0 + 60, T0),
                None,
                None,
                3,
            ),
        )

    def test_key_info_with_every_new_field(self):
        _, key = self.decode(
            f"05 03  14 {KEY_HEX}"  # id 5, Key, id
            " 03 77 65 62  08 30 31 32 33 34 35 36 37"  # name "web", start "01234567"
            " 01 00  00  00"  # [Read], environment None, Active
            " FD 00 F8 52 3E 28 03 00 00"  # created_at T0
            " 00 00 00 00 00 00 00"  # rotated_at .. grace_until: None, rotation_due false
            " 03 02 01"  # usage
            f" 01 {ACME}"  # owner_id
            f" 01 {PLAN_PRO}"  # meta
            " 01 64 FB 60 EA"  # ratelimit: Some { 100, 60000 }
            " 01 FB E6 03"  # remaining: Some(998)
            " 01 FB E8 03 FC 00 5C 26 05"  # refill: Some { 1000, 86_400_000 }
        )
        self.assertEqual(
            key,
            KeyInfo(
                KEY, "web", "01234567", (Permission.READ,), None, KeyState.ACTIVE, T0,
                None, None, None, None, False, None, None, Usage(3, 2, 1),
                owner_id="acme",
                meta={"plan": "pro"},
                ratelimit=RateLimit(100, 60_000),
                remaining=998,
                refill=Refill(1000, 86_400_000),
            ),
        )  # fmt: skip

    def test_an_answer_hashes_without_its_meta(self):
        answer = VerifyAnswer(VerifyCode.VALID, KEY, (), None, None, False, meta={"a": "b"})
        bare = VerifyAnswer(VerifyCode.VALID, KEY, (), None, None, False)
        self.assertEqual(hash(answer), hash(bare))
        self.assertNotEqual(answer, bare)

    def test_a_repeated_meta_key_keeps_its_last_value(self):
        r = Reader(hx("02 01 61 01 31 01 61 01 32"))  # {"a": "1", "a": "2"}
        self.assertEqual(r.mapping(r.string, r.string), {"a": "2"})
        r.finish()

    def test_a_map_longer_than_its_message_is_refused(self):
        r = Reader(hx("FB 00 01 01 61 01 31"))  # claims 256 entries
        with self.assertRaises(ProtocolError):
            r.mapping(r.string, r.string)


if __name__ == "__main__":
    unittest.main()
