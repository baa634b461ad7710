#!/usr/bin/env python3
"""AT remote calls in Python: the protocol, a threaded TCP+UDP server, a
client and the command line, in one module (Python 3.11, standard library
only).

The wire contract is AT-PROTOCOL.md (version 1); docs/PROTOCOL.md records
this project's decisions where the contract is silent. Bodies are written in
exactly the canonical form the Rust side writes, so replies match the shared
test vectors (tests/vectors/frames.json) byte for byte.

    python3 at_rpc.py serve [--tcp ADDR] [--udp ADDR] [--max-frame BYTES] [--name NAME]
                            [--key KID:HEX ...] [--key-file PATH ...]
    python3 at_rpc.py call [--server HOST[:PORT]] [--udp] [--timeout SECS]
                           [--retries N] [--json] [--key KID:HEX | --key-file PATH]
                           FUNC [ARG ...]
    python3 at_rpc.py ping|info|list [--server HOST[:PORT]] [--udp] ...
    python3 at_rpc.py discover [--timeout SECS] [--interface IF] [--ipv4 | --ipv6] ...

(`pip install peers/python` installs this module and the same command line as
`at-rpc`.)

As a library:

    server = Server(tcp=("127.0.0.1", 0), udp=("127.0.0.1", 0)).start()

    def hello(name: str) -> str:        # rpc.functions: hello(string) -> string
        '''Greets someone.'''
        return "hello, " + name

    server.register("hello", hello)
    with Client("127.0.0.1", server.tcp_address[1]) as client:
        client.call("add", 10, 20)          # 30
        client.functions()                  # [{"name": "add", ...}, ..., {"name": "hello", ...}]
    server.shutdown()
    discover()                              # [Discovered(address, name, server, auth), ...]

Every server answers rpc.ping, rpc.info and rpc.functions (contract section
7) and discovery (section 8).

With pre-shared keys (contract section 9), Server(..., keys={kid: key})
requires authentication and Client(..., key=(kid, key)) provides it; keys are
32 bytes.
"""

from __future__ import annotations

import collections
import hashlib
import heapq
import hmac
import inspect
import ipaddress
import json
import json.decoder
import json.scanner
import logging
import math
import os
import random
import re
import secrets
import select
import signal
import socket
import statistics
import struct
import sys
import threading
import time
import typing
import zlib
from typing import Any, Callable, Iterator, NamedTuple

__version__ = "0.2.0"

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
AUTH = 0x0008  # the frame is authenticated (section 9); not a type bit
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
    "unauthorized",
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
# Authentication primitives (contract section 9)
#
# HKDF-SHA-256 (RFC 5869) derives a session's two keys from the pre-shared
# key and both nonces; HMAC-SHA-256 makes the hello proof and the frame tags.
# Inputs are raw bytes, labels ASCII without a terminator. Tags and proofs
# are compared with hmac.compare_digest. Nothing here logs or formats a key.

KEY_LEN = 32
NONCE_LEN = 16
SID_LEN = 8
TAG_LEN = 16
AUTH_TRAILER = SID_LEN + TAG_LEN  # SID and tag after the body: 24 bytes
HEADER12 = struct.Struct(">HHII")  # what a tag covers: magic, flags, seq, length
HELLO = "rpc.hello"
# Plain requests a server that requires authentication still answers.
PLAIN_FUNCS = frozenset((HELLO, "rpc.ping", "rpc.info"))
_KID = re.compile(r"[A-Za-z0-9._-]{1,32}")
_LOWER_HEX = {n: re.compile("[0-9a-f]{%d}" % n) for n in (16, 32)}
_ANY_HEX = re.compile(r"[0-9a-fA-F]*")


class KeyFormatError(ValueError):
    """A malformed key, key id or key file. The message says what is wrong
    and never contains key material."""


class AuthError(ProtocolError):
    """A reply that failed authentication: a bad hello (values, proof) or
    a reply to an authenticated request with a bad tag or without AUTH."""


class BadProof(AuthError):
    """A hello reply over TCP whose proof does not verify: the server does
    not hold the client's key (or is not who it claims). The command line
    reports it as `error: unauthorized: ...`, exit 1, as at-host does."""


def valid_kid(kid: Any) -> bool:
    """A key id: 1 to 32 ASCII letters, digits, '.', '_' or '-'."""
    return isinstance(kid, str) and _KID.fullmatch(kid) is not None


def is_lower_hex(text: Any, digits: int) -> bool:
    """True for exactly `digits` characters of [0-9a-f] (16 or 32)."""
    return isinstance(text, str) and _LOWER_HEX[digits].fullmatch(text) is not None


def hkdf_extract(salt: bytes, ikm: bytes) -> bytes:
    """HKDF-Extract (RFC 5869) with SHA-256: the 32-byte PRK."""
    return hmac.new(salt, ikm, hashlib.sha256).digest()


def hkdf_expand(prk: bytes, info: bytes, length: int = 32) -> bytes:
    """HKDF-Expand (RFC 5869) with SHA-256: `length` bytes of T(1) || T(2)..."""
    if not 0 <= length <= 255 * 32:
        raise ValueError("HKDF-Expand gives at most 8160 bytes")
    out, block, counter = b"", b"", 0
    while len(out) < length:
        counter += 1
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
    return out[:length]


def derive_keys(key: bytes, kid: str, nc: bytes, ns: bytes) -> tuple[bytes, bytes]:
    """(K_req, K_rep) of a session: HKDF with salt Nc || Ns over the key,
    info "AT1 request" || kid and "AT1 reply" || kid."""
    prk = hkdf_extract(bytes(nc) + bytes(ns), bytes(key))
    label = kid.encode("ascii")
    return hkdf_expand(prk, b"AT1 request" + label), hkdf_expand(prk, b"AT1 reply" + label)


def hello_proof(k_rep: bytes, sid: bytes) -> bytes:
    """P: the first 16 bytes of HMAC-SHA-256(K_rep, "AT1 hello" || SID)."""
    return hmac.new(k_rep, b"AT1 hello" + bytes(sid), hashlib.sha256).digest()[:TAG_LEN]


def frame_tag(key: bytes, header12: bytes, body: bytes, sid: bytes) -> bytes:
    """The first 16 bytes of HMAC-SHA-256(key, H || body || SID), H being the
    header's first 12 bytes as sent or received."""
    mac = hmac.new(key, bytes(header12), hashlib.sha256)
    mac.update(body)
    mac.update(sid)
    return mac.digest()[:TAG_LEN]


def pack_auth_frame(flags: int, seq: int, body: bytes | str, sid: bytes, key: bytes) -> bytes:
    """An authenticated frame: flags with AUTH, then body || SID || tag
    (tag under `key`); length counts all three and the CRC covers them."""
    if isinstance(body, str):
        body = body.encode("utf-8")
    if len(sid) != SID_LEN:
        raise ValueError("a session id is 8 bytes")
    body = bytes(body)
    header12 = HEADER12.pack(MAGIC, flags | AUTH, seq, len(body) + AUTH_TRAILER)
    payload = body + bytes(sid) + frame_tag(key, header12, body, sid)
    return header12 + struct.pack(">I", checksum(payload)) + payload


class AuthFrame(NamedTuple):
    """A received AUTH frame taken apart: the 12 header bytes its tag
    covers, the body proper, the session id and the tag."""

    header: bytes
    body: bytes
    sid: bytes
    tag: bytes


def split_auth(frame: Frame) -> AuthFrame | None:
    """The parts of a checked frame with AUTH, or None when its length is
    under 24. H is the received header's first 12 bytes: magic, flags (every
    bit as received), seq and length re-packed from the exact integers read,
    which gives back the same bytes."""
    data = frame.body
    if len(data) < AUTH_TRAILER:
        return None
    header = HEADER12.pack(MAGIC, frame.flags, frame.seq, len(data))
    cut = len(data) - AUTH_TRAILER
    return AuthFrame(header, data[:cut], data[cut:cut + SID_LEN], data[cut + SID_LEN:])


def tag_ok(key: bytes, parts: AuthFrame) -> bool:
    """Whether the frame's tag verifies under `key` (constant time)."""
    return hmac.compare_digest(frame_tag(key, parts.header, parts.body, parts.sid), parts.tag)


def parse_key_hex(text: str) -> bytes:
    """64 hex digits (either case) -> 32 bytes; raises KeyFormatError."""
    if len(text) != 2 * KEY_LEN:
        raise KeyFormatError(f"a key is {2 * KEY_LEN} hex digits, this one has {len(text)} characters")
    if not text.isascii() or not _ANY_HEX.fullmatch(text):
        raise KeyFormatError("a key is hex digits only, this one has other characters")
    return bytes.fromhex(text)


def parse_key(text: str) -> tuple[str, bytes]:
    """`KID:HEX` -> (kid, 32-byte key); raises KeyFormatError (without
    quoting the text, which may be a key typed in the wrong place)."""
    kid, sep, hex_text = text.strip().partition(":")
    if not sep:
        raise KeyFormatError("a key is written KID:HEX, and there is no ':'")
    if not valid_kid(kid):
        raise KeyFormatError("the key id (before ':') must be 1 to 32 of A-Z a-z 0-9 . _ -")
    return kid, parse_key_hex(hex_text)


def load_key_file(path: str) -> list[tuple[str, bytes]]:
    """The (kid, key) pairs of a key file, in file order: lines `KID HEX`,
    blank lines and lines starting with '#' skipped. Refuses a file that
    group or others may access (mode & 0o077), a key id given twice and a
    file without keys. Raises KeyFormatError naming the file and line."""
    try:
        with open(path, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            if os.name == "posix" and mode & 0o077:
                raise KeyFormatError(f"{path}: group or others have access (mode "
                                     f"{mode & 0o777:04o}); a key file must be private "
                                     f"(chmod 600 {path})")
            data = f.read(1 << 20)
    except OSError as e:
        raise KeyFormatError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise KeyFormatError(f"{path}: not ASCII text") from None
    keys: list[tuple[str, bytes]] = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) != 2:
            raise KeyFormatError(f"{path}:{number}: expected 'KID HEX' (two fields)")
        kid, hex_text = fields
        if not valid_kid(kid):
            raise KeyFormatError(f"{path}:{number}: the key id must be 1 to 32 of "
                                 f"A-Z a-z 0-9 . _ -")
        try:
            key = parse_key_hex(hex_text)
        except KeyFormatError as e:
            raise KeyFormatError(f"{path}:{number}: {e}") from None
        if any(kid == k for k, _ in keys):
            raise KeyFormatError(f"{path}:{number}: key id {kid!r} appears twice")
        keys.append((kid, key))
    if not keys:
        raise KeyFormatError(f"{path}: no keys in it")
    return keys


def check_key(kid: Any, key: Any) -> tuple[str, bytes]:
    """A (kid, key) pair for a Server or Client, checked; raises
    KeyFormatError (never quoting the key)."""
    if not valid_kid(kid):
        raise KeyFormatError("a key id must be a string of 1 to 32 of A-Z a-z 0-9 . _ -")
    if not isinstance(key, (bytes, bytearray)) or len(key) != KEY_LEN:
        raise KeyFormatError(f"the key for key id {kid!r} must be {KEY_LEN} bytes")
    return kid, bytes(key)


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
# Function signatures (rpc.functions, contract section 7)

TYPES = ("integer", "double", "number", "string", "bool", "null", "array", "object", "any")

_ANNOTATION_TYPES: dict[Any, str] = {
    int: "integer", float: "number", str: "string", bool: "bool", type(None): "null",
    list: "array", dict: "object",
}
# Annotations left as text (a module with `from __future__ import annotations`
# whose names cannot be resolved): the base name before any "[...]".
_ANNOTATION_NAMES = {
    "int": "integer", "float": "number", "str": "string", "bool": "bool", "None": "null",
    "NoneType": "null", "list": "array", "dict": "object", "List": "array", "Dict": "object",
    "typing.List": "array", "typing.Dict": "object",
}


class Signature(NamedTuple):
    """What rpc.functions says of a function: the type of each positional
    argument, the result's type (both from TYPES) and one line of doc."""

    params: tuple[str, ...]
    result: str
    doc: str = ""


def signature(params: list[str] | tuple[str, ...], result: str,
              doc: str = "") -> Callable[[Callable], Callable]:
    """A decorator giving a function an explicit signature for rpc.functions
    (types from TYPES), instead of one read from its annotations:

        @signature(["number", "number"], "double", "a / b")
        def div(*args): ...
    """
    sig = Signature(tuple(params), result, doc.strip().splitlines()[0] if doc.strip() else "")
    for t in (*sig.params, sig.result):
        if t not in TYPES:
            raise ValueError(f"{t!r} is not one of {', '.join(TYPES)}")

    def attach(fn: Callable) -> Callable:
        fn.__at_signature__ = sig
        return fn

    return attach


def annotation_type(annotation: Any) -> str:
    """The protocol type of a Python annotation: int "integer", float
    "number", str "string", bool "bool", None "null", list "array", dict
    "object" (also list[...] and dict[...]); anything else "any"."""
    if annotation is None:
        return "null"
    if isinstance(annotation, str):
        return _ANNOTATION_NAMES.get(annotation.split("[", 1)[0].strip(), "any")
    origin = typing.get_origin(annotation)
    if origin in (list, dict):
        return _ANNOTATION_TYPES[origin]
    try:
        return _ANNOTATION_TYPES.get(annotation, "any")
    except TypeError:  # an unhashable annotation
        return "any"


def _first_line(doc: str | None) -> str:
    for line in (doc or "").splitlines():
        if line.strip():
            return line.strip()
    return ""


def describe_function(fn: Callable) -> Signature | None:
    """The signature rpc.functions lists for `fn`: the one given with
    @signature, else one from its annotations (parameters without one are
    "any", a missing return annotation is "any"), with the first non-empty
    line of its docstring. None (unknown) for a function without annotated
    parameters (without any annotation, when it takes no argument), one
    that takes *args, or one that cannot be inspected."""
    given = getattr(fn, "__at_signature__", None)
    if isinstance(given, Signature):
        return given
    try:
        try:
            sig = inspect.signature(fn, eval_str=True)
        except Exception:  # NameError and friends: names not resolvable
            sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    params = []
    for p in sig.parameters.values():
        if p.kind == p.VAR_POSITIONAL:
            return None
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            params.append(p.annotation)
    empty = inspect.Signature.empty
    annotated = any(a is not empty for a in params)
    if not annotated and (params or sig.return_annotation is empty):
        return None
    result = sig.return_annotation
    doc = fn.__doc__ if inspect.isfunction(fn) or inspect.ismethod(fn) else None
    return Signature(tuple("any" if a is empty else annotation_type(a) for a in params),
                     "any" if result is empty else annotation_type(result), _first_line(doc))


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


@signature(["number", "number"], "number", "a + b")
def calc_add(*args):
    """a + b: exact for two integers (in i64), else a double."""
    return _arithmetic(args, lambda a, b: a + b)


@signature(["number", "number"], "number", "a - b")
def calc_sub(*args):
    """a - b."""
    return _arithmetic(args, lambda a, b: a - b)


@signature(["number", "number"], "number", "a * b")
def calc_mul(*args):
    """a * b."""
    return _arithmetic(args, lambda a, b: a * b)


@signature(["number", "number"], "double", "a / b, always a double")
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


def respond(functions: dict, frame: Frame, max_body: int = MAX_BODY,
            info: ServerInfo | None = None) -> bytes | None:
    """The reply frame to one checked frame, or None for a frame that is
    itself a reply (servers answer requests only). rpc.info describes the
    server with `info` (default: this module, no name, auth off)."""
    if frame.kind != REQUEST:
        return None
    seq = frame.seq
    try:
        func, args = parse_request(frame.body)
    except BodyError as e:
        return error_frame(seq, e.code, e.message)
    kind, body = reply_body(functions, func, args, seq, max_body, info, frame.body)
    return pack_frame(kind, seq, body)


def reply_limit(max_body: int) -> int:
    """The largest reply body a server sends: max(max_body, 128)."""
    return max(max_body, 128)


def reply_body(functions: dict, func: str, args: list, seq: int,
               max_body: int = MAX_BODY, info: ServerInfo | None = None,
               request: bytes | None = None) -> tuple[int, bytes]:
    """call_function(), or answer_rpc() for a name beginning with "rpc."
    (`request`: the request body, which rpc.ping echoes from), with a reply
    body over reply_limit(max_body) bytes replaced by the error `internal`
    ("reply too large")."""
    if func.startswith("rpc."):
        if info is None:
            info = ServerInfo(SERVER_SOFTWARE, "", False, max_body)
        kind, body = answer_rpc(functions, info, func, args, request, reply_limit(max_body))
    else:
        kind, body = call_function(functions, func, args)
    if len(body) > reply_limit(max_body):
        log.error("reply to %r (seq %d) is %d bytes, over the limit of %d",
                  func, seq, len(body), max_body)
        kind, body = ERROR, error_body("internal", "reply too large")
    return kind, body


# --------------------------------------------------------------------------
# The protocol's own functions: rpc.ping, rpc.info, rpc.functions (section 7)

SERVER_SOFTWARE = f"at_rpc.py {__version__}"
# Room kept at the end of an rpc.functions page: `], "next": 4294967295}}`.
_PAGE_TAIL = len('], "next": 4294967295}}')
_PAGE_HEAD = '{"status": "success", "result": {"functions": ['
# A page never exceeds what a datagram carries, authenticated or not.
_PAGE_MAX = MAX_DATAGRAM - HEADER_LEN - AUTH_TRAILER


class ServerInfo(NamedTuple):
    """What rpc.info says of a server (besides its function count)."""

    server: str  # the implementation and its version
    name: str  # the name its operator chose
    auth_required: bool
    max_body: int  # the largest request body accepted


def is_reserved(name: str) -> bool:
    """Names beginning with "rpc." belong to the protocol."""
    return name.startswith("rpc.")


def function_names(functions: dict) -> list[str]:
    """The functions rpc.info counts and rpc.functions lists, in order."""
    # list(dict) is one step under the GIL: safe while another thread registers.
    return [name for name in list(functions) if not is_reserved(name)]


def info_result(functions: dict, info: ServerInfo) -> dict[str, Any]:
    """The rpc.info result, members in the contract's order."""
    return {"protocol": 1, "server": info.server, "name": info.name,
            "auth": "required" if info.auth_required else "off",
            "max_body": info.max_body, "functions": len(function_names(functions))}


def function_entry(name: str, sig: Signature | None, doc: bool = True) -> str:
    """One rpc.functions entry as canonical JSON (its doc left empty when
    `doc` is false)."""
    if sig is None:
        return '{"name": ' + _string(name) + ', "params": null, "result": null, "doc": ""}'
    return ('{"name": ' + _string(name) + ', "params": ['
            + ", ".join(f'"{t}"' for t in sig.params) + '], "result": "' + sig.result
            + '", "doc": ' + _string(sig.doc if doc else "") + "}")


def functions_page(functions: dict, start: int, limit: int) -> bytes | None:
    """The success body of rpc.functions from index `start`: the entries
    that fit in `limit` bytes of body (room kept for the largest `next`),
    at least one while any remain (without its doc if only so it fits); None
    when even that does not fit. As at-core writes it."""
    names = function_names(functions)
    room = min(limit, _PAGE_MAX) - _PAGE_TAIL
    size = len(_PAGE_HEAD)
    entries: list[str] = []
    following = None
    for index in range(start, len(names)):
        name = names[index]
        fn = functions.get(name)
        sig = describe_function(fn) if fn is not None else None
        entry = _utf8(function_entry(name, sig))
        if entries:
            if size + 2 + len(entry) > room:
                following = index
                break
            size += 2
        elif size + len(entry) > room:
            entry = _utf8(function_entry(name, sig, doc=False))
            if size + len(entry) > room:
                return None
        entries.append(entry.decode("utf-8"))
        size += len(entry)
    return _utf8(_PAGE_HEAD + ", ".join(entries) + '], "next": '
                 + ("null" if following is None else str(following)) + "}}")


def _raw_args(body: bytes) -> list[str]:
    """The source text of each argument of a request body (already checked
    by parse_request): rpc.ping gives back strings, arrays and objects
    exactly as they came, as at-core does."""
    reader = _open_object(body)
    raw: list[str] = []

    def member(key: str) -> None:
        if key != "args" or reader.peek() != "[":
            reader.value()
            return
        raw.clear()
        reader.expect("[")
        if reader.peek() == "]":
            reader.pos += 1
            return
        while True:
            reader.peek()
            start = reader.pos
            reader.value()
            raw.append(reader.text[start:reader.pos])
            c = reader.peek()
            reader.pos += 1
            if c == "]":
                return
            if c != ",":
                raise _syntax()

    reader.object(member)
    return raw


def _echo(args: list, request: bytes | None) -> bytes:
    """rpc.ping's success body for one argument."""
    if request is not None:
        try:
            raw = _raw_args(request)
        except BodyError:
            raw = []
        if len(raw) == 1 and raw[0][:1] in ('"', "[", "{"):
            return _utf8('{"status": "success", "result": ' + raw[0] + "}")
    return success_body(args[0])


def answer_rpc(functions: dict, info: ServerInfo, func: str, args: list,
               request: bytes | None = None, limit: int = MAX_BODY) -> tuple[int, bytes]:
    """The reply (kind, body) to `func`, a name beginning with "rpc.";
    rpc.hello is the server's, not answered here. `limit`: the largest
    reply body (an rpc.functions page fills at most that much)."""

    def invalid(message: str) -> tuple[int, bytes]:
        return ERROR, error_body("invalid_arguments", message)

    if func == "rpc.ping":
        if len(args) > 1:
            return invalid("rpc.ping takes no argument or one")
        try:
            return RESPONSE, success_body(True) if not args else _echo(args, request)
        except EncodeError as e:
            return ERROR, error_body(e.code, e.message)
        except RecursionError:
            return ERROR, error_body("internal", "result has no JSON form")
    if func == "rpc.info":
        if args:
            return invalid("rpc.info takes no arguments")
        return RESPONSE, success_body(info_result(functions, info))
    if func == "rpc.functions":
        if args and not (len(args) == 1 and type(args[0]) is int and args[0] >= 0):
            return invalid("rpc.functions takes one optional integer start >= 0")
        try:
            page = functions_page(functions, args[0] if args else 0, limit)
        except EncodeError as e:  # a name or doc that is not UTF-8 (a lone surrogate)
            return ERROR, error_body(e.code, e.message)
        if page is None:
            return ERROR, error_body("internal", "reply buffer too small")
        return RESPONSE, page
    return ERROR, error_body("unknown_function", "unknown function")


def respond_to_error(error: FrameError) -> bytes | None:
    """The error frame answering a rejected frame (None: drop silently)."""
    if not error.answer:
        return None
    return error_frame(error.seq, error.code, error.message)


def respond_to_datagram(functions: dict, data: bytes, max_body: int = MAX_BODY,
                        info: ServerInfo | None = None) -> bytes | None:
    """The whole path for one datagram: check it, answer it (or None)."""
    try:
        frame = parse_datagram(data, max_body)
    except FrameError as e:
        return respond_to_error(e)
    return respond(functions, frame, max_body, info)


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


WINDOW = 64  # seqs a session's replay window covers
SESSION_LIFETIME = 600.0  # a session lives 10 minutes after its last verified request
SESSION_MIN_IDLE = 60.0  # a used session idle this long may give way to a new one
MAX_RESENDS = 4  # a remembered reply is sent again at most this often


class _Remembered:
    """A reply remembered under (SID, seq): who asked (the address and
    whether over UDP), the reply once made (None while the function runs),
    how often it was sent again and when it was made."""

    __slots__ = ("addr", "udp", "reply", "done", "resends", "stamp")

    def __init__(self, addr, udp: bool):
        self.addr = addr
        self.udp = udp
        self.reply: bytes | None = None
        self.done = threading.Event()
        self.resends = 0
        self.stamp = 0.0


class Session:
    """One authenticated session: its keys, when it was last used, its
    replay window (the highest accepted seq `top` and a bit mask of the 64
    seqs up to it) and its remembered replies by seq."""

    __slots__ = ("sid", "kid", "k_req", "k_rep", "last", "used", "top", "window", "replies")

    def __init__(self, sid: bytes, kid: str, k_req: bytes, k_rep: bytes, now: float):
        self.sid = sid
        self.kid = kid
        self.k_req = k_req
        self.k_rep = k_rep
        self.last = now  # creation, then the last verified request
        self.used = False  # carried a verified request
        self.top = 0
        self.window = 0  # bit i: seq top - i was accepted
        self.replies: collections.OrderedDict = collections.OrderedDict()

    def fresh(self, seq: int) -> bool:
        """seq was not accepted yet and is not older than the window."""
        if seq > self.top:
            return True
        offset = self.top - seq
        return offset < WINDOW and not (self.window >> offset) & 1

    def mark(self, seq: int) -> None:
        if seq > self.top:
            shift = seq - self.top
            self.window = ((self.window << shift) | 1) & ((1 << WINDOW) - 1) if shift < WINDOW else 1
            self.top = seq
        else:
            self.window |= 1 << (self.top - seq)


class SessionTable:
    """A server's sessions (contract section 9), safe to share between its
    threads: one lock makes each step atomic, whichever connection or
    transport a request came by.

    keys -- {kid: 32-byte key}
    capacity -- sessions held at once. A new session takes a free or
        expired slot, else that of the least recently used session that never
        carried a verified request, else that of the least recently used
        session idle for `min_idle` seconds; else the hello is answered busy.
    lifetime -- a session expires this long after its last verified request
        (or its creation, while unused)
    reply_age -- remembered replies are dropped this long after they were made
    clock, random_bytes -- for tests: the time and the source of nonces and
        session ids (secrets.token_bytes, a CSPRNG)
    """

    def __init__(self, keys: dict, capacity: int = 64, lifetime: float = SESSION_LIFETIME,
                 min_idle: float = SESSION_MIN_IDLE, reply_age: float = 60.0,
                 clock: Callable[[], float] = time.monotonic,
                 random_bytes: Callable[[int], bytes] = secrets.token_bytes):
        if capacity < 1:
            raise ValueError("a session table holds at least one session")
        self.keys = dict(check_key(kid, key) for kid, key in keys.items())
        self.capacity = capacity
        self.lifetime = lifetime
        self.min_idle = min_idle
        self.reply_age = reply_age
        self.clock = clock
        self.random_bytes = random_bytes
        self._sessions: dict[bytes, Session] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def _expired(self, session: Session, now: float) -> bool:
        return now - session.last >= self.lifetime

    def _make_room(self, now: float) -> bool:
        """Frees a slot if the policy allows; False when none may go."""
        for sid in [sid for sid, s in self._sessions.items() if self._expired(s, now)]:
            del self._sessions[sid]
        if len(self._sessions) < self.capacity:
            return True
        unused = [s for s in self._sessions.values() if not s.used]
        idle = [s for s in self._sessions.values() if s.used and now - s.last >= self.min_idle]
        victim = min(unused or idle, key=lambda s: s.last, default=None)
        if victim is None:
            return False
        log.debug("session %s of key id %r gives way to a new one (%s)", victim.sid.hex(),
                  victim.kid, "never used" if not victim.used else "idle")
        del self._sessions[victim.sid]
        return True

    def open(self, kid: str, nc: bytes) -> tuple[bytes, bytes, bytes]:
        """A new session for `kid` and the client's nonce: (SID, Ns, P).
        Raises RemoteError unauthorized (unknown kid) or busy (no slot)."""
        key = self.keys.get(kid)
        if key is None:
            raise RemoteError("unauthorized", "unknown key id")
        ns = self.random_bytes(NONCE_LEN)
        k_req, k_rep = derive_keys(key, kid, nc, ns)
        with self._lock:
            now = self.clock()
            if not self._make_room(now):
                raise RemoteError("busy", "no free session slot")
            while True:
                sid = self.random_bytes(SID_LEN)
                if sid not in self._sessions:
                    break
            self._sessions[sid] = Session(sid, kid, k_req, k_rep, now)
        return sid, ns, hello_proof(k_rep, sid)

    def get(self, sid: bytes) -> Session | None:
        """The live session `sid`, or None (never issued, expired, evicted)."""
        with self._lock:
            session = self._sessions.get(sid)
            if session is not None and self._expired(session, self.clock()):
                del self._sessions[sid]
                return None
            return session

    def admit(self, session: Session, seq: int, addr, udp: bool) -> tuple[str, Any]:
        """Steps 3 and 4 for a request whose tag verified, as one atomic step:
        ("run", entry) -- seq marked, call the function, then finish(entry)
        ("resend", reply) -- a remembered reply, for the original address
        ("pending", entry) -- the same seq is running: wait for entry.done
        ("gone", message) -- the session went meanwhile (step 1)
        ("refuse", message) -- not called, nothing to send again"""
        with self._lock:
            now = self.clock()
            if self._sessions.get(session.sid) is not session or self._expired(session, now):
                return "gone", "unknown session"
            if seq == 0:
                return "refuse", "seq 0 is never accepted"
            if session.fresh(seq):
                if session.top == MAX_SEQ:
                    return "refuse", "session used up (seq 0xffffffff was accepted)"
                session.mark(seq)
                session.used = True
                session.last = now
                entry = _Remembered(addr, udp)
                session.replies[seq] = entry
                while len(session.replies) > WINDOW:
                    session.replies.popitem(last=False)
                return "run", entry
            entry = session.replies.get(seq)
            if entry is not None and entry.reply is not None and now - entry.stamp >= self.reply_age:
                del session.replies[seq]
                entry = None
            if entry is None:
                return "refuse", "replayed"
            if entry.reply is None:
                return "pending", entry
            if not _same_origin(entry, addr, udp) or entry.resends >= MAX_RESENDS:
                return "refuse", "replayed"
            entry.resends += 1
            return "resend", entry.reply

    def finish(self, session: Session, entry: _Remembered, reply: bytes | None) -> None:
        """Remembers the reply to a request admit() let run (None: the call
        produced none) and wakes those waiting for it."""
        with self._lock:
            entry.reply = reply
            entry.stamp = self.clock()
            if reply is None:
                for seq, e in list(session.replies.items()):
                    if e is entry:
                        del session.replies[seq]
        entry.done.set()


def _same_origin(entry: _Remembered, addr, udp: bool) -> bool:
    """Whether a remembered reply may go to `addr`: the IP address must be
    the original request's; over UDP the port too (and the original must have
    come over UDP). A TCP peer's address cannot be forged, and a new
    connection gets a new port, so over TCP the port is not compared."""
    if addr is None or entry.addr is None or addr[0] != entry.addr[0]:
        return False
    if udp:
        return entry.udp and addr[1] == entry.addr[1]
    return True


# Linux's IP_PKTINFO (socket.py of Python 3.11 does not export it).
_IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8 if sys.platform.startswith("linux") else None)
_LIMITED_BROADCAST = ipaddress.IPv4Address("255.255.255.255")


def _enable_pktinfo(sock: socket.socket) -> bool:
    """Asks the OS to report each datagram's destination address, so that
    one sent to a broadcast or multicast address can be told apart; False
    where it cannot."""
    if not hasattr(sock, "recvmsg"):
        return False
    try:
        if sock.family == socket.AF_INET and _IP_PKTINFO is not None:
            sock.setsockopt(socket.IPPROTO_IP, _IP_PKTINFO, 1)
            return True
        if sock.family == socket.AF_INET6 and hasattr(socket, "IPV6_RECVPKTINFO"):
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
            return True
    except OSError:
        pass
    return False


def _to_group(ancdata) -> bool:
    """Whether the destination in IP_PKTINFO / IPV6_PKTINFO is the limited
    broadcast 255.255.255.255 or a multicast address. (A subnet's directed
    broadcast, 192.0.2.255, is not recognised: that needs the netmask.)"""
    for level, kind, data in ancdata:
        dest = None
        if level == socket.IPPROTO_IP and kind == _IP_PKTINFO and len(data) >= 12:
            dest = ipaddress.IPv4Address(data[8:12])
        elif (level == socket.IPPROTO_IPV6 and kind == getattr(socket, "IPV6_PKTINFO", None)
              and len(data) >= 16):
            dest = ipaddress.IPv6Address(data[:16])
            dest = dest.ipv4_mapped or dest
        if dest is not None:
            return dest.is_multicast or dest == _LIMITED_BROADCAST
    return False


def _receive_datagram(sock: socket.socket, size: int, pktinfo: bool) -> tuple[bytes, Any, bool]:
    """(data, sender, came by broadcast or multicast) of one datagram."""
    if not pktinfo:
        data, addr = sock.recvfrom(size)
        return data, addr, False
    data, ancdata, _, addr = sock.recvmsg(size, socket.CMSG_SPACE(64))
    return data, addr, _to_group(ancdata)


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
    keys -- {kid: 32-byte key}: require authentication (contract section 9).
        Then only rpc.hello, rpc.ping and rpc.info are answered without it.
    name -- the name rpc.info reports (default: the host name)
    max_sessions, session_lifetime, session_min_idle, auth_reply_age -- the
        session table's capacity and times (see SessionTable)

    start() binds and starts the threads; shutdown() stops them. A request
    with AUTH is checked as the contract's section 9 says (also when no keys
    are given: then no session exists and it is `unauthorized`).

    The protocol's functions rpc.ping, rpc.info and rpc.functions (section
    7) are always served. A UDP request that came to a broadcast or
    multicast address (discovery, section 8; told by IP_PKTINFO or
    IPV6_PKTINFO) is never answered with an error, and its reply goes out
    after a random 0 to 100 ms. Listening on "::" accepts IPv4 too
    (IPV6_V6ONLY off), so one socket serves both kinds of discovery.
    """

    def __init__(self, tcp: tuple[str, int] | None = ("0.0.0.0", DEFAULT_PORT),
                 udp: tuple[str, int] | None = ("0.0.0.0", DEFAULT_PORT), *,
                 max_frame: int = MAX_BODY, calculator: bool = True,
                 idle_timeout: float = 300.0, frame_timeout: float = 10.0,
                 max_connections: int = 1024, udp_cache_entries: int = 4096,
                 udp_cache_per_client: int = 256, udp_cache_age: float = 60.0,
                 keys: dict | None = None, max_sessions: int = 64,
                 session_lifetime: float = SESSION_LIFETIME,
                 session_min_idle: float = SESSION_MIN_IDLE, auth_reply_age: float = 60.0,
                 name: str | None = None):
        if not 0 <= max_frame <= 0xFFFFFFFF:
            raise ValueError("max_frame must fit in 32 bits")
        self.name = socket.gethostname() if name is None else name
        _utf8(self.name)  # raises for a name that has no UTF-8 form
        # With keys: the sessions; None: this server does not authenticate.
        self.sessions = SessionTable(keys, max_sessions, session_lifetime, session_min_idle,
                                     auth_reply_age) if keys else None
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
        self._delayed: _DelayedSends | None = None

    def register(self, name: str, fn: Callable) -> "Server":
        """Adds (or replaces) `fn` under `name`. fn(*args) returns the result
        or raises RemoteError(code, message); any other exception is answered
        with `internal`. Names beginning with "rpc." belong to the protocol
        (ValueError). rpc.functions lists functions in registration order
        (the calculator first), with the signature given by @signature or
        read from fn's annotations (see describe_function)."""
        if is_reserved(name):
            raise ValueError(f"{name!r}: names beginning with 'rpc.' belong to the protocol")
        if len(name.encode("utf-8")) > MAX_FUNC_NAME:
            raise ValueError(f"function names are at most {MAX_FUNC_NAME} bytes")
        self.functions[name] = fn
        return self

    def info(self) -> ServerInfo:
        """What rpc.info says of this server."""
        return ServerInfo(SERVER_SOFTWARE, self.name, self.sessions is not None, self.max_frame)

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
            self._delayed = _DelayedSends(self._udp_sock)
            self._spawn(self._delayed.run, "at-udp-delayed")
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
            if family == socket.AF_INET6 and ipaddress.ip_address(sockaddr[0]).is_unspecified:
                # "::" takes IPv4 too (IPv4 broadcasts and clients), whatever
                # the system's default (net.ipv6.bindv6only).
                try:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                except (OSError, AttributeError):
                    pass
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
        if self._delayed is not None:
            self._delayed.stop()
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
                self._spawn(self._connection, f"at-tcp-{_format_addr(peer)}", conn, peer[:2])

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
            reason = self._serve_connection(conn, peer)
        except Exception as e:  # never let one connection take the server down
            log.exception("connection from %s failed", name)
            reason = f"internal error: {e}"
            conn.close()
        finally:
            with self._lock:
                self._connections.discard(conn)
        log.info("connection from %s closed: %s", name, reason)

    def _serve_connection(self, conn: socket.socket, peer) -> str:
        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        reader = FrameReader(self.max_frame)
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
                    reply = self._answer(item, peer, udp=False)
                    if reply is not None:
                        replies.append(reply)
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

    def _answer(self, frame: Frame, peer, udp: bool, broadcast: bool = False) -> bytes | None:
        if log.isEnabledFor(logging.DEBUG):
            started = time.monotonic()
            reply = self.handle(frame, peer, udp, broadcast)
            outcome = ("no reply" if reply is None else "success"
                       if unpack_header(reply).flags & KIND_MASK == RESPONSE else "error")
            log.debug("call seq %d: %s in %.3f ms", frame.seq, outcome,
                      (time.monotonic() - started) * 1000)
            return reply
        return self.handle(frame, peer, udp, broadcast)

    # -- requests, plain and authenticated

    def handle(self, frame: Frame, peer=None, udp: bool = False,
               broadcast: bool = False) -> bytes | None:
        """The reply frame to one checked request frame (None: no reply).
        peer -- the client's (host, port); udp -- it came by UDP (else TCP);
        broadcast -- it came to a broadcast or multicast address."""
        if frame.kind != REQUEST:
            return None
        if frame.flags & AUTH:
            return self._authenticated(frame, peer, udp)
        seq = frame.seq
        try:
            func, args = parse_request(frame.body)
        except BodyError as e:
            return error_frame(seq, e.code, e.message)
        if func == HELLO:
            if broadcast:
                log.info("no answer to rpc.hello that came by broadcast or multicast")
                return None
            return self._hello(seq, args)
        if self.sessions is not None and func not in PLAIN_FUNCS:
            return error_frame(seq, "unauthorized", "authentication required")
        kind, body = reply_body(self.functions, func, args, seq, self.max_frame, self.info(),
                                frame.body)
        return pack_frame(kind, seq, body)

    def _hello(self, seq: int, args: list) -> bytes:
        """The handshake: arguments, key id, a new session; its reply."""
        if self.sessions is None:
            return error_frame(seq, "unauthorized", "this server does not authenticate")
        if len(args) != 2 or not all(isinstance(a, str) for a in args):
            return error_frame(seq, "invalid_arguments", "expected a key id and a nonce")
        kid, nonce = args
        if not valid_kid(kid):
            return error_frame(seq, "invalid_arguments",
                               "a key id is 1 to 32 of A-Z a-z 0-9 . _ -")
        if not is_lower_hex(nonce, 2 * NONCE_LEN):
            return error_frame(seq, "invalid_arguments",
                               "a nonce is 32 lowercase hex digits")
        try:
            sid, ns, proof = self.sessions.open(kid, bytes.fromhex(nonce))
        except RemoteError as e:
            log.warning("rpc.hello for key id %r: %s", kid, e)
            return error_frame(seq, e.code, e.message)
        log.info("session %s opened for key id %r", sid.hex(), kid)
        result = {"session": sid.hex(), "nonce": ns.hex(), "proof": proof.hex()}
        return pack_frame(RESPONSE, seq, success_body(result))

    def _authenticated(self, frame: Frame, peer, udp: bool) -> bytes | None:
        """Steps 1 to 4 of section 9 for a request with AUTH."""
        seq = frame.seq
        parts = split_auth(frame)
        if parts is None:
            return error_frame(seq, "unauthorized", "authenticated frame too short")
        session = self.sessions.get(parts.sid) if self.sessions is not None else None
        if session is None:
            log.info("seq %d for an unknown session", seq)
            return error_frame(seq, "unauthorized", "unknown session")

        def refuse(message: str) -> bytes | None:
            # On UDP dropped, so that forged datagrams cannot be reflected.
            log.warning("seq %d of session %s: %s%s", seq, session.sid.hex(), message,
                        " (dropped)" if udp else "")
            return None if udp else error_frame(seq, "unauthorized", message)

        if not tag_ok(session.k_req, parts):
            return refuse("bad tag")
        status, value = self.sessions.admit(session, seq, peer, udp)
        if status == "pending" and not udp:
            # The same request runs for another connection (a client that
            # lost its connection and sent it again): wait for its reply.
            value.done.wait(self.frame_timeout)
            status, value = self.sessions.admit(session, seq, peer, udp)
        if status == "resend":
            log.debug("seq %d of session %s: sending the remembered reply again",
                      seq, session.sid.hex())
            return value
        if status == "gone":
            return error_frame(seq, "unauthorized", value)
        if status != "run":
            return refuse("replayed (still running)" if status == "pending" else value)
        reply = None
        try:
            reply = self._authenticated_reply(session, seq, parts.body, udp)
        finally:
            self.sessions.finish(session, value, reply)
        return reply

    def _authenticated_reply(self, session: Session, seq: int, body: bytes, udp: bool) -> bytes:
        """Step 4: call the function; the reply carries AUTH and K_rep's tag."""
        try:
            func, args = parse_request(body)
        except BodyError as e:
            kind, reply = ERROR, error_body(e.code, e.message)
        else:
            if func == HELLO:
                kind, reply = ERROR, error_body("invalid_arguments",
                                                "rpc.hello is never authenticated")
            else:
                kind, reply = reply_body(self.functions, func, args, seq, self.max_frame,
                                         self.info(), body)
        frame = pack_auth_frame(kind, seq, reply, session.sid, session.k_rep)
        if udp and len(frame) > MAX_DATAGRAM:
            frame = pack_auth_frame(ERROR, seq, error_body("internal", "reply too large"),
                                    session.sid, session.k_rep)
        return frame

    # -- UDP

    def _udp_loop(self) -> None:
        sock = self._udp_sock
        size = max(MAX_BODY, self.max_frame) + HEADER_LEN + 1
        size = min(size, 1 << 20)
        pktinfo = _enable_pktinfo(sock)
        while not self._stopping.is_set():
            if _wait_readable(sock, self._wake_r, None) != "data":
                break
            try:
                data, addr, broadcast = _receive_datagram(sock, size, pktinfo)
            except OSError as e:  # e.g. ICMP errors reported on the socket
                log.debug("udp receive: %s", e)
                continue
            try:
                reply = self._udp_datagram(data, addr, broadcast)
            except Exception:
                log.exception("udp datagram from %s failed", _format_addr(addr))
                continue
            if reply is None:
                continue
            if len(reply) > MAX_DATAGRAM:
                if broadcast:
                    continue  # never an error to a broadcast
                reply = error_frame(unpack_header(reply).seq, "internal", "reply too large")
            if broadcast:
                # Many servers hear a broadcast: spread their replies out.
                self._delayed.add(random.uniform(0.0, BROADCAST_DELAY), reply, addr)
                continue
            try:
                sock.sendto(reply, addr)
            except OSError as e:
                log.warning("udp reply to %s: %s", _format_addr(addr), e)

    def _udp_datagram(self, data: bytes, addr, broadcast: bool = False) -> bytes | None:
        """The reply to one datagram (None: none). A request that came by
        broadcast or multicast is never answered with an error (contract
        section 8)."""
        reply = self._udp_reply(data, addr, broadcast)
        if broadcast and reply is not None and unpack_header(reply).flags & ERROR:
            log.debug("no error reply to a broadcast from %s", _format_addr(addr))
            return None
        return reply

    def _udp_reply(self, data: bytes, addr, broadcast: bool) -> bytes | None:
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
        key = addr[:2]
        if frame.flags & AUTH:
            # Authenticated requests have their own memory, by (SID, seq).
            return self._answer(frame, key, udp=True, broadcast=broadcast)
        length, crc = HEADER.unpack_from(data)[3:5]
        fingerprint = (frame.flags, length, crc)
        cached = self.cache.get(key, frame.seq, fingerprint)
        if cached is not None:
            log.debug("resending the reply to seq %d to %s (a retransmission)", frame.seq, client)
            return cached
        reply = self._answer(frame, key, udp=True, broadcast=broadcast)
        if reply is not None:
            self.cache.put(key, frame.seq, fingerprint, reply)
        return reply


BROADCAST_DELAY = 0.1  # a reply to a broadcast waits a random 0 to 100 ms
MAX_DELAYED = 1024  # replies waiting so at most; more are dropped


class _DelayedSends:
    """Sends datagrams later, from one thread: the replies to broadcasts,
    each after its own random delay, without holding up the UDP loop."""

    def __init__(self, sock: socket.socket, limit: int = MAX_DELAYED):
        self.sock = sock
        self.limit = limit
        self._heap: list = []
        self._count = 0  # ties in time keep their order
        self._stopped = False
        self._cond = threading.Condition()

    def add(self, delay: float, data: bytes, addr) -> None:
        with self._cond:
            if self._stopped:
                return
            if len(self._heap) >= self.limit:
                log.warning("too many delayed replies: dropping one to %s", _format_addr(addr))
                return
            self._count += 1
            heapq.heappush(self._heap, (time.monotonic() + delay, self._count, data, addr))
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._heap.clear()
            self._cond.notify_all()

    def run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._stopped:
                        return
                    if self._heap:
                        wait = self._heap[0][0] - time.monotonic()
                        if wait <= 0:
                            _, _, data, addr = heapq.heappop(self._heap)
                            break
                        self._cond.wait(wait)
                    else:
                        self._cond.wait()
            try:
                self.sock.sendto(data, addr)
            except OSError as e:
                log.warning("udp reply to %s: %s", _format_addr(addr), e)


# --------------------------------------------------------------------------
# The client


_CLOSING_CODE = re.compile(rb'"code"\s*:\s*"(?:frame_too_large|bad_frame|busy)"')
CLIENT_SESSION_IDLE = 300.0  # a client opens a new session after 5 idle minutes


class _ClientSession:
    """A client's session: its id and keys, the last seq it used and when
    it was last used (time.monotonic)."""

    __slots__ = ("sid", "k_req", "k_rep", "seq", "last")

    def __init__(self, sid: bytes, k_req: bytes, k_rep: bytes):
        self.sid = sid
        self.k_req = k_req
        self.k_rep = k_rep
        self.seq = 0
        self.last = time.monotonic()


def _check_entry(entry: Any, start: int) -> dict[str, Any]:
    """An rpc.functions entry, checked: name a string, params null or a
    list of strings, result null or a string, doc a string ("" if missing)."""
    if isinstance(entry, dict):
        params, result, doc = entry.get("params"), entry.get("result"), entry.get("doc", "")
        if (isinstance(entry.get("name"), str) and isinstance(doc, str)
                and (result is None or isinstance(result, str))
                and (params is None or (isinstance(params, list)
                                        and all(isinstance(p, str) for p in params)))):
            return {"name": entry["name"], "params": params, "result": result, "doc": doc}
    raise ProtocolError(f"malformed rpc.functions entry (page from {start})")


def _plain_error(frame: Frame) -> tuple[str, str]:
    """(code, message) of a plain error reply; ("", "") for anything else."""
    if frame.kind != ERROR:
        return "", ""
    try:
        ok, _, code, message = parse_reply(frame.body)
    except BodyError:
        return "", ""
    return ("", "") if ok else (code, message)


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

    key=(kid, 32-byte key) authenticates every call (contract section 9):
    the first call opens a session with rpc.hello (and checks the server's
    proof), every request carries AUTH and every reply's tag is checked. A
    reply that fails the check fails the call over TCP (AuthError, a
    ProtocolError) and counts as not received over UDP. A plain
    `unauthorized` fails the call with RemoteError("unauthorized") and the
    next call opens a new session; the call is never sent again in a new
    session. A new session is also opened after 5 idle minutes and before
    the seq would pass 0xFFFFFFFF. If the TCP connection breaks during an
    authenticated call, the same frame is sent once more on a new
    connection: the server runs it at most once and answers from memory.
    One seq counter serves plain and authenticated requests, so a session's
    seqs increase from the one after its hello.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = DEFAULT_PORT, udp: bool = False,
                 timeout: float = 5.0, retries: int = 4, max_frame: int = MAX_BODY,
                 key: tuple[str, bytes] | None = None):
        self.host = host
        self.port = port
        self.udp = udp
        self.timeout = timeout
        self.retries = max(0, retries)
        self.max_frame = max_frame
        self.key = check_key(*key) if key is not None else None
        # Replies to authenticated requests carry 24 bytes more than their body.
        self._reply_limit = max_frame + (AUTH_TRAILER if key is not None else 0)
        self._session: _ClientSession | None = None
        self._random = secrets.token_bytes  # the source of nonces (tests replace it)
        self._ignored: str | None = None  # why the last UDP reply was not accepted
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

    def connect(self) -> "Client":
        """Opens the TCP connection (or the UDP socket) now rather than at
        the first call, within `timeout`; raises OSError or TimeoutError.
        A call after a failure connects again by itself."""
        with self._lock:
            if self._sock is None:
                if self.udp:
                    self._open_udp()
                else:
                    try:
                        self._open_tcp(time.monotonic() + self.timeout)
                    except socket.timeout:
                        self.close()
                        raise TimeoutError(f"timed out after {self.timeout:g} s") from None
        return self

    def ping(self, value: Any = None) -> Any:
        """rpc.ping: without `value` the result is True, else `value`."""
        return self.call("rpc.ping") if value is None else self.call("rpc.ping", value)

    def info(self) -> dict[str, Any]:
        """rpc.info: the server's description (members in its order)."""
        result = self.call("rpc.info")
        if not isinstance(result, dict):
            raise ProtocolError("the rpc.info result is not an object")
        return result

    def functions(self, max_pages: int = 10000) -> list[dict[str, Any]]:
        """rpc.functions from start 0, following `next` until null: every
        entry ({"name", "params", "result", "doc"}), checked. Raises
        ProtocolError for a malformed page, a `next` that does not move on
        or more than `max_pages` pages."""
        entries: list[dict[str, Any]] = []
        start = 0
        for _ in range(max_pages):
            page = self.call("rpc.functions", start) if start else self.call("rpc.functions")
            following = page.get("next") if isinstance(page, dict) else None
            if (not isinstance(page, dict) or not isinstance(page.get("functions"), list)
                    or "next" not in page or (following is not None and (
                        type(following) is not int or following <= start))):
                raise ProtocolError(f"malformed rpc.functions page (start {start})")
            for entry in page["functions"]:
                entries.append(_check_entry(entry, start))
            if following is None:
                return entries
            start = following
        raise ProtocolError(f"rpc.functions: more than {max_pages} pages")

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
        trailer = AUTH_TRAILER if self.key is not None else 0
        if len(body) + trailer > self.max_frame:
            raise ProtocolError(f"request cannot be encoded: body of {len(body)} bytes "
                                f"is over the limit of {self.max_frame - trailer}")
        with self._lock:
            if self.key is not None:
                reply = self._call_authenticated(body)
            else:
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

    # -- authentication (section 9)

    def _call_authenticated(self, body: bytes) -> Frame:
        """One authenticated call (opening a session first if need be); the
        reply as a Frame whose body is the reply's body proper."""
        deadline = time.monotonic() + self.timeout
        session = self._session
        if (session is None or session.seq == MAX_SEQ
                or time.monotonic() - session.last >= CLIENT_SESSION_IDLE):
            self._session = None
            session = self._session = self._handshake(deadline)
        seq = self._next_seq()
        session.seq = seq
        session.last = time.monotonic()
        frame = pack_auth_frame(REQUEST, seq, body, session.sid, session.k_req)
        if self.udp:
            reply = self._call_udp(seq, frame, deadline,
                                   check=lambda f: self._check_reply(session, f, True))
        else:
            reply = self._check_reply(session, self._call_tcp(seq, frame, deadline, resend=True),
                                      False)
        session.last = time.monotonic()
        return reply

    def _check_reply(self, session: "_ClientSession", frame: Frame, udp: bool) -> Frame | None:
        """The reply to an authenticated request, checked: a Frame with the
        body proper; None over UDP for one that counts as not received.
        Raises RemoteError for a plain `unauthorized` (and forgets the
        session), ProtocolError for other failures."""
        if not frame.flags & AUTH:
            code, message = _plain_error(frame)
            if code == "unauthorized":
                self._session = None  # later calls open a new session
                raise RemoteError("unauthorized", message, frame.body)
            if code in ("busy", "frame_too_large") or (
                    not udp and code in ("checksum_mismatch", "bad_frame")):
                self._fail(udp)
                raise ProtocolError(f"the server answered {code} (unauthenticated): {message}")
            if udp:
                return self._ignore(f"a reply without AUTH to seq {frame.seq}")
            self._fail(udp)
            raise AuthError("a reply without AUTH to an authenticated request")
        parts = split_auth(frame)
        if (parts is None or not hmac.compare_digest(parts.sid, session.sid)
                or not tag_ok(session.k_rep, parts)):
            if udp:
                return self._ignore(f"a reply to seq {frame.seq} whose tag does not verify")
            self._fail(udp)
            raise AuthError("a reply whose tag does not verify")
        return Frame(frame.flags, frame.seq, parts.body)

    def _ignore(self, why: str) -> None:
        """A UDP reply that counts as not received; a timeout will say why."""
        log.debug("ignoring %s", why)
        self._ignored = why

    def _fail(self, udp: bool) -> None:
        """After a failed TCP reply the stream is not to be trusted: close."""
        if not udp:
            self.close()

    def _handshake(self, deadline: float) -> "_ClientSession":
        """rpc.hello: a new session, its proof checked."""
        kid, key = self.key
        nc = self._random(NONCE_LEN)
        seq = self._next_seq()
        frame = pack_frame(REQUEST, seq, request_body(HELLO, [kid, nc.hex()]))
        if self.udp:
            return self._call_udp(seq, frame, deadline,
                                  check=lambda f: self._check_hello(f, nc, True))
        return self._check_hello(self._call_tcp(seq, frame, deadline), nc, False)

    def _check_hello(self, frame: Frame, nc: bytes, udp: bool) -> "_ClientSession | None":
        """The session of a hello reply; None over UDP for a reply that
        counts as not received. Raises RemoteError for an error reply,
        AuthError for a bad reply over TCP."""
        kid, key = self.key

        def bad(why: str) -> None:
            if udp:
                return self._ignore(f"bad rpc.hello reply: {why}")
            self._fail(udp)
            raise AuthError(f"bad rpc.hello reply: {why}")

        if frame.flags & AUTH:
            return bad("it carries AUTH")
        try:
            ok, result, code, message = parse_reply(frame.body)
        except BodyError as e:
            return bad(e.message)
        if ok != (frame.kind == RESPONSE):
            return bad("its flags and its body disagree")
        if not ok:
            if code == "unauthorized":
                raise RemoteError(code, f"the server refused key id {kid!r}: {message}",
                                  frame.body)
            raise RemoteError(code, f"rpc.hello: {message}", frame.body)
        if not isinstance(result, dict) or not (
                is_lower_hex(result.get("session"), 2 * SID_LEN)
                and is_lower_hex(result.get("nonce"), 2 * NONCE_LEN)
                and is_lower_hex(result.get("proof"), 2 * TAG_LEN)):
            return bad("session, nonce or proof missing or not lowercase hex of the right length")
        sid, ns = bytes.fromhex(result["session"]), bytes.fromhex(result["nonce"])
        k_req, k_rep = derive_keys(key, kid, nc, ns)
        if not hmac.compare_digest(hello_proof(k_rep, sid), bytes.fromhex(result["proof"])):
            if udp:
                return self._ignore("bad rpc.hello reply: the proof does not verify (another key?)")
            self._fail(udp)
            raise BadProof("the server's proof does not verify: it does not hold this key")
        return _ClientSession(sid, k_req, k_rep)

    def _remaining(self, deadline: float) -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"timed out after {self.timeout:g} s")
        return left

    # -- TCP

    def _call_tcp(self, seq: int, frame: bytes, deadline: float | None = None,
                  resend: bool = False) -> Frame:
        """Sends `frame` and returns the reply to `seq`. resend: if the
        connection breaks, send the same frame once more on a new one (only
        for requests the server runs at most once: authenticated ones)."""
        if deadline is None:
            deadline = time.monotonic() + self.timeout
        try:
            return self._exchange_tcp(seq, frame, deadline)
        except ConnectionError as e:
            if not resend:
                raise
            log.info("connection lost during seq %d (%s): sending it again on a new one", seq, e)
        return self._exchange_tcp(seq, frame, deadline)

    def _exchange_tcp(self, seq: int, frame: bytes, deadline: float) -> Frame:
        if self._sock is not None and self._closed_by_peer():
            self.close()  # e.g. the server's idle timeout: connect again
        try:
            if self._sock is None:
                self._open_tcp(deadline)
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

    def _open_tcp(self, deadline: float) -> None:
        self._sock = socket.create_connection((self.host, self.port),
                                              timeout=self._remaining(deadline))
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._reader = FrameReader(self._reply_limit)

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

    def _call_udp(self, seq: int, frame: bytes, deadline: float | None = None,
                  check: Callable[[Frame], Any] | None = None) -> Any:
        """Sends `frame`, retransmitting, until a reply to `seq` comes that
        check() accepts (returns not None; without check any reply); returns
        that reply, or what check() made of it."""
        start = time.monotonic()
        if deadline is None:
            deadline = start + self.timeout
        self._ignored = None
        if self._sock is None:
            self._open_udp()
        sock = self._sock
        # Waits base, 2 base, 4 base, ... (each with +-25% jitter) add up to
        # the whole timeout; the last attempt waits until the deadline.
        attempts = self.retries + 1
        base = max(0.0, deadline - start) / ((1 << attempts) - 1)
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
            reply = self._await_udp(sock, seq, until, check)
            if reply is not None:
                return reply
            if time.monotonic() >= deadline:
                break
            log.debug("no reply to seq %d yet: retransmitting", seq)
        ignored = f"; ignored {self._ignored}" if self._ignored else ""
        raise TimeoutError(f"timed out after {self.timeout:g} s "
                           f"({attempts} attempt{'s' if attempts > 1 else ''}){ignored}")

    def _open_udp(self) -> None:
        infos = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_DGRAM)
        family, _, _, _, sockaddr = infos[0]
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.connect(sockaddr)
        except OSError:
            sock.close()
            raise
        self._sock = sock

    def _await_udp(self, sock: socket.socket, seq: int, until: float,
                   check: Callable[[Frame], Any] | None = None) -> Any:
        size = max(self._reply_limit, MAX_BODY) + HEADER_LEN + 1
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
                reply = parse_datagram(data, self._reply_limit)
            except FrameError as e:
                log.debug("ignoring a bad datagram: %s", e)
                continue
            if reply.kind == REQUEST or reply.seq != seq:
                log.debug("ignoring a %s with seq %d (waiting for %d)",
                          reply.kind_name, reply.seq, seq)
                continue
            if check is None:
                return reply
            checked = check(reply)
            if checked is not None:
                return checked


# --------------------------------------------------------------------------
# Discovery on a local network (contract section 8)


class Discovered(NamedTuple):
    """One server that answered discovery: its address as text
    ("10.0.0.2:16724", "[fe80::1%eth0]:16724") and what its rpc.info said."""

    address: str
    name: str
    server: str
    auth: str


def _sender_text(sender) -> str:
    """A datagram's sender as text, with the interface for a scoped IPv6
    address: 10.0.0.2:16724, [fe80::1%eth0]:16724."""
    host, port = sender[0], sender[1]
    if len(sender) >= 4 and sender[3] and "%" not in host:
        try:
            host = f"{host}%{socket.if_indextoname(sender[3])}"
        except OSError:
            host = f"{host}%{sender[3]}"
    return _format_addr((host, port))


def parse_discovery_reply(data: bytes, sender, seq: int) -> Discovered | None:
    """The server a datagram tells of: a plain success reply to `seq` whose
    result is an object (rpc.info); None for anything else."""
    try:
        frame = parse_datagram(data, MAX_DATAGRAM)
        if frame.kind != RESPONSE or frame.seq != seq or frame.flags & AUTH:
            return None
        ok, result, _, _ = parse_reply(frame.body)
    except (FrameError, BodyError):
        return None
    if not ok or not isinstance(result, dict):
        return None

    def text(key: str) -> str:
        value = result.get(key)
        if isinstance(value, str):
            return value
        return "" if value is None else encode_value(value, any_int=True)

    return Discovered(_sender_text(sender), text("name"), text("server"), text("auth"))


def address_key(address: str) -> tuple:
    """Sorts addresses as text: IPv4 before IPv6, each numerically (then by
    interface and port); anything else last."""
    host, _, port = address.rpartition(":")
    port_number = int(port) if port.isdigit() else 0
    try:
        if host.startswith("["):
            ip = ipaddress.IPv6Address(host[1:-1])
            return (6, int(ip), ip.scope_id or "", port_number, address)
        return (4, int(ipaddress.IPv4Address(host)), "", port_number, address)
    except ValueError:
        return (9, 0, "", port_number, address)


def sort_discovered(found: list[Discovered]) -> list[Discovered]:
    return sorted(found, key=lambda d: address_key(d.address))


def format_table(rows: list[list[str]]) -> list[str]:
    """Left-aligned columns two spaces apart, each as wide as its widest
    value (the last not padded); trailing spaces stripped."""
    if not rows:
        return []
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]


def format_discovered(found: list[Discovered], as_json: bool = False) -> list[str]:
    """discover's output lines, sorted by address: ADDRESS NAME SERVER
    auth=..., or one JSON array."""
    found = sort_discovered(found)
    if as_json:
        return [encode_value([{"address": d.address, "name": d.name, "server": d.server,
                               "auth": d.auth} for d in found], any_int=True)]
    return format_table([[d.address, d.name, d.server, f"auth={d.auth}"] for d in found])


def discover(timeout: float = 1.0, port: int = DEFAULT_PORT, interface: str | None = None,
             ipv4: bool = True, ipv6: bool = True) -> list[Discovered]:
    """Finds the servers on the local link: sends one rpc.info request to
    255.255.255.255:port (IPv4, SO_BROADCAST; with `interface`,
    SO_BINDTODEVICE) and to [ff02::1%IF]:port (IPv6: on `interface`, else on
    every interface but lo), then collects the success replies to it for
    `timeout` seconds, one per responder address. Sorted by address.
    Raises OSError when the request could not be sent at all."""
    seq = secrets.randbelow(MAX_SEQ) + 1
    frame = pack_frame(REQUEST, seq, request_body("rpc.info"))
    socks: list[socket.socket] = []  # all opened, to close
    live: list[socket.socket] = []  # those that sent the request
    errors: list[str] = []
    try:
        if ipv4:
            try:
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
                if interface is not None:
                    if not hasattr(socket, "SO_BINDTODEVICE"):
                        raise OSError("choosing the interface needs SO_BINDTODEVICE (Linux)")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE,
                                    interface.encode() + b"\0")
                sock.bind(("0.0.0.0", 0))
                sock.sendto(frame, ("255.255.255.255", port))
                live.append(sock)
            except OSError as e:
                log.debug("discover: IPv4 broadcast: %s", e)
                errors.append(f"IPv4: {e.strerror or e}")
        if ipv6 and socket.has_ipv6:
            if interface is not None:
                indexes = [(interface, socket.if_nametoindex(interface))]
            else:
                indexes = [(n, i) for i, n in socket.if_nameindex() if n != "lo"]
            try:
                sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
                socks.append(sock)
                sock.bind(("::", 0))
                for name, index in indexes:
                    try:
                        sock.sendto(frame, ("ff02::1", port, 0, index))
                        if sock not in live:
                            live.append(sock)
                    except OSError as e:
                        log.debug("discover: IPv6 multicast on %s: %s", name, e)
                        if interface is not None:
                            errors.append(f"IPv6 on {name}: {e.strerror or e}")
            except OSError as e:
                log.debug("discover: IPv6: %s", e)
                errors.append(f"IPv6: {e.strerror or e}")
        if not live:
            raise OSError("discovery request not sent" + (": " + "; ".join(errors) if errors else ""))
        found: dict[str, Discovered] = {}
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            readable, _, _ = select.select(live, [], [], left)
            for sock in readable:
                try:
                    data, sender = sock.recvfrom(MAX_DATAGRAM + 1)
                except OSError as e:  # e.g. an ICMP error
                    log.debug("discover: receive: %s", e)
                    continue
                item = parse_discovery_reply(data, sender, seq)
                if item is not None and item.address not in found:
                    found[item.address] = item
        return sort_discovered(list(found.values()))
    finally:
        for sock in socks:
            sock.close()


# --------------------------------------------------------------------------
# Command line

USAGE = """\
usage: at_rpc.py serve [--tcp ADDR] [--udp ADDR] [--max-frame BYTES] [--name NAME]
                       [--key KID:HEX ...] [--key-file PATH ...]
       at_rpc.py call [--server HOST[:PORT]] [--udp] [--timeout SECS] [--retries N]
                      [--json] [--key KID:HEX | --key-file PATH] FUNC [ARG ...]
       at_rpc.py ping [--server HOST[:PORT]] [--udp] [--count N] [--interval SECS]
                      [--size BYTES] [--timeout SECS] [--json]
       at_rpc.py info [--server HOST[:PORT]] [--udp] [--timeout SECS] [--json]
                      [--key KID:HEX | --key-file PATH]
       at_rpc.py list [--server HOST[:PORT]] [--udp] [--timeout SECS] [--json]
                      [--key KID:HEX | --key-file PATH]
       at_rpc.py discover [--timeout SECS] [--interface IF] [--ipv4 | --ipv6] [--port P]
                          [--json]

'at_rpc.py COMMAND --help' describes a command.
"""

SERVE_HELP = """\
usage: at_rpc.py serve [--tcp ADDR] [--udp ADDR] [--max-frame BYTES] [--name NAME]
                       [--key KID:HEX ...] [--key-file PATH ...]

Serves the calculator (add, sub, mul, div) and rpc.ping, rpc.info and
rpc.functions until SIGINT or SIGTERM.

  --tcp ADDR         TCP address IP:PORT, or none (default 0.0.0.0:16724)
  --udp ADDR         UDP address IP:PORT, or none (default 0.0.0.0:16724);
                     [::]:PORT takes IPv4 and IPv6 (both kinds of discovery)
  --max-frame BYTES  largest request body accepted (default 65536)
  --name NAME        the name rpc.info reports (default: the host name)
  --key KID:HEX      require authentication; accept this key (repeatable)
  --key-file PATH    require authentication; accept the keys of this file
                     (lines 'KID HEX', '#' comments; mode 600; repeatable)

Port 0 lets the OS choose. Prints 'listening on tcp://IP:PORT' and
'listening on udp://IP:PORT' once bound. Log level: AT_LOG=debug|info|warning.
A key is 64 hex digits (32 bytes); a key id 1 to 32 of A-Z a-z 0-9 . _ -.
"""

CALL_HELP = """\
usage: at_rpc.py call [--server HOST[:PORT]] [--udp] [--timeout SECS] [--retries N]
                      [--json] [--key KID:HEX | --key-file PATH] FUNC [ARG ...]

Calls FUNC(ARG, ...) and prints the result as JSON.

  --server HOST[:PORT]  the server (default 127.0.0.1:16724)
  --udp                 call over UDP (default TCP)
  --timeout SECS        bound of the whole call (default 5)
  --retries N           UDP retransmissions (default 4)
  --json                print the whole reply body
  --key KID:HEX         authenticate with this key
  --key-file PATH       authenticate with the first key of this file (mode 600)
  --                    everything after it is FUNC and ARGs

Without --key and --key-file, the environment variable AT_KEY (KID:HEX), if
set, gives the key. Each ARG is read as JSON if it is (10, 2.5, true, "x",
[1, 2]), else taken as a string. Exit status: 0 result, 1 error reply
(also `unauthorized`), 2 usage, 3 transport (also a reply that fails
authentication).
"""

PING_HELP = """\
usage: at_rpc.py ping [--server HOST[:PORT]] [--udp] [--count N] [--interval SECS]
                      [--size BYTES] [--timeout SECS] [--json]

Calls rpc.ping COUNT times and prints the round-trip times, like ping(8).

  --server HOST[:PORT]  the server (default 127.0.0.1:16724)
  --udp                 over UDP (default TCP; never retransmitted)
  --count N             how many pings (default 4)
  --interval SECS       from one ping to the next (default 1.0)
  --size BYTES          send a string of BYTES 'x' to echo (default 0: no argument)
  --timeout SECS        how long to wait for each reply (default 1.0)
  --json                one JSON object per ping, then one with the statistics

Exit status: 0 at least one reply, 1 an error reply, 2 usage, 3 no reply.
"""

INFO_HELP = """\
usage: at_rpc.py info [--server HOST[:PORT]] [--udp] [--timeout SECS] [--json]
                      [--key KID:HEX | --key-file PATH]

Prints what rpc.info says of the server, one 'key: value' line per member.

  --server HOST[:PORT]  the server (default 127.0.0.1:16724)
  --udp                 over UDP (default TCP)
  --timeout SECS        bound of the call (default 1)
  --json                print the result object as JSON
  --key KID:HEX         authenticate with this key (else --key-file, else AT_KEY)
  --key-file PATH       authenticate with the first key of this file (mode 600)

Exit status: 0 ok, 1 error reply, 2 usage, 3 transport.
"""

LIST_HELP = """\
usage: at_rpc.py list [--server HOST[:PORT]] [--udp] [--timeout SECS] [--json]
                      [--key KID:HEX | --key-file PATH]

Lists the server's functions (rpc.functions, every page): name, signature
and doc, one function per line.

  --server HOST[:PORT]  the server (default 127.0.0.1:16724)
  --udp                 over UDP (default TCP)
  --timeout SECS        bound of each call (default 1)
  --json                print the JSON array of all entries
  --key KID:HEX         authenticate with this key (else --key-file, else AT_KEY);
                        a server that requires authentication lists only then
  --key-file PATH       authenticate with the first key of this file (mode 600)

Exit status: 0 ok, 1 error reply, 2 usage, 3 transport.
"""

DISCOVER_HELP = """\
usage: at_rpc.py discover [--timeout SECS] [--interface IF] [--ipv4 | --ipv6] [--port P]
                          [--json]

Finds the AT servers on the local network: sends rpc.info to the IPv4
broadcast address 255.255.255.255 and to the IPv6 all-nodes address ff02::1,
then lists each server that answers: address, name, implementation, auth.

  --timeout SECS   how long to collect replies (default 1.0)
  --interface IF   only on this interface (IPv4: SO_BINDTODEVICE); by default
                   IPv6 goes out on every interface but lo
  --ipv4, --ipv6   only this family (default both)
  --port P         the servers' UDP port (default 16724)
  --json           print a JSON array of {"address", "name", "server", "auth"}

Exit status: 0 at least one server, 2 usage, 3 none.
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


def _key_option(text: str, name: str) -> tuple[str, bytes]:
    """--key KID:HEX (or AT_KEY); a usage error never quotes the value."""
    try:
        return parse_key(text)
    except KeyFormatError as e:
        raise UsageError(f"{name}: {e}") from None


def _key_file_option(path: str) -> list[tuple[str, bytes]]:
    try:
        return load_key_file(path)
    except KeyFormatError as e:
        raise UsageError(f"--key-file: {e}") from None


def _server_keys(key_texts: list, key_files: list) -> dict[str, bytes]:
    """The keys of serve's --key and --key-file options, by key id."""
    keys: dict[str, bytes] = {}
    pairs = [_key_option(text, "--key") for text in key_texts]
    for path in key_files:
        pairs.extend(_key_file_option(path))
    for kid, key in pairs:
        if kid in keys:
            raise UsageError(f"key id {kid!r} is given twice")
        keys[kid] = key
    return keys


def serve_main(argv: list) -> int:
    opts = {"--tcp": f"0.0.0.0:{DEFAULT_PORT}", "--udp": f"0.0.0.0:{DEFAULT_PORT}",
            "--max-frame": str(MAX_BODY), "--name": None}
    key_texts: list = []
    key_files: list = []
    i = 0
    while i < len(argv):
        token = argv[i]
        name = token.split("=", 1)[0]
        if token in ("-h", "--help"):
            _write_help(SERVE_HELP)
            return 0
        if name in opts:
            opts[name], i = _take_value(argv, i, name)
        elif name == "--key":
            value, i = _take_value(argv, i, name)
            key_texts.append(value)
        elif name == "--key-file":
            value, i = _take_value(argv, i, name)
            key_files.append(value)
        else:
            raise UsageError(f"unexpected argument {token!r}")
    tcp = parse_listen(opts["--tcp"])
    udp = parse_listen(opts["--udp"])
    text = opts["--max-frame"]
    if not (text.isascii() and text.isdigit()) or int(text) > 0xFFFFFFFF:
        raise UsageError(f"--max-frame: {text!r} is not a number of bytes")
    if tcp is None and udp is None:
        raise UsageError("nothing to serve: both --tcp and --udp are none")
    keys = _server_keys(key_texts, key_files)
    name = opts["--name"]
    if name is not None:
        try:
            _utf8(name)
        except EncodeError:
            raise UsageError("--name: the name is not valid text") from None
    _setup_logging("info")
    server = Server(tcp=tcp, udp=udp, max_frame=int(text), keys=keys or None, name=name)
    if keys:
        log.info("authentication required: %d key%s (key ids %s)", len(keys),
                 "" if len(keys) == 1 else "s", ", ".join(sorted(keys)))
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
    key_text = key_file = None
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
            _write_help(CALL_HELP)
            return 0
        if token == "--udp":
            udp, i = True, i + 1
        elif token == "--json":
            as_json, i = True, i + 1
        elif name == "--server":
            server, i = _take_value(argv, i, name)
        elif name == "--key":
            key_text, i = _take_value(argv, i, name)
        elif name == "--key-file":
            key_file, i = _take_value(argv, i, name)
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
    key = _client_key(key_text, key_file)
    host, port = split_host_port(server)
    func, args = positional[0], [cli_arg(a) for a in positional[1:]]
    _setup_logging("warning")
    where = _format_addr((host, port))
    try:
        with Client(host, port, udp=udp, timeout=timeout, retries=retries, key=key) as client:
            result, body = client.call_raw(func, *args)
    except RemoteError as e:
        if as_json:
            body = e.body if e.body is not None else error_body(e.code, e.message)
            print(body.decode("utf-8", "replace"))
        print(f"error: {e.code}: {e.message}", file=sys.stderr)
        return 1
    except BadProof as e:
        print(f"error: unauthorized: {e}", file=sys.stderr)
        return 1
    except (OSError, ProtocolError) as e:
        print(f"transport error: {where}: {_failure_text(e)}", file=sys.stderr)
        return 3
    print(body.decode("utf-8") if as_json else encode_value(result, any_int=True))
    return 0


def _client_key(key_text: str | None, key_file: str | None) -> tuple[str, bytes] | None:
    """The key of --key, --key-file or AT_KEY (in that order), or None."""
    if key_text is not None and key_file is not None:
        raise UsageError("give --key or --key-file, not both")
    if key_text is not None:
        return _key_option(key_text, "--key")
    if key_file is not None:
        return _key_file_option(key_file)[0]
    if os.environ.get("AT_KEY"):
        return _key_option(os.environ["AT_KEY"], "AT_KEY")
    return None


def _failure_text(e: Exception) -> str:
    """What went wrong in a transport failure, as `call` reports it."""
    if isinstance(e, TimeoutError):
        return str(e)
    if isinstance(e, AuthError):
        return f"authentication failed: {e}"
    if isinstance(e, ProtocolError):
        return f"protocol error: {e}"
    if isinstance(e, OSError):  # refused, reset, unreachable, name resolution
        return f"i/o error: {e.strerror or e}"
    return str(e)


def _options(argv: list, flags: tuple, values: tuple) -> dict[str, Any] | None:
    """Options of a command without positional arguments: `flags` take no
    value (True when given), `values` one (--name VALUE or --name=VALUE).
    None for -h/--help."""
    opts: dict[str, Any] = {}
    i = 0
    while i < len(argv):
        token = argv[i]
        name = token.split("=", 1)[0]
        if token in ("-h", "--help"):
            return None
        if token in flags:
            opts[token], i = True, i + 1
        elif name in values:
            opts[name], i = _take_value(argv, i, name)
        else:
            raise UsageError(f"unexpected argument {token!r}")
    return opts


def _seconds_option(opts: dict, name: str, default: float, zero: bool = False) -> float:
    if name not in opts:
        return default
    try:
        value = float(opts[name])
    except ValueError:
        raise UsageError(f"{name}: {opts[name]!r} is not a number of seconds") from None
    if not (math.isfinite(value) and (value >= 0 if zero else value > 0)):
        raise UsageError(f"{name} must be a {'non-negative' if zero else 'positive'} "
                         f"number of seconds")
    return value


def _count_option(opts: dict, name: str, default: int, least: int = 0,
                  most: int = 0xFFFFFFFF) -> int:
    if name not in opts:
        return default
    text = opts[name]
    if not (text.isascii() and text.isdigit()) or not least <= int(text) <= most:
        raise UsageError(f"{name}: {text!r} is not a whole number from {least} to {most}")
    return int(text)


def _client_options(argv: list, flags: tuple = (), values: tuple = (),
                    keys: bool = True) -> dict[str, Any] | None:
    """The options info and list share (and those given), parsed."""
    flags = ("--udp", "--json", *flags)
    values = ("--server", "--timeout", *(("--key", "--key-file") if keys else ()), *values)
    opts = _options(argv, flags, values)
    if opts is None:
        return None
    host, port = split_host_port(opts.get("--server", f"127.0.0.1:{DEFAULT_PORT}"))
    opts["host"], opts["port"], opts["where"] = host, port, _format_addr((host, port))
    if keys:
        opts["key"] = _client_key(opts.get("--key"), opts.get("--key-file"))
    return opts


def _print(line: str) -> None:
    print(line, flush=True)


def ping_main(argv: list) -> int:
    opts = _client_options(argv, values=("--count", "--interval", "--size"), keys=False)
    if opts is None:
        _write_help(PING_HELP)
        return 0
    count = _count_option(opts, "--count", 4, least=1)
    interval = _seconds_option(opts, "--interval", 1.0, zero=True)
    size = _count_option(opts, "--size", 0)
    timeout = _seconds_option(opts, "--timeout", 1.0)
    udp, as_json, where = opts.get("--udp", False), opts.get("--json", False), opts["where"]
    value = "x" * size if size else None
    length = len(request_body("rpc.ping", [value] if size else []))
    if length > MAX_BODY:
        raise UsageError(f"--size: the request body would be {length} bytes, "
                         f"over the limit of {MAX_BODY}")
    _setup_logging("warning")
    if not as_json:
        _print(f"PING {where} ({'udp' if udp else 'tcp'})")
    times: list[float] = []
    sent = 0
    remote_error: RemoteError | None = None
    client = Client(opts["host"], opts["port"], udp=udp, timeout=timeout, retries=0)
    start = time.monotonic()
    try:
        for seq in range(1, count + 1):
            delay = start + (seq - 1) * interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            sent += 1
            try:
                client.connect()  # not timed: a ping measures a call
                began = time.perf_counter()
                result = client.ping(value)
                ms = (time.perf_counter() - began) * 1000.0
            except RemoteError as e:
                # As at-host: the line, the summary, then the error (exit 1).
                remote_error = remote_error or e
                reason = f"error: {e.code}: {e.message}"
            except (OSError, ProtocolError) as e:
                reason = (f"timed out after {timeout:g} s" if isinstance(e, TimeoutError)
                          else _failure_text(e))
            else:
                if result is True if value is None else result == value:
                    times.append(ms)
                    _print(json.dumps({"seq": seq, "time_ms": round(ms, 3)}) if as_json
                           else f"reply from {where}: seq={seq} time={ms:.3f} ms")
                    continue
                reason = "the reply does not match the request"
            _print(json.dumps({"seq": seq, "error": reason}) if as_json
                   else f"no reply from {where}: seq={seq}: {reason}")
    except KeyboardInterrupt:
        pass  # like ping(8): the statistics of what was sent
    finally:
        client.close()
    received = len(times)
    loss = 100 * (sent - received) // sent if sent else 0
    rtt = None
    if times:
        rtt = {"min": min(times), "avg": statistics.fmean(times), "max": max(times),
               "mdev": statistics.pstdev(times)}
    if as_json:
        _print(json.dumps({"sent": sent, "received": received, "loss_percent": loss,
                           "rtt_ms": None if rtt is None else
                           {k: round(v, 3) for k, v in rtt.items()}}))
    else:
        _print(f"--- {where} ping statistics ---")
        line = f"{sent} sent, {received} received, {loss}% loss"
        if rtt is not None:
            line += ("; rtt min/avg/max/mdev = "
                     + "/".join(f"{rtt[k]:.3f}" for k in ("min", "avg", "max", "mdev")) + " ms")
        _print(line)
    if remote_error is not None:
        print(f"error: {remote_error.code}: {remote_error.message}", file=sys.stderr)
        return 1
    return 0 if times else 3


def _query(opts: dict, action: Callable[[Client], Any]) -> tuple[int, Any]:
    """action(client) for info and list: (0, its value), or (exit status,
    None) after reporting an error reply (1) or a transport failure (3)."""
    timeout = _seconds_option(opts, "--timeout", 1.0)
    _setup_logging("warning")
    try:
        with Client(opts["host"], opts["port"], udp=opts.get("--udp", False), timeout=timeout,
                    key=opts["key"]) as client:
            return 0, action(client)
    except RemoteError as e:
        print(f"error: {e.code}: {e.message}", file=sys.stderr)
        return 1, None
    except BadProof as e:
        print(f"error: unauthorized: {e}", file=sys.stderr)
        return 1, None
    except (OSError, ProtocolError) as e:
        print(f"transport error: {opts['where']}: {_failure_text(e)}", file=sys.stderr)
        return 3, None


def _value_text(value: Any) -> str:
    """A value for people: strings as they are, anything else as JSON."""
    return value if isinstance(value, str) else encode_value(value, any_int=True)


def info_main(argv: list) -> int:
    opts = _client_options(argv)
    if opts is None:
        _write_help(INFO_HELP)
        return 0
    status, result = _query(opts, Client.info)
    if status:
        return status
    if opts.get("--json"):
        print(encode_value(result, any_int=True))
    else:
        for key, value in result.items():
            print(f"{key}: {_value_text(value)}")
    return 0


def format_signature(entry: dict[str, Any]) -> str:
    """add(number, number) -> number; name(...) when params is null; no
    ' -> ...' when result is null."""
    params = entry.get("params")
    text = entry["name"] + ("(...)" if params is None else "(" + ", ".join(params) + ")")
    if entry.get("result") is not None:
        text += " -> " + entry["result"]
    return text


def format_functions(entries: list[dict[str, Any]], as_json: bool = False) -> list[str]:
    """list's output lines: NAME SIGNATURE DOC in columns, or a JSON array."""
    if as_json:
        return [encode_value(entries, any_int=True)]
    return format_table([[e["name"], format_signature(e), e.get("doc") or ""] for e in entries])


def list_main(argv: list) -> int:
    opts = _client_options(argv)
    if opts is None:
        _write_help(LIST_HELP)
        return 0
    status, entries = _query(opts, Client.functions)
    if status:
        return status
    for line in format_functions(entries, opts.get("--json", False)):
        print(line)
    return 0


def discover_main(argv: list) -> int:
    opts = _options(argv, ("--ipv4", "--ipv6", "--json"), ("--timeout", "--interface", "--port"))
    if opts is None:
        _write_help(DISCOVER_HELP)
        return 0
    timeout = _seconds_option(opts, "--timeout", 1.0)
    port = _count_option(opts, "--port", DEFAULT_PORT, least=1, most=65535)
    if opts.get("--ipv4") and opts.get("--ipv6"):
        raise UsageError("give --ipv4 or --ipv6, not both")
    interface = opts.get("--interface")
    if interface is not None:
        try:
            socket.if_nametoindex(interface)
        except (OSError, ValueError):
            raise UsageError(f"--interface: no interface {interface!r}") from None
    _setup_logging("warning")
    try:
        found = discover(timeout, port, interface, ipv4=not opts.get("--ipv6"),
                         ipv6=not opts.get("--ipv4"))
    except OSError as e:
        print(f"transport error: discovery: {e.strerror or e}", file=sys.stderr)
        return 3
    for line in format_discovered(found, opts.get("--json", False)):
        print(line)
    if not found:
        if not opts.get("--json"):
            print(f"no server answered within {timeout:g} s", file=sys.stderr)
        return 3
    return 0


def _prog() -> str:
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return name if name and name not in ("-c", "__main__.py") else "at_rpc.py"


def _write_help(text: str, stream=None) -> None:
    """A usage text, with the program's name as it was invoked (at-rpc
    when installed), continuation lines kept aligned."""
    prog = _prog()
    delta = len(prog) - len("at_rpc.py")
    lines = []
    usage = False
    for line in text.splitlines(keepends=True):
        if line.lstrip().startswith(("usage: at_rpc.py", "at_rpc.py ")):
            usage = True
        elif not line.strip():
            usage = False
        elif usage and line.startswith(" ") and delta:
            indent = len(line) - len(line.lstrip(" "))
            line = " " * max(1, indent + delta) + line.lstrip(" ")
        lines.append(line.replace("at_rpc.py", prog))
    (stream or sys.stdout).write("".join(lines))


COMMANDS: dict[str, Callable[[list], int]] = {
    "serve": serve_main, "call": call_main, "ping": ping_main, "info": info_main,
    "list": list_main, "discover": discover_main,
}


def main(argv: list[str] | None = None) -> int:
    """The command line (the `at-rpc` console script); returns the exit
    status: 0 ok, 1 error reply, 2 usage, 3 transport."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        _write_help(USAGE, sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    try:
        if command not in COMMANDS:
            raise UsageError(f"unknown command {command!r}")
        return COMMANDS[command](rest)
    except UsageError as e:
        sys.stderr.write(f"error: {e}\n\n")
        _write_help(USAGE, sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
