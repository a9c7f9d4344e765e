"""The bytes, against docs/protocol.md's rules and worked examples (no daemon needed)."""

import unittest

import harness  # noqa: F401  (puts the package under test on sys.path)

from authenta_client import ProtocolError, VerifyCode, calls
from authenta_client.codec import FrameBuffer, Reader, batches, frame, ivarint, uvarint
from authenta_client.messages import Permission, decode_hello_reply, decode_response

TOKEN = "api_0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefg1ww6Ou"


def hx(text: str) -> bytes:
    return bytes.fromhex(text.replace("\n", " "))


class Varints(unittest.TestCase):
    def test_unsigned_boundaries(self):
        for value, wire in [
            (0, "00"),
            (250, "FA"),
            (251, "FB FB 00"),
            (0xFFFF, "FB FF FF"),
            (0x10000, "FC 00 00 01 00"),
            (0xFFFF_FFFF, "FC FF FF FF FF"),
            (0x1_0000_0000, "FD 00 00 00 00 01 00 00 00"),
        ]:
            with self.subTest(value=value):
                self.assertEqual(uvarint(value), hx(wire))
                self.assertEqual(Reader(hx(wire)).u64(), value)

    def test_zigzag_examples_of_the_doc(self):
        for value, wire in [(0, "00"), (-1, "01"), (1, "02"), (125, "FA"), (126, "FB FC 00")]:
            with self.subTest(value=value):
                self.assertEqual(ivarint(value), hx(wire))
                self.assertEqual(Reader(hx(wire)).i64(), value)

    def test_timestamp_example_of_the_doc(self):
        self.assertEqual(ivarint(1_735_689_600_000), hx("FD 00 F8 52 3E 28 03 00 00"))
        self.assertEqual(Reader(hx("FD 00 F8 52 3E 28 03 00 00")).i64(), 1_735_689_600_000)

    def test_longer_forms_decode_but_too_wide_markers_do_not(self):
        self.assertEqual(Reader(hx("FB 01 00")).u16(), 1)
        with self.assertRaises(ProtocolError):
            Reader(hx("FC 01 00 00 00")).u16()
        with self.assertRaises(ProtocolError):
            Reader(hx("FE" + " 00" * 16)).u64()

    def test_bad_tags_are_refused(self):
        with self.assertRaises(ProtocolError):
            Reader(b"\x02").boolean()
        with self.assertRaises(ProtocolError):
            Reader(b"\x02").option(Reader(b"").u8)
        with self.assertRaises(ProtocolError):
            Reader(b"\x05ab").string()  # claims 5 bytes, has 2
        with self.assertRaises(ProtocolError):
            Reader(b"\x02\xff\xfe").string()  # not UTF-8


class WorkedExamples(unittest.TestCase):
    """docs/protocol.md section 5, byte for byte."""

    def test_hello(self):
        self.assertEqual(frame(calls.hello("py")), hx("00 00 00 04 02 02 70 79"))

    def test_welcome(self):
        reply = decode_hello_reply(hx("00 02 05 30 2E 31 2E 30"))
        self.assertEqual((reply.version, reply.server), (2, "0.1.0"))

    def test_verify_request(self):
        body = calls.verify(TOKEN, [Permission.READ], None).body
        wire = frame(calls.request(1, body))
        self.assertEqual(wire[:4], hx("00 00 00 3C"))
        self.assertEqual(wire[4:7], hx("01 00 35"))
        self.assertEqual(wire[7:60], TOKEN.encode())
        self.assertEqual(wire[60:], hx("01 00 00 00"))
        with_env = frame(calls.request(1, calls.verify(TOKEN, "read", "prod").body))
        self.assertEqual(with_env[:4], hx("00 00 00 41"))
        self.assertEqual(with_env[-7:], hx("01 04 70 72 6F 64 00"))
        free = frame(calls.request(1, calls.verify(TOKEN, "read", None, cost=0).body))
        self.assertEqual(free[:4], hx("00 00 00 3D"))
        self.assertEqual(free[-2:], hx("01 00"))

    def test_verify_response(self):
        payload = hx(
            "01 00 00 01 14 6B 65 79 5F 30 31 32 33 34 35 36 37 38 39 61 62 63 64 65 66"
            " 02 00 01 00 00 00 00 00 00 00 00 00"
        )
        self.assertEqual(len(payload), 0x25)
        request_id, answer = decode_response(payload)
        self.assertEqual(request_id, 1)
        self.assertEqual(answer.code, VerifyCode.VALID)
        self.assertEqual(answer.status, 200)
        self.assertEqual(answer.key_id, "key_0123456789abcdef")
        self.assertEqual(answer.permissions, (Permission.READ, Permission.WRITE))
        self.assertIsNone(answer.rotate_by)
        self.assertEqual((answer.name, answer.meta, answer.ratelimit), (None, {}, None))
        due = payload[:-8] + hx("01 FD 00 F8 52 3E 28 03 00 00 01") + payload[-6:]
        _, answer = decode_response(due)
        self.assertEqual((answer.rotate_by, answer.rotation_due), (1_735_689_600_000, True))

    def test_paged_requests(self):
        key = "key_0123456789abcdef"
        for request_id, call, wire in [
            (2, calls.list_keys(None), "00 00 00 04 02 02 00 00"),
            (3, calls.list_keys(key), "00 00 00 19 03 02 01 14" + key.encode().hex() + "00"),
            (4, calls.audit(True, 0), "00 00 00 04 04 07 01 00"),
            (5, calls.audit(False, 300), "00 00 00 06 05 07 00 FB 2C 01"),
            (6, calls.policy_status(), "00 00 00 02 06 09"),
        ]:
            with self.subTest(request_id=request_id):
                self.assertEqual(frame(calls.request(request_id, call.body)), hx(wire))

    def test_health(self):
        self.assertEqual(frame(calls.request(7, calls.health().body)), hx("00 00 00 02 07 0A"))
        _, report = decode_response(hx("07 09 00 01 06 6C 6F 61 64 65 64 01 01 01 04 64 6F 77 6E"))
        self.assertEqual(
            (report.ready, report.store, report.policy, report.fleet_connected, report.problems),
            (False, True, "loaded", True, ("down",)),
        )

    def test_connection_level_error(self):
        request_id, body = decode_response(hx("00 06 05 03 62 61 64"))
        self.assertEqual((request_id, body.code.value, body.message), (0, "bad_frame", "bad"))

    def test_trailing_bytes_and_unknown_variants_are_refused(self):
        with self.assertRaisesRegex(ProtocolError, "trailing"):
            decode_response(hx("00 06 05 03 62 61 64 00"))
        with self.assertRaisesRegex(ProtocolError, "variant 11"):
            decode_response(hx("01 0B"))
        with self.assertRaisesRegex(ProtocolError, "VerifyCode variant 9"):
            decode_response(hx("01 00 09" + " 00" * 11))


class Frames(unittest.TestCase):
    def test_a_frame_of_65536_is_the_largest_sent(self):
        self.assertEqual(len(frame(b"x" * 65536)), 65540)
        with self.assertRaises(ProtocolError):
            frame(b"x" * 65537)

    def test_frames_are_cut_from_a_stream_in_any_pieces(self):
        stream = frame(b"one") + frame(b"") + frame(b"three")
        buffer = FrameBuffer()
        got = []
        for byte in stream:
            buffer.feed(bytes([byte]))
            while True:
                payload = buffer.next_frame()
                if payload is None:
                    break
                got.append(payload)
        self.assertEqual(got, [b"one", b"", b"three"])

    def test_an_oversize_prefix_is_refused_before_its_payload(self):
        buffer = FrameBuffer()
        buffer.feed((65537).to_bytes(4, "big"))
        with self.assertRaisesRegex(ProtocolError, "65537"):
            buffer.next_frame()

    def test_batches_keep_frames_whole_and_in_order(self):
        frames = [bytes([i]) * 30_000 for i in range(5)]
        groups = list(batches(frames))
        self.assertEqual([count for count, _ in groups], [2, 2, 1])
        self.assertEqual(b"".join(data for _, data in groups), b"".join(frames))


class Arguments(unittest.TestCase):
    def test_permissions_accept_names_members_and_lists(self):
        self.assertEqual(calls.verify(TOKEN, "Write", None).body[55:], hx("01 01 00 00"))
        self.assertEqual(
            calls.verify(TOKEN, ("delete", "read"), None).body[55:], hx("02 00 02 00 00")
        )
        self.assertEqual(calls.verify(TOKEN, (), None).body[55:], hx("00 00 00"))
        self.assertEqual(calls.verify(TOKEN, Permission.DELETE, None).body[55:], hx("01 02 00 00"))
        with self.assertRaisesRegex(ValueError, "use read, write or delete"):
            calls.verify(TOKEN, "admin", None)

    def test_durations_are_whole_seconds(self):
        from datetime import timedelta

        self.assertEqual(
            calls.regenerate("key_x", timedelta(hours=1)).body[-5:], hx("01 FB 10 0E 00")
        )
        self.assertEqual(calls.regenerate("key_x", 0.5).body[-3:], hx("01 01 00"))
        with self.assertRaises(ValueError):
            calls.regenerate("key_x", -1)

    def test_an_oversize_token_is_malformed_without_asking(self):
        answer = calls.local_verify_answer("api_" + "x" * 5000)
        self.assertEqual(answer.code, VerifyCode.MALFORMED)
        self.assertIsNone(calls.local_verify_answer(TOKEN))
        with self.assertRaises(TypeError):
            calls.local_verify_answer(TOKEN.encode())


if __name__ == "__main__":
    unittest.main()
