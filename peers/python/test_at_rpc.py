#!/usr/bin/env python3
"""Tests of at_rpc.py: the shared vectors, the frame reader, bodies, the
calculator, client <-> server over TCP and UDP, and the command line.

Run: python3 peers/python/test_at_rpc.py   (loopback only, OS-chosen ports)
"""

import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import unittest
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import at_rpc  # noqa: E402
from at_rpc import (  # noqa: E402
    ERROR, REQUEST, RESPONSE, Client, FrameError, FrameReader, ProtocolError,
    RemoteError, Server, pack_frame, parse_datagram,
)

VECTORS_PATH = os.path.join(HERE, "..", "..", "tests", "vectors", "frames.json")
with open(VECTORS_PATH, encoding="utf-8") as f:
    VECTOR_FILE = json.load(f)
MAX_BODY = VECTOR_FILE["max_body"]
VECTORS = VECTOR_FILE["vectors"]
SCRIPT = os.path.join(HERE, "at_rpc.py")
LOOPBACK = "127.0.0.1"
WAIT = 5.0  # the most any single network wait in these tests may take

# Keep expected warnings (bad frames on purpose) out of the test output.
at_rpc.log.setLevel(100)


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
        self.assertEqual(at_rpc.cli_arg("10"), 10)
        self.assertIs(type(at_rpc.cli_arg("10")), int)
        self.assertEqual(at_rpc.cli_arg("2.5"), 2.5)
        self.assertIs(at_rpc.cli_arg("true"), True)
        self.assertEqual(at_rpc.cli_arg('"x"'), "x")
        self.assertEqual(at_rpc.cli_arg("hello"), "hello")
        self.assertEqual(at_rpc.cli_arg("NaN"), "NaN")
        self.assertEqual(at_rpc.cli_arg("[1, 2]"), [1, 2])
        big = at_rpc.cli_arg("99999999999999999999")
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
# The command line


def _addr(address):
    return f"{address[0]}:{address[1]}"


class CliTests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.proc = subprocess.Popen(
            [sys.executable, SCRIPT, "serve", "--tcp", "127.0.0.1:0", "--udp", "127.0.0.1:0"],
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
        return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, timeout=10)

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
                proc = subprocess.Popen([sys.executable, SCRIPT, "serve", "--tcp", "127.0.0.1:0", "--udp", "none"],
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


if __name__ == "__main__":
    unittest.main()
