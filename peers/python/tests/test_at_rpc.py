#!/usr/bin/env python3
"""Tests of the installed at_rpc package: the shared vectors, the frame reader, bodies, the
calculator, client <-> server over TCP and UDP, authentication (section 9)
and the command line.

Run: pytest -q in peers/python, from a venv with the package installed
(loopback only, OS-chosen ports)
"""

import ipaddress
import json
import logging
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))

import at_rpc
from at_rpc import (
    AUTH, ERROR, MAX_SEQ, NONCE_LEN, REQUEST, RESPONSE, SID_LEN, Client, FrameError,
    FrameReader, ProtocolError, RemoteError, Server, error_frame, pack_auth_frame, pack_frame,
    parse_datagram,
)

VECTORS_PATH = os.path.join(HERE, "..", "..", "..", "tests", "vectors", "frames.json")
with open(VECTORS_PATH, encoding="utf-8") as f:
    VECTOR_FILE = json.load(f)
MAX_BODY = VECTOR_FILE["max_body"]
VECTORS = VECTOR_FILE["vectors"]
# The installed command (the console script beside this Python).
AT_RPC = os.path.join(os.path.dirname(sys.executable), "at-rpc")
SCRIPT = "at_rpc.py"  # argv[0] for at_rpc.main in this process
LOOPBACK = "127.0.0.1"
WAIT = 5.0  # the most any single network wait in these tests may take

# Keep expected warnings (bad frames on purpose) out of the test output.
logging.getLogger("at_rpc").setLevel(100)


def describe(item):
    """A decoded frame or error, in the vectors' terms."""
    if isinstance(item, FrameError):
        return {"error": item.code, "seq": item.seq}
    return {"kind": item.kind_name, "flags": item.flags, "seq": item.seq,
            "body": item.body.decode("utf-8")}


def wire(v):
    return bytes.fromhex(v["frame"])


def is_fatal(v):
    return v["decode"].get("error") in ("frame_too_large",) or v["name"] == "wrong_magic"


def read_frames(sock, count, timeout=WAIT):
    """Reads `count` frames from a TCP socket (raises on EOF or timeout)."""
    reader = FrameReader(1 << 20)
    frames = []
    deadline = time.monotonic() + timeout
    while True:
        for item in reader.feed():
            frames.append(item)
            if len(frames) == count:
                return frames
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        data = sock.recv(65536)
        if not data:
            raise ConnectionError(f"EOF after {len(frames)} of {count} frames")
        reader.push(data)


def read_until_eof(sock, timeout=WAIT):
    sock.settimeout(timeout)
    chunks = []
    while True:
        data = sock.recv(65536)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


def request(seq, func, *args):
    return pack_frame(REQUEST, seq, at_rpc.request_body(func, args))


PROBE_SEQ = 0xABCD
PROBE = request(PROBE_SEQ, "add", 1, 2)


class ServerCase(unittest.TestCase):
    """Starts a loopback server (TCP and UDP, OS ports) for each test."""

    server_options: dict = {}

    def setUp(self):
        self.server = Server(tcp=(LOOPBACK, 0), udp=(LOOPBACK, 0), **self.server_options).start()
        self.tcp_port = self.server.tcp_address[1]
        self.udp_port = self.server.udp_address[1]
        self.addCleanup(self.server.shutdown)

    def register_counter(self):
        """Registers `counter`, which counts its executions in self.count:
        how a test sees whether a call ran more than once."""
        self.count = 0
        count_lock = threading.Lock()

        def counter():
            with count_lock:
                self.count += 1
                return self.count

        self.server.register("counter", counter)

    def connect(self):
        sock = socket.create_connection((LOOPBACK, self.tcp_port), timeout=WAIT)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.addCleanup(sock.close)
        return sock

    def udp_socket(self):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((LOOPBACK, 0))
        sock.settimeout(WAIT)
        self.addCleanup(sock.close)
        return sock

    def client(self, udp=False, **kw):
        port = self.udp_port if udp else self.tcp_port
        c = Client(LOOPBACK, port, udp=udp, **kw)
        self.addCleanup(c.close)
        return c


# --------------------------------------------------------------------------
# The shared vectors


class VectorTests(unittest.TestCase):
    def test_there_are_vectors(self):
        self.assertGreaterEqual(len(VECTORS), 20)

    def test_pack_frame_rebuilds_every_good_frame(self):
        for v in VECTORS:
            d = v["decode"]
            if "kind" not in d:
                continue
            with self.subTest(v["name"]):
                self.assertEqual(pack_frame(d["flags"], d["seq"], d["body"]).hex(), v["frame"])

    def test_contract_vector_bytes(self):
        frame = pack_frame(REQUEST, 1, b'{"func": "add", "args": [10, 20]}')
        self.assertEqual(frame[:16].hex(), "4154000100000001000000210bbcd047")
        self.assertEqual(at_rpc.request_body("add", [10, 20]), b'{"func": "add", "args": [10, 20]}')
        self.assertEqual(zlib.crc32(b"123456789"), 0xCBF43926)
        self.assertEqual(at_rpc.checksum(b""), 0)
        h = at_rpc.unpack_header(frame)
        self.assertEqual((h.magic, h.flags, h.seq, h.length, h.crc), (0x4154, 1, 1, 33, 0x0BBCD047))

    def test_frame_reader_whole_and_byte_by_byte(self):
        for v in VECTORS:
            with self.subTest(v["name"]):
                items = list(FrameReader(MAX_BODY).feed(wire(v)))
                self.assertEqual(describe(items[0]), v["decode"])
                self.assertEqual(len(items), 1)
                reader = FrameReader(MAX_BODY)
                got = None
                for b in wire(v):
                    items = list(reader.feed(bytes([b])))
                    if items:
                        got = describe(items[0])
                        break
                self.assertEqual(got, v["decode"])

    def test_datagram_parser(self):
        for v in VECTORS:
            with self.subTest(v["name"]):
                try:
                    got = describe(parse_datagram(wire(v), MAX_BODY))
                except FrameError as e:
                    if v["name"] == "oversize_length":
                        # The header alone: as a datagram its size is wrong
                        # too, so it is dropped, never answered.
                        self.assertFalse(e.answer)
                        continue
                    got = describe(e)
                self.assertEqual(got, v["decode"])

    def test_reply_path_byte_for_byte(self):
        for v in VECTORS:
            with self.subTest(v["name"]):
                item = next(FrameReader(MAX_BODY).feed(wire(v)))
                if isinstance(item, FrameError):
                    reply = at_rpc.respond_to_error(item)
                else:
                    reply = at_rpc.respond(at_rpc.CALCULATOR, item, MAX_BODY)
                self.assertEqual(reply.hex() if reply else None, v["reply_frame"])
                if v["name"] != "oversize_length":
                    reply = at_rpc.respond_to_datagram(at_rpc.CALCULATOR, wire(v), MAX_BODY)
                    self.assertEqual(reply.hex() if reply else None, v["reply_frame"])
                if reply is not None:
                    frame = parse_datagram(reply)
                    r = v["reply"]
                    self.assertEqual(frame.kind_name, r["kind"])
                    self.assertEqual(frame.seq, r["seq"])
                    body = json.loads(frame.body)
                    if r["kind"] == "response":
                        self.assertEqual(body["result"], r["result"])
                        self.assertIs(type(body["result"]), type(r["result"]))
                    else:
                        self.assertEqual(body["code"], r["code"])


class VectorServerTests(ServerCase):
    def test_tcp_server_answers_every_vector(self):
        for v in VECTORS:
            with self.subTest(v["name"]):
                sock = self.connect()
                expected = v["reply_frame"]
                if is_fatal(v):
                    # Answer, then close: nothing after the reply.
                    sock.sendall(wire(v))
                    self.assertEqual(read_until_eof(sock).hex(), expected)
                    continue
                # A probe after the vector shows the stream stays in step and
                # that a vector without a reply really got none.
                sock.sendall(wire(v) + PROBE)
                count = 2 if expected else 1
                frames = read_frames(sock, count)
                got = [pack_frame(f.flags, f.seq, f.body) for f in frames]
                if expected:
                    self.assertEqual(got[0].hex(), expected)
                self.assertEqual(got[-1], pack_frame(RESPONSE, PROBE_SEQ, b'{"status": "success", "result": 3}'))
                sock.close()

    def test_udp_server_answers_every_vector(self):
        sock = self.udp_socket()
        server = (LOOPBACK, self.udp_port)
        probe_seq = 0x7000
        for v in VECTORS:
            with self.subTest(v["name"]):
                # One socket, one server thread: replies come in order, so a
                # probe's reply arriving first shows the vector got none.
                probe_seq += 1
                if len(wire(v)) > at_rpc.MAX_DATAGRAM:
                    continue  # max_length_body: no UDP datagram is that large
                sock.sendto(wire(v), server)
                sock.sendto(request(probe_seq, "add", 1, 2), server)
                expected = v["reply_frame"]
                if expected and v["name"] != "oversize_length":
                    self.assertEqual(sock.recv(70000).hex(), expected)
                self.assertEqual(parse_datagram(sock.recv(70000)).seq, probe_seq)


# --------------------------------------------------------------------------
# The frame reader


class FrameReaderTests(unittest.TestCase):
    def test_random_chunkings_of_all_frames_glued(self):
        stream_vectors = [v for v in VECTORS if not is_fatal(v)]
        glued = b"".join(wire(v) for v in stream_vectors)
        expected = [v["decode"] for v in stream_vectors]
        rng = random.Random(1234)
        for trial in range(60):
            reader = FrameReader(MAX_BODY)
            got = []
            pos = 0
            while pos < len(glued):
                n = rng.choice([1, 2, 3, 7, 16, 17, 100, 1000, 70000]) if trial % 2 else rng.randint(1, 40)
                got.extend(describe(i) for i in reader.feed(glued[pos:pos + n]))
                pos += n
            self.assertEqual(got, expected, f"trial {trial}")
            self.assertEqual(reader.buffered(), 0)

    def test_fatal_errors_stop_the_stream(self):
        good = wire(VECTORS[0])
        for name, code, seq in (("wrong_magic", "bad_frame", 0), ("oversize_length", "frame_too_large", 32)):
            bad = wire(next(v for v in VECTORS if v["name"] == name))
            items = list(FrameReader(MAX_BODY).feed(good + bad + good))
            self.assertEqual([describe(i).get("error") for i in items], [None, code])
            self.assertTrue(items[1].fatal)
            self.assertEqual(items[1].seq, seq)

    def test_errors_reported_from_the_header_alone(self):
        reader = FrameReader(MAX_BODY)
        self.assertEqual(list(reader.feed(b"T")), [])
        items = list(reader.feed(b"A"))  # two bytes show a wrong magic
        self.assertEqual(describe(items[0]), {"error": "bad_frame", "seq": 0})
        header = struct.pack(">HHIII", 0x4154, REQUEST, 9, MAX_BODY + 1, 0)
        reader = FrameReader(MAX_BODY)
        self.assertEqual(list(reader.feed(header[:15])), [])
        items = list(reader.feed(header[15:]))
        self.assertEqual(describe(items[0]), {"error": "frame_too_large", "seq": 9})
        # A smaller limit applies to lengths the default would accept.
        small = FrameReader(10)
        items = list(small.feed(pack_frame(REQUEST, 3, b"x" * 11)[:16]))
        self.assertEqual(describe(items[0]), {"error": "frame_too_large", "seq": 3})

    def test_datagram_sizes(self):
        frame = pack_frame(REQUEST, 5, b"{}")
        for data in (frame[:-1], frame + b" ", frame[:10], b""):
            with self.assertRaises(FrameError) as cm:
                parse_datagram(data)
            self.assertFalse(cm.exception.answer)
        self.assertEqual(parse_datagram(frame).seq, 5)


# --------------------------------------------------------------------------
# Bodies


class BodyTests(unittest.TestCase):
    def parse_error(self, body):
        with self.assertRaises(at_rpc.BodyError) as cm:
            at_rpc.parse_request(body.encode() if isinstance(body, str) else body)
        return cm.exception.code, cm.exception.message

    def test_canonical_bodies(self):
        self.assertEqual(at_rpc.success_body(30), b'{"status": "success", "result": 30}')
        self.assertEqual(at_rpc.success_body(5.0), b'{"status": "success", "result": 5.0}')
        self.assertEqual(at_rpc.error_body("division_by_zero", "division by zero"),
                         b'{"status": "error", "code": "division_by_zero", "message": "division by zero"}')
        self.assertEqual(at_rpc.success_body({"a": [1, 2.5, None, True, "\u00e4\n"]}),
                         '{"status": "success", "result": {"a": [1, 2.5, null, true, "\u00e4\\n"]}}'.encode())
        self.assertEqual(at_rpc.encode_value("\x01\x1f\"\\\b\f\t\r\x7f"), '"\\u0001\\u001f\\"\\\\\\b\\f\\t\\r\x7f"')

    def test_doubles_in_ryu_form(self):
        self.assertEqual(at_rpc.format_double(-0.0), "-0.0")
        cases = {5.0: "5.0", 2.5: "2.5", 0.1: "0.1", 1e300: "1e300", 1e-7: "1e-7",
                 1.5e20: "1.5e20", 0.1 + 0.2: "0.30000000000000004", 12340000000.0: "12340000000.0",
                 1e16: "1e16", 1e15: "1000000000000000.0", 0.001234: "0.001234", 1e-5: "0.00001",
                 1e-6: "1e-6", 1.234e33: "1.234e33", 0.0: "0.0", -3.5: "-3.5",
                 5e-324: "5e-324", 1.7976931348623157e308: "1.7976931348623157e308",
                 123456789012345680.0: "1.2345678901234568e17"}
        for x, text in cases.items():
            self.assertEqual(at_rpc.format_double(x), text)
            self.assertEqual(float(text), x)
        for bad in (float("inf"), float("nan")):
            with self.assertRaises(at_rpc.EncodeError) as cm:
                at_rpc.success_body(bad)
            self.assertEqual(cm.exception.code, "overflow")

    def test_requests_read_as_the_contract_says(self):
        p = at_rpc.parse_request
        self.assertEqual(p(b'{"func": "f"}'), ("f", []))
        self.assertEqual(p(b' {"args": [10, 2.5, "x", true, null], "func": "f", "v": {"n": [1]}} '),
                         ("f", [10, 2.5, "x", True, None]))
        self.assertEqual(p(b'{"func": "f", "args": [10.0, 1e3, -0]}'), ("f", [10.0, 1000.0, 0]))
        self.assertIs(type(p(b'{"func": "f", "args": [10.0]}')[1][0]), float)
        self.assertEqual(p(b'{"func": "f", "args": [[1, {"a": 2}]]}'), ("f", [[1, {"a": 2}]]))
        # An integer outside i64 in an ignored member, or nested, is no error.
        self.assertEqual(p(b'{"x": 99999999999999999999, "func": "f"}'), ("f", []))
        self.assertEqual(p(b'{"func": "f", "args": [[99999999999999999999]]}'),
                         ("f", [[99999999999999999999]]))
        self.assertEqual(p(b'{"func": "f", "args": [9223372036854775807, -9223372036854775808]}'),
                         ("f", [2**63 - 1, -2**63]))

    def test_request_errors(self):
        e = self.parse_error
        self.assertEqual(e("add(1, 2)"), ("bad_request", "body is not valid JSON"))
        self.assertEqual(e(""), ("bad_request", "body is not valid JSON"))
        self.assertEqual(e(b"\xff{}"), ("bad_request", "body is not UTF-8"))
        self.assertEqual(e("[1, 2]"), ("bad_request", "body is not a JSON object"))
        self.assertEqual(e('"x"'), ("bad_request", "body is not a JSON object"))
        self.assertEqual(e("[1, 2] x"), ("bad_request", "body is not valid JSON"))
        self.assertEqual(e('{"args": []}'), ("bad_request", 'missing "func"'))
        self.assertEqual(e('{"func": 7}'), ("bad_request", '"func" must be a string'))
        self.assertEqual(e('{"func": "f", "args": 7}'), ("bad_request", '"args" must be an array'))
        self.assertEqual(e('{"func": "f", "func": "g"}'), ("bad_request", "a member appears twice"))
        self.assertEqual(e('{"func": "f", "args": [], "args": []}'), ("bad_request", "a member appears twice"))
        self.assertEqual(e('{"func": "f", "args": [NaN]}'), ("bad_request", "body is not valid JSON"))
        self.assertEqual(e('{"func": "f", "x": Infinity}'), ("bad_request", "body is not valid JSON"))
        self.assertEqual(e('{"func": "\\ud800"}'), ("bad_request", "body is not valid JSON"))
        self.assertEqual(e('{"func": "f", "x": ["\\udc00"]}'), ("bad_request", "body is not valid JSON"))
        self.assertEqual(e('{"func": "f", "x": {"\\ud83dx": 1}}'), ("bad_request", "body is not valid JSON"))
        self.assertEqual(e('{"func": "a\tb"}'), ("bad_request", "body is not valid JSON"))
        self.assertEqual(e('{"func": "f",}'), ("bad_request", "body is not valid JSON"))
        self.assertEqual(e('{"func": "f"} {}'), ("bad_request", "body is not valid JSON"))
        self.assertEqual(e('{"func": "f", "args": [01]}'), ("bad_request", "body is not valid JSON"))
        self.assertEqual(e('{"func": "f", "args": [' + ", ".join(["1"] * 17) + "]}"),
                         ("invalid_arguments", "too many arguments"))
        self.assertEqual(e('{"func": "f", "args": [9223372036854775808]}'),
                         ("overflow", "integer argument outside 64-bit range"))
        self.assertEqual(e('{"func": "f", "args": [-9223372036854775809]}'),
                         ("overflow", "integer argument outside 64-bit range"))
        self.assertEqual(e('{"func": "f", "args": [' + "9" * 5000 + "]}"),
                         ("overflow", "integer argument outside 64-bit range"))
        # A number the scanner would cut short is malformed in itself.
        self.assertEqual(e('{"func": 4.}'), ("bad_request", "body is not valid JSON"))
        self.assertEqual(e('{"func": 1e, "x": 1}'), ("bad_request", "body is not valid JSON"))
        self.assertEqual(e('{"func": "f", "args": 7E+}'), ("bad_request", "body is not valid JSON"))
        self.assertEqual(e('{"func": 1.5.3}'), ("bad_request", '"func" must be a string'))
        self.assertEqual(e('{"func": 01}'), ("bad_request", '"func" must be a string'))
        # In document order: the first problem met is the one reported.
        self.assertEqual(e('{"func": 1, "x": [1,'), ("bad_request", '"func" must be a string'))
        self.assertEqual(e('{"args": 1, "func": 2}'), ("bad_request", '"args" must be an array'))

    def test_nesting_limit(self):
        ok = '{"func": "f", "x": ' + "[" * 32 + "]" * 32 + "}"
        self.assertEqual(at_rpc.parse_request(ok.encode()), ("f", []))
        deep = '{"func": "f", "x": ' + "[" * 33 + "]" * 33 + "}"
        self.assertEqual(self.parse_error(deep), ("bad_request", "JSON nested too deeply"))
        broken = '{"func": "f", "x": ' + "[" * 40 + "x"
        self.assertEqual(self.parse_error(broken), ("bad_request", "JSON nested too deeply"))
        # The args array's own brackets do not count.
        args = '{"func": "f", "args": [' + "[" * 32 + "]" * 32 + "]}"
        self.assertEqual(at_rpc.parse_request(args.encode())[1], [eval("[" * 32 + "]" * 32)])
        args = '{"func": "f", "args": [' + "[" * 33 + "]" * 33 + "]}"
        self.assertEqual(self.parse_error(args), ("bad_request", "JSON nested too deeply"))
        # What comes first wins, also in a body the scanner rejects later.
        lone = '{"func": "f", "x": ["\\ud800", ' + "[" * 40 + "x"
        self.assertEqual(self.parse_error(lone), ("bad_request", "body is not valid JSON"))
        nan = '{"func": "f", "x": [NaN, ' + "[" * 40 + "x"
        self.assertEqual(self.parse_error(nan), ("bad_request", "body is not valid JSON"))
        pair = '{"func": "f", "x": ["\\ud83d\\ude00", ' + "[" * 40 + "x"
        self.assertEqual(self.parse_error(pair), ("bad_request", "JSON nested too deeply"))
        very = '{"func": "f", "x": ' + "[" * 100000 + "]" * 100000 + "}"
        self.assertEqual(self.parse_error(very), ("bad_request", "JSON nested too deeply"))

    def test_replies(self):
        r = at_rpc.parse_reply
        self.assertEqual(r(b'{"status": "success", "result": 2.5}'), (True, 2.5, "", ""))
        self.assertEqual(r(b'{"result": [1], "status": "success", "x": 0}'), (True, [1], "", ""))
        self.assertEqual(r(b'{"status": "error", "code": "overflow", "message": "m"}'), (False, None, "overflow", "m"))
        self.assertEqual(r(b'{"status": "error", "code": "new_code"}'), (False, None, "new_code", ""))
        for bad in (b'{"status": "success"}', b'{"status": "error"}', b'{"status": "maybe"}',
                    b'{"result": 1}', b'{"status": 1, "result": 1}', b"[]", b"nope",
                    b'{"status": "success", "result": 99999999999999999999}'):
            with self.assertRaises(at_rpc.BodyError):
                r(bad)

    def test_cli_args(self):
        self.assertEqual(at_rpc.cli.cli_arg("10"), 10)
        self.assertIs(type(at_rpc.cli.cli_arg("10")), int)
        self.assertEqual(at_rpc.cli.cli_arg("2.5"), 2.5)
        self.assertIs(at_rpc.cli.cli_arg("true"), True)
        self.assertEqual(at_rpc.cli.cli_arg('"x"'), "x")
        self.assertEqual(at_rpc.cli.cli_arg("hello"), "hello")
        self.assertEqual(at_rpc.cli.cli_arg("NaN"), "NaN")
        self.assertEqual(at_rpc.cli.cli_arg("[1, 2]"), [1, 2])
        big = at_rpc.cli.cli_arg("99999999999999999999")
        self.assertEqual(at_rpc.request_body("add", [big, 1]), b'{"func": "add", "args": [99999999999999999999, 1]}')


# --------------------------------------------------------------------------
# The calculator


class CalculatorTests(unittest.TestCase):
    def err(self, fn, *args):
        with self.assertRaises(RemoteError) as cm:
            fn(*args)
        return cm.exception.code, cm.exception.message

    def test_semantics(self):
        c = at_rpc.CALCULATOR
        self.assertEqual(c["add"](10, 20), 30)
        self.assertIs(type(c["add"](10, 20)), int)
        self.assertEqual(c["sub"](-9223372036854775807, 1), -2**63)
        self.assertEqual(c["mul"](6, 7), 42)
        self.assertIs(type(c["add"](10.0, 20)), float)
        self.assertEqual(c["div"](10, 4), 2.5)
        self.assertIs(type(c["div"](10, 2)), float)
        self.assertEqual(repr(c["div"](0, -5)), "-0.0")
        self.assertEqual(c["div"](9007199254740993, 3), 3002399751580331.0)
        self.assertEqual(c["div"](2**63 - 1, 3), 3.0744573456182584e18)
        self.assertEqual(c["div"](-2**63, -1), 9.223372036854776e18)
        self.assertEqual(c["div"](9007199254740995, 2), 4503599627370498.0)
        self.assertEqual(c["add"](0.1, 0.2), 0.30000000000000004)
        self.assertEqual(c["div"](1e-300, 1e300), 0.0)

    def test_errors(self):
        c = at_rpc.CALCULATOR
        two = ("invalid_arguments", "expected two numbers")
        self.assertEqual(self.err(c["add"], 2**63 - 1, 1), ("overflow", "integer result outside 64-bit range"))
        self.assertEqual(self.err(c["sub"], -2**63, 1), ("overflow", "integer result outside 64-bit range"))
        self.assertEqual(self.err(c["mul"], 2**63 - 1, 2), ("overflow", "integer result outside 64-bit range"))
        self.assertEqual(self.err(c["mul"], 1e300, 1e300), ("overflow", "result is not a finite number"))
        self.assertEqual(self.err(c["div"], 1e300, 1e-300), ("overflow", "result is not a finite number"))
        self.assertEqual(self.err(c["div"], 1, 0), ("division_by_zero", "division by zero"))
        self.assertEqual(self.err(c["div"], 1.0, -0.0), ("division_by_zero", "division by zero"))
        self.assertEqual(self.err(c["div"], 0, 0.0), ("division_by_zero", "division by zero"))
        for args in ((1,), (), (1, 2, 3), (True, 2), (1, False), ("1", 2), (None, 1), ([1], 2)):
            self.assertEqual(self.err(c["add"], *args), two)
            self.assertEqual(self.err(c["div"], *args), two)


# --------------------------------------------------------------------------
# Client <-> server


class ClientServerTests(ServerCase):
    def setUp(self):
        super().setUp()
        self.register_counter()

        def fail():
            raise ValueError("boom")

        def custom():
            raise RemoteError("invalid_arguments", "no, th\u00e4nks")

        self.server.register("fail", fail)
        self.server.register("custom", custom)
        self.server.register("echo", lambda *args: list(args))
        self.server.register("weird", lambda: object())
        self.server.register("inf", lambda: float("inf"))
        self.server.register("big", lambda: 2**64)

    def check_calls(self, client):
        self.assertEqual(client.call("add", 10, 20), 30)
        self.assertEqual(client.call("sub", 10, 20), -10)
        self.assertEqual(client.call("mul", 6, 7), 42)
        self.assertEqual(client.call("div", 10, 4), 2.5)
        result = client.call("div", 10, 2)
        self.assertEqual((result, type(result)), (5.0, float))
        self.assertEqual(client.call("add", 1.5, 2), 3.5)
        self.assertEqual(client.call("echo", 1, "x\u2603", None, True, [1, {"a": 2.5}]),
                         [1, "x\u2603", None, True, [1, {"a": 2.5}]])
        errors = [
            (("div", 1, 0), "division_by_zero", "division by zero"),
            (("add", 2**63 - 1, 1), "overflow", "integer result outside 64-bit range"),
            (("add", 2**63, 0), "overflow", "integer argument outside 64-bit range"),
            (("mul", 1e300, 1e300), "overflow", "result is not a finite number"),
            (("add", 1), "invalid_arguments", "expected two numbers"),
            (("add", True, 1), "invalid_arguments", "expected two numbers"),
            (("echo",) + tuple(range(17)), "invalid_arguments", "too many arguments"),
            (("pow", 2, 8), "unknown_function", "unknown function"),
            (("x" * 65,), "unknown_function", "unknown function"),
            (("fail",), "internal", "the function failed"),
            (("weird",), "internal", "result has no JSON form"),
            (("inf",), "overflow", "result is not a finite number"),
            (("big",), "overflow", "integer result outside 64-bit range"),
            (("custom",), "invalid_arguments", "no, th\u00e4nks"),
        ]
        for call, code, message in errors:
            with self.subTest(call=call[0]):
                with self.assertRaises(RemoteError) as cm:
                    client.call(*call)
                self.assertEqual((cm.exception.code, cm.exception.message), (code, message))
        # The server keeps going after a failing function.
        self.assertEqual(client.call("add", 2, 2), 4)

    def test_tcp(self):
        client = self.client()
        self.check_calls(client)
        self.assertGreater(client._seq, 10)

    def test_udp(self):
        self.check_calls(self.client(udp=True))

    def test_bad_request_over_tcp(self):
        sock = self.connect()
        sock.sendall(pack_frame(REQUEST, 7, b'{"args": [1]}'))
        (reply,) = read_frames(sock, 1)
        self.assertEqual((reply.kind, reply.seq), (ERROR, 7))
        self.assertEqual(at_rpc.parse_reply(reply.body), (False, None, "bad_request", 'missing "func"'))

    def test_client_request_too_large_for_the_server(self):
        server = Server(tcp=(LOOPBACK, 0), udp=None, max_frame=100).start()
        self.addCleanup(server.shutdown)
        with Client(LOOPBACK, server.tcp_address[1]) as client:
            with self.assertRaises(RemoteError) as cm:
                client.call("echo", "x" * 200)
            self.assertEqual(cm.exception.code, "frame_too_large")
            # The server closed that connection; the client connects again.
            self.assertEqual(client.call("add", 1, 1), 2)

    def test_busy(self):
        server = Server(tcp=(LOOPBACK, 0), udp=None, max_connections=1).start()
        self.addCleanup(server.shutdown)
        first = Client(LOOPBACK, server.tcp_address[1])
        self.addCleanup(first.close)
        self.assertEqual(first.call("add", 1, 1), 2)  # holds the one connection
        with Client(LOOPBACK, server.tcp_address[1]) as second:
            with self.assertRaises(RemoteError) as cm:
                second.call("add", 1, 1)
            self.assertEqual(cm.exception.code, "busy")

    def test_sticky_writes_pipelined(self):
        sock = self.connect()
        n = 500
        sock.sendall(b"".join(request(i + 1, "add", i, 1000) for i in range(n)))
        replies = read_frames(sock, n)
        self.assertEqual([r.seq for r in replies], list(range(1, n + 1)))
        self.assertEqual([at_rpc.parse_reply(r.body)[1] for r in replies], [i + 1000 for i in range(n)])

    def test_split_writes_one_byte_at_a_time(self):
        sock = self.connect()
        data = request(1, "mul", 6, 7) + request(2, "div", 10, 4)
        for b in data:
            sock.send(bytes([b]))
        replies = read_frames(sock, 2)
        self.assertEqual([(r.seq, at_rpc.parse_reply(r.body)[1]) for r in replies], [(1, 42), (2, 2.5)])

    def test_crc_mismatch_keeps_the_connection(self):
        sock = self.connect()
        good = request(5, "add", 1, 2)
        bad = bytearray(request(4, "add", 1, 2))
        bad[-2] ^= 1
        sock.sendall(bytes(bad) + good)
        first, second = read_frames(sock, 2)
        self.assertEqual((first.seq, at_rpc.parse_reply(first.body)[2]), (4, "checksum_mismatch"))
        self.assertEqual((second.seq, at_rpc.parse_reply(second.body)[1]), (5, 3))

    def test_type_bits_and_replies_on_tcp(self):
        sock = self.connect()
        body = b'{"func": "add", "args": [1, 2]}'
        sock.sendall(pack_frame(0, 8, body) + pack_frame(REQUEST | ERROR, 9, body)
                     + pack_frame(RESPONSE, 10, body) + pack_frame(ERROR, 11, body) + PROBE)
        frames = read_frames(sock, 3)
        self.assertEqual([(f.seq, at_rpc.parse_reply(f.body)[2]) for f in frames],
                         [(8, "bad_frame"), (9, "bad_frame"), (PROBE_SEQ, "")])

    def test_half_frame_timeout_and_idle_timeout(self):
        server = Server(tcp=(LOOPBACK, 0), udp=None, frame_timeout=0.2, idle_timeout=0.3).start()
        self.addCleanup(server.shutdown)
        for data, least in ((request(1, "add", 1, 2)[:10], 0.2), (b"", 0.3)):
            sock = socket.create_connection(server.tcp_address, timeout=WAIT)
            self.addCleanup(sock.close)
            started = time.monotonic()
            sock.sendall(data)
            self.assertEqual(read_until_eof(sock), b"")
            self.assertGreaterEqual(time.monotonic() - started, least - 0.05)

    def test_shutdown_closes_idle_connections(self):
        server = Server(tcp=(LOOPBACK, 0), udp=(LOOPBACK, 0)).start()
        sock = socket.create_connection(server.tcp_address, timeout=WAIT)
        self.addCleanup(sock.close)
        sock.sendall(request(1, "add", 1, 2))
        read_frames(sock, 1)
        started = time.monotonic()
        server.shutdown()
        self.assertLess(time.monotonic() - started, 2.0)
        self.assertEqual(read_until_eof(sock), b"")
        with self.assertRaises(OSError):
            socket.create_connection(server.tcp_address, timeout=WAIT).close()

    def test_tcp_client_rejects_a_reply_with_another_seq(self):
        listener = socket.create_server((LOOPBACK, 0))
        self.addCleanup(listener.close)

        def fake():
            conn, _ = listener.accept()
            with conn:
                read_frames(conn, 1)
                conn.sendall(pack_frame(RESPONSE, 99, b'{"status": "success", "result": 1}'))
                read_until_eof(conn)

        t = threading.Thread(target=fake, daemon=True)
        t.start()
        with Client(LOOPBACK, listener.getsockname()[1], timeout=WAIT) as client:
            with self.assertRaises(ProtocolError):
                client.call("add", 1, 2)
        t.join(WAIT)

    def test_tcp_client_connection_errors(self):
        # A bound socket that does not listen refuses connections.
        closed = socket.socket()
        closed.bind((LOOPBACK, 0))
        self.addCleanup(closed.close)
        with Client(LOOPBACK, closed.getsockname()[1]) as client:
            with self.assertRaises(ConnectionError):
                client.call("add", 1, 2)
        # A server that accepts and says nothing: the call times out.
        listener = socket.create_server((LOOPBACK, 0))
        self.addCleanup(listener.close)
        with Client(LOOPBACK, listener.getsockname()[1], timeout=0.3) as client:
            started = time.monotonic()
            with self.assertRaises(TimeoutError):
                client.call("add", 1, 2)
            self.assertLess(time.monotonic() - started, 1.5)


class UdpTests(ServerCase):
    def setUp(self):
        super().setUp()
        self.register_counter()

    def test_duplicates_run_once(self):
        sock = self.udp_socket()
        server = (LOOPBACK, self.udp_port)
        datagram = request(41, "counter")
        for _ in range(3):
            sock.sendto(datagram, server)
        replies = [sock.recv(70000) for _ in range(3)]
        self.assertEqual(len(set(replies)), 1)
        self.assertEqual(at_rpc.parse_reply(parse_datagram(replies[0]).body)[1], 1)
        self.assertEqual(self.count, 1)
        # A new seq runs again; so does the same seq with another request
        # (a restarted client reusing its address and seq).
        sock.sendto(request(42, "counter"), server)
        self.assertEqual(at_rpc.parse_reply(parse_datagram(sock.recv(70000)).body)[1], 2)
        sock.sendto(pack_frame(REQUEST, 41, b'{"func": "counter", "args": []} '), server)
        self.assertEqual(at_rpc.parse_reply(parse_datagram(sock.recv(70000)).body)[1], 3)
        self.assertEqual(self.count, 3)
        # Another client address with the same seq is another request.
        other = self.udp_socket()
        other.sendto(datagram, server)
        self.assertEqual(at_rpc.parse_reply(parse_datagram(other.recv(70000)).body)[1], 4)

    def test_client_retransmits_through_a_lossy_link(self):
        """A proxy that drops the first reply: the client retransmits with
        the same seq, and the server answers from its cache."""
        proxy = self.udp_socket()
        server = (LOOPBACK, self.udp_port)
        seen = []

        def relay():
            client_addr = None
            dropped = False
            proxy.settimeout(WAIT)
            while True:
                try:
                    data, addr = proxy.recvfrom(70000)
                except OSError:
                    return
                if addr == server:
                    if not dropped:
                        dropped = True
                        continue
                    proxy.sendto(data, client_addr)
                    return
                client_addr = addr
                seen.append(parse_datagram(data).seq)
                proxy.sendto(data, server)

        t = threading.Thread(target=relay, daemon=True)
        t.start()
        with Client(LOOPBACK, proxy.getsockname()[1], udp=True, timeout=3.0, retries=4) as client:
            self.assertEqual(client.call("counter"), 1)
        t.join(WAIT)
        self.assertGreaterEqual(len(seen), 2)
        self.assertEqual(len(set(seen)), 1)
        self.assertEqual(self.count, 1)

    def test_silent_server_times_out_in_time(self):
        silent = self.udp_socket()
        timeout, retries = 0.6, 3
        with Client(LOOPBACK, silent.getsockname()[1], udp=True, timeout=timeout, retries=retries) as client:
            started = time.monotonic()
            with self.assertRaises(TimeoutError):
                client.call("add", 1, 2)
            elapsed = time.monotonic() - started
        self.assertGreaterEqual(elapsed, timeout - 0.01)
        self.assertLess(elapsed, timeout + 0.5)
        silent.settimeout(0)
        seqs = []
        while True:
            try:
                seqs.append(parse_datagram(silent.recv(70000)).seq)
            except BlockingIOError:
                break
        self.assertEqual(seqs, [1] * (retries + 1))

    def test_client_ignores_replies_with_another_seq(self):
        fake = self.udp_socket()

        def answer():
            data, addr = fake.recvfrom(70000)
            seq = parse_datagram(data).seq
            fake.sendto(pack_frame(RESPONSE, seq + 100, b'{"status": "success", "result": "stale"}'), addr)
            fake.sendto(b"garbage", addr)
            fake.sendto(pack_frame(RESPONSE, seq, b'{"status": "success", "result": "fresh"}'), addr)

        t = threading.Thread(target=answer, daemon=True)
        t.start()
        with Client(LOOPBACK, fake.getsockname()[1], udp=True, timeout=WAIT) as client:
            self.assertEqual(client.call("anything"), "fresh")
        t.join(WAIT)

    def test_wrong_size_datagrams_are_dropped(self):
        sock = self.udp_socket()
        server = (LOOPBACK, self.udp_port)
        frame = request(3, "add", 1, 2)
        sock.sendto(frame[:-1], server)
        sock.sendto(frame + b"x", server)
        sock.sendto(b"AT", server)
        sock.sendto(PROBE, server)
        self.assertEqual(parse_datagram(sock.recv(70000)).seq, PROBE_SEQ)


class ReplyCacheTests(unittest.TestCase):
    def test_bounds(self):
        now = [0.0]
        cache = at_rpc.ReplyCache(max_entries=4, max_per_client=2, max_age=10, clock=lambda: now[0])
        cache.put("a", 1, "f", b"a1")
        cache.put("a", 2, "f", b"a2")
        cache.put("a", 3, "f", b"a3")  # over the per-client bound: a1 goes
        self.assertIsNone(cache.get("a", 1, "f"))
        self.assertEqual(cache.get("a", 3, "f"), b"a3")
        self.assertIsNone(cache.get("a", 3, "other"))
        for i in range(4):
            cache.put(("b", i), 1, "f", b"b")
        self.assertEqual(len(cache), 4)
        self.assertIsNone(cache.get("a", 2, "f"))
        now[0] = 10.5
        self.assertIsNone(cache.get(("b", 3), 1, "f"))
        self.assertEqual(len(cache), 0)


# --------------------------------------------------------------------------
# Authentication (contract section 9)

from support import AUTH_VECTORS, KEY, KEY_HEX, KID, NC, NS, OTHER_KEY, SID  # noqa: E402


def vector_random(n):
    """The vectors' Ns (16 bytes) and SID (8 bytes), as a server draws them."""
    return {NONCE_LEN: NS, SID_LEN: SID}[n]


def hello_request(seq, kid=KID, nc=NC):
    return request(seq, "rpc.hello", kid, nc.hex() if isinstance(nc, bytes) else nc)


def fix_crc(data):
    """A frame with its CRC recomputed (after tampering with its body)."""
    data = bytearray(data)
    struct.pack_into(">I", data, 12, at_rpc.checksum(bytes(data[16:])))
    return bytes(data)


def raw(frame):
    """A checked Frame back to its wire bytes."""
    return pack_frame(frame.flags, frame.seq, frame.body)


def strip_auth(data):
    """An authenticated reply without its AUTH bit, SID and tag."""
    frame = parse_datagram(data)
    return pack_frame(frame.flags & ~AUTH, frame.seq, at_rpc.split_auth(frame).body)


def bad_tag(data):
    data = bytearray(data)
    data[-1] ^= 0x01
    return fix_crc(bytes(data))


class Sess:
    """A session a test opened by a raw rpc.hello."""

    def __init__(self, sid, k_req, k_rep):
        self.sid, self.k_req, self.k_rep = sid, k_req, k_rep

    def frame(self, seq, func, *args, flags=REQUEST):
        return pack_auth_frame(flags, seq, at_rpc.request_body(func, args), self.sid, self.k_req)


class AuthPrimitiveTests(unittest.TestCase):
    def test_hkdf_rfc5869_case_1(self):
        prk = at_rpc.hkdf_extract(bytes(range(13)), b"\x0b" * 22)
        self.assertEqual(prk.hex(), "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5")
        okm = at_rpc.hkdf_expand(prk, bytes(range(0xf0, 0xfa)), 42)
        self.assertEqual(okm.hex(), "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
                                    "34007208d5b887185865")

    def test_contract_keys_and_proof(self):
        k_req, k_rep = at_rpc.derive_keys(KEY, KID, NC, NS)
        self.assertEqual(k_req.hex(), "078a338e7c9a7cb26f514ace9492a0a274fd87ca376842fb11d414cb712e1b2e")
        self.assertEqual(k_rep.hex(), "85218bd4b82a71a034757104a2297bf1e7eec1ba00d6166cbc6d9ff717c3fc24")
        self.assertEqual(at_rpc.hello_proof(k_rep, SID).hex(), "e5dea66ef6722f79f4d026382ed242b2")

    def test_contract_frames_from_the_primitives(self):
        v = AUTH_VECTORS
        k_req, k_rep = at_rpc.derive_keys(KEY, KID, NC, NS)
        self.assertEqual(hello_request(1), v["hello"])
        result = {"session": SID.hex(), "nonce": NS.hex(),
                  "proof": at_rpc.hello_proof(k_rep, SID).hex()}
        self.assertEqual(pack_frame(RESPONSE, 1, at_rpc.success_body(result)), v["hello_reply"])
        body = at_rpc.request_body
        self.assertEqual(pack_auth_frame(REQUEST, 2, body("add", [10, 20]), SID, k_req), v["add"])
        self.assertEqual(pack_auth_frame(RESPONSE, 2, at_rpc.success_body(30), SID, k_rep), v["add_reply"])
        self.assertEqual(pack_auth_frame(REQUEST, 3, body("div", [1, 0]), SID, k_req), v["div"])
        self.assertEqual(pack_auth_frame(ERROR, 3, at_rpc.error_body("division_by_zero", "division by zero"),
                                         SID, k_rep), v["div_reply"])

    def test_authenticated_frames_parse(self):
        k_req, k_rep = at_rpc.derive_keys(KEY, KID, NC, NS)
        for name, key in (("add", k_req), ("add_reply", k_rep), ("div", k_req), ("div_reply", k_rep)):
            with self.subTest(name):
                frame = parse_datagram(AUTH_VECTORS[name])
                self.assertTrue(frame.flags & AUTH)
                self.assertEqual(raw(frame), AUTH_VECTORS[name])
                items = list(FrameReader().feed(AUTH_VECTORS[name]))
                self.assertEqual(items, [frame])
                parts = at_rpc.split_auth(frame)
                self.assertEqual(parts.header, AUTH_VECTORS[name][:12])
                self.assertEqual(parts.sid, SID)
                self.assertTrue(at_rpc.tag_ok(key, parts))
                # The key follows the role: the other key does not verify.
                self.assertFalse(at_rpc.tag_ok(k_rep if key == k_req else k_req, parts))
        self.assertIsNone(at_rpc.split_auth(at_rpc.Frame(REQUEST | AUTH, 1, b"x" * 23)))
        # An AUTH frame still needs exactly one type bit.
        with self.assertRaises(FrameError) as cm:
            parse_datagram(pack_auth_frame(0, 4, b"{}", SID, k_req))
        self.assertEqual(cm.exception.code, "bad_frame")

    def test_server_answers_the_vectors_byte_for_byte(self):
        server = Server(tcp=None, udp=None, keys={KID: KEY})
        server.sessions.random_bytes = vector_random
        for udp in (False, True):
            with self.subTest(udp=udp):
                server.sessions._sessions.clear()
                for req, rep in (("hello", "hello_reply"), ("add", "add_reply"), ("div", "div_reply")):
                    reply = server.handle(parse_datagram(AUTH_VECTORS[req]), ("127.0.0.1", 5000), udp)
                    self.assertEqual(reply.hex(), AUTH_VECTORS[rep].hex(), req)

    def test_client_sends_the_vectors_byte_for_byte(self):
        """A fake server that expects exactly the contract's frames and
        answers with the contract's replies."""
        v = AUTH_VECTORS
        listener = socket.create_server((LOOPBACK, 0))
        self.addCleanup(listener.close)
        got = []

        def fake():
            conn, _ = listener.accept()
            with conn:
                for req, rep in (("hello", "hello_reply"), ("add", "add_reply"), ("div", "div_reply")):
                    (frame,) = read_frames(conn, 1)
                    got.append(raw(frame))
                    conn.sendall(v[rep])
                read_until_eof(conn)

        t = threading.Thread(target=fake, daemon=True)
        t.start()
        with Client(LOOPBACK, listener.getsockname()[1], key=(KID, KEY), timeout=WAIT) as client:
            client._random = lambda n: NC
            self.assertEqual(client.call("add", 10, 20), 30)
            with self.assertRaises(RemoteError) as cm:
                client.call("div", 1, 0)
            self.assertEqual((cm.exception.code, cm.exception.message), ("division_by_zero", "division by zero"))
        t.join(WAIT)
        self.assertEqual([g.hex() for g in got], [v["hello"].hex(), v["add"].hex(), v["div"].hex()])

    def test_reserved_bits_are_covered_as_sent(self):
        server = Server(tcp=None, udp=None, keys={KID: KEY})
        server.sessions.random_bytes = vector_random
        server.handle(parse_datagram(AUTH_VECTORS["hello"]), ("127.0.0.1", 1))
        k_req, k_rep = at_rpc.derive_keys(KEY, KID, NC, NS)
        frame = pack_auth_frame(REQUEST | 0x8000, 7, at_rpc.request_body("add", [1, 2]), SID, k_req)
        reply = parse_datagram(server.handle(parse_datagram(frame), ("127.0.0.1", 1)))
        self.assertEqual((reply.flags, at_rpc.parse_reply(at_rpc.split_auth(reply).body)[1]), (RESPONSE | AUTH, 3))
        # Clearing the reserved bit after the tag was made breaks the tag.
        cleared = bytearray(pack_auth_frame(REQUEST | 0x8000, 8, at_rpc.request_body("add", [1, 2]), SID, k_req))
        cleared[2] &= 0x7F
        reply = parse_datagram(server.handle(parse_datagram(bytes(cleared)), ("127.0.0.1", 1)))
        self.assertEqual(at_rpc.parse_reply(reply.body)[2], "unauthorized")
        self.assertFalse(reply.flags & AUTH)

    def test_replay_window(self):
        s = at_rpc.sessions.Session(SID, KID, b"", b"", 0.0)
        for seq in (5, 3, 4, 70):
            self.assertTrue(s.fresh(seq))
            s.mark(seq)
            self.assertFalse(s.fresh(seq))
        self.assertFalse(s.fresh(6))       # 70 - 6 = 64: older than the window
        self.assertTrue(s.fresh(7))        # inside the window, not seen
        self.assertTrue(s.fresh(71))
        s.mark(71 + 1000)
        self.assertEqual(s.window, 1)
        self.assertFalse(s.fresh(71))


class KeyTests(unittest.TestCase):
    def assert_no_secret(self, message, secret):
        """No run of 8 or more characters of `secret` appears in `message`."""
        for i in range(len(secret) - 7):
            self.assertNotIn(secret[i:i + 8].lower(), message.lower())

    def test_kid_syntax(self):
        for kid in ("a", "demo", "A-Z_0.9", "x" * 32, "bench-psu.2"):
            self.assertTrue(at_rpc.valid_kid(kid), kid)
        for kid in ("", "x" * 33, "a b", "a:b", "\u00e4", "a\n", "a/b", 7, None):
            self.assertFalse(at_rpc.valid_kid(kid), kid)

    def test_parse_key(self):
        self.assertEqual(at_rpc.parse_key(f"{KID}:{KEY_HEX}"), (KID, KEY))
        self.assertEqual(at_rpc.parse_key(f"{KID}:{KEY_HEX.upper()}\n"), (KID, KEY))
        secret = "5e" * 32
        cases = {
            secret: "no ':'",
            f"demo:{secret[:-1]}": "64 hex digits",
            f"demo:{secret}0": "64 hex digits",
            f"demo:{secret[:-1]}g": "hex digits only",
            f"demo:{secret[:-2]}\u00e4\u00e4": "hex digits only",
            f"{secret}:demo": "key id",
            f":{secret}": "key id",
            f"de mo:{secret}": "key id",
        }
        for text, what in cases.items():
            with self.subTest(what=what):
                with self.assertRaises(at_rpc.KeyFormatError) as cm:
                    at_rpc.parse_key(text)
                self.assertIn(what, str(cm.exception))
                self.assert_no_secret(str(cm.exception), secret)

    def write_key_file(self, text, mode=0o600):
        fd, path = tempfile.mkstemp(prefix="at-keys-")
        self.addCleanup(os.unlink, path)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(path, mode)
        return path

    def test_key_files(self):
        path = self.write_key_file(f"# keys\n\n{KID} {KEY_HEX}\n  other\t{OTHER_KEY.hex().upper()}  \n# end\n")
        self.assertEqual(at_rpc.load_key_file(path), [(KID, KEY), ("other", OTHER_KEY)])
        secret = "c3" * 32
        bad = {
            f"{KID} {secret} extra\n": ":1: expected 'KID HEX'",
            f"# a comment\n{KID}:{secret}\n": ":2: expected 'KID HEX'",
            f"{KID} {secret[:-2]}\n": ":1: a key is 64 hex digits",
            f"{KID} {secret[:-1]}x\n": ":1: a key is hex digits only",
            f"d\u00e9mo {secret}\n": "not ASCII",
            f"{'k' * 33} {secret}\n": ":1: the key id",
            f"{KID} {secret}\n{KID} {secret}\n": ":2: key id 'demo' appears twice",
            "# nothing\n\n": "no keys",
        }
        for text, what in bad.items():
            with self.subTest(what=what):
                with self.assertRaises(at_rpc.KeyFormatError) as cm:
                    at_rpc.load_key_file(self.write_key_file(text))
                self.assertIn(what, str(cm.exception))
                self.assert_no_secret(str(cm.exception), secret)
        with self.assertRaises(at_rpc.KeyFormatError) as cm:
            at_rpc.load_key_file(path + ".missing")
        self.assertIn("cannot read", str(cm.exception))

    @unittest.skipUnless(os.name == "posix", "file modes")
    def test_key_file_must_be_private(self):
        for mode in (0o644, 0o640, 0o604, 0o620, 0o601):
            with self.subTest(mode=oct(mode)):
                path = self.write_key_file(f"{KID} {KEY_HEX}\n", mode)
                with self.assertRaises(at_rpc.KeyFormatError) as cm:
                    at_rpc.load_key_file(path)
                self.assertIn("group or others", str(cm.exception))
                self.assertIn("chmod 600", str(cm.exception))
        self.assertEqual(at_rpc.load_key_file(self.write_key_file(f"{KID} {KEY_HEX}\n", 0o400)), [(KID, KEY)])

    def test_server_and_client_check_their_keys(self):
        for keys in ({"a b": KEY}, {KID: KEY[:31]}, {KID: KEY_HEX}):
            with self.assertRaises(ValueError) as cm:
                Server(tcp=None, udp=None, keys=keys)
            self.assert_no_secret(str(cm.exception), KEY_HEX)
        for key in (("", KEY), (KID, KEY + b"x"), (KID, KEY_HEX)):
            with self.assertRaises(ValueError) as cm:
                Client(key=key)
            self.assert_no_secret(str(cm.exception), KEY_HEX)


class AuthCase(ServerCase):
    """A loopback server that requires authentication (key `demo`)."""

    server_options = {"keys": {KID: KEY}}

    def setUp(self):
        super().setUp()
        self.register_counter()

    def open_session(self, nc=None):
        """A session opened by a raw rpc.hello over TCP."""
        nc = nc or os.urandom(NONCE_LEN)
        sock = self.connect()
        sock.sendall(hello_request(1, nc=nc))
        (reply,) = read_frames(sock, 1)
        sock.close()
        ok, result, code, _ = at_rpc.parse_reply(reply.body)
        self.assertTrue(ok, code)
        sid, ns = bytes.fromhex(result["session"]), bytes.fromhex(result["nonce"])
        k_req, k_rep = at_rpc.derive_keys(KEY, KID, nc, ns)
        self.assertEqual(at_rpc.hello_proof(k_rep, sid).hex(), result["proof"])
        return Sess(sid, k_req, k_rep)

    def tcp_exchange(self, data, sock=None):
        sock = sock or self.connect()
        sock.sendall(data)
        (reply,) = read_frames(sock, 1)
        return reply

    def udp_exchange(self, sock, data):
        """The reply datagram to `data`, or None. A plain probe follows it:
        the one server thread answers in order, so the probe's reply coming
        first shows that `data` got none."""
        sock.sendto(data, (LOOPBACK, self.udp_port))
        sock.sendto(PROBE, (LOOPBACK, self.udp_port))
        first = parse_datagram(sock.recv(70000))
        if first.seq == PROBE_SEQ and not first.flags & AUTH:
            return None
        self.assertEqual(parse_datagram(sock.recv(70000)).seq, PROBE_SEQ)
        return first

    def authenticated(self, s, frame):
        """(ok, result, code, message) of an authenticated reply, its tag checked."""
        self.assertTrue(frame.flags & AUTH, frame)
        parts = at_rpc.split_auth(frame)
        self.assertEqual(parts.sid, s.sid)
        self.assertTrue(at_rpc.tag_ok(s.k_rep, parts))
        return at_rpc.parse_reply(parts.body)

    def assert_unauthorized(self, frame, seq):
        self.assertFalse(frame.flags & AUTH)
        self.assertEqual((frame.kind, frame.seq), (ERROR, seq))
        self.assertEqual(at_rpc.parse_reply(frame.body)[2], "unauthorized")

    def client(self, udp=False, key=(KID, KEY), **kw):
        return super().client(udp=udp, key=key, **kw)


class AuthServerTests(AuthCase):
    def test_calls_over_tcp_and_udp(self):
        for udp in (False, True):
            with self.subTest(udp=udp):
                client = self.client(udp=udp)
                self.assertEqual(client.call("add", 10, 20), 30)
                self.assertEqual(client.call("div", 10, 4), 2.5)
                self.assertEqual(client.call("mul", 6, 7), 42)
                for call, code in ((("div", 1, 0), "division_by_zero"), (("pow", 2, 3), "unknown_function"),
                                   (("add", 1), "invalid_arguments")):
                    with self.assertRaises(RemoteError) as cm:
                        client.call(*call)
                    self.assertEqual(cm.exception.code, code)
                first = client._session.sid
                self.assertEqual(client.call("counter"), 1 if not udp else 2)
                self.assertEqual(client._session.sid, first)  # one session for all these calls
        self.assertEqual(self.count, 2)
        self.assertEqual(len(self.server.sessions), 2)

    def test_plain_requests(self):
        udp = self.udp_socket()
        cases = [
            (request(1, "rpc.hello", KID, NC.hex()), None),
            (request(2, "rpc.ping"), None),  # answered without authentication
            (request(3, "rpc.info"), None),
            (request(4, "counter"), "unauthorized"),
            (request(5, "add", 1, 2), "unauthorized"),
            (request(6, "rpc.functions"), "unauthorized"),
            (pack_frame(REQUEST, 7, b"nope"), "bad_request"),
        ]
        for data, code in cases:
            for via in ("tcp", "udp"):
                with self.subTest(data=data[16:40], via=via):
                    if via == "tcp":
                        reply = self.tcp_exchange(data)
                    else:
                        udp.sendto(data, (LOOPBACK, self.udp_port))
                        reply = parse_datagram(udp.recv(70000))
                    self.assertFalse(reply.flags & AUTH)
                    self.assertEqual(at_rpc.parse_reply(reply.body)[2], code or "")
        self.assertEqual(self.count, 0)

    def test_hello_arguments(self):
        nc = NC.hex()
        bad = [[], [KID], [KID, nc, 1], [1, nc], [KID, 1], ["", nc], ["k" * 33, nc], ["de mo", nc],
               ["d\u00e9mo", nc], [KID, nc.upper()], [KID, nc[:-1]], [KID, nc + "0"], [KID, "g" * 32],
               [KID, None]]
        sock = self.connect()
        for seq, args in enumerate(bad, 1):
            with self.subTest(args=args):
                reply = self.tcp_exchange(request(seq, "rpc.hello", *args), sock)
                self.assertEqual(at_rpc.parse_reply(reply.body)[2], "invalid_arguments")
        reply = self.tcp_exchange(request(99, "rpc.hello", "nobody", nc), sock)
        self.assertEqual(at_rpc.parse_reply(reply.body)[2:], ("unauthorized", "unknown key id"))
        self.assertEqual(len(self.server.sessions), 0)
        # rpc.hello inside an authenticated frame: invalid_arguments (authenticated).
        s = self.open_session()
        reply = self.tcp_exchange(s.frame(1, "rpc.hello", KID, nc), sock)
        self.assertEqual(self.authenticated(s, reply)[2], "invalid_arguments")
        self.assertEqual(len(self.server.sessions), 1)

    def test_unknown_session_and_short_frames(self):
        s = self.open_session()
        udp = self.udp_socket()
        forged = Sess(os.urandom(SID_LEN), s.k_req, s.k_rep)
        short = pack_frame(REQUEST | AUTH, 3, b"x" * 23)
        for data, seq in ((forged.frame(2, "counter"), 2), (short, 3)):
            # Step 1: answered `unauthorized` without AUTH, on TCP and UDP.
            self.assert_unauthorized(self.tcp_exchange(data), seq)
            self.assert_unauthorized(self.udp_exchange(udp, data), seq)
        self.assertEqual(self.count, 0)

    def tampered(self, s):
        """(name, frame) pairs: a good authenticated request, altered."""
        good = s.frame(10, "counter")
        body_flip = bytearray(good)
        body_flip[20] ^= 0x20  # "func" -> "fUnc"-like change inside the body
        seq = bytearray(good)
        seq[7] = 11
        flags = bytearray(good)
        flags[2] |= 0x40  # a reserved bit set after tagging
        longer = pack_frame(REQUEST | AUTH, 10, good[16:-24] + b" " + good[-24:])  # length + 1
        cut_tag = pack_frame(REQUEST | AUTH, 10, good[16:-16])
        wrong_key = Sess(s.sid, bytes(32), s.k_rep).frame(10, "counter")
        return [("body", fix_crc(bytes(body_flip))), ("seq", bytes(seq)), ("flags", bytes(flags)),
                ("length", longer), ("truncated tag", cut_tag), ("wrong key", wrong_key)], good

    def test_tampered_requests_over_tcp(self):
        s = self.open_session()
        cases, good = self.tampered(s)
        sock = self.connect()
        for name, data in cases:
            with self.subTest(name):
                reply = self.tcp_exchange(data, sock)
                self.assert_unauthorized(reply, at_rpc.unpack_header(data).seq)
        self.assertEqual(self.count, 0)
        # None of them used up the seq: the genuine frame runs.
        self.assertEqual(self.authenticated(s, self.tcp_exchange(good, sock))[1], 1)

    def test_tampered_requests_over_udp_are_dropped(self):
        s = self.open_session()
        cases, good = self.tampered(s)
        sock = self.udp_socket()
        for name, data in cases:
            with self.subTest(name):
                reply = self.udp_exchange(sock, data)
                if name == "truncated tag":
                    # 8 bytes short: what stands where the SID should is no session.
                    self.assert_unauthorized(reply, 10)
                else:
                    self.assertIsNone(reply)
        self.assertEqual(self.count, 0)
        self.assertEqual(self.authenticated(s, self.udp_exchange(sock, good))[1], 1)

    def test_seq_zero_is_never_accepted(self):
        s = self.open_session()
        self.assert_unauthorized(self.tcp_exchange(s.frame(0, "counter")), 0)
        self.assertIsNone(self.udp_exchange(self.udp_socket(), s.frame(0, "counter")))
        self.assertEqual(self.count, 0)

    def test_replay_on_the_same_connection(self):
        s = self.open_session()
        frame = s.frame(1, "counter")
        sock = self.connect()
        first = self.tcp_exchange(frame, sock)
        self.assertEqual(self.authenticated(s, first)[1], 1)
        # The remembered reply, at most 4 times; then `unauthorized`.
        for _ in range(4):
            self.assertEqual(raw(self.tcp_exchange(frame, sock)), raw(first))
        reply = self.tcp_exchange(frame, sock)
        self.assert_unauthorized(reply, 1)
        self.assertEqual(at_rpc.parse_reply(reply.body)[3], "replayed")
        self.assertEqual(self.count, 1)

    def test_replay_on_a_new_connection(self):
        s = self.open_session()
        frame = s.frame(5, "counter")
        first = self.tcp_exchange(frame)
        again = self.tcp_exchange(frame)  # another connection, another port
        self.assertEqual(raw(again), raw(first))
        self.assertEqual(self.count, 1)

    def test_replay_over_udp(self):
        s = self.open_session()
        # Sent by TCP first: over UDP the remembered reply is not sent.
        frame = s.frame(1, "counter")
        self.tcp_exchange(frame)
        sock = self.udp_socket()
        self.assertIsNone(self.udp_exchange(sock, frame))
        # Sent by UDP first: retransmissions from that address get it,
        # at most 4 times; nobody else does.
        frame = s.frame(2, "counter")
        first = self.udp_exchange(sock, frame)
        self.assertEqual(self.authenticated(s, first)[1], 2)
        other = self.udp_socket()  # same IP, another port
        self.assertIsNone(self.udp_exchange(other, frame))
        for _ in range(4):
            self.assertEqual(raw(self.udp_exchange(sock, frame)), raw(first))
        self.assertIsNone(self.udp_exchange(sock, frame))
        self.assertEqual(self.count, 2)

    def test_remembered_reply_only_for_the_original_address(self):
        s = self.open_session()
        frame = s.frame(1, "counter")
        sock = self.udp_socket()
        first = self.udp_exchange(sock, frame)
        # Another IP address (127.0.0.2 is loopback too): over UDP nothing,
        # over TCP `unauthorized`.
        other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(other.close)
        try:
            other.bind(("127.0.0.2", 0))
        except OSError:
            self.skipTest("cannot bind 127.0.0.2")
        other.settimeout(WAIT)
        self.assertIsNone(self.udp_exchange(other, frame))
        conn = socket.create_connection((LOOPBACK, self.tcp_port), timeout=WAIT, source_address=("127.0.0.2", 0))
        self.addCleanup(conn.close)
        self.assert_unauthorized(self.tcp_exchange(frame, conn), 1)
        # The original IP over TCP (a client whose datagrams got lost, trying TCP).
        self.assertEqual(raw(self.tcp_exchange(frame)), raw(first))
        self.assertEqual(self.count, 1)

    def test_replay_after_the_remembered_reply_expired(self):
        now = [1000.0]
        self.server.sessions.clock = lambda: now[0]
        s = self.open_session()
        frames = [s.frame(1, "counter"), s.frame(2, "counter")]
        self.tcp_exchange(frames[0])
        sock = self.udp_socket()
        self.udp_exchange(sock, frames[1])
        now[0] += 61  # replies are remembered 60 s; the session lives on
        self.assert_unauthorized(self.tcp_exchange(frames[0]), 1)
        self.assertIsNone(self.udp_exchange(sock, frames[1]))
        self.assertEqual(self.count, 2)
        self.assertEqual(self.authenticated(s, self.tcp_exchange(s.frame(3, "counter")))[1], 3)

    def test_seqs_older_than_the_window(self):
        s = self.open_session()
        sock = self.connect()
        for seq in (1, 100):
            self.tcp_exchange(s.frame(seq, "counter"), sock)
        self.assert_unauthorized(self.tcp_exchange(s.frame(36, "counter"), sock), 36)  # 100 - 36 = 64
        self.assertEqual(self.authenticated(s, self.tcp_exchange(s.frame(37, "counter"), sock))[1], 3)
        self.assertEqual(self.authenticated(s, self.tcp_exchange(s.frame(99, "counter"), sock))[1], 4)
        self.assertEqual(self.count, 4)

    def test_nothing_after_the_last_seq(self):
        s = self.open_session()
        sock = self.connect()
        self.assertEqual(self.authenticated(s, self.tcp_exchange(s.frame(MAX_SEQ, "counter"), sock))[1], 1)
        reply = self.tcp_exchange(s.frame(MAX_SEQ - 1, "counter"), sock)  # in the window, unseen
        self.assert_unauthorized(reply, MAX_SEQ - 1)
        self.assertEqual(self.count, 1)

    def test_the_same_request_on_many_connections_at_once(self):
        s = self.open_session()
        frame = s.frame(1, "counter")
        n = 8
        barrier = threading.Barrier(n)
        replies = [None] * n

        def send(i):
            sock = socket.create_connection((LOOPBACK, self.tcp_port), timeout=WAIT)
            with sock:
                barrier.wait(WAIT)
                sock.sendall(frame)
                replies[i] = read_frames(sock, 1)[0]

        threads = [threading.Thread(target=send, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(WAIT)
        self.assertEqual(self.count, 1)
        answered = {raw(r) for r in replies if r.flags & AUTH}
        self.assertEqual(len(answered), 1)
        self.assertEqual(sum(1 for r in replies if r.flags & AUTH), 5)  # one run + four resends

    def test_resend_while_the_function_still_runs(self):
        gate, started = threading.Event(), threading.Event()

        def slow():
            started.set()
            gate.wait(WAIT)
            return "done"

        self.server.register("slow", slow)
        s = self.open_session()
        frame = s.frame(1, "slow")
        first, second = self.connect(), self.connect()
        first.sendall(frame)
        self.assertTrue(started.wait(WAIT))
        second.sendall(frame)  # the client lost the first connection, say
        time.sleep(0.05)
        gate.set()
        a, b = read_frames(first, 1)[0], read_frames(second, 1)[0]
        self.assertEqual(raw(a), raw(b))
        self.assertEqual(self.authenticated(s, a)[1], "done")

    def test_broadcast_hello_gets_no_answer(self):
        hello = parse_datagram(hello_request(1))
        self.assertIsNone(self.server.handle(hello, ("192.0.2.9", 5000), udp=True, broadcast=True))
        self.assertIsNotNone(self.server.handle(hello, ("192.0.2.9", 5000), udp=True))
        self.assertTrue(at_rpc.net._to_group([(socket.IPPROTO_IP, at_rpc.net._IP_PKTINFO, bytes(4) + bytes(4) + b"\xff" * 4)]))
        self.assertTrue(at_rpc.net._to_group([(socket.IPPROTO_IP, at_rpc.net._IP_PKTINFO, bytes(8) + bytes([224, 0, 0, 1]))]))
        self.assertFalse(at_rpc.net._to_group([(socket.IPPROTO_IP, at_rpc.net._IP_PKTINFO, bytes(8) + bytes([127, 0, 0, 1]))]))
        if hasattr(socket, "IPV6_PKTINFO"):
            ff02 = ipaddress.IPv6Address("ff02::1").packed + bytes(4)
            self.assertTrue(at_rpc.net._to_group([(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, ff02)]))

    def test_broadcast_hello_live(self):
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(probe.close)
        probe.bind(("0.0.0.0", 0))
        probe.settimeout(0.5)
        pktinfo = at_rpc.net._enable_pktinfo(probe)
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(sender.close)
        sender.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        try:
            sender.sendto(b"x", ("255.255.255.255", probe.getsockname()[1]))
            _, _, broadcast = at_rpc.net._receive_datagram(probe, 100, pktinfo)
        except OSError:
            self.skipTest("no broadcast delivery on this host")
        if not broadcast:
            self.skipTest("cannot tell broadcasts here")
        sender.sendto(b"x", (LOOPBACK, probe.getsockname()[1]))
        self.assertFalse(at_rpc.net._receive_datagram(probe, 100, pktinfo)[2])
        server = Server(tcp=None, udp=("0.0.0.0", 0), keys={KID: KEY}).start()
        self.addCleanup(server.shutdown)
        port = server.udp_address[1]
        sender.settimeout(WAIT)
        sender.sendto(hello_request(2), ("255.255.255.255", port))
        sender.sendto(hello_request(3), (LOOPBACK, port))
        self.assertEqual(parse_datagram(sender.recv(70000)).seq, 3)  # 2 got no answer
        self.assertEqual(len(server.sessions), 1)


class AuthSessionTableTests(unittest.TestCase):
    def server(self, **kw):
        server = Server(tcp=(LOOPBACK, 0), udp=None, keys={KID: KEY, "other": OTHER_KEY}, **kw).start()
        self.addCleanup(server.shutdown)
        self.now = [1000.0]
        server.sessions.clock = lambda: self.now[0]
        self.runs = 0

        def counter():
            self.runs += 1
            return self.runs

        server.register("counter", counter)
        return server

    def client(self, server, key=(KID, KEY)):
        c = Client(LOOPBACK, server.tcp_address[1], key=key, timeout=WAIT)
        self.addCleanup(c.close)
        return c

    def raw_hello(self, server, sock, seq=1):
        sock.sendall(hello_request(seq, nc=os.urandom(NONCE_LEN)))
        (reply,) = read_frames(sock, 1)
        return at_rpc.parse_reply(reply.body)

    def test_churn_more_clients_than_slots(self):
        server = self.server(max_sessions=3)
        a, b, c, d = (self.client(server) for _ in range(4))
        for client in (a, b, c):
            client.call("add", 1, 1)
        with self.assertRaises(RemoteError) as cm:  # every slot used, none idle
            d.call("add", 1, 1)
        self.assertEqual(cm.exception.code, "busy")
        self.now[0] += 30
        b.call("add", 1, 1)
        c.call("add", 1, 1)
        self.now[0] += 31  # a idle 61 s, b and c 31 s
        self.assertEqual(d.call("add", 2, 2), 4)  # takes a's slot
        with self.assertRaises(RemoteError) as cm:
            a.call("counter")  # its session is gone: not run, not sent again
        self.assertEqual(cm.exception.code, "unauthorized")
        self.assertEqual(self.runs, 0)
        self.assertIsNone(a._session)
        with self.assertRaises(RemoteError) as cm:  # b, c, d used within 60 s
            a.call("counter")
        self.assertEqual(cm.exception.code, "busy")
        self.now[0] += 60
        self.assertEqual(a.call("counter"), 1)
        self.assertEqual(len(server.sessions), 3)

    def test_hello_flood_never_evicts_a_session_in_use(self):
        server = self.server(max_sessions=3)
        a, b = self.client(server), self.client(server)
        a.call("add", 1, 1)
        b.call("add", 1, 1)
        sock = socket.create_connection(server.tcp_address, timeout=WAIT)
        self.addCleanup(sock.close)
        # One slot is free: the flood's sessions push each other out.
        for seq in range(1, 51):
            self.assertTrue(self.raw_hello(server, sock, seq)[0])
        self.assertEqual((a.call("add", 2, 2), b.call("add", 3, 3)), (4, 6))
        c = self.client(server, ("other", OTHER_KEY))
        self.assertEqual(c.call("add", 4, 4), 8)  # takes the flood's unused slot
        for seq in range(51, 101):
            self.assertEqual(self.raw_hello(server, sock, seq)[2:], ("busy", "no free session slot"))
        self.assertEqual((a.call("counter"), b.call("counter"), c.call("counter")), (1, 2, 3))
        sids = {x._session.sid for x in (a, b, c)}
        self.assertEqual(len(sids), 3)
        self.assertEqual(set(server.sessions._sessions), sids)

    def test_lifetime(self):
        server = self.server()
        a = self.client(server)
        a.call("add", 1, 1)
        sid = a._session.sid
        for _ in range(3):
            self.now[0] += 599  # each verified request starts another 10 minutes
            a.call("add", 1, 1)
        self.assertEqual(a._session.sid, sid)
        self.now[0] += 600
        with self.assertRaises(RemoteError) as cm:
            a.call("counter")
        self.assertEqual((cm.exception.code, self.runs), ("unauthorized", 0))
        self.assertEqual(a.call("counter"), 1)
        self.assertNotEqual(a._session.sid, sid)
        # A session never used expires 10 minutes after its hello.
        sock = socket.create_connection(server.tcp_address, timeout=WAIT)
        self.addCleanup(sock.close)
        unused = bytes.fromhex(self.raw_hello(server, sock)[1]["session"])
        self.now[0] += 599
        a.call("add", 1, 1)
        self.assertIsNotNone(server.sessions.get(unused))
        self.now[0] += 1
        self.assertIsNone(server.sessions.get(unused))
        self.assertEqual(a.call("counter"), 2)


class AuthClientTests(AuthCase):
    def test_wrong_key(self):
        client = self.client(key=(KID, OTHER_KEY))
        with self.assertRaises(at_rpc.AuthError) as cm:
            client.call("counter")
        self.assertIn("proof", str(cm.exception))
        client = self.client(udp=True, key=(KID, OTHER_KEY), timeout=0.4)
        with self.assertRaises(TimeoutError) as cm:
            client.call("counter")
        self.assertIn("proof", str(cm.exception))
        self.assertEqual(self.count, 0)

    def test_unknown_kid(self):
        for udp in (False, True):
            with self.assertRaises(RemoteError) as cm:
                self.client(udp=udp, key=("nobody", KEY)).call("counter")
            self.assertEqual(cm.exception.code, "unauthorized")
            self.assertIn("'nobody'", cm.exception.message)

    def test_no_key(self):
        with Client(LOOPBACK, self.tcp_port) as client, self.assertRaises(RemoteError) as cm:
            client.call("counter")
        self.assertEqual((cm.exception.code, cm.exception.message), ("unauthorized", "authentication required"))

    def test_server_without_keys(self):
        server = Server(tcp=(LOOPBACK, 0), udp=(LOOPBACK, 0)).start()
        self.addCleanup(server.shutdown)
        for udp, addr in ((False, server.tcp_address), (True, server.udp_address)):
            with Client(LOOPBACK, addr[1], udp=udp, key=(KID, KEY), timeout=WAIT) as client:
                with self.assertRaises(RemoteError) as cm:
                    client.call("add", 1, 2)
                self.assertEqual(cm.exception.code, "unauthorized")
                self.assertIn("does not authenticate", cm.exception.message)
        # And a raw authenticated frame: no such session.
        sock = socket.create_connection(server.tcp_address, timeout=WAIT)
        self.addCleanup(sock.close)
        sock.sendall(AUTH_VECTORS["add"])
        self.assert_unauthorized(read_frames(sock, 1)[0], 2)

    def test_plain_unauthorized_fails_the_call_and_the_next_opens_a_session(self):
        for udp in (False, True):
            with self.subTest(udp=udp):
                client = self.client(udp=udp)
                client.call("add", 1, 1)
                old = client._session.sid
                self.server.sessions._sessions.clear()  # as after a server restart
                before = self.count
                with self.assertRaises(RemoteError) as cm:
                    client.call("counter")
                self.assertEqual(cm.exception.code, "unauthorized")
                self.assertEqual(self.count, before)  # never sent again in a new session
                self.assertIsNone(client._session)
                self.assertEqual(client.call("counter"), before + 1)
                self.assertNotEqual(client._session.sid, old)

    def test_new_session_after_idle_minutes(self):
        client = self.client()
        client.call("add", 1, 1)
        sid = client._session.sid
        client._session.last -= 299
        client.call("add", 1, 1)
        self.assertEqual(client._session.sid, sid)
        client._session.last -= 300
        client.call("add", 1, 1)
        self.assertNotEqual(client._session.sid, sid)
        self.assertEqual(len(self.server.sessions), 2)

    def test_new_session_before_the_seq_wraps(self):
        for udp in (False, True):
            with self.subTest(udp=udp):
                client = self.client(udp=udp)
                client.call("add", 1, 1)
                sid = client._session.sid
                client._seq = MAX_SEQ - 1
                self.assertEqual(client.call("add", 2, 2), 4)
                self.assertEqual((client._session.sid, client._session.seq), (sid, MAX_SEQ))
                self.assertEqual(client.call("add", 3, 3), 6)
                self.assertNotEqual(client._session.sid, sid)
                self.assertEqual((client._seq, client._session.seq), (2, 2))  # hello 1, call 2

    def fake(self, mangle, udp=False):
        """A server that answers as a real one (`core`) would, then passes
        each reply through mangle(request, reply) -> frames to send."""
        core = Server(tcp=None, udp=None, keys={KID: KEY})
        core.register("counter", lambda: "ok")
        if udp:
            sock = self.udp_socket()

            def serve():
                while True:
                    try:
                        data, addr = sock.recvfrom(70000)
                    except OSError:
                        return
                    frame = parse_datagram(data)
                    for out in mangle(frame, core.handle(frame, addr, udp=True)):
                        sock.sendto(out, addr)

            threading.Thread(target=serve, daemon=True).start()
            return sock.getsockname()[1]
        listener = socket.create_server((LOOPBACK, 0))
        self.addCleanup(listener.close)

        def serve_tcp():
            while True:
                try:
                    conn, peer = listener.accept()
                except OSError:
                    return
                with conn:
                    reader = FrameReader(1 << 20)
                    while True:
                        try:
                            data = conn.recv(65536)
                        except OSError:
                            break
                        if not data:
                            break
                        for frame in reader.feed(data):
                            for out in mangle(frame, core.handle(frame, peer)):
                                conn.sendall(out)

        threading.Thread(target=serve_tcp, daemon=True).start()
        return listener.getsockname()[1]

    def test_client_checks_every_reply_over_tcp(self):
        def plain(code):
            return lambda f, r: [error_frame(f.seq, code, "m")] if f.flags & AUTH else [r]

        cases = [
            (lambda f, r: [bad_tag(r)] if f.flags & AUTH else [r], at_rpc.AuthError, "tag"),
            (lambda f, r: [strip_auth(r)] if f.flags & AUTH else [r], at_rpc.AuthError, "without AUTH"),
            (plain("busy"), ProtocolError, "busy"),
            (plain("checksum_mismatch"), ProtocolError, "checksum_mismatch"),
            (plain("bad_frame"), ProtocolError, "bad_frame"),
            (plain("frame_too_large"), ProtocolError, "frame_too_large"),
            (plain("unauthorized"), RemoteError, "unauthorized"),
        ]
        for mangle, error, text in cases:
            with self.subTest(text):
                client = Client(LOOPBACK, self.fake(mangle), key=(KID, KEY), timeout=WAIT)
                self.addCleanup(client.close)
                with self.assertRaises(error) as cm:
                    client.call("counter")
                self.assertIn(text, str(cm.exception))
                if error is not RemoteError:
                    self.assertNotIsInstance(cm.exception, RemoteError)

    def test_client_checks_hello_replies_over_tcp(self):
        def hello(change):
            def mangle(f, r):
                if f.flags & AUTH:
                    return [r]
                frame = parse_datagram(r)
                result = at_rpc.parse_reply(frame.body)[1]
                change(result)
                return [pack_frame(frame.flags, frame.seq, at_rpc.success_body(result))]
            return mangle

        changes = {
            "proof": lambda r: r.update(proof=("0" if r["proof"][0] != "0" else "1") + r["proof"][1:]),
            "upper": lambda r: r.update(session=r["session"].upper() if any(c in "abcdef" for c in r["session"])
                                        else "A" + r["session"][1:]),
            "short": lambda r: r.update(nonce=r["nonce"][:-2]),
            "missing": lambda r: r.pop("proof"),
        }
        for name, change in changes.items():
            with self.subTest(name):
                client = Client(LOOPBACK, self.fake(hello(change)), key=(KID, KEY), timeout=WAIT)
                self.addCleanup(client.close)
                with self.assertRaises(at_rpc.AuthError):
                    client.call("counter")
                self.assertIsNone(client._session)

    def test_client_over_udp_ignores_what_fails_the_checks(self):
        def mangle(f, r):
            forged = at_rpc.success_body("forged")
            if f.flags & AUTH:
                sid = at_rpc.split_auth(f).sid
                return [bad_tag(pack_auth_frame(RESPONSE, f.seq, forged, sid, bytes(32))),
                        pack_frame(RESPONSE, f.seq, forged),
                        error_frame(f.seq, "checksum_mismatch", "m"), r]
            frame = parse_datagram(r)
            result = at_rpc.parse_reply(frame.body)[1]
            wrong = dict(result, session="00" * SID_LEN, proof="0" * 32)
            return [pack_frame(RESPONSE, f.seq, at_rpc.success_body(wrong)), r]

        client = self.client(udp=True)
        client.port = self.fake(mangle, udp=True)
        self.assertEqual(client.call("counter"), "ok")
        self.assertEqual(client.call("counter"), "ok")

    def test_client_resends_on_a_new_connection(self):
        """A proxy cuts the connection instead of passing the first
        authenticated reply on: the client sends the same frame on a new
        connection and gets the remembered reply; the call ran once."""
        listener = socket.create_server((LOOPBACK, 0))
        self.addCleanup(listener.close)
        state = {"cut": False, "connections": 0, "requests": []}

        def relay(conn):
            up = socket.create_connection((LOOPBACK, self.tcp_port), timeout=WAIT)

            def upstream():
                reader = FrameReader(1 << 20)
                try:
                    while True:
                        data = conn.recv(65536)
                        if not data:
                            break
                        for f in reader.feed(data):
                            state["requests"].append(raw(f))
                        up.sendall(data)
                except OSError:
                    pass

            threading.Thread(target=upstream, daemon=True).start()
            reader = FrameReader(1 << 20)
            try:
                while True:
                    data = up.recv(65536)
                    if not data:
                        break
                    for f in reader.feed(data):
                        if f.flags & AUTH and not state["cut"]:
                            state["cut"] = True
                            conn.shutdown(socket.SHUT_RDWR)
                            return
                        conn.sendall(raw(f))
            except OSError:
                pass
            finally:
                conn.close()
                up.close()

        def accept():
            while True:
                try:
                    conn, _ = listener.accept()
                except OSError:
                    return
                state["connections"] += 1
                threading.Thread(target=relay, args=(conn,), daemon=True).start()

        threading.Thread(target=accept, daemon=True).start()
        with Client(LOOPBACK, listener.getsockname()[1], key=(KID, KEY), timeout=WAIT) as client:
            self.assertEqual(client.call("counter"), 1)
            self.assertEqual(client.call("counter"), 2)
        self.assertEqual(self.count, 2)
        self.assertTrue(state["cut"])
        self.assertEqual(state["connections"], 2)
        auth = [r for r in state["requests"] if r[3] & AUTH]
        self.assertEqual(auth[0], auth[1])  # the same frame, byte for byte

    def test_udp_retransmission_through_a_lossy_link(self):
        proxy = self.udp_socket()
        server = (LOOPBACK, self.udp_port)
        seen = []

        def relay():
            client_addr, dropped = None, False
            while True:
                try:
                    data, addr = proxy.recvfrom(70000)
                except OSError:
                    return
                if addr == server:
                    if parse_datagram(data).flags & AUTH and not dropped:
                        dropped = True
                        continue
                    proxy.sendto(data, client_addr)
                    continue
                client_addr = addr
                seen.append(data)
                proxy.sendto(data, server)

        threading.Thread(target=relay, daemon=True).start()
        client = self.client(udp=True, timeout=3.0)
        client.port = proxy.getsockname()[1]
        self.assertEqual(client.call("counter"), 1)
        self.assertEqual(self.count, 1)
        auth = [d for d in seen if d[3] & AUTH]
        self.assertGreaterEqual(len(auth), 2)
        self.assertEqual(len(set(auth)), 1)


# --------------------------------------------------------------------------
# The command line


def _addr(address):
    return f"{address[0]}:{address[1]}"


def cli_env(**extra):
    """The environment for a CLI subprocess: ours without AT_KEY, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in ("AT_KEY", "AT_LOG")}
    env.update(extra)
    return env


class CliTests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.proc = subprocess.Popen(
            [AT_RPC, "serve", "--tcp", "127.0.0.1:0", "--udp", "127.0.0.1:0"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        tcp = cls.proc.stdout.readline().strip()
        udp = cls.proc.stdout.readline().strip()
        assert tcp.startswith("listening on tcp://127.0.0.1:"), tcp
        assert udp.startswith("listening on udp://127.0.0.1:"), udp
        cls.tcp = tcp.rsplit("//", 1)[1]
        cls.udp = udp.rsplit("//", 1)[1]

    @classmethod
    def tearDownClass(cls):
        if cls.proc.poll() is None:
            cls.proc.kill()
        cls.proc.wait(WAIT)
        cls.proc.stdout.close()

    def run_cli(self, *args):
        return subprocess.run([AT_RPC, *args], capture_output=True, text=True, timeout=10,
                              env=cli_env())

    def test_calls(self):
        cases = [
            (("add", "10", "20"), "30"),
            (("div", "10", "4"), "2.5"),
            (("div", "10", "2"), "5.0"),
            (("mul", "1e3", "1e297"), "1e300"),
            (("sub", "1", "-1e3"), "1001.0"),
            (("add", "0.1", "0.2"), "0.30000000000000004"),
        ]
        for transport in ([], ["--udp"]):
            server = self.udp if transport else self.tcp
            for args, out in cases:
                with self.subTest(transport=transport, args=args):
                    r = self.run_cli("call", "--server", server, *transport, *args)
                    self.assertEqual((r.returncode, r.stdout, r.stderr), (0, out + "\n", ""))
        r = self.run_cli("call", "--json", "--server", self.tcp, "add", "10", "20")
        self.assertEqual((r.returncode, r.stdout), (0, '{"status": "success", "result": 30}\n'))
        r = self.run_cli("call", "--server=" + self.tcp, "--timeout=2", "--retries", "0", "add", "1", "2")
        self.assertEqual((r.returncode, r.stdout), (0, "3\n"))

    def test_words_after_func_are_args(self):
        server = Server(tcp=(LOOPBACK, 0), udp=None)
        server.register("echo", lambda *args: list(args))
        server.start()
        self.addCleanup(server.shutdown)
        where = _addr(server.tcp_address)
        for args, out in ((("echo", "1", "--json", "-x", "-5"), '[1, "--json", "-x", -5]'),
                          (("echo", "--", "-5", "--"), '[-5, "--"]'),
                          (("echo", "hello", '"x"', "true", "null", "[1, {\"a\": 2.5}]"),
                           '["hello", "x", true, null, [1, {"a": 2.5}]]'),
                          (("--", "echo", "00", "1.e3", "NaN"), '["00", "1.e3", "NaN"]')):
            with self.subTest(args=args):
                r = self.run_cli("call", "--server", where, *args)
                self.assertEqual((r.returncode, r.stdout, r.stderr), (0, out + "\n", ""))

    def test_error_reply_exits_1(self):
        r = self.run_cli("call", "--server", self.tcp, "div", "1", "0")
        self.assertEqual((r.returncode, r.stdout, r.stderr), (1, "", "error: division_by_zero: division by zero\n"))
        r = self.run_cli("call", "--server", self.tcp, "add", "x", "1")
        self.assertEqual((r.returncode, r.stderr), (1, "error: invalid_arguments: expected two numbers\n"))
        r = self.run_cli("call", "--server", self.tcp, "add", "99999999999999999999", "1")
        self.assertEqual((r.returncode, r.stderr), (1, "error: overflow: integer argument outside 64-bit range\n"))
        r = self.run_cli("call", "--udp", "--json", "--server", self.udp, "pow", "2", "8")
        self.assertEqual(r.returncode, 1)
        self.assertEqual(r.stdout, '{"status": "error", "code": "unknown_function", "message": "unknown function"}\n')

    def test_transport_failures_exit_3(self):
        closed = socket.socket()
        closed.bind((LOOPBACK, 0))
        self.addCleanup(closed.close)
        r = self.run_cli("call", "--server", f"127.0.0.1:{closed.getsockname()[1]}", "add", "1", "2")
        self.assertEqual(r.returncode, 3)
        self.assertTrue(r.stderr)
        silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        silent.bind((LOOPBACK, 0))
        self.addCleanup(silent.close)
        r = self.run_cli("call", "--udp", "--timeout", "0.3", "--retries", "1",
                         "--server", f"127.0.0.1:{silent.getsockname()[1]}", "add", "1", "2")
        self.assertEqual(r.returncode, 3)
        self.assertIn("timed out", r.stderr)
        # A non-finite double cannot be sent.
        r = self.run_cli("call", "--server", self.tcp, "add", "1e400", "1")
        self.assertEqual(r.returncode, 3)
        self.assertIn("not finite", r.stderr)

    def test_usage_errors_exit_2(self):
        for args in (("call",), ("call", "--server"), ("call", "--bogus", "add"), ("frobnicate",), (),
                     ("call", "--server", "a:b:c", "add"), ("serve", "--tcp", "localhost:1"),
                     ("serve", "--tcp", "none", "--udp", "none"), ("call", "--timeout", "x", "add"),
                     ("call", "--timeout", "0", "add"), ("call", "-x", "add"), ("serve", "--max-frame", "-1"),
                     ("serve", "--bogus")):
            with self.subTest(args=args):
                self.assertEqual(self.run_cli(*args).returncode, 2)

    def test_serve_stops_on_signals(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            with self.subTest(signal=sig.name):
                proc = subprocess.Popen([AT_RPC, "serve", "--tcp", "127.0.0.1:0", "--udp", "none"],
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
                line = proc.stdout.readline().strip()
                self.assertTrue(line.startswith("listening on tcp://127.0.0.1:"), line)
                self.assertNotEqual(line.rsplit(":", 1)[1], "0")
                r = self.run_cli("call", "--server", line.rsplit("//", 1)[1], "mul", "6", "7")
                self.assertEqual(r.stdout, "42\n")
                proc.send_signal(sig)
                self.assertEqual(proc.wait(WAIT), 0)
                self.assertEqual(proc.stdout.read(), "")
                proc.stdout.close()


class AuthCliTests(unittest.TestCase):
    """serve --key/--key-file and call --key/--key-file/AT_KEY as subprocesses."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.key_file = os.path.join(cls.tmp.name, "keys")
        with open(cls.key_file, "w") as f:
            f.write(f"# the bench\nother {OTHER_KEY.hex()}\nthird {'77' * 32}\n")
        os.chmod(cls.key_file, 0o600)
        cls.proc = subprocess.Popen(
            [AT_RPC, "serve", "--tcp", "127.0.0.1:0", "--udp", "127.0.0.1:0",
             "--key", f"{KID}:{KEY_HEX}", "--key-file", cls.key_file],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=cli_env())
        cls.tcp = cls.proc.stdout.readline().strip().rsplit("//", 1)[1]
        cls.udp = cls.proc.stdout.readline().strip().rsplit("//", 1)[1]

    @classmethod
    def tearDownClass(cls):
        if cls.proc.poll() is None:
            cls.proc.kill()
        cls.proc.wait(WAIT)
        cls.proc.stdout.close()
        cls.tmp.cleanup()

    def run_cli(self, *args, **env):
        return subprocess.run([AT_RPC, *args], capture_output=True, text=True,
                              timeout=10, env=cli_env(**env))

    def private_file(self, text, mode=0o600):
        path = os.path.join(self.tmp.name, f"k{random.randrange(1 << 30)}")
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, mode)
        return path

    def test_calls_with_a_key(self):
        key = f"{KID}:{KEY_HEX}"
        for args, env in (
                (("--key", key, "--server", self.tcp), {}),
                (("--key=" + key, "--udp", "--server", self.udp), {}),
                (("--key-file", self.key_file, "--server", self.tcp), {}),  # its first key
                (("--key-file", self.key_file, "--udp", "--server", self.udp), {}),
                (("--server", self.tcp), {"AT_KEY": key}),
                (("--server", self.udp, "--udp"), {"AT_KEY": f"third:{'77' * 32}"}),
                (("--key", key, "--server", self.tcp), {"AT_KEY": "broken"}),  # --key wins
        ):
            with self.subTest(args=args, env=env):
                r = self.run_cli("call", *args, "add", "10", "20", **env)
                self.assertEqual((r.returncode, r.stdout, r.stderr), (0, "30\n", ""))
        r = self.run_cli("call", "--key", key, "--server", self.tcp, "div", "1", "0")
        self.assertEqual((r.returncode, r.stderr), (1, "error: division_by_zero: division by zero\n"))

    def test_unauthorized_exits_1(self):
        r = self.run_cli("call", "--server", self.tcp, "add", "1", "2")
        self.assertEqual((r.returncode, r.stderr), (1, "error: unauthorized: authentication required\n"))
        r = self.run_cli("call", "--server", self.tcp, "--json", "add", "1", "2")
        self.assertEqual(json.loads(r.stdout)["code"], "unauthorized")
        r = self.run_cli("call", "--key", f"nobody:{KEY_HEX}", "--server", self.tcp, "add", "1", "2")
        self.assertEqual((r.returncode, r.stderr),
                         (1, "error: unauthorized: the server refused key id 'nobody': unknown key id\n"))
        # A key against a server that does not authenticate.
        server = Server(tcp=(LOOPBACK, 0), udp=(LOOPBACK, 0)).start()
        self.addCleanup(server.shutdown)
        for transport, addr in (([], server.tcp_address), (["--udp"], server.udp_address)):
            r = self.run_cli("call", *transport, "--server", _addr(addr), "add", "1", "2",
                             AT_KEY=f"{KID}:{KEY_HEX}")
            self.assertEqual((r.returncode, r.stdout), (1, ""))
            self.assertEqual(r.stderr, "error: unauthorized: the server refused key id 'demo': "
                                       "this server does not authenticate\n")

    def test_wrong_key(self):
        # TCP: the server's proof does not verify: exit 1, as at-host.
        wrong = f"{KID}:{OTHER_KEY.hex()}"
        r = self.run_cli("call", "--key", wrong, "--server", self.tcp, "add", "1", "2")
        self.assertEqual((r.returncode, r.stderr),
                         (1, "error: unauthorized: the server's proof does not verify: "
                             "it does not hold this key\n"))
        # UDP: the bad hello counts as not received, so the call times out.
        r = self.run_cli("call", "--key", wrong, "--udp", "--timeout", "0.3", "--server", self.udp, "add", "1", "2")
        self.assertEqual(r.returncode, 3)
        self.assertIn("timed out", r.stderr)
        self.assertIn("proof", r.stderr)
        for text in (r.stderr, r.stdout):
            self.assertNotIn(OTHER_KEY.hex(), text)

    def test_key_usage_errors_exit_2_without_the_key(self):
        secret = "9a" * 32
        loose = self.private_file(f"{KID} {secret}\n", 0o644)
        broken = self.private_file(f"{KID} {secret[:-1]}\n")
        cases = [
            (("call", "--key", secret, "add"), {}, "no ':'"),
            (("call", "--key", f"{KID}:{secret[:-2]}", "add"), {}, "64 hex digits"),
            (("call", "--key", f"{KID}:{secret[:-1]}z", "add"), {}, "hex digits only"),
            (("call", "--key", f"{secret}:{KID}", "add"), {}, "key id"),
            (("call", "add"), {"AT_KEY": secret}, "AT_KEY"),
            (("call", "add"), {"AT_KEY": f"{KID}:{secret}00"}, "AT_KEY"),
            (("call", "--key", f"{KID}:{secret}", "--key-file", self.key_file, "add"), {}, "not both"),
            (("call", "--key-file", loose, "add"), {}, "chmod 600"),
            (("call", "--key-file", broken, "add"), {}, ":1:"),
            (("call", "--key-file", loose + ".missing", "add"), {}, "cannot read"),
            (("call", "--key"), {}, "needs a value"),
            (("serve", "--tcp", "127.0.0.1:0", "--key", f"{KID}={secret}"), {}, "no ':'"),
            (("serve", "--tcp", "127.0.0.1:0", "--key-file", loose), {}, "group or others"),
            (("serve", "--tcp", "127.0.0.1:0", "--key", f"{KID}:{secret}", "--key", f"{KID}:{secret}"), {},
             "given twice"),
        ]
        for args, env, what in cases:
            with self.subTest(what=what, args=args[:3]):
                r = self.run_cli(*args, **env)
                self.assertEqual(r.returncode, 2, r.stderr)
                self.assertIn(what, r.stderr)
                for i in range(len(secret) - 7):
                    self.assertNotIn(secret[i:i + 8], r.stderr.lower() + r.stdout.lower())

    def test_secrets_never_in_the_server_log(self):
        proc = subprocess.Popen(
            [AT_RPC, "serve", "--tcp", "127.0.0.1:0", "--udp", "none",
             "--key", f"{KID}:{KEY_HEX.upper()}", "--key-file", self.key_file],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(AT_LOG="debug"))
        where = proc.stdout.readline().strip().rsplit("//", 1)[1]
        try:
            for key in (f"{KID}:{KEY_HEX}", f"{KID}:{OTHER_KEY.hex()}", f"nobody:{KEY_HEX}"):
                self.run_cli("call", "--key", key, "--server", where, "add", "1", "2")
            self.run_cli("call", "--server", where, "add", "1", "2")
        finally:
            proc.send_signal(signal.SIGTERM)
            _, log = proc.communicate(timeout=WAIT)
            proc.stdout.close()
        self.assertIn("authentication required: 3 keys", log)
        self.assertIn("session", log)
        for secret in (KEY_HEX, OTHER_KEY.hex(), "77" * 32):
            self.assertNotIn(secret, log.lower())


if __name__ == "__main__":
    unittest.main()
