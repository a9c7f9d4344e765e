"""The bytes: bincode 2 (``config::standard()``) values, and the frame around each message.

This module knows nothing of authenta's messages; ``messages`` and ``requests`` build them
from these pieces. The rules (docs/protocol.md, section 2):

- integers wider than a byte are varints: ``v <= 250`` is one byte; else a marker ``FB``,
  ``FC`` or ``FD`` then a little-endian u16, u32 or u64;
- signed integers are zigzagged first (0, -1, 1, -2... become 0, 1, 2, 3...);
- a string or list is its varint length, then its bytes or elements;
- a map is its varint entry count, then each key and its value;
- an option is ``00`` (None) or ``01`` and the value; a bool is ``00`` or ``01``;
- an enum is its variant index (a varint), then the variant's fields; a struct is its
  fields in order, with nothing between them.

A frame is a 4-byte big-endian length, then that many bytes (at most 65536) holding exactly
one message.
"""

from __future__ import annotations

import struct
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, TypeVar

from .errors import ProtocolError

MAX_FRAME_LEN = 65536
"""Largest payload of one frame, in bytes, in either direction (the prefix not counted)."""

T = TypeVar("T")
K = TypeVar("K")
V = TypeVar("V")

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_PREFIX = struct.Struct(">I")

# The widest varint marker each unsigned width accepts (bincode rejects wider ones).
_MARKER_U16, _MARKER_U32, _MARKER_U64 = 0xFB, 0xFC, 0xFD


# ---------------------------------------------------------------------------- encoding


def uvarint(n: int) -> bytes:
    """An unsigned integer (u16, u32, u64, a length) as a varint, in its shortest form."""
    if n < 0:
        raise ValueError(f"an unsigned integer cannot be {n}")
    if n <= 250:
        return bytes((n,))
    if n <= 0xFFFF:
        return b"\xfb" + _U16.pack(n)
    if n <= 0xFFFF_FFFF:
        return b"\xfc" + _U32.pack(n)
    if n <= 0xFFFF_FFFF_FFFF_FFFF:
        return b"\xfd" + _U64.pack(n)
    raise ValueError(f"{n} does not fit a u64")


def ivarint(n: int) -> bytes:
    """A signed integer (i32, i64) zigzagged, then as a varint."""
    return uvarint(2 * n if n >= 0 else -2 * n - 1)


def boolean(value: bool) -> bytes:
    return b"\x01" if value else b"\x00"


def string(value: str) -> bytes:
    """UTF-8 bytes after their varint length."""
    raw = value.encode("utf-8")
    return uvarint(len(raw)) + raw


def byte_string(value: bytes) -> bytes:
    """A ``Vec<u8>``: varint length, then the raw bytes."""
    return uvarint(len(value)) + bytes(value)


def option(value: Optional[T], encode: Callable[[T], bytes]) -> bytes:
    return b"\x00" if value is None else b"\x01" + encode(value)


def sequence(items: Sequence[T], encode: Callable[[T], bytes]) -> bytes:
    return uvarint(len(items)) + b"".join(encode(item) for item in items)


def string_map(value: Mapping[str, str]) -> bytes:
    """A ``BTreeMap<String, String>``: its entry count, then each key and value, in key
    order as Rust's BTreeMap writes them (code-point order is UTF-8 byte order), so that
    the same map always makes the same bytes."""
    return uvarint(len(value)) + b"".join(string(k) + string(v) for k, v in sorted(value.items()))


def frame(payload: bytes) -> bytes:
    """The payload after its 4-byte big-endian length; refuses one larger than a frame."""
    if len(payload) > MAX_FRAME_LEN:
        raise ProtocolError(
            f"a message of {len(payload)} bytes does not fit a frame ({MAX_FRAME_LEN} at most)"
        )
    return _PREFIX.pack(len(payload)) + payload


def batches(frames: Sequence[bytes], limit: int = MAX_FRAME_LEN) -> Iterator[Tuple[int, bytes]]:
    """Groups whole frames into writes of at most ``limit`` bytes (or one frame, when a
    frame alone is larger): yields ``(frame count, bytes)``.

    Why: a client writes one group, then reads its answers, then writes the next. The
    daemon answers while it reads; a client that wrote megabytes of requests before
    reading would fill both socket buffers, and the daemon would close the connection
    once its 10 s write deadline passed.
    """
    group: List[bytes] = []
    size = 0
    for item in frames:
        if group and size + len(item) > limit:
            yield len(group), b"".join(group)
            group, size = [], 0
        group.append(item)
        size += len(item)
    if group:
        yield len(group), b"".join(group)


# ---------------------------------------------------------------------------- decoding


class Reader:
    """Reads bincode values from one message's payload, front to back.

    Every malformed input (a short read, an unknown tag, bad UTF-8) raises
    :class:`ProtocolError`; :meth:`finish` checks that nothing is left over.
    """

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def _take(self, n: int) -> bytes:
        end = self._pos + n
        if end > len(self._data):
            raise ProtocolError("a message from authenta-keyd ends too early")
        chunk = self._data[self._pos : end]
        self._pos = end
        return chunk

    def u8(self) -> int:
        pos = self._pos
        if pos >= len(self._data):
            raise ProtocolError("a message from authenta-keyd ends too early")
        self._pos = pos + 1
        return self._data[pos]

    def raw(self, n: int) -> bytes:
        """The next ``n`` bytes as they are."""
        return self._take(n)

    def boolean(self) -> bool:
        tag = self.u8()
        if tag > 1:
            raise ProtocolError(f"a bool of value {tag} in a message from authenta-keyd")
        return tag == 1

    def _uvarint(self, widest: int) -> int:
        first = self.u8()
        if first <= 250:
            return first
        if first > widest:
            raise ProtocolError(f"a varint marker {first:#x} too wide for its field")
        width = {0xFB: 2, 0xFC: 4, 0xFD: 8}[first]
        return int.from_bytes(self._take(width), "little")

    def u16(self) -> int:
        return self._uvarint(_MARKER_U16)

    def u32(self) -> int:
        return self._uvarint(_MARKER_U32)

    def u64(self) -> int:
        return self._uvarint(_MARKER_U64)

    def i32(self) -> int:
        return _unzigzag(self.u32())

    def i64(self) -> int:
        return _unzigzag(self.u64())

    def length(self) -> int:
        """A string's or list's length, checked against what is left so that a hostile
        length cannot make us allocate or loop far beyond the message."""
        n = self.u64()
        if n > len(self._data) - self._pos:
            raise ProtocolError("a length beyond the end of a message from authenta-keyd")
        return n

    def string(self) -> str:
        raw = self._take(self.length())
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError(
                "a string that is not UTF-8 in a message from authenta-keyd"
            ) from None

    def option(self, read: Callable[[], T]) -> Optional[T]:
        tag = self.u8()
        if tag == 0:
            return None
        if tag == 1:
            return read()
        raise ProtocolError(f"an option tag of {tag} in a message from authenta-keyd")

    def sequence(self, read: Callable[[], T]) -> List[T]:
        # Every element takes at least one byte, so length() bounds the loop too.
        return [read() for _ in range(self.length())]

    def mapping(self, read_key: Callable[[], K], read_value: Callable[[], V]) -> Dict[K, V]:
        """A map: its entry count, then each key and value. A repeated key keeps its last
        value, as Rust's BTreeMap does when it decodes one."""
        # Every entry takes at least two bytes, so length() bounds the loop too.
        result: Dict[K, V] = {}
        for _ in range(self.length()):
            key = read_key()
            result[key] = read_value()
        return result

    def variant(self, count: int, what: str) -> int:
        """An enum's variant index, which must be below ``count``."""
        index = self.u32()
        if index >= count:
            raise ProtocolError(f"unknown {what} variant {index} from authenta-keyd")
        return index

    def finish(self) -> None:
        """Refuses bytes left after the message."""
        left = len(self._data) - self._pos
        if left:
            raise ProtocolError(f"a message from authenta-keyd has {left} trailing bytes")


def _unzigzag(n: int) -> int:
    return (n >> 1) ^ -(n & 1)


class FrameBuffer:
    """Cuts a byte stream into frames (sans I/O): :meth:`feed` what the socket gave,
    then take whole payloads with :meth:`next_frame`.

    A length prefix over :data:`MAX_FRAME_LEN` raises :class:`ProtocolError` as soon as
    its four bytes are in, before any of its payload is buffered: a peer cannot make the
    client hold more than one frame's worth for it.
    """

    __slots__ = ("_buf", "_pos")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0

    def feed(self, data: bytes) -> None:
        if self._pos and self._pos == len(self._buf):
            # Everything was consumed: start over rather than grow.
            self._buf.clear()
            self._pos = 0
        self._buf += data

    def pending(self) -> int:
        """Bytes received and not yet returned as a frame."""
        return len(self._buf) - self._pos

    def next_frame(self) -> Optional[bytes]:
        """The next whole payload, or None until more bytes arrive."""
        if self.pending() < 4:
            return None
        (length,) = _PREFIX.unpack_from(self._buf, self._pos)
        if length > MAX_FRAME_LEN:
            raise ProtocolError(
                f"authenta-keyd sent a frame of {length} bytes, over the limit of "
                f"{MAX_FRAME_LEN}: the socket may not be authenta-keyd's"
            )
        start = self._pos + 4
        if len(self._buf) - start < length:
            return None
        self._pos = start + length
        payload = bytes(self._buf[start : self._pos])
        if self._pos > 65536 and self._pos * 2 > len(self._buf):
            # Drop what was consumed once it dominates, so the buffer stays small.
            del self._buf[: self._pos]
            self._pos = 0
        return payload
