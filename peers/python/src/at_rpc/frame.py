"""Frames (contract sections 2 and 4): the 16-byte header, its CRC, the
stream reader for TCP and the datagram check for UDP."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from typing import NamedTuple

from .errors import FrameError

HEADER = struct.Struct(">HHIII")
HEADER_LEN = HEADER.size  # 16
MAGIC = 0x4154
MAGIC_BYTES = b"AT"
REQUEST = 0x0001
RESPONSE = 0x0002
ERROR = 0x0004
AUTH = 0x0008  # the frame is authenticated (section 9); not a type bit
NOTIFY = 0x0010  # a one-way frame: a call nobody answers, or an event (section 10)
KIND_MASK = REQUEST | RESPONSE | ERROR | NOTIFY
KIND_NAMES = {REQUEST: "request", RESPONSE: "response", ERROR: "error", NOTIFY: "notify"}
DEFAULT_PORT = 16724
MAX_BODY = 65536
MAX_ARGS = 16
MAX_DEPTH = 32
MAX_FUNC_NAME = 64
MAX_SEQ = 0xFFFFFFFF
# The largest UDP payload over IPv4.
MAX_DATAGRAM = 65507

CODES = (
    "bad_frame",
    "checksum_mismatch",
    "frame_too_large",
    "bad_request",
    "unknown_function",
    "invalid_arguments",
    "division_by_zero",
    "overflow",
    "busy",
    "unauthorized",
    "internal",
    "deadline_exceeded",
    "cancelled",
    "unknown_topic",
)
#: The largest deadline_ms (section 10.4): it fits in 32 bits.
MAX_DEADLINE_MS = 0xFFFFFFFF

I64_MIN = -(1 << 63)
I64_MAX = (1 << 63) - 1


class Header(NamedTuple):
    """The 16-byte header's fields, as integers."""

    magic: int
    flags: int
    seq: int
    length: int
    crc: int


class Frame(NamedTuple):
    """A checked frame: its flags (reserved bits included), seq and body."""

    flags: int
    seq: int
    body: bytes

    @property
    def kind(self) -> int:
        """REQUEST, RESPONSE, ERROR or NOTIFY (a checked frame has exactly one)."""
        return self.flags & KIND_MASK

    @property
    def kind_name(self) -> str:
        return KIND_NAMES.get(self.kind, "?")


def checksum(body: bytes) -> int:
    """CRC-32/ISO-HDLC (zlib's) of `body`."""
    return zlib.crc32(body) & 0xFFFFFFFF


def pack_frame(flags: int, seq: int, body: bytes | str) -> bytes:
    """A whole frame: header (length and CRC from `body`) and body."""
    if isinstance(body, str):
        body = body.encode("utf-8")
    body = bytes(body)
    return HEADER.pack(MAGIC, flags, seq, len(body), checksum(body)) + body


def unpack_header(data: bytes, offset: int = 0) -> Header:
    """The header fields of the 16 bytes at `offset` (no checks)."""
    return Header._make(HEADER.unpack_from(data, offset))


def _bad_magic(found: int) -> FrameError:
    return FrameError(
        "bad_frame", 0, "bad magic", f"bad magic 0x{found:04x} (expected 0x{MAGIC:04x})", fatal=True
    )


def _too_large(seq: int, length: int, limit: int, flags: int) -> FrameError:
    return FrameError(
        "frame_too_large",
        seq,
        "frame too large",
        f"body length {length} is over the limit of {limit} (seq {seq})",
        fatal=True,
        flags=flags,
    )


def _check_kind(flags: int, seq: int) -> None:
    kind = flags & KIND_MASK
    if kind == 0:
        raise FrameError(
            "bad_frame",
            seq,
            "no message type bit in flags",
            f"no type bit in flags 0x{flags:04x} (seq {seq})",
            flags=flags,
        )
    if kind not in KIND_NAMES:
        raise FrameError(
            "bad_frame",
            seq,
            "more than one message type bit in flags",
            f"more than one type bit in flags 0x{flags:04x} (seq {seq})",
            flags=flags,
        )


def _check_crc(seq: int, crc: int, body: bytes, flags: int) -> None:
    computed = checksum(body)
    if computed != crc:
        raise FrameError(
            "checksum_mismatch",
            seq,
            "checksum mismatch",
            f"checksum mismatch (seq {seq}): header says 0x{crc:08x}, body has 0x{computed:08x}",
            flags=flags,
        )


class FrameReader:
    """Assembles frames from a byte stream delivered in any chunking.

    Checks, in this order: the magic (as soon as two bytes are in), the
    length (as soon as the header is in, before any body is buffered), then,
    once the whole body is in, the type bits and the CRC. A type-bit error or
    a CRC mismatch consumes its frame, so the stream stays in step; a wrong
    magic or an oversize length leave the stream out of step, and the reader
    reports that same error until `clear()`.

        reader = FrameReader()
        for item in reader.feed(chunk):
            if isinstance(item, FrameError): ...   # item.fatal: close
            else: ...                              # a Frame
    """

    def __init__(self, max_body: int = MAX_BODY):
        self.max_body = max_body
        self._buf = bytearray()

    def buffered(self) -> int:
        """Bytes buffered and not yet returned as frames."""
        return len(self._buf)

    def clear(self) -> None:
        """Drops what is buffered (after a fatal error, to read on)."""
        self._buf.clear()

    def push(self, data: bytes) -> None:
        """Buffers `data` without taking frames out (see next_frame)."""
        self._buf += data

    def next_frame(self) -> Frame | None:
        """The next whole frame, or None when more bytes are needed; raises
        FrameError for what is wrong with the frame at the front."""
        buf = self._buf
        if len(buf) < HEADER_LEN:
            if len(buf) >= 2 and buf[:2] != MAGIC_BYTES:
                raise _bad_magic((buf[0] << 8) | buf[1])
            return None
        magic, flags, seq, length, crc = HEADER.unpack_from(buf)
        if magic != MAGIC:
            raise _bad_magic(magic)
        if length > self.max_body:
            raise _too_large(seq, length, self.max_body, flags)
        total = HEADER_LEN + length
        if len(buf) < total:
            return None
        body = bytes(buf[HEADER_LEN:total])
        del buf[:total]
        _check_kind(flags, seq)
        _check_crc(seq, crc, body, flags)
        return Frame(flags, seq, body)

    def feed(self, data: bytes = b"") -> Iterator[Frame | FrameError]:
        """Buffers `data`, then yields every whole frame buffered, and
        FrameErrors in their place; stops after a fatal error."""
        if data:
            self.push(data)
        while True:
            try:
                frame = self.next_frame()
            except FrameError as e:
                yield e
                if e.fatal:
                    return
                continue
            if frame is None:
                return
            yield frame


def parse_datagram(data: bytes, max_body: int = MAX_BODY) -> Frame:
    """Checks one datagram holding one whole frame. Raises FrameError; a
    datagram whose size is not 16 + length raises one with answer=False
    (drop it, do not reply)."""
    if len(data) < HEADER_LEN:
        raise FrameError(
            "bad_frame",
            0,
            "bad size",
            f"datagram of {len(data)} bytes is shorter than a header",
            answer=False,
        )
    magic, flags, seq, length, crc = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise _bad_magic(magic)
    if HEADER_LEN + length != len(data):
        raise FrameError(
            "bad_frame",
            0,
            "bad size",
            f"datagram of {len(data)} bytes where the header announces {HEADER_LEN + length}",
            answer=False,
        )
    _check_kind(flags, seq)
    if length > max_body:
        raise _too_large(seq, length, max_body, flags)
    body = bytes(data[HEADER_LEN:])
    _check_crc(seq, crc, body, flags)
    return Frame(flags, seq, body)
