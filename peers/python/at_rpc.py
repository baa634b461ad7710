#!/usr/bin/env python3
"""AT remote calls in Python: the protocol, a threaded TCP+UDP server, a
client and the command line, in one module (Python 3.11, standard library
only).

The wire contract is AT-PROTOCOL.md (version 1); docs/PROTOCOL.md records
this project's decisions where the contract is silent. Bodies are written in
exactly the canonical form the Rust side writes, so replies match the shared
test vectors (tests/vectors/frames.json) byte for byte.

    python3 at_rpc.py serve [--tcp ADDR] [--udp ADDR] [--max-frame BYTES]
    python3 at_rpc.py call [--server HOST[:PORT]] [--udp] [--timeout SECS]
                           [--retries N] [--json] FUNC [ARG ...]

As a library:

    server = Server(tcp=("127.0.0.1", 0), udp=("127.0.0.1", 0)).start()
    server.register("hello", lambda name: "hello, " + name)
    with Client("127.0.0.1", server.tcp_address[1]) as client:
        client.call("add", 10, 20)          # 30
    server.shutdown()
"""

from __future__ import annotations

import collections
import ipaddress
import json
import json.decoder
import json.scanner
import logging
import math
import os
import random
import re
import select
import signal
import socket
import struct
import sys
import threading
import time
import zlib
from typing import Any, Callable, Iterator, NamedTuple

log = logging.getLogger("at_rpc")

# --------------------------------------------------------------------------
# Frames

HEADER = struct.Struct(">HHIII")
HEADER_LEN = HEADER.size  # 16
MAGIC = 0x4154
MAGIC_BYTES = b"AT"
REQUEST = 0x0001
RESPONSE = 0x0002
ERROR = 0x0004
KIND_MASK = REQUEST | RESPONSE | ERROR
KIND_NAMES = {REQUEST: "request", RESPONSE: "response", ERROR: "error"}
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
    "internal",
)

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
        """REQUEST, RESPONSE or ERROR (a checked frame has exactly one)."""
        return self.flags & KIND_MASK

    @property
    def kind_name(self) -> str:
        return KIND_NAMES.get(self.kind, "?")


class ATError(Exception):
    """Base of this module's errors."""


class RemoteError(ATError):
    """An error reply: `code` is for programs (one of CODES), `message` for
    people. Server functions raise it to answer with that error."""

    def __init__(self, code: str, message: str = "", body: bytes | None = None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.body = body  # the reply body, for errors a client received


class ProtocolError(ATError):
    """The peer broke the protocol (bad reply frame or body, unexpected seq,
    a request where a reply was due), or a request cannot be encoded."""


class FrameError(ProtocolError):
    """What is wrong with a received frame.

    code    -- the error code a receiver answers with (bad_frame, ...)
    seq     -- the seq the answer carries (0 when the header is unreadable)
    message -- the message of the answer (the Rust side's wording)
    fatal   -- the stream is out of step (wrong magic, length over the
               limit): a TCP receiver answers, then closes
    answer  -- False for a datagram of the wrong size: dropped, never answered
    """

    def __init__(self, code: str, seq: int, message: str, detail: str = "",
                 fatal: bool = False, answer: bool = True):
        super().__init__(detail or message)
        self.code = code
        self.seq = seq
        self.message = message
        self.fatal = fatal
        self.answer = answer


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
    return FrameError("bad_frame", 0, "bad magic",
                      f"bad magic 0x{found:04x} (expected 0x{MAGIC:04x})", fatal=True)


def _too_large(seq: int, length: int, limit: int) -> FrameError:
    return FrameError("frame_too_large", seq, "frame too large",
                      f"body length {length} is over the limit of {limit} (seq {seq})", fatal=True)


def _check_kind(flags: int, seq: int) -> None:
    kind = flags & KIND_MASK
    if kind == 0:
        raise FrameError("bad_frame", seq, "no message type bit in flags",
                         f"no type bit in flags 0x{flags:04x} (seq {seq})")
    if kind not in KIND_NAMES:
        raise FrameError("bad_frame", seq, "more than one message type bit in flags",
                         f"more than one type bit in flags 0x{flags:04x} (seq {seq})")


def _check_crc(seq: int, crc: int, body: bytes) -> None:
    computed = checksum(body)
    if computed != crc:
        raise FrameError("checksum_mismatch", seq, "checksum mismatch",
                         f"checksum mismatch (seq {seq}): header says 0x{crc:08x}, "
                         f"body has 0x{computed:08x}")


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
        self._buf.clear()

    def push(self, data: bytes) -> None:
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
            raise _too_large(seq, length, self.max_body)
        total = HEADER_LEN + length
        if len(buf) < total:
            return None
        body = bytes(buf[HEADER_LEN:total])
        del buf[:total]
        _check_kind(flags, seq)
        _check_crc(seq, crc, body)
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
        raise FrameError("bad_frame", 0, "bad size",
                         f"datagram of {len(data)} bytes is shorter than a header", answer=False)
    magic, flags, seq, length, crc = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise _bad_magic(magic)
    if HEADER_LEN + length != len(data):
        raise FrameError("bad_frame", 0, "bad size",
                         f"datagram of {len(data)} bytes where the header announces "
                         f"{HEADER_LEN + length}", answer=False)
    _check_kind(flags, seq)
    if length > max_body:
        raise _too_large(seq, length, max_body)
    body = bytes(data[HEADER_LEN:])
    _check_crc(seq, crc, body)
    return Frame(flags, seq, body)


# --------------------------------------------------------------------------
# Writing JSON in the canonical form


def format_double(x: float) -> str:
    """A finite double exactly as Rust's ryu writes it: the shortest digits
    that read back to the same value, always with a '.' or an exponent
    (5.0, 0.1, 1e300, 1.5e20, 1e-7, 0.30000000000000004)."""
    if not math.isfinite(x):
        raise ValueError("a double that is not finite has no JSON form")
    if x == 0.0:
        return "-0.0" if math.copysign(1.0, x) < 0 else "0.0"
    sign = "-" if x < 0 else ""
    mantissa, _, exp = repr(abs(x)).partition("e")
    whole, _, frac = mantissa.partition(".")
    digits = (whole + frac).lstrip("0")
    k = (int(exp) if exp else 0) - len(frac)
    stripped = digits.rstrip("0")
    k += len(digits) - len(stripped)
    digits = stripped
    length = len(digits)
    kk = length + k  # 10^(kk-1) <= |x| < 10^kk
    if 0 <= k and kk <= 16:
        text = digits + "0" * k + ".0"
    elif 0 < kk <= 16:
        text = digits[:kk] + "." + digits[kk:]
    elif -5 < kk <= 0:
        text = "0." + "0" * -kk + digits
    elif length == 1:
        text = f"{digits}e{kk - 1}"
    else:
        text = f"{digits[0]}.{digits[1:]}e{kk - 1}"
    return sign + text


class EncodeError(ValueError):
    """A value with no JSON form: `code` and `message` are what a server
    answers instead (overflow for a non-finite double or an integer outside
    i64, internal for other types)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def _string(s: str) -> str:
    # ensure_ascii=False escapes exactly ", \, and the control characters
    # (\n \r \t \b \f, else \u00xx): the canonical form.
    return json.dumps(s, ensure_ascii=False)


def encode_value(value: Any, *, any_int: bool = False) -> str:
    """`value` as canonical JSON text (", " and ": " separators, doubles in
    ryu's form). Integers must fit in i64 unless `any_int` (a client sends
    any integer as written, for the server to judge)."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, _BigInt):
        if any_int:
            return value.text
        raise EncodeError("overflow", "integer result outside 64-bit range")
    if isinstance(value, int):
        if not any_int and not I64_MIN <= value <= I64_MAX:
            raise EncodeError("overflow", "integer result outside 64-bit range")
        return int.__repr__(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise EncodeError("overflow", "result is not a finite number")
        return format_double(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(encode_value(v, any_int=any_int) for v in value) + "]"
    if isinstance(value, dict):
        parts = []
        for k, v in value.items():
            if not isinstance(k, str):
                raise EncodeError("internal", "result has no JSON form")
            parts.append(_string(k) + ": " + encode_value(v, any_int=any_int))
        return "{" + ", ".join(parts) + "}"
    raise EncodeError("internal", "result has no JSON form")


def _utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate in a Python str
        raise EncodeError("internal", "result has no JSON form") from None


def request_body(func: str, args: tuple | list = ()) -> bytes:
    """`{"func": "add", "args": [10, 20]}`."""
    return _utf8('{"func": ' + _string(func) + ', "args": ['
                 + ", ".join(encode_value(a, any_int=True) for a in args) + "]}")


def success_body(result: Any) -> bytes:
    """`{"status": "success", "result": 30}`; raises EncodeError."""
    return _utf8('{"status": "success", "result": ' + encode_value(result) + "}")


def error_body(code: str, message: str) -> bytes:
    """`{"status": "error", "code": "...", "message": "..."}`."""
    return ('{"status": "error", "code": ' + _string(code) + ', "message": '
            + _string(message) + "}").encode("utf-8", "replace")


def error_frame(seq: int, code: str, message: str) -> bytes:
    return pack_frame(ERROR, seq, error_body(code, message))


# --------------------------------------------------------------------------
# Reading JSON bodies
#
# The contract's reading rules, in the Rust reader's order: members are read
# in document order and the first problem met is the one reported (a
# syntax error, nesting deeper than 32, a lone surrogate, a member of the
# wrong type or given twice); after the whole body: a missing func, then
# too many arguments, then an integer argument outside i64. Values are
# scanned with json's C scanner and then checked for what it accepts but
# RFC 8259 does not (NaN and Infinity, lone surrogates).


class BodyError(ValueError):
    """What is wrong with a body; `code` and `message` are the error reply."""

    def __init__(self, message: str, code: str = "bad_request"):
        super().__init__(message)
        self.code = code
        self.message = message


def _syntax() -> BodyError:
    return BodyError("body is not valid JSON")


def _too_deep() -> BodyError:
    return BodyError("JSON nested too deeply")


class _BigInt:
    """An integer literal outside i64 (its text), as the reader found it."""

    __slots__ = ("text",)

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return self.text

    def to_int(self) -> int | str:
        try:
            return int(self.text)
        except ValueError:  # more digits than int() converts by default
            return self.text


class _Obj(list):
    """A JSON object as its (key, value) pairs, duplicates kept."""


_BAD_CONSTANT = object()  # NaN, Infinity, -Infinity: not JSON


def _parse_int(text: str) -> int | _BigInt:
    if len(text) <= 20:
        value = int(text)
        if I64_MIN <= value <= I64_MAX:
            return value
    return _BigInt(text)


_DECODER = json.JSONDecoder(parse_int=_parse_int, parse_constant=lambda _: _BAD_CONSTANT,
                            object_pairs_hook=_Obj, strict=True)
_scan = json.scanner.make_scanner(_DECODER)
_scanstring = json.decoder.scanstring
_WS = re.compile(r"[ \t\n\r]*")
_SURROGATE = re.compile("[\ud800-\udfff]")
_PREFIX_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"?|[\[\]{}]|NaN|-?Infinity', re.S)
_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{4}|.)", re.S)


def _check_value(value: Any, depth: int = 0) -> None:
    """Raises the first problem in `value`, in document order."""
    t = type(value)
    if t is str:
        if _SURROGATE.search(value):
            raise _syntax()
    elif t is list or t is _Obj:
        depth += 1
        if depth > MAX_DEPTH:
            raise _too_deep()
        if t is list:
            for v in value:
                _check_value(v, depth)
        else:
            for k, v in value:
                if _SURROGATE.search(k):
                    raise _syntax()
                _check_value(v, depth)
    elif value is _BAD_CONSTANT:
        raise _syntax()


def _prefix_error(text: str, start: int, stop: int, depth: int = 0) -> BodyError:
    """The error the Rust reader meets first in text[start:stop], the part
    of a value json's scanner accepted before it failed: nesting deeper than
    MAX_DEPTH, or what the scanner accepts and RFC 8259 does not (a lone
    surrogate escape, NaN, Infinity); else a syntax error at `stop`."""
    for m in _PREFIX_TOKENS.finditer(text, start, stop):
        token = m.group()
        if token in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return _too_deep()
        elif token in "]}":
            depth -= 1
        elif token[0] != '"' or _lone_surrogate_escape(token):
            return _syntax()
    return _syntax()


def _lone_surrogate_escape(token: str) -> bool:
    """True when a string's source text holds a \\uXXXX surrogate escape
    that is not a high one directly followed by a low one."""
    high_end = -1
    for m in _ESCAPE.finditer(token):
        e = m.group(1)
        unit = int(e[1:], 16) if len(e) == 5 else -1
        if high_end >= 0:
            if m.start() != high_end or not 0xDC00 <= unit <= 0xDFFF:
                return True
            high_end = -1
        elif 0xD800 <= unit <= 0xDBFF:
            high_end = m.end()
        elif 0xDC00 <= unit <= 0xDFFF:
            return True
    return high_end >= 0


def _plain(value: Any) -> Any:
    """A checked value as plain Python: dicts, lists, ints."""
    t = type(value)
    if t is list:
        return [_plain(v) for v in value]
    if t is _Obj:
        return {k: _plain(v) for k, v in value}
    if t is _BigInt:
        return value.to_int()
    return value


class _Reader:
    def __init__(self, text: str):
        self.text = text
        self.pos = 0

    def peek(self) -> str | None:
        self.pos = _WS.match(self.text, self.pos).end()
        return self.text[self.pos] if self.pos < len(self.text) else None

    def expect(self, char: str) -> None:
        if self.peek() != char:
            raise _syntax()
        self.pos += 1

    def expect_end(self) -> None:
        if self.peek() is not None:
            raise _syntax()

    def string(self) -> str:
        self.expect('"')
        try:
            value, self.pos = _scanstring(self.text, self.pos, True)
        except ValueError:
            raise _syntax() from None
        if _SURROGATE.search(value):
            raise _syntax()
        return value

    def value(self, depth: int = 0) -> Any:
        """Reads and checks any value (raw: _Obj, _BigInt and friends).
        `depth`: nesting levels already open (-1 for the args array, whose
        own brackets the Rust reader does not count)."""
        self.peek()
        start = self.pos
        try:
            value, end = _scan(self.text, start)
        except (StopIteration, ValueError, RecursionError) as e:  # ValueError: JSONDecodeError
            # Where the scanner stopped: StopIteration's value, or the
            # error's pos; the Rust reader may have failed before that.
            stop = e.value if isinstance(e, StopIteration) else getattr(e, "pos", len(self.text))
            if not isinstance(stop, int):
                stop = len(self.text)
            raise _prefix_error(self.text, start, stop, depth) from None
        _check_value(value, depth)
        if type(value) in (int, float, _BigInt):
            # json's scanner ends a number before a '.' or an exponent
            # without digits ("4.", "1e", "7E+"); RFC 8259 (and the Rust
            # reader) call the number itself malformed.
            number = self.text[start:end]
            after = self.text[end:end + 1]
            if after and "e" not in number and "E" not in number and (
                    after in "eE" or (after == "." and "." not in number)):
                raise _syntax()
        self.pos = end
        return value

    def object(self, member: Callable[[str], None]) -> None:
        self.expect("{")
        if self.peek() == "}":
            self.pos += 1
            return
        while True:
            key = self.string()
            self.expect(":")
            member(key)
            c = self.peek()
            if c == ",":
                self.pos += 1
            elif c == "}":
                self.pos += 1
                return
            else:
                raise _syntax()


def _open_object(body: bytes) -> _Reader:
    try:
        text = bytes(body).decode("utf-8")
    except UnicodeDecodeError:
        raise BodyError("body is not UTF-8") from None
    reader = _Reader(text)
    c = reader.peek()
    if c == "{":
        return reader
    if c is not None and c in '["tfn-0123456789':
        reader.value()
        reader.expect_end()
        raise BodyError("body is not a JSON object")
    raise _syntax()


def _set_once(slots: dict, name: str, value: Any) -> None:
    if name in slots:
        raise BodyError("a member appears twice")
    slots[name] = value


def parse_request(body: bytes) -> tuple[str, list]:
    """Reads a request body; returns (func, args) with args as plain Python
    values (arrays and objects as lists and dicts). Raises BodyError with the
    reply's code and message."""
    reader = _open_object(body)
    slots: dict[str, Any] = {}
    flags = {"too_many": False, "overflow": False}

    def member(key: str) -> None:
        if key == "func":
            if reader.peek() != '"':
                reader.value()
                raise BodyError('"func" must be a string')
            _set_once(slots, "func", reader.string())
        elif key == "args":
            if reader.peek() != "[":
                reader.value()
                raise BodyError('"args" must be an array')
            items = reader.value(-1)
            # As the Rust reader counts: an integer outside i64 is flagged,
            # not counted as one of the MAX_ARGS arguments.
            big = sum(1 for v in items if type(v) is _BigInt)
            if len(items) - big > MAX_ARGS:
                flags["too_many"] = True
            if big:
                flags["overflow"] = True
            _set_once(slots, "args", items)
        else:
            reader.value()

    reader.object(member)
    reader.expect_end()
    if "func" not in slots:
        raise BodyError('missing "func"')
    if flags["too_many"]:
        raise BodyError("too many arguments", "invalid_arguments")
    if flags["overflow"]:
        raise BodyError("integer argument outside 64-bit range", "overflow")
    return slots["func"], _plain(slots.get("args", []))


def parse_reply(body: bytes) -> tuple[bool, Any, str, str]:
    """Reads a reply body: (True, result, "", "") for success, (False, None,
    code, message) for an error (a missing message reads as ""). Raises
    BodyError."""
    reader = _open_object(body)
    slots: dict[str, Any] = {}

    def member(key: str) -> None:
        if key in ("status", "code", "message"):
            if reader.peek() != '"':
                reader.value()
                raise BodyError("a member has the wrong type")
            _set_once(slots, key, reader.string())
        elif key == "result":
            _set_once(slots, "result", reader.value())
        else:
            reader.value()

    reader.object(member)
    reader.expect_end()
    if "status" not in slots:
        raise BodyError("a required member is missing")
    if slots["status"] == "success":
        if type(slots.get("result")) is _BigInt:
            raise BodyError("integer argument outside 64-bit range", "overflow")
        if "result" not in slots:
            raise BodyError("a required member is missing")
        return True, _plain(slots["result"]), "", ""
    if slots["status"] == "error":
        if "code" not in slots:
            raise BodyError("a required member is missing")
        return False, None, slots["code"], slots.get("message", "")
    raise BodyError("a member has the wrong type")


def parse_value(text: str) -> Any:
    """Exactly one JSON value (whitespace around it allowed), as plain
    Python; an integer outside i64 stays a _BigInt that writes back as its
    text. Raises BodyError."""
    reader = _Reader(text)
    if reader.peek() is None:
        raise _syntax()
    value = reader.value()
    reader.expect_end()
    return value if type(value) is _BigInt else _plain(value)


# --------------------------------------------------------------------------
# The calculator


def _is_number(x: Any) -> bool:
    return type(x) is not bool and isinstance(x, (int, float))


def _two_numbers(args: tuple) -> tuple:
    if len(args) != 2 or not (_is_number(args[0]) and _is_number(args[1])):
        raise RemoteError("invalid_arguments", "expected two numbers")
    return args


def _finite(x: float) -> float:
    if not math.isfinite(x):
        raise RemoteError("overflow", "result is not a finite number")
    return x


def _arithmetic(args: tuple, op: Callable[[Any, Any], Any]) -> int | float:
    a, b = _two_numbers(args)
    if isinstance(a, int) and isinstance(b, int):
        result = op(a, b)
        if not I64_MIN <= result <= I64_MAX:
            raise RemoteError("overflow", "integer result outside 64-bit range")
        return result
    try:
        return _finite(op(float(a), float(b)))
    except OverflowError:
        raise RemoteError("overflow", "result is not a finite number") from None


def calc_add(*args):
    """a + b: exact for two integers (in i64), else a double."""
    return _arithmetic(args, lambda a, b: a + b)


def calc_sub(*args):
    """a - b."""
    return _arithmetic(args, lambda a, b: a - b)


def calc_mul(*args):
    """a * b."""
    return _arithmetic(args, lambda a, b: a * b)


def calc_div(*args):
    """a / b, always a double (correctly rounded for two integers)."""
    a, b = _two_numbers(args)
    if b == 0:
        raise RemoteError("division_by_zero", "division by zero")
    try:
        if isinstance(a, int) and isinstance(b, int):
            return _finite(a / b)  # int / int is correctly rounded
        return _finite(float(a) / float(b))
    except OverflowError:
        raise RemoteError("overflow", "result is not a finite number") from None


CALCULATOR = {"add": calc_add, "sub": calc_sub, "mul": calc_mul, "div": calc_div}


# --------------------------------------------------------------------------
# The request -> reply path


def call_function(functions: dict, func: str, args: list) -> tuple[int, bytes]:
    """Calls `func` from `functions`; returns (RESPONSE or ERROR, body)."""
    fn = functions.get(func) if len(func.encode("utf-8")) <= MAX_FUNC_NAME else None
    if fn is None:
        return ERROR, error_body("unknown_function", "unknown function")
    try:
        result = fn(*args)
    except RemoteError as e:
        code, message = e.code, str(e.message)
        if code not in CODES:
            log.warning("function %r raised RemoteError with unknown code %r", func, code)
            code = "internal"
        return ERROR, error_body(code, message)
    except Exception:
        log.exception("function %r failed", func)
        return ERROR, error_body("internal", "the function failed")
    try:
        return RESPONSE, success_body(result)
    except EncodeError as e:
        if e.code == "internal":
            log.error("function %r returned %r, which has no JSON form", func, type(result))
        return ERROR, error_body(e.code, e.message)
    except RecursionError:
        log.error("function %r returned a value nested too deeply", func)
        return ERROR, error_body("internal", "result has no JSON form")


def respond(functions: dict, frame: Frame, max_body: int = MAX_BODY) -> bytes | None:
    """The reply frame to one checked frame, or None for a frame that is
    itself a reply (servers answer requests only)."""
    if frame.kind != REQUEST:
        return None
    seq = frame.seq
    try:
        func, args = parse_request(frame.body)
    except BodyError as e:
        return error_frame(seq, e.code, e.message)
    kind, body = call_function(functions, func, args)
    if len(body) > max(max_body, 128):
        log.error("reply to %r (seq %d) is %d bytes, over the limit of %d",
                  func, seq, len(body), max_body)
        kind, body = ERROR, error_body("internal", "reply too large")
    return pack_frame(kind, seq, body)


def respond_to_error(error: FrameError) -> bytes | None:
    """The error frame answering a rejected frame (None: drop silently)."""
    if not error.answer:
        return None
    return error_frame(error.seq, error.code, error.message)


def respond_to_datagram(functions: dict, data: bytes, max_body: int = MAX_BODY) -> bytes | None:
    """The whole path for one datagram: check it, answer it (or None)."""
    try:
        frame = parse_datagram(data, max_body)
    except FrameError as e:
        return respond_to_error(e)
    return respond(functions, frame, max_body)


# --------------------------------------------------------------------------
# The server


class ReplyCache:
    """UDP's at-most-once memory: replies by (client address, seq), bounded
    by entries in all, entries per client and age. An entry also holds the
    request's fingerprint (flags, length, CRC): a different request reusing
    an address and seq (a restarted client) runs anew."""

    def __init__(self, max_entries: int = 4096, max_per_client: int = 256,
                 max_age: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.max_entries = max_entries
        self.max_per_client = max_per_client
        self.max_age = max_age
        self.clock = clock
        self._entries: collections.OrderedDict = collections.OrderedDict()
        self._clients: dict = {}

    def __len__(self) -> int:
        return len(self._entries)

    def _remove(self, key) -> None:
        del self._entries[key]
        addr, seq = key
        seqs = self._clients[addr]
        del seqs[seq]
        if not seqs:
            del self._clients[addr]

    def _expire(self) -> None:
        limit = self.clock() - self.max_age
        while self._entries:
            key, (stamp, _, _) = next(iter(self._entries.items()))
            if stamp > limit:
                break
            self._remove(key)

    def get(self, addr, seq: int, fingerprint) -> bytes | None:
        self._expire()
        entry = self._entries.get((addr, seq))
        if entry is None or entry[1] != fingerprint:
            return None
        return entry[2]

    def put(self, addr, seq: int, fingerprint, reply: bytes) -> None:
        key = (addr, seq)
        if key in self._entries:
            self._remove(key)
        self._expire()
        seqs = self._clients.get(addr)
        if seqs is not None and len(seqs) >= self.max_per_client:
            self._remove((addr, next(iter(seqs))))
        while len(self._entries) >= self.max_entries:
            self._remove(next(iter(self._entries)))
        self._entries[key] = (self.clock(), fingerprint, reply)
        self._clients.setdefault(addr, collections.OrderedDict())[seq] = None


def _wait_readable(sock: socket.socket, wake: socket.socket, timeout: float | None) -> str:
    """'data', 'wake' or 'timeout'."""
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(sock, select.POLLIN | select.POLLPRI)
        poller.register(wake, select.POLLIN)
        ms = None if timeout is None else max(0, int(timeout * 1000))
        while True:
            try:
                events = poller.poll(ms)
                break
            except InterruptedError:  # pragma: no cover (PEP 475 retries)
                continue
        fds = {fd for fd, _ in events}
    else:  # pragma: no cover (Windows)
        readable, _, _ = select.select([sock, wake], [], [], timeout)
        fds = {s.fileno() for s in readable}
    if wake.fileno() in fds:
        return "wake"
    if sock.fileno() in fds:
        return "data"
    return "timeout"


def _linger_close(sock: socket.socket, limit: float = 1.0) -> None:
    """Send FIN, then read and discard what the peer still sends for a short
    while, so the last reply is not destroyed by a reset; then close."""
    try:
        sock.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + limit
        drained = 0
        while drained < (1 << 20):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            sock.settimeout(left)
            data = sock.recv(65536)
            if not data:
                break
            drained += len(data)
    except OSError:
        pass
    finally:
        sock.close()


def _format_addr(addr) -> str:
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Server:
    """A threaded AT server over TCP and/or UDP: the calculator (unless
    calculator=False) plus functions added with register().

    tcp, udp -- (host, port) to listen on, or None; port 0: the OS chooses
    max_frame -- largest request body accepted
    idle_timeout -- a TCP connection with nothing buffered is closed after
        this long without a byte
    frame_timeout -- a TCP connection that sent part of a frame is closed if
        the rest does not come within this long; also bounds reply writes
    max_connections -- more TCP connections get `busy` and are closed
    udp_cache_* -- bounds of the UDP reply cache

    start() binds and starts the threads; shutdown() stops them.
    """

    def __init__(self, tcp=("0.0.0.0", DEFAULT_PORT), udp=("0.0.0.0", DEFAULT_PORT), *,
                 max_frame: int = MAX_BODY, calculator: bool = True,
                 idle_timeout: float = 300.0, frame_timeout: float = 10.0,
                 max_connections: int = 1024, udp_cache_entries: int = 4096,
                 udp_cache_per_client: int = 256, udp_cache_age: float = 60.0):
        if not 0 <= max_frame <= 0xFFFFFFFF:
            raise ValueError("max_frame must fit in 32 bits")
        self.functions: dict[str, Callable] = dict(CALCULATOR) if calculator else {}
        self._tcp_bind = tcp
        self._udp_bind = udp
        self.max_frame = max_frame
        self.idle_timeout = idle_timeout
        self.frame_timeout = frame_timeout
        self.max_connections = max_connections
        self.cache = ReplyCache(udp_cache_entries, udp_cache_per_client, udp_cache_age)
        self.tcp_address = None
        self.udp_address = None
        self._tcp_sock = None
        self._udp_sock = None
        self._stopping = threading.Event()
        self._wake_r = self._wake_w = None
        self._started = False
        self._lock = threading.Lock()
        self._connections: set = set()
        self._threads: list = []

    def register(self, name: str, fn: Callable) -> "Server":
        """Adds (or replaces) `fn` under `name`. fn(*args) returns the result
        or raises RemoteError(code, message); any other exception is answered
        with `internal`."""
        if len(name.encode("utf-8")) > MAX_FUNC_NAME:
            raise ValueError(f"function names are at most {MAX_FUNC_NAME} bytes")
        self.functions[name] = fn
        return self

    # -- life cycle

    def start(self) -> "Server":
        if self._started:
            raise RuntimeError("server already started")
        self._started = True
        # Written to once at shutdown: wakes every thread waiting in poll.
        self._wake_r, self._wake_w = socket.socketpair()
        try:
            if self._tcp_bind is not None:
                self._tcp_sock = self._bind(socket.SOCK_STREAM, self._tcp_bind)
                self._tcp_sock.listen(128)
                self.tcp_address = self._tcp_sock.getsockname()[:2]
            if self._udp_bind is not None:
                self._udp_sock = self._bind(socket.SOCK_DGRAM, self._udp_bind)
                self.udp_address = self._udp_sock.getsockname()[:2]
        except OSError:
            self._close_listeners()
            self._wake_r.close()
            self._wake_w.close()
            raise
        if self._tcp_sock is not None:
            self._spawn(self._accept_loop, "at-tcp-accept")
            log.info("listening on tcp://%s", _format_addr(self.tcp_address))
        if self._udp_sock is not None:
            self._spawn(self._udp_loop, "at-udp")
            log.info("listening on udp://%s", _format_addr(self.udp_address))
        return self

    @staticmethod
    def _bind(kind: int, addr) -> socket.socket:
        host, port = addr[0], addr[1]
        infos = socket.getaddrinfo(host, port, type=kind, flags=socket.AI_PASSIVE)
        family, _, _, _, sockaddr = infos[0]
        sock = socket.socket(family, kind)
        try:
            if kind == socket.SOCK_STREAM and os.name != "nt":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(sockaddr)
        except OSError:
            sock.close()
            raise
        return sock

    def _spawn(self, target, name, *args) -> threading.Thread:
        thread = threading.Thread(target=target, name=name, args=args, daemon=True)
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()
        return thread

    def _close_listeners(self) -> None:
        for sock in (self._tcp_sock, self._udp_sock):
            if sock is not None:
                try:
                    sock.close()
                except OSError:
                    pass

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stops accepting, lets each connection answer the requests it has
        already read, closes everything and waits for the threads."""
        if self._stopping.is_set() or not self._started:
            self._stopping.set()
            return
        self._stopping.set()
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        deadline = time.monotonic() + timeout
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))
        self._close_listeners()
        if not any(t.is_alive() for t in threads if t is not threading.current_thread()):
            self._wake_r.close()
            self._wake_w.close()
        else:
            log.warning("some connections did not finish within %g s", timeout)
        log.info("server stopped")

    def __enter__(self) -> "Server":
        if not self._started:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()

    # -- TCP

    def _accept_loop(self) -> None:
        listener = self._tcp_sock
        while not self._stopping.is_set():
            if _wait_readable(listener, self._wake_r, None) != "data":
                break
            try:
                conn, peer = listener.accept()
            except OSError as e:
                if self._stopping.is_set():
                    break
                log.warning("accept failed: %s", e)
                time.sleep(0.05)
                continue
            with self._lock:
                busy = len(self._connections) >= self.max_connections
                if not busy:
                    self._connections.add(conn)
            if busy:
                log.warning("refusing %s: over %d connections", _format_addr(peer),
                            self.max_connections)
                self._spawn(self._refuse_busy, "at-tcp-busy", conn)
            else:
                self._spawn(self._connection, f"at-tcp-{_format_addr(peer)}", conn, peer)

    def _refuse_busy(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(self.frame_timeout)
            conn.sendall(error_frame(0, "busy", "server busy"))
        except OSError:
            pass
        _linger_close(conn)

    def _connection(self, conn: socket.socket, peer) -> None:
        name = _format_addr(peer)
        log.info("connection from %s", name)
        try:
            reason = self._serve_connection(conn)
        except Exception as e:  # never let one connection take the server down
            log.exception("connection from %s failed", name)
            reason = f"internal error: {e}"
            conn.close()
        finally:
            with self._lock:
                self._connections.discard(conn)
        log.info("connection from %s closed: %s", name, reason)

    def _serve_connection(self, conn: socket.socket) -> str:
        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        reader = FrameReader(self.max_frame)
        functions = self.functions
        data = b""
        while True:
            replies = []
            fatal = None
            for item in reader.feed(data):
                if isinstance(item, FrameError):
                    log.warning("bad frame: %s", item)
                    replies.append(respond_to_error(item))
                    if item.fatal:
                        fatal = item
                elif item.kind != REQUEST:
                    log.warning("ignoring a %s frame (seq %d): servers answer requests only",
                                item.kind_name, item.seq)
                else:
                    replies.append(self._answer(functions, item))
            if replies:
                try:
                    conn.settimeout(self.frame_timeout)
                    conn.sendall(b"".join(replies))
                except TimeoutError:
                    conn.close()
                    return "peer does not read its replies"
                except OSError as e:
                    conn.close()
                    return str(e)
            if fatal is not None:
                _linger_close(conn)
                return f"stream out of step ({fatal})"
            if self._stopping.is_set():
                conn.close()
                return "server shutting down"
            partial = reader.buffered() > 0
            timeout = self.frame_timeout if partial else self.idle_timeout
            event = _wait_readable(conn, self._wake_r, timeout)
            if event == "wake":
                conn.close()
                return "server shutting down"
            if event == "timeout":
                conn.close()
                return "timeout in the middle of a frame" if partial else "idle timeout"
            try:
                conn.settimeout(self.frame_timeout)
                data = conn.recv(65536)
            except OSError as e:
                conn.close()
                return str(e)
            if not data:
                conn.close()
                return "by the peer in the middle of a frame" if partial else "by the peer"

    def _answer(self, functions: dict, frame: Frame) -> bytes:
        if log.isEnabledFor(logging.DEBUG):
            started = time.monotonic()
            reply = respond(functions, frame, self.max_frame)
            log.debug("call seq %d: %s in %.3f ms", frame.seq,
                      "success" if unpack_header(reply).flags == RESPONSE else "error",
                      (time.monotonic() - started) * 1000)
            return reply
        return respond(functions, frame, self.max_frame)

    # -- UDP

    def _udp_loop(self) -> None:
        sock = self._udp_sock
        size = max(MAX_BODY, self.max_frame) + HEADER_LEN + 1
        size = min(size, 1 << 20)
        while not self._stopping.is_set():
            if _wait_readable(sock, self._wake_r, None) != "data":
                break
            try:
                data, addr = sock.recvfrom(size)
            except OSError as e:  # e.g. ICMP errors reported on the socket
                log.debug("udp receive: %s", e)
                continue
            try:
                reply = self._udp_datagram(data, addr)
            except Exception:
                log.exception("udp datagram from %s failed", _format_addr(addr))
                continue
            if reply is None:
                continue
            if len(reply) > MAX_DATAGRAM:
                reply = error_frame(unpack_header(reply).seq, "internal", "reply too large")
            try:
                sock.sendto(reply, addr)
            except OSError as e:
                log.warning("udp reply to %s: %s", _format_addr(addr), e)

    def _udp_datagram(self, data: bytes, addr) -> bytes | None:
        client = _format_addr(addr)
        try:
            frame = parse_datagram(data, self.max_frame)
        except FrameError as e:
            if not e.answer:
                log.warning("dropping a datagram from %s: %s", client, e)
                return None
            log.warning("bad frame from %s: %s", client, e)
            return respond_to_error(e)
        if frame.kind != REQUEST:
            log.warning("ignoring a %s frame from %s (seq %d): servers answer requests only",
                        frame.kind_name, client, frame.seq)
            return None
        length, crc = HEADER.unpack_from(data)[3:5]
        fingerprint = (frame.flags, length, crc)
        key = addr[:2]
        cached = self.cache.get(key, frame.seq, fingerprint)
        if cached is not None:
            log.debug("resending the reply to seq %d to %s (a retransmission)", frame.seq, client)
            return cached
        reply = self._answer(self.functions, frame)
        self.cache.put(key, frame.seq, fingerprint, reply)
        return reply


# --------------------------------------------------------------------------
# The client


_CLOSING_CODE = re.compile(rb'"code"\s*:\s*"(?:frame_too_large|bad_frame|busy)"')


class Client:
    """Calls functions on an AT server.

        with Client("127.0.0.1", 16724) as c:
            c.call("add", 10, 20)    # 30

    call() returns the result or raises RemoteError (an error reply),
    TimeoutError (no reply within `timeout` seconds, the bound of the whole
    call), ConnectionError (refused, reset, closed) or ProtocolError (a bad
    reply). Over UDP a request is retransmitted with the same seq up to
    `retries` times, waiting longer each time (exponential backoff with
    jitter). One client makes one call at a time (calls from several threads
    take turns).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = DEFAULT_PORT, udp: bool = False,
                 timeout: float = 5.0, retries: int = 4, max_frame: int = MAX_BODY):
        self.host = host
        self.port = port
        self.udp = udp
        self.timeout = timeout
        self.retries = max(0, retries)
        self.max_frame = max_frame
        self._seq = 0
        self._sock = None
        self._reader = None
        self._lock = threading.Lock()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None
                self._reader = None

    def _next_seq(self) -> int:
        self._seq = self._seq + 1 if self._seq < MAX_SEQ else 1  # 0 is for unreadable headers
        return self._seq

    def call(self, func: str, *args) -> Any:
        """func(*args) on the server; see the class for what it raises."""
        return self.call_raw(func, *args)[0]

    def call_raw(self, func: str, *args) -> tuple[Any, bytes]:
        """Like call(), but returns (result, reply body bytes)."""
        try:
            body = request_body(func, args)
        except EncodeError as e:
            reason = ("a double that is not finite has no JSON form" if e.code == "overflow"
                      else "an argument has no JSON form")
            raise ProtocolError(f"request cannot be encoded: {reason}") from None
        except RecursionError:
            raise ProtocolError("request cannot be encoded: nested too deeply") from None
        if len(body) > self.max_frame:
            raise ProtocolError(f"request cannot be encoded: body of {len(body)} bytes "
                                f"is over the limit of {self.max_frame}")
        with self._lock:
            seq = self._next_seq()
            frame = pack_frame(REQUEST, seq, body)
            if self.udp:
                reply = self._call_udp(seq, frame)
            else:
                reply = self._call_tcp(seq, frame)
        return self._result(reply), reply.body

    @staticmethod
    def _result(frame: Frame) -> Any:
        try:
            ok, result, code, message = parse_reply(frame.body)
        except BodyError as e:
            raise ProtocolError(f"bad reply body: {e.message}") from None
        if ok != (frame.kind == RESPONSE):
            raise ProtocolError(f"a {frame.kind_name} frame with a "
                                f"{'success' if ok else 'error'} body")
        if not ok:
            raise RemoteError(code, message, frame.body)
        return result

    def _remaining(self, deadline: float) -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"timed out after {self.timeout:g} s")
        return left

    # -- TCP

    def _call_tcp(self, seq: int, frame: bytes) -> Frame:
        deadline = time.monotonic() + self.timeout
        if self._sock is not None and self._closed_by_peer():
            self.close()  # e.g. the server's idle timeout: connect again
        try:
            if self._sock is None:
                self._sock = socket.create_connection((self.host, self.port),
                                                      timeout=self._remaining(deadline))
                self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._reader = FrameReader(self.max_frame)
            sock, reader = self._sock, self._reader
            sock.settimeout(self._remaining(deadline))
            sock.sendall(frame)
            while True:
                for item in reader.feed():
                    if isinstance(item, FrameError):
                        raise ProtocolError(f"bad reply frame: {item}")
                    reply = self._check_tcp_reply(seq, item)
                    return reply
                sock.settimeout(self._remaining(deadline))
                data = sock.recv(65536)
                if not data:
                    raise ConnectionError("connection closed by the server")
                reader.push(data)
        except socket.timeout:
            self.close()
            raise TimeoutError(f"timed out after {self.timeout:g} s") from None
        except BaseException:
            self.close()
            raise

    def _closed_by_peer(self) -> bool:
        """True when the idle connection has seen the server's FIN or RST
        (checked before a request is sent, so nothing is sent twice)."""
        try:
            if hasattr(select, "poll"):
                poller = select.poll()
                poller.register(self._sock, select.POLLIN)
                readable = bool(poller.poll(0))
            else:  # pragma: no cover (Windows)
                readable = bool(select.select([self._sock], [], [], 0)[0])
            if not readable:
                return False
            self._sock.setblocking(False)
            return self._sock.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    def _check_tcp_reply(self, seq: int, frame: Frame) -> Frame:
        if frame.kind == REQUEST:
            raise ProtocolError("a request frame arrived where a reply was due")
        if frame.seq == seq:
            if frame.kind == ERROR and _CLOSING_CODE.search(frame.body):
                self.close()  # the server closes after these: connect anew next time
            return frame
        if frame.seq == 0 and frame.kind == ERROR:
            # A connection-level error (busy, or our header was unreadable):
            # it answers this call, and the server closes the connection.
            self.close()
            return frame
        raise ProtocolError(f"reply with unexpected seq {frame.seq} (expected {seq})")

    # -- UDP

    def _call_udp(self, seq: int, frame: bytes) -> Frame:
        start = time.monotonic()
        deadline = start + self.timeout
        if self._sock is None:
            infos = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_DGRAM)
            family, _, _, _, sockaddr = infos[0]
            sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                sock.connect(sockaddr)
            except OSError:
                sock.close()
                raise
            self._sock = sock
        sock = self._sock
        # Waits base, 2 base, 4 base, ... (each with +-25% jitter) add up to
        # the whole timeout; the last attempt waits until the deadline.
        attempts = self.retries + 1
        base = self.timeout / ((1 << attempts) - 1)
        for attempt in range(attempts):
            try:
                sock.send(frame)
            except ConnectionRefusedError:
                pass  # an earlier ICMP error reported late; the wait below retries
            if attempt == attempts - 1:
                until = deadline
            else:
                until = min(deadline, time.monotonic() + base * (1 << attempt)
                            * random.uniform(0.75, 1.25))
            reply = self._await_udp(sock, seq, until)
            if reply is not None:
                return reply
            if time.monotonic() >= deadline:
                break
            log.debug("no reply to seq %d yet: retransmitting", seq)
        raise TimeoutError(f"timed out after {self.timeout:g} s "
                           f"({attempts} attempt{'s' if attempts > 1 else ''})")

    def _await_udp(self, sock: socket.socket, seq: int, until: float) -> Frame | None:
        size = max(self.max_frame, MAX_BODY) + HEADER_LEN + 1
        while True:
            left = until - time.monotonic()
            if left <= 0:
                return None
            sock.settimeout(left)
            try:
                data = sock.recv(size)
            except socket.timeout:
                return None
            except ConnectionRefusedError:
                # ICMP port unreachable: nobody listens (yet). Keep trying
                # until the deadline, as a server may be (re)starting.
                log.debug("udp: connection refused; waiting on")
                time.sleep(min(0.05, max(0.0, until - time.monotonic())))
                continue
            try:
                reply = parse_datagram(data, self.max_frame)
            except FrameError as e:
                log.debug("ignoring a bad datagram: %s", e)
                continue
            if reply.kind == REQUEST or reply.seq != seq:
                log.debug("ignoring a %s with seq %d (waiting for %d)",
                          reply.kind_name, reply.seq, seq)
                continue
            return reply


# --------------------------------------------------------------------------
# Command line

USAGE = """\
usage: at_rpc.py serve [--tcp ADDR] [--udp ADDR] [--max-frame BYTES]
       at_rpc.py call [--server HOST[:PORT]] [--udp] [--timeout SECS] [--retries N]
                      [--json] FUNC [ARG ...]
"""

SERVE_HELP = """\
usage: at_rpc.py serve [--tcp ADDR] [--udp ADDR] [--max-frame BYTES]

Serves the calculator (add, sub, mul, div) until SIGINT or SIGTERM.

  --tcp ADDR         TCP address IP:PORT, or none (default 0.0.0.0:16724)
  --udp ADDR         UDP address IP:PORT, or none (default 0.0.0.0:16724)
  --max-frame BYTES  largest request body accepted (default 65536)

Port 0 lets the OS choose. Prints 'listening on tcp://IP:PORT' and
'listening on udp://IP:PORT' once bound. Log level: AT_LOG=debug|info|warning.
"""

CALL_HELP = """\
usage: at_rpc.py call [--server HOST[:PORT]] [--udp] [--timeout SECS] [--retries N]
                      [--json] FUNC [ARG ...]

Calls FUNC(ARG, ...) and prints the result as JSON.

  --server HOST[:PORT]  the server (default 127.0.0.1:16724)
  --udp                 call over UDP (default TCP)
  --timeout SECS        bound of the whole call (default 5)
  --retries N           UDP retransmissions (default 4)
  --json                print the whole reply body
  --                    everything after it is FUNC and ARGs

Each ARG is read as JSON if it is (10, 2.5, true, "x", [1, 2]), else taken
as a string. Exit status: 0 result, 1 error reply, 2 usage, 3 transport.
"""


class UsageError(Exception):
    pass


def parse_listen(text: str) -> tuple[str, int] | None:
    """IP:PORT ([IPv6]:PORT) or none."""
    if text.lower() == "none":
        return None
    bad = UsageError(f"{text!r} is not IP:PORT or none")
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise bad
    else:
        host, sep, port = text.rpartition(":")
        if not sep:
            raise bad
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise bad from None
    if text.startswith("[") != (ip.version == 6):
        raise bad
    if not port.isdigit() or not port.isascii() or int(port) > 65535:
        raise bad
    return str(ip), int(port)


def split_host_port(text: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """HOST[:PORT]: 127.0.0.1, box:80, [::1]:80, ::1."""
    bad = UsageError(f"{text!r} is not HOST[:PORT]")

    def port_of(p: str) -> int:
        if not (p.isascii() and p.isdigit()) or int(p) > 65535:
            raise bad
        return int(p)

    try:
        return str(ipaddress.ip_address(text)), default_port
    except ValueError:
        pass
    if text.startswith("["):
        host, sep, after = text[1:].partition("]")
        if not sep or not host:
            raise bad
        if not after:
            return host, default_port
        if not after.startswith(":"):
            raise bad
        return host, port_of(after[1:])
    host, sep, port = text.rpartition(":")
    if not sep:
        if not text:
            raise bad
        return text, default_port
    if not host or ":" in host:
        raise bad
    return host, port_of(port)


def cli_arg(text: str) -> Any:
    """A command-line argument: JSON if it is JSON, else a string."""
    try:
        return parse_value(text)
    except BodyError:
        return text


def _setup_logging(default: str) -> None:
    level = os.environ.get("AT_LOG", default).upper()
    logging.basicConfig(level=getattr(logging, level, logging.INFO), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _take_value(argv: list, i: int, name: str) -> tuple[str, int]:
    token = argv[i]
    if "=" in token:
        return token.split("=", 1)[1], i + 1
    if i + 1 >= len(argv):
        raise UsageError(f"{name} needs a value")
    return argv[i + 1], i + 2


def _looks_like_number(token: str) -> bool:
    try:
        return _is_number(parse_value(token))
    except BodyError:
        return False


def serve_main(argv: list) -> int:
    opts = {"--tcp": f"0.0.0.0:{DEFAULT_PORT}", "--udp": f"0.0.0.0:{DEFAULT_PORT}",
            "--max-frame": str(MAX_BODY)}
    i = 0
    while i < len(argv):
        token = argv[i]
        name = token.split("=", 1)[0]
        if token in ("-h", "--help"):
            sys.stdout.write(SERVE_HELP)
            return 0
        if name in opts:
            opts[name], i = _take_value(argv, i, name)
        else:
            raise UsageError(f"unexpected argument {token!r}")
    tcp = parse_listen(opts["--tcp"])
    udp = parse_listen(opts["--udp"])
    text = opts["--max-frame"]
    if not (text.isascii() and text.isdigit()) or int(text) > 0xFFFFFFFF:
        raise UsageError(f"--max-frame: {text!r} is not a number of bytes")
    if tcp is None and udp is None:
        raise UsageError("nothing to serve: both --tcp and --udp are none")
    _setup_logging("info")
    server = Server(tcp=tcp, udp=udp, max_frame=int(text))
    stop = threading.Event()

    def on_signal(signum, _frame):
        log.info("shutting down (%s)", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        server.start()
    except OSError as e:
        print(f"at_rpc: cannot listen: {e}", file=sys.stderr)
        return 1
    if server.tcp_address is not None:
        print(f"listening on tcp://{_format_addr(server.tcp_address)}")
    if server.udp_address is not None:
        print(f"listening on udp://{_format_addr(server.udp_address)}")
    sys.stdout.flush()
    while not stop.wait(1.0):
        pass
    server.shutdown()
    return 0


def call_main(argv: list) -> int:
    server = f"127.0.0.1:{DEFAULT_PORT}"
    udp = as_json = False
    timeout, retries = 5.0, 4
    positional: list = []
    i = 0
    while i < len(argv):
        token = argv[i]
        name = token.split("=", 1)[0]
        if token == "--":
            positional.extend(argv[i + 1:])
            break
        if positional:
            # After FUNC every word is an ARG (as with clap's trailing
            # values): `call echo 1 --json` passes "--json"; only a `--`
            # right after FUNC is taken as the separator.
            rest = argv[i:]
            if len(positional) == 1 and rest[:1] == ["--"]:
                rest = rest[1:]
            positional.extend(rest)
            break
        if token in ("-h", "--help"):
            sys.stdout.write(CALL_HELP)
            return 0
        if token == "--udp":
            udp, i = True, i + 1
        elif token == "--json":
            as_json, i = True, i + 1
        elif name == "--server":
            server, i = _take_value(argv, i, name)
        elif name == "--timeout":
            value, i = _take_value(argv, i, name)
            try:
                timeout = float(value)
            except ValueError:
                raise UsageError(f"--timeout: {value!r} is not a number of seconds") from None
            if not (math.isfinite(timeout) and timeout > 0):
                raise UsageError("--timeout must be a positive number of seconds")
        elif name == "--retries":
            value, i = _take_value(argv, i, name)
            if not (value.isascii() and value.isdigit()):
                raise UsageError(f"--retries: {value!r} is not a count")
            retries = int(value)
        elif token.startswith("-") and len(token) > 1 and not _looks_like_number(token):
            raise UsageError(f"unexpected argument {token!r} (to pass it as FUNC, use '-- {token}')")
        else:
            positional.append(token)
            i += 1
    if not positional:
        raise UsageError("FUNC is missing")
    host, port = split_host_port(server)
    func, args = positional[0], [cli_arg(a) for a in positional[1:]]
    _setup_logging("warning")
    where = _format_addr((host, port))
    try:
        with Client(host, port, udp=udp, timeout=timeout, retries=retries) as client:
            result, body = client.call_raw(func, *args)
    except RemoteError as e:
        if as_json:
            body = e.body if e.body is not None else error_body(e.code, e.message)
            print(body.decode("utf-8", "replace"))
        print(f"error: {e.code}: {e.message}", file=sys.stderr)
        return 1
    except TimeoutError as e:
        print(f"transport error: {where}: {e}", file=sys.stderr)
        return 3
    except ProtocolError as e:
        print(f"transport error: {where}: protocol error: {e}", file=sys.stderr)
        return 3
    except OSError as e:  # refused, reset, unreachable, name resolution
        print(f"transport error: {where}: i/o error: {e.strerror or e}", file=sys.stderr)
        return 3
    print(body.decode("utf-8") if as_json else encode_value(result, any_int=True))
    return 0


def main(argv: list | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        (sys.stdout if argv else sys.stderr).write(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    try:
        if command == "serve":
            return serve_main(rest)
        if command == "call":
            return call_main(rest)
        raise UsageError(f"unknown command {command!r}")
    except UsageError as e:
        sys.stderr.write(f"error: {e}\n\n{USAGE}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
