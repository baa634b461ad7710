#!/usr/bin/env python3
"""Interop checks against any running AT calculator server (Rust or Python).

    VENV/bin/python peers/python/tests/interop.py --tcp HOST:PORT --udp HOST:PORT
                                                  [--vectors FILE] [--exact] [--timeout SECS] [-v]

Runs the calculator, every error code a calculator server can produce, TCP
stream framing (sticky and split frames, pipelining, a stalled connection
beside a live one), UDP datagrams (errors, dropped datagrams, duplicates) and
every shared test vector (tests/vectors/frames.json) over TCP and, where the
frame fits in a datagram, over UDP. Only raw sockets and at_rpc's Client (the installed package:
pip install ./peers/python).

Prints one line per failed check (`FAIL name: why`; with -v also `ok name`)
and last a line exactly `N passed, M failed`; exits 0 only if M == 0 (2 for
a usage error). Without --tcp or --udp, the checks of that transport are not
run. --exact also compares each vector's reply frame byte for byte with the
vector's `reply_frame` (this project's canonical form; other servers may word
messages differently, so by default `message` is only checked to be a string).
Every socket operation has a timeout (--timeout, default 3 s); against a
healthy server on loopback the whole run takes about a second.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import socket
import struct
import sys
import time
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))

import at_rpc
from at_rpc import ERROR, REQUEST, RESPONSE
from at_rpc.cli import UsageError, split_host_port

HEADER = struct.Struct(">HHIII")
DEFAULT_VECTORS = os.path.join(HERE, "..", "..", "..", "tests", "vectors", "frames.json")
# The largest UDP payload over IPv4: vectors longer than this cannot be sent
# as one datagram.
MAX_DATAGRAM = 65507
I64_MAX = (1 << 63) - 1
I64_MIN = -(1 << 63)

WAIT = 3.0  # bound of any single socket wait (--timeout)

# Silence at_rpc's own logging (the client logs ignored datagrams at debug).
logging.getLogger("at_rpc").setLevel(100)


class Fail(Exception):
    """A check failed: the message says why."""


# --------------------------------------------------------------------------
# Frames and replies


def frame(flags: int, seq: int, body: bytes | str, crc: int | None = None,
          magic: int = 0x4154, length: int | None = None) -> bytes:
    """A frame with every header field open to tampering."""
    if isinstance(body, str):
        body = body.encode("utf-8")
    return HEADER.pack(magic, flags, seq, len(body) if length is None else length,
                       zlib.crc32(body) & 0xFFFFFFFF if crc is None else crc) + body


def request(seq: int, body: bytes | str) -> bytes:
    return frame(REQUEST, seq, body)


def calc(seq: int, func: str, a: str, b: str) -> bytes:
    """func(a, b) with a and b as JSON texts, written as they are."""
    return request(seq, '{"func": "%s", "args": [%s, %s]}' % (func, a, b))


_seqs = set()


def fresh_seq() -> int:
    """A seq no other check of this run uses, away from the vectors' seqs
    (so a server's UDP reply cache can never answer one check with another's
    reply, even across runs from a reused port)."""
    while True:
        seq = random.randrange(1 << 20, 0xFFFFFFFF)
        if seq not in _seqs:
            _seqs.add(seq)
            return seq


def same_json(got, want) -> bool:
    """Equal JSON values of the same JSON type: 30 is not 30.0, True is not 1."""
    if type(got) is not type(want):
        return False
    if isinstance(got, list):
        return len(got) == len(want) and all(same_json(g, w) for g, w in zip(got, want))
    if isinstance(got, dict):
        return got.keys() == want.keys() and all(same_json(got[k], want[k]) for k in got)
    if isinstance(got, float):
        return got == want and repr(got) == repr(want)
    return got == want


def show(value) -> str:
    return json.dumps(value)


def check_reply(reply: at_rpc.Frame, seq: int, result=None, code: str | None = None,
                message: str | None = None) -> None:
    """A success reply with `result` (when code is None) or an error reply
    with `code` (and exactly `message` when given), both with `seq`."""
    want_flags = ERROR if code is not None else RESPONSE
    what = f"error {code}" if code is not None else f"result {show(result)}"
    if reply.seq != seq:
        raise Fail(f"expected {what} with seq {seq}, got a reply with seq {reply.seq}: "
                   f"{reply.body[:200]!r}")
    if reply.flags != want_flags:
        raise Fail(f"expected flags 0x{want_flags:04x} ({what}), got 0x{reply.flags:04x}: "
                   f"{reply.body[:200]!r}")
    try:
        body = json.loads(reply.body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise Fail(f"reply body is not JSON ({e}): {reply.body[:200]!r}") from None
    if not isinstance(body, dict):
        raise Fail(f"reply body is not an object: {reply.body[:200]!r}")
    if code is None:
        if body.get("status") != "success" or "result" not in body:
            raise Fail(f"expected {what}, got body {reply.body[:200]!r}")
        if not same_json(body["result"], result):
            raise Fail(f"expected {what}, got result {show(body['result'])} "
                       f"({type(body['result']).__name__})")
    else:
        if body.get("status") != "error" or body.get("code") != code:
            raise Fail(f"expected {what}, got body {reply.body[:200]!r}")
        if "message" in body and not isinstance(body["message"], str):
            raise Fail(f"message is not a string: {reply.body[:200]!r}")
        if message is not None and body.get("message") != message:
            raise Fail(f"expected message {message!r}, got {body.get('message')!r}")


# --------------------------------------------------------------------------
# TCP


class Conn:
    """A raw TCP connection: send bytes, read whole reply frames, expect a
    close. Every wait is bounded by WAIT."""

    def __init__(self, addr):
        self.sock = socket.create_connection(addr, timeout=WAIT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = at_rpc.FrameReader(1 << 24)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "Conn":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.settimeout(WAIT)
        self.sock.sendall(data)

    def reply(self, what: str = "a reply") -> at_rpc.Frame:
        deadline = time.monotonic() + WAIT
        while True:
            for item in self.reader.feed():
                if isinstance(item, at_rpc.FrameError):
                    raise Fail(f"bad frame from the server where {what} was due: {item}")
                if item.kind == REQUEST:
                    raise Fail(f"a request frame from the server where {what} was due")
                return item
            left = deadline - time.monotonic()
            if left <= 0:
                raise Fail(f"{what} did not come within {WAIT:g} s")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                raise Fail(f"{what} did not come within {WAIT:g} s") from None
            except ConnectionError as e:
                raise Fail(f"connection {type(e).__name__} where {what} was due") from None
            if not data:
                raise Fail(f"connection closed where {what} was due")
            self.reader.push(data)

    def expect_closed(self) -> None:
        """The server closes the connection (EOF or reset) and sends nothing
        more before it."""
        if self.reader.buffered():
            raise Fail(f"{self.reader.buffered()} unexpected bytes before the close")
        deadline = time.monotonic() + WAIT
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Fail(f"connection not closed within {WAIT:g} s")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                raise Fail(f"connection not closed within {WAIT:g} s") from None
            except ConnectionError:
                return
            if not data:
                return
            raise Fail(f"unexpected bytes instead of the close: {data[:64]!r}")

    def expect_usable(self) -> None:
        """A call on this connection still gets its answer."""
        seq = fresh_seq()
        self.send(calc(seq, "add", "40", "2"))
        check_reply(self.reply("the reply to a later call"), seq, 42)


# --------------------------------------------------------------------------
# UDP


class Udp:
    """A raw UDP socket connected to the server."""

    def __init__(self, addr):
        family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.connect(addr)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "Udp":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.settimeout(WAIT)
        self.sock.send(data)

    def recv(self, wait: float) -> bytes | None:
        """One datagram, or None if none came within `wait` seconds."""
        deadline = time.monotonic() + wait
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                return self.sock.recv(1 << 17)
            except socket.timeout:
                return None
            except ConnectionRefusedError:
                raise Fail("connection refused (ICMP port unreachable): no UDP server") from None

    def parse(self, data: bytes) -> at_rpc.Frame:
        try:
            reply = at_rpc.parse_datagram(data, 1 << 17)
        except at_rpc.FrameError as e:
            raise Fail(f"bad reply datagram: {e}: {data[:64]!r}") from None
        if reply.kind == REQUEST:
            raise Fail("a request datagram from the server")
        return reply

    def exchange(self, datagram: bytes, seq: int) -> at_rpc.Frame:
        """Sends `datagram` (again after 0.5 s and 1.5 s without an answer, as
        a client retransmits) and returns the first reply with `seq`."""
        deadline = time.monotonic() + WAIT
        resend = [0.5, 1.5]
        start = time.monotonic()
        self.send(datagram)
        while True:
            until = deadline
            if resend:
                until = min(deadline, start + resend[0])
            data = self.recv(until - time.monotonic())
            if data is None:
                if time.monotonic() >= deadline:
                    raise Fail(f"no reply datagram with seq {seq} within {WAIT:g} s")
                resend.pop(0)
                self.send(datagram)
                continue
            reply = self.parse(data)
            if reply.seq != seq:
                raise Fail(f"a reply with seq {reply.seq} where seq {seq} was due: "
                           f"{reply.body[:200]!r}")
            return reply

    def expect_no_reply_then_usable(self) -> None:
        """Nothing answers what was just sent: a later call's reply is the
        first datagram to come, and nothing else follows it."""
        seq = fresh_seq()
        check_reply(self.exchange(calc(seq, "add", "40", "2"), seq), seq, 42)
        while True:
            extra = self.recv(0.1)
            if extra is None:
                return
            reply = self.parse(extra)
            if reply.seq != seq:  # a late duplicate of the check call is fine
                raise Fail(f"unexpected reply with seq {reply.seq}: {reply.body[:200]!r}")


# --------------------------------------------------------------------------
# The checks


# func, a, b (JSON texts), result: integers stay integers, anything with a
# double is a double, div is always a double.
CALCULATIONS = [
    ("add", "10", "20", 30),
    ("sub", "10", "20", -10),
    ("mul", "6", "7", 42),
    ("mul", "-6", "7", -42),
    ("div", "10", "4", 2.5),
    ("div", "10", "2", 5.0),
    ("div", "-7", "2", -3.5),
    ("add", "10.0", "20", 30.0),
    ("add", "1.5", "2", 3.5),
    ("sub", "-5", "2.5", -7.5),
    ("mul", "6", "7.5", 45.0),
    ("mul", "1e3", "1e297", 1e300),
    ("add", "0.1", "0.2", 0.30000000000000004),
    ("sub", "-9223372036854775807", "1", I64_MIN),
    ("add", "9223372036854775806", "1", I64_MAX),
    ("div", "9223372036854775807", "3", I64_MAX / 3),
    ("div", "1", "3", 1 / 3),
]

# func, a, b, code, message (None: any)
CALC_ERRORS = [
    ("div", "1", "0", "division_by_zero", "division by zero"),
    ("div", "1.5", "0.0", "division_by_zero", "division by zero"),
    ("div", "1", "-0.0", "division_by_zero", "division by zero"),
    ("add", "9223372036854775807", "1", "overflow", None),
    ("sub", "-9223372036854775808", "1", "overflow", None),
    ("mul", "4294967296", "4294967296", "overflow", None),
    ("add", "9223372036854775808", "0", "overflow", None),
    ("mul", "1e300", "1e300", "overflow", None),
    ("div", "1e300", "1e-300", "overflow", None),
    ("add", '"1"', "2", "invalid_arguments", None),
    ("add", "true", "2", "invalid_arguments", None),
    ("add", "null", "2", "invalid_arguments", None),
    ("add", "[1]", "2", "invalid_arguments", None),
    ("pow", "2", "8", "unknown_function", None),
]

# Bodies a calculator server answers with an error (other than via the
# calculation itself).
BODY_ERRORS = [
    ("not JSON", "add(1, 2)", "bad_request"),
    ("empty body", "", "bad_request"),
    ("func missing", '{"args": [1, 2]}', "bad_request"),
    ("func not a string", '{"func": 7, "args": [1, 2]}', "bad_request"),
    ("args not an array", '{"func": "add", "args": 3}', "bad_request"),
    ("trailing bytes", '{"func": "add", "args": [1, 2]} x', "bad_request"),
    ("one argument", '{"func": "add", "args": [1]}', "invalid_arguments"),
    ("no arguments", '{"func": "add", "args": []}', "invalid_arguments"),
    ("args missing", '{"func": "mul"}', "invalid_arguments"),
    ("three arguments", '{"func": "add", "args": [1, 2, 3]}', "invalid_arguments"),
    ("unknown function", '{"func": "nope", "args": [1, 2]}', "unknown_function"),
    # This project's decisions where the contract is silent (docs/PROTOCOL.md).
    ("not an object", "[1, 2]", "bad_request"),
    ("not UTF-8", b'{"func": "add", "args": [1, 2], "x": "\xff"}', "bad_request"),
    ("NaN", '{"func": "add", "args": [NaN, 2]}', "bad_request"),
    ("a raw control character", '{"func": "add", "args": [1, 2], "x": "\x01"}', "bad_request"),
    ("a lone surrogate", '{"func": "add", "args": ["\\ud800", 2]}', "bad_request"),
    ("func given twice", '{"func": "add", "func": "sub", "args": [1, 2]}', "bad_request"),
    ("args given twice", '{"func": "add", "args": [1, 2], "args": [1, 2]}', "bad_request"),
    ("33 nested arrays", '{"func": "add", "args": [1, 2], "x": %s}' % ("[" * 33 + "]" * 33),
     "bad_request"),
    ("args null", '{"func": "add", "args": null}', "bad_request"),
    ("17 arguments", '{"func": "add", "args": [%s]}' % ", ".join(["1"] * 17),
     "invalid_arguments"),
    ("an object argument", '{"func": "add", "args": [1, {"a": [2]}]}', "invalid_arguments"),
    ("func of 65 bytes", '{"func": "%s", "args": [1, 2]}' % ("a" * 65), "unknown_function"),
    ("an integer argument outside i64 beside a string",
     '{"func": "add", "args": [99999999999999999999999, "x"]}', "overflow"),
]

# Bodies a calculator server answers with a result.
BODY_RESULTS = [
    ("compact JSON", '{"func":"add","args":[1,2]}', 3),
    ("whitespace around the object", ' \n{"func": "add", "args": [1, 2]}\r\n\t ', 3),
    ("members in another order", '{"args": [6, 7], "func": "mul"}', 42),
    ("unknown members, an integer outside i64 among them",
     '{"func": "add", "v": 99999999999999999999999, "args": [1, 2], "o": {"a": [null]}}', 3),
    ("32 nested arrays in an unknown member",
     '{"func": "add", "args": [1, 2], "x": %s}' % ("[" * 32 + "]" * 32), 3),
    ("an exponent with E and +", '{"func": "add", "args": [1E2, 2e+0]}', 102.0),
    ("-0 is an integer", '{"func": "add", "args": [-0, 0]}', 0),
    ("-0.0 is a double", '{"func": "mul", "args": [-0.0, 1]}', -0.0),
    ("the smallest double", '{"func": "add", "args": [5e-324, 0]}', 5e-324),
    ("a double below the smallest reads as 0.0", '{"func": "add", "args": [1e-400, 2]}', 2.0),
]


def client_call(client: at_rpc.Client, func: str, a: str, b: str):
    return client.call(func, at_rpc.parse_value(a), at_rpc.parse_value(b))


def client_calculator_checks(transport, get_client):
    """(name, fn) checks of every calculation and calculator error through
    the Python client `get_client()` returns, named after `transport`."""
    checks = []
    for func, a, b, want in CALCULATIONS:
        def run(func=func, a=a, b=b, want=want):
            got = client_call(get_client(), func, a, b)
            if not same_json(got, want):
                raise Fail(f"expected {show(want)}, got {show(got)} ({type(got).__name__})")
        checks.append((f"{transport} client {func}({a}, {b}) = {show(want)}", run))

    for func, a, b, code, message in CALC_ERRORS:
        def run(func=func, a=a, b=b, code=code, message=message):
            try:
                got = client_call(get_client(), func, a, b)
            except at_rpc.RemoteError as e:
                if e.code != code:
                    raise Fail(f"expected error {code}, got error {e.code}: {e.message}") from None
                if message is not None and e.message != message:
                    raise Fail(f"expected message {message!r}, got {e.message!r}") from None
                return
            raise Fail(f"expected error {code}, got result {show(got)}")
        checks.append((f"{transport} client {func}({a}, {b}) is {code}", run))
    return checks


def tcp_checks(addr):
    """(name, fn) of the TCP checks."""
    checks = []

    client = None

    def get_client():
        nonlocal client
        if client is None:
            client = at_rpc.Client(addr[0], addr[1], timeout=WAIT)
        return client

    checks += client_calculator_checks("tcp", get_client)

    def raw_calculations():
        with Conn(addr) as c:
            for func, a, b, want in CALCULATIONS:
                seq = fresh_seq()
                c.send(calc(seq, func, a, b))
                check_reply(c.reply(), seq, want)
    checks.append(("tcp raw frames: every calculation with its exact JSON type", raw_calculations))

    for name, body, code in BODY_ERRORS:
        def run(body=body, code=code):
            with Conn(addr) as c:
                seq = fresh_seq()
                c.send(request(seq, body))
                check_reply(c.reply(), seq, code=code)
                c.expect_usable()
        checks.append((f"tcp {name} is {code}, connection kept", run))

    for name, body, want in BODY_RESULTS:
        def run(body=body, want=want):
            with Conn(addr) as c:
                seq = fresh_seq()
                c.send(request(seq, body))
                check_reply(c.reply(), seq, want)
        checks.append((f"tcp {name}: {show(want)}", run))

    def wrong_magic():
        with Conn(addr) as c:
            c.send(frame(REQUEST, fresh_seq(), '{"func": "add", "args": [1, 2]}', magic=0x5441))
            check_reply(c.reply("the bad_frame reply"), 0, code="bad_frame")
            c.expect_closed()
    checks.append(("tcp wrong magic is bad_frame with seq 0, then close", wrong_magic))

    def wrong_magic_two_bytes():
        with Conn(addr) as c:
            c.send(b"GE")  # an HTTP request, say: two bytes tell
            check_reply(c.reply("the bad_frame reply"), 0, code="bad_frame")
            c.expect_closed()
    checks.append(("tcp wrong magic is answered after two bytes, then close",
                   wrong_magic_two_bytes))

    def bad_crc():
        with Conn(addr) as c:
            seq = fresh_seq()
            body = '{"func": "add", "args": [1, 2]}'
            c.send(frame(REQUEST, seq, body, crc=(zlib.crc32(body.encode()) ^ 1)))
            check_reply(c.reply("the checksum_mismatch reply"), seq, code="checksum_mismatch")
            c.expect_usable()
    checks.append(("tcp bad CRC is checksum_mismatch with the seq, connection kept", bad_crc))

    def too_large():
        with Conn(addr) as c:
            seq = fresh_seq()
            c.send(HEADER.pack(0x4154, REQUEST, seq, 0xFFFFFFFF, 0))  # the header alone
            check_reply(c.reply("the frame_too_large reply"), seq, code="frame_too_large")
            c.expect_closed()
    checks.append(("tcp length over the limit is frame_too_large from the header alone, "
                   "then close", too_large))

    for name, flags in (("no type bit", 0x0100), ("two type bits", REQUEST | RESPONSE),
                        ("three type bits", REQUEST | RESPONSE | ERROR)):
        def run(flags=flags):
            with Conn(addr) as c:
                seq = fresh_seq()
                c.send(frame(flags, seq, '{"func": "add", "args": [1, 2]}'))
                check_reply(c.reply("the bad_frame reply"), seq, code="bad_frame")
                c.expect_usable()
        checks.append((f"tcp {name} is bad_frame with the seq, connection kept", run))

    for name, flags, body in (
            ("success reply", RESPONSE, '{"status": "success", "result": 3}'),
            ("error reply", ERROR,
             '{"status": "error", "code": "internal", "message": "x"}')):
        def run(flags=flags, body=body):
            with Conn(addr) as c:
                c.send(frame(flags, fresh_seq(), body))
                c.expect_usable()  # the first reply is the later call's
        checks.append((f"tcp a {name} frame is not answered", run))

    def reserved_bits():
        with Conn(addr) as c:
            seq = fresh_seq()
            c.send(frame(REQUEST | 0x8000 | 0x0100, seq, '{"func": "add", "args": [2, 2]}'))
            check_reply(c.reply(), seq, 4)
    checks.append(("tcp reserved flag bits are ignored", reserved_bits))

    def sticky():
        with Conn(addr) as c:
            calls = []
            for i in range(100):
                seq = fresh_seq()
                if i % 4 == 3:
                    calls.append((seq, calc(seq, "div", str(i), "4"), i / 4))
                elif i % 4 == 2:
                    calls.append((seq, calc(seq, "mul", str(i), "-3"), -3 * i))
                else:
                    calls.append((seq, calc(seq, "add", str(i), "1000"), i + 1000))
            c.send(b"".join(data for _, data, _ in calls))
            for n, (seq, _, want) in enumerate(calls):
                try:
                    check_reply(c.reply(f"reply {n + 1} of 100"), seq, want)
                except Fail as e:
                    raise Fail(f"reply {n + 1} of 100: {e}") from None
    checks.append(("tcp 100 requests in one write get 100 replies in order", sticky))

    def split_bytes():
        with Conn(addr) as c:
            seq = fresh_seq()
            data = calc(seq, "mul", "6", "7")
            for i in range(len(data)):
                c.send(data[i:i + 1])
                time.sleep(0.001)
            check_reply(c.reply(), seq, 42)
            c.expect_usable()
    checks.append(("tcp one request written one byte at a time", split_bytes))

    def odd_chunks():
        with Conn(addr) as c:
            calls = []
            for i in range(10):
                seq = fresh_seq()
                calls.append((seq, calc(seq, "sub", str(i), "0.5"), i - 0.5))
            data = b"".join(d for _, d, _ in calls)
            for i in range(0, len(data), 7):
                c.send(data[i:i + 7])
                time.sleep(0.001)
            for seq, _, want in calls:
                check_reply(c.reply(), seq, want)
    checks.append(("tcp 10 pipelined requests written in 7-byte pieces", odd_chunks))

    def errors_in_a_stream():
        with Conn(addr) as c:
            s = [fresh_seq() for _ in range(5)]
            good = '{"func": "add", "args": [1, 2]}'
            c.send(calc(s[0], "add", "1", "1")
                   + frame(REQUEST, s[1], good, crc=0)
                   + request(s[2], "not json")
                   + frame(RESPONSE, s[3], '{"status": "success", "result": 1}')
                   + frame(0, s[3], good)
                   + calc(s[4], "div", "1", "0"))
            check_reply(c.reply(), s[0], 2)
            check_reply(c.reply(), s[1], code="checksum_mismatch")
            check_reply(c.reply(), s[2], code="bad_request")
            check_reply(c.reply(), s[3], code="bad_frame")
            check_reply(c.reply(), s[4], code="division_by_zero")
    checks.append(("tcp errors inside a pipelined stream keep it in step", errors_in_a_stream))

    def stalled_neighbour():
        with Conn(addr) as stalled, Conn(addr) as live:
            seq_a = fresh_seq()
            data = calc(seq_a, "add", "1", "2")
            stalled.send(data[:10])  # half a header, then nothing for a while
            time.sleep(0.05)
            seq_b = fresh_seq()
            live.send(calc(seq_b, "mul", "3", "3"))
            check_reply(live.reply("the reply on the other connection"), seq_b, 9)
            stalled.send(data[10:])
            check_reply(stalled.reply(), seq_a, 3)
    checks.append(("tcp a connection stalled mid-frame does not hold up another",
                   stalled_neighbour))

    def closing_one_keeps_others():
        with Conn(addr) as keep:
            with Conn(addr) as bad:
                bad.send(b"\x00" * 16)
                check_reply(bad.reply(), 0, code="bad_frame")
                bad.expect_closed()
            keep.expect_usable()
    checks.append(("tcp a connection closed for a bad frame leaves the others serving",
                   closing_one_keeps_others))

    def finish():
        if client is not None:
            client.close()
    return checks, finish


def udp_checks(addr):
    checks = []
    client = None

    def get_client():
        nonlocal client
        if client is None:
            client = at_rpc.Client(addr[0], addr[1], udp=True, timeout=WAIT)
        return client

    checks += client_calculator_checks("udp", get_client)

    for name, body, code in BODY_ERRORS:
        def run(body=body, code=code):
            with Udp(addr) as u:
                seq = fresh_seq()
                check_reply(u.exchange(request(seq, body), seq), seq, code=code)
        checks.append((f"udp {name} is {code}", run))

    for name, body, want in BODY_RESULTS:
        def run(body=body, want=want):
            with Udp(addr) as u:
                seq = fresh_seq()
                check_reply(u.exchange(request(seq, body), seq), seq, want)
        checks.append((f"udp {name}: {show(want)}", run))

    def wrong_magic():
        with Udp(addr) as u:
            datagram = frame(REQUEST, fresh_seq(), '{"func": "add", "args": [1, 2]}',
                             magic=0x5441)
            check_reply(u.exchange(datagram, 0), 0, code="bad_frame")
    checks.append(("udp wrong magic is bad_frame with seq 0", wrong_magic))

    def bad_crc():
        with Udp(addr) as u:
            seq = fresh_seq()
            datagram = frame(REQUEST, seq, '{"func": "add", "args": [1, 2]}', crc=0x12345678)
            check_reply(u.exchange(datagram, seq), seq, code="checksum_mismatch")
    checks.append(("udp bad CRC is checksum_mismatch with the seq", bad_crc))

    def no_type_bit():
        with Udp(addr) as u:
            seq = fresh_seq()
            datagram = frame(0, seq, '{"func": "add", "args": [1, 2]}')
            check_reply(u.exchange(datagram, seq), seq, code="bad_frame")
    checks.append(("udp no type bit is bad_frame with the seq", no_type_bit))

    for name, cut in (("shorter", -1), ("longer", 1)):
        def run(cut=cut):
            with Udp(addr) as u:
                data = calc(fresh_seq(), "add", "1", "2")
                u.send(data[:cut] if cut < 0 else data + b" ")
                u.expect_no_reply_then_usable()
        checks.append((f"udp a datagram {name} than 16 + length is dropped", run))

    def short_datagram():
        with Udp(addr) as u:
            u.send(b"AT\x00\x01")
            u.expect_no_reply_then_usable()
    checks.append(("udp a datagram shorter than a header is dropped", short_datagram))

    for name, flags, body in (
            ("success reply", RESPONSE, '{"status": "success", "result": 3}'),
            ("error reply", ERROR,
             '{"status": "error", "code": "internal", "message": "x"}')):
        def run(flags=flags, body=body):
            with Udp(addr) as u:
                u.send(frame(flags, fresh_seq(), body))
                u.expect_no_reply_then_usable()
        checks.append((f"udp a {name} datagram is not answered", run))

    def duplicates():
        with Udp(addr) as u:
            seq = fresh_seq()
            datagram = calc(seq, "div", "10", "4")
            for _ in range(3):
                u.send(datagram)
            replies = []
            for n in range(3):
                data = u.recv(WAIT)
                if data is None:
                    raise Fail(f"{n} replies to 3 copies of one request")
                replies.append(data)
            check_reply(u.parse(replies[0]), seq, 2.5)
            if len(set(replies)) != 1:
                raise Fail(f"the 3 replies differ: {replies!r}")
            extra = u.recv(0.1)
            if extra is not None:
                raise Fail(f"a 4th reply to 3 copies: {extra[:64]!r}")
    checks.append(("udp 3 copies of one request get 3 identical replies", duplicates))

    def duplicate_error():
        with Udp(addr) as u:
            seq = fresh_seq()
            datagram = calc(seq, "div", "1", "0")
            first = u.exchange(datagram, seq)
            check_reply(first, seq, code="division_by_zero")
            again = u.exchange(datagram, seq)
            if again != first:
                raise Fail(f"a repeated request got another reply: {again!r} vs {first!r}")
    checks.append(("udp a repeated request gets the same error reply again", duplicate_error))

    def many_in_flight():
        with Udp(addr) as u:
            calls = {}
            for i in range(50):
                seq = fresh_seq()
                calls[seq] = i * 3
                u.send(calc(seq, "mul", str(i), "3"))
            while calls:
                data = u.recv(WAIT)
                if data is None:
                    raise Fail(f"{len(calls)} of 50 requests sent at once got no reply")
                reply = u.parse(data)
                if reply.seq not in calls:
                    raise Fail(f"a reply with an unknown or repeated seq {reply.seq}")
                check_reply(reply, reply.seq, calls.pop(reply.seq))
    checks.append(("udp 50 requests sent at once get 50 right replies", many_in_flight))

    def finish():
        if client is not None:
            client.close()
    return checks, finish


def closes_connection(v) -> bool:
    """Vectors whose error leaves a byte stream out of step (wrong magic,
    length over the limit): a TCP server answers and closes."""
    decoded = v["decode"]
    return (decoded.get("error") == "frame_too_large"
            or (decoded.get("error") == "bad_frame" and decoded.get("seq") == 0))


def check_vector_reply(v, reply: at_rpc.Frame, exact: bool) -> None:
    want = v["reply"]
    if want["kind"] == "response":
        check_reply(reply, want["seq"], want["result"])
    else:
        check_reply(reply, want["seq"], code=want["code"])
    if exact and v.get("reply_frame") is not None:
        expected = bytes.fromhex(v["reply_frame"])
        # The reply passed its CRC check: its header is fully determined by
        # flags, seq and body, so this is the frame as it came.
        got = frame(reply.flags, reply.seq, reply.body)
        if got != expected:
            raise Fail("reply frame differs from the vector's: got "
                       f"{got[16:].decode('utf-8', 'replace')!r}, "
                       f"expected {expected[16:].decode('utf-8', 'replace')!r}")


def vector_checks(vectors, tcp, udp, exact):
    checks = []
    for v in vectors:
        data = bytes.fromhex(v["frame"])
        if tcp is not None:
            def run(v=v, data=data):
                with Conn(tcp) as c:
                    c.send(data)
                    if v["reply"] is not None:
                        check_vector_reply(v, c.reply(), exact)
                    if closes_connection(v):
                        c.expect_closed()
                    else:
                        c.expect_usable()
            checks.append((f"vector {v['name']} over tcp", run))
        fits = len(data) <= MAX_DATAGRAM and v["decode"].get("error") != "frame_too_large"
        if udp is not None and fits:
            def run(v=v, data=data):
                with Udp(udp) as u:
                    if v["reply"] is None:
                        u.send(data)
                        u.expect_no_reply_then_usable()
                    else:
                        check_vector_reply(v, u.exchange(data, v["reply"]["seq"]), exact)
            checks.append((f"vector {v['name']} over udp", run))
    return checks


def address(text: str):
    try:
        return split_host_port(text)
    except UsageError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def main(argv=None) -> int:
    global WAIT
    parser = argparse.ArgumentParser(
        description="Interop checks against a running AT calculator server.")
    parser.add_argument("--tcp", type=address, metavar="HOST:PORT",
                        help="the server's TCP address")
    parser.add_argument("--udp", type=address, metavar="HOST:PORT",
                        help="the server's UDP address")
    parser.add_argument("--vectors", default=DEFAULT_VECTORS, metavar="FILE",
                        help="the shared test vectors (default: tests/vectors/frames.json)")
    parser.add_argument("--exact", action="store_true",
                        help="also compare each vector's reply frame byte for byte")
    parser.add_argument("--timeout", type=float, default=WAIT, metavar="SECS",
                        help=f"bound of any single socket wait (default {WAIT:g})")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="print a line for each passed check too")
    args = parser.parse_args(argv)
    if args.tcp is None and args.udp is None:
        parser.error("give --tcp, --udp or both")
    if not args.timeout > 0:
        parser.error("--timeout must be positive")
    WAIT = args.timeout

    checks = []
    finishers = []
    if args.tcp is not None:
        tcp, finish = tcp_checks(args.tcp)
        checks += tcp
        finishers.append(finish)
    if args.udp is not None:
        udp, finish = udp_checks(args.udp)
        checks += udp
        finishers.append(finish)
    try:
        with open(args.vectors, encoding="utf-8") as f:
            vectors = json.load(f)["vectors"]
    except (OSError, ValueError, KeyError) as e:
        reason = f"{type(e).__name__}: {e}"

        def missing():
            raise Fail(f"cannot read {args.vectors}: {reason}")
        checks.append(("vectors file", missing))
    else:
        checks += vector_checks(vectors, args.tcp, args.udp, args.exact)

    passed = failed = 0
    started = time.monotonic()
    for name, run in checks:
        try:
            run()
        except Fail as e:
            failed += 1
            print(f"FAIL {name}: {e}", flush=True)
        except Exception as e:  # a socket error, a remote error where none was due, ...
            failed += 1
            print(f"FAIL {name}: {type(e).__name__}: {e}", flush=True)
        else:
            passed += 1
            if args.verbose:
                print(f"ok   {name}", flush=True)
    for finish in finishers:
        finish()
    if args.verbose:
        print(f"({time.monotonic() - started:.2f} s)", flush=True)
    print(f"{passed} passed, {failed} failed", flush=True)
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
