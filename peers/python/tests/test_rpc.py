#!/usr/bin/env python3
"""Tests of the protocol's own functions in the installed at_rpc (rpc.ping, rpc.info,
rpc.functions: contract section 7), of discovery (section 8) and of the
command line's ping, info, list and discover.

Run: pytest -q in peers/python, from a venv with the package installed
(loopback, OS-chosen ports;
the live broadcast tests skip where broadcasts are not delivered)
"""

import contextlib
import io
import json
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time
import unittest
from unittest import mock

HERE = os.path.dirname(os.path.abspath(__file__))

import at_rpc
from at_rpc import (
    AUTH, ERROR, REQUEST, RESPONSE, Client, Discovered, RemoteError, Server, pack_frame,
    parse_datagram, request_body, signature,
)

# The installed command (the console script beside this Python).
AT_RPC = os.path.join(os.path.dirname(sys.executable), "at-rpc")
SCRIPT = "at_rpc.py"  # argv[0] for at_rpc.main in this process
LOOPBACK = "127.0.0.1"
WAIT = 5.0
KEY = bytes(range(32))
KID = "demo"
# What the Python server's rpc.info lists in "ext" (contract section 10.1).
EXT = ["notify", "events", "deadline"]
EXT_JSON = json.dumps(EXT).encode()
# Over TCP (no keys) a client may also call rpc.peer (10.5).
EXT_TCP = [*EXT, "peer"]
EXT_TCP_JSON = json.dumps(EXT_TCP).encode()

logging.getLogger("at_rpc").setLevel(100)  # keep expected warnings out of the output

CALCULATOR_PAGE = (
    b'{"status": "success", "result": {"functions": ['
    b'{"name": "add", "params": ["number", "number"], "result": "number", "doc": "a + b"}, '
    b'{"name": "sub", "params": ["number", "number"], "result": "number", "doc": "a - b"}, '
    b'{"name": "mul", "params": ["number", "number"], "result": "number", "doc": "a * b"}, '
    b'{"name": "div", "params": ["number", "number"], "result": "double", '
    b'"doc": "a / b, always a double"}], "next": null}}')
BAD_START = (b'{"status": "error", "code": "invalid_arguments", '
             b'"message": "rpc.functions takes one optional integer start >= 0"}')


def frame(seq, func, *args):
    return pack_frame(REQUEST, seq, request_body(func, args))


def raw_frame(seq, body: bytes):
    return pack_frame(REQUEST, seq, body)


def reply_body(data: bytes) -> bytes:
    return parse_datagram(data).body


def free_port(kind=socket.SOCK_STREAM):
    """A loopback port nobody listens on (bound, then closed)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


class RpcCase(unittest.TestCase):
    server_options: dict = {}

    def setUp(self):
        options = {"name": "bench", **self.server_options}
        self.server = Server(tcp=(LOOPBACK, 0), udp=(LOOPBACK, 0), **options).start()
        self.addCleanup(self.server.shutdown)

    def exchange(self, data: bytes, udp: bool = False) -> bytes:
        """One request frame to the server; the reply's body."""
        if udp:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(WAIT)
                s.sendto(data, self.server.udp_address)
                return reply_body(s.recv(70000))
        with socket.create_connection(self.server.tcp_address, timeout=WAIT) as s:
            s.sendall(data)
            reader = at_rpc.FrameReader(1 << 20)
            while True:
                for item in reader.feed(s.recv(65536)):
                    return item.body

    def both(self, data: bytes) -> bytes:
        tcp, udp = self.exchange(data), self.exchange(data, udp=True)
        self.assertEqual(tcp, udp)
        return tcp


class PingInfoTests(RpcCase):
    def test_ping(self):
        cases = [
            (b'{"func": "rpc.ping"}', b'{"status": "success", "result": true}'),
            (b'{"func": "rpc.ping", "args": []}', b'{"status": "success", "result": true}'),
            (b'{"func": "rpc.ping", "args": [null]}', b'{"status": "success", "result": null}'),
            (b'{"func": "rpc.ping", "args": [false]}', b'{"status": "success", "result": false}'),
            (b'{"func": "rpc.ping", "args": [-0]}', b'{"status": "success", "result": 0}'),
            (b'{"func": "rpc.ping", "args": [1.50]}', b'{"status": "success", "result": 1.5}'),
            (b'{"func": "rpc.ping", "args": [1E2]}', b'{"status": "success", "result": 100.0}'),
            # Strings, arrays and objects come back as they were written (as at-core does).
            (b'{"func": "rpc.ping", "args": ["\\u0041\\n\xc3\xa4"]}',
             b'{"status": "success", "result": "\\u0041\\n\xc3\xa4"}'),
            (b'{"func":"rpc.ping","args":[ [1 ,2.50, {"a" :1}] ]}',
             b'{"status": "success", "result": [1 ,2.50, {"a" :1}]}'),
            (b'{"func": "rpc.ping", "args": [[[99999999999999999999999]]]}',
             b'{"status": "success", "result": [[99999999999999999999999]]}'),
            (b'{"args": [1, 2], "func": "rpc.ping"}',
             b'{"status": "error", "code": "invalid_arguments", '
             b'"message": "rpc.ping takes no argument or one"}'),
            (b'{"func": "rpc.ping", "args": [1e400]}',
             b'{"status": "error", "code": "overflow", "message": "result is not a finite number"}'),
        ]
        for seq, (body, expected) in enumerate(cases, 1):
            with self.subTest(body=body):
                self.assertEqual(self.both(raw_frame(seq, body)), expected)
        with Client(LOOPBACK, self.server.udp_address[1], udp=True) as c:
            self.assertIs(c.ping(), True)
            self.assertEqual(c.ping("x" * 1000), "x" * 1000)
            self.assertEqual(c.ping({"a": [1, 2.5]}), {"a": [1, 2.5]})

    def test_info(self):
        expected = (b'{"status": "success", "result": {"protocol": 1, "server": "at_rpc.py '
                    + at_rpc.__version__.encode() + b'", "name": "bench", "auth": "off", '
                    b'"max_body": 65536, "functions": 4, "ext": ' + EXT_JSON + b'}}')
        self.assertEqual(self.exchange(frame(1, "rpc.info"), udp=True), expected)
        self.assertEqual(self.exchange(frame(1, "rpc.info")),
                         expected.replace(EXT_JSON, EXT_TCP_JSON))
        self.server.register("echo", lambda *a: list(a))
        self.server.functions["rpc.sneaky"] = lambda: 1  # never counted nor called
        with Client(*self.server.tcp_address) as c:
            self.assertEqual(list(c.info().items()), [
                ("protocol", 1), ("server", "at_rpc.py " + at_rpc.__version__), ("name", "bench"),
                ("auth", "off"), ("max_body", 65536), ("functions", 5), ("ext", EXT_TCP)])
            with self.assertRaises(RemoteError) as cm:
                c.call("rpc.sneaky")
            self.assertEqual(cm.exception.code, "unknown_function")
        self.assertEqual(self.both(frame(2, "rpc.info", 1)),
                         b'{"status": "error", "code": "invalid_arguments", '
                         b'"message": "rpc.info takes no arguments"}')

    def test_default_name_is_the_host_name(self):
        server = Server(tcp=None, udp=None)
        self.assertEqual(server.info().name, socket.gethostname())
        self.assertEqual(server.info().server, "at_rpc.py 0.2.0")

    def test_unknown_rpc_names(self):
        for seq, name in enumerate(("rpc.nope", "rpc.", "rpc.Ping", "rpc.ping2", "rpc." + "x" * 70), 1):
            with self.subTest(name=name):
                self.assertEqual(self.both(frame(seq, name)),
                                 b'{"status": "error", "code": "unknown_function", '
                                 b'"message": "unknown function"}')

    def test_rpc_names_cannot_be_registered(self):
        for name in ("rpc.ping", "rpc.info", "rpc.functions", "rpc.hello", "rpc.mine", "rpc."):
            with self.subTest(name=name), self.assertRaises(ValueError):
                self.server.register(name, lambda: 1)
        self.server.register("rpcx", lambda: 1)  # only the "rpc." prefix is reserved
        self.server.register("RPC.x", lambda: 1)

    def test_module_level_respond(self):
        reply = at_rpc.respond(at_rpc.CALCULATOR, parse_datagram(frame(3, "rpc.info")), 4096)
        self.assertEqual(reply_body(reply), b'{"status": "success", "result": {"protocol": 1, '
                         b'"server": "at_rpc.py 0.2.0", "name": "", "auth": "off", '
                         b'"max_body": 4096, "functions": 4, "ext": []}}')
        reply = at_rpc.respond_to_datagram(at_rpc.CALCULATOR, frame(4, "rpc.functions"))
        self.assertEqual(reply_body(reply), CALCULATOR_PAGE)


class AuthRpcTests(RpcCase):
    server_options = {"keys": {KID: KEY}}

    def test_plain_and_authenticated(self):
        self.assertEqual(self.both(frame(1, "rpc.ping", 7)), b'{"status": "success", "result": 7}')
        self.assertIn(b'"auth": "required"', self.both(frame(2, "rpc.info")))
        self.assertEqual(at_rpc.parse_reply(self.both(frame(3, "rpc.functions")))[2], "unauthorized")
        for udp in (False, True):
            port = self.server.udp_address[1] if udp else self.server.tcp_address[1]
            with Client(LOOPBACK, port, udp=udp, key=(KID, KEY)) as c:
                self.assertEqual([e["name"] for e in c.functions()], ["add", "sub", "mul", "div"])
                self.assertEqual(c.info()["auth"], "required")
                self.assertEqual(c.ping([1]), [1])


class FunctionsTests(RpcCase):
    def test_calculator_page(self):
        self.assertEqual(self.both(frame(1, "rpc.functions")), CALCULATOR_PAGE)
        self.assertEqual(self.both(frame(2, "rpc.functions", 0)), CALCULATOR_PAGE)
        self.assertEqual(self.both(frame(3, "rpc.functions", 3)),
                         b'{"status": "success", "result": {"functions": [{"name": "div", '
                         b'"params": ["number", "number"], "result": "double", '
                         b'"doc": "a / b, always a double"}], "next": null}}')
        empty = b'{"status": "success", "result": {"functions": [], "next": null}}'
        for seq, start in enumerate((4, 5, 1 << 40, (1 << 63) - 1), 4):
            self.assertEqual(self.both(frame(seq, "rpc.functions", start)), empty)

    def test_bad_start(self):
        bodies = [b'{"func": "rpc.functions", "args": [%s]}' % a for a in
                  (b"-1", b"1.5", b"0.0", b'"0"', b"null", b"true", b"false", b"[0]", b"{}", b"0, 1",
                   b"-9223372036854775808")]
        for seq, body in enumerate(bodies, 1):
            with self.subTest(body=body):
                self.assertEqual(self.both(raw_frame(seq, body)), BAD_START)

    def test_paging(self):
        server = Server(tcp=(LOOPBACK, 0), udp=(LOOPBACK, 0), max_frame=300, name="small").start()
        self.addCleanup(server.shutdown)
        for i in range(40):
            def fn(a: int, b: str = "") -> list:
                """Makes a list.

                More words."""
                return [a, b]
            server.register(f"f{i:02d}", fn)
        names = ["add", "sub", "mul", "div"] + [f"f{i:02d}" for i in range(40)]
        for udp in (False, True):
            port = server.udp_address[1] if udp else server.tcp_address[1]
            with self.subTest(udp=udp), socket.socket() if not udp else \
                    socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(WAIT)
                s.connect((LOOPBACK, port))
                reader = at_rpc.FrameReader(1 << 20)
                start, seen, pages = 0, [], 0
                while start is not None:
                    pages += 1
                    s.send(frame(pages, "rpc.functions", start))
                    if udp:
                        reply = parse_datagram(s.recv(70000))
                    else:
                        reply = None
                        while reply is None:
                            reply = next(iter(reader.feed(s.recv(65536))), None)
                    self.assertEqual(reply.kind, RESPONSE)
                    self.assertLessEqual(len(reply.body), 300)
                    result = json.loads(reply.body)["result"]
                    self.assertTrue(result["functions"])  # at least one while any remain
                    for entry in result["functions"]:
                        if entry["name"].startswith("f"):
                            self.assertEqual(entry, {"name": entry["name"], "params": ["integer", "string"],
                                                     "result": "array", "doc": "Makes a list."})
                    seen += [e["name"] for e in result["functions"]]
                    self.assertEqual(result["next"], None if len(seen) == 44 else len(seen))
                    start = result["next"]
                self.assertEqual(seen, names)
                self.assertGreater(pages, 10)
            with Client(LOOPBACK, port, udp=udp, max_frame=300) as c:
                self.assertEqual([e["name"] for e in c.functions()], names)
                with self.assertRaises(at_rpc.ProtocolError):
                    c.functions(max_pages=3)
        self.assertEqual(at_rpc.parse_reply(reply_body(server.handle(parse_datagram(
            frame(1, "rpc.info")))))[1]["functions"], 44)

    def test_first_entry_goes_in_without_its_doc(self):
        server = Server(tcp=None, udp=None, max_frame=300, calculator=False)
        server.register("long", signature(["any"], "any", "x" * 400)(lambda a: a))
        server.register("short", signature([], "null", "s")(lambda: None))
        server.register("long2", signature([], "any", "y" * 400)(lambda: None))
        page = reply_body(server.handle(parse_datagram(frame(1, "rpc.functions"))))
        self.assertEqual(page, b'{"status": "success", "result": {"functions": [{"name": "long", '
                         b'"params": ["any"], "result": "any", "doc": ""}, {"name": "short", '
                         b'"params": [], "result": "null", "doc": "s"}], "next": 2}}')
        page = reply_body(server.handle(parse_datagram(frame(2, "rpc.functions", 2))))
        self.assertEqual(page, b'{"status": "success", "result": {"functions": [{"name": "long2", '
                         b'"params": [], "result": "any", "doc": ""}], "next": null}}')
        # When not even that fits: internal.
        tiny = Server(tcp=None, udp=None, max_frame=0)
        self.assertEqual(reply_body(tiny.handle(parse_datagram(frame(3, "rpc.functions")))),
                         b'{"status": "error", "code": "internal", "message": "reply buffer too small"}')

    def test_registration_order_and_unknown_signatures(self):
        self.server.register("echo", lambda *args: list(args))

        def greet(name: str) -> str:
            """

            Says hello.
            """
            return "hello, " + name

        self.server.register("greet", greet)
        self.server.register("add", at_rpc.calculator.calc_add)  # replaced: keeps its place
        with Client(*self.server.tcp_address) as c:
            self.assertEqual(c.functions()[3:], [
                {"name": "div", "params": ["number", "number"], "result": "double",
                 "doc": "a / b, always a double"},
                {"name": "echo", "params": None, "result": None, "doc": ""},
                {"name": "greet", "params": ["string"], "result": "string", "doc": "Says hello."},
            ])
        self.assertIn(b'{"name": "echo", "params": null, "result": null, "doc": ""}',
                      self.both(frame(1, "rpc.functions", 4)))


def _annotated(a: int, b: float, c: str, d: bool, e: None, f: list, g: dict) -> None:
    """First line.

    Second."""


def _returns_nothing(x: list[int], y: dict[str, int]):
    pass


def _partly(x, y: int, *, z: str = "") -> bool:
    return True


def _other_types(x: "int | None", y: tuple, z: object, w: "typing.Any") -> float:
    """   """
    return 0.0


_STRING_ANNOTATIONS: dict = {}
exec('def strings(a: "int", b: "list[int]", c: "Unknown", d: "None") -> "dict":\n'
     '    """doc"""\n', _STRING_ANNOTATIONS)
exec("from __future__ import annotations\n"
     "def future(a: int, b: Unresolvable) -> str: pass\n", _STRING_ANNOTATIONS)


class _Callable:
    def __call__(self, a: int) -> int:
        """Called."""
        return a

    def method(self, a: str) -> str:
        """A method."""
        return a


class SignatureTests(unittest.TestCase):
    def check(self, fn, params, result, doc=""):
        sig = at_rpc.describe_function(fn)
        if params is None:
            self.assertIsNone(sig)
        else:
            self.assertEqual(sig, at_rpc.Signature(tuple(params), result, doc))

    def test_annotations(self):
        self.check(_annotated, ["integer", "number", "string", "bool", "null", "array", "object"],
                   "null", "First line.")
        self.check(_returns_nothing, ["array", "object"], "any")
        self.check(_partly, ["any", "integer"], "bool")
        self.check(_other_types, ["any", "any", "any", "any"], "number")
        self.check(_STRING_ANNOTATIONS["strings"], ["integer", "array", "any", "null"], "object", "doc")
        self.check(_STRING_ANNOTATIONS["future"], ["integer", "any"], "string")
        self.check(_Callable().method, ["string"], "string", "A method.")
        self.check(_Callable(), ["integer"], "integer")

    def test_unknown(self):
        def none(a, b=1):
            """Documented, but without annotations."""

        def only_return(a) -> int:
            return 1

        def no_args():
            return 1

        def variadic(*args: int) -> int:
            return 1

        for fn in (none, only_return, no_args, variadic, lambda x: x, lambda: 1, len, print):
            with self.subTest(fn=fn):
                self.assertIsNone(at_rpc.describe_function(fn))

    def test_no_arguments(self):
        def now() -> float:
            """The time."""
            return 0.0

        self.check(now, [], "number", "The time.")

    def test_explicit(self):
        self.check(at_rpc.calculator.calc_div, ["number", "number"], "double", "a / b, always a double")
        fn = signature(("integer",), "double", "\n  half of it\n  more\n")(lambda x: x / 2)
        self.check(fn, ["integer"], "double", "half of it")
        for bad in ((["int"], "any"), (["any"], "float")):
            with self.subTest(bad=bad), self.assertRaises(ValueError):
                signature(*bad)

    def test_entry_json(self):
        self.assertEqual(at_rpc.dispatch.function_entry("f\u00e9\n", at_rpc.Signature(("any",), "null", "d\"")),
                         '{"name": "f\u00e9\\n", "params": ["any"], "result": "null", "doc": "d\\""}')
        self.assertEqual(at_rpc.dispatch.function_entry("x", None),
                         '{"name": "x", "params": null, "result": null, "doc": ""}')


class BroadcastTests(RpcCase):
    def test_error_replies_to_broadcasts_are_dropped(self):
        who = ("192.0.2.9", 5000)
        errors = [frame(1, "div", 1, 0), frame(2, "nope"), frame(3, "rpc.functions", -1),
                  raw_frame(4, b"not json"), frame(5, "rpc.hello", KID, "00" * 16)]
        corrupt = bytearray(frame(6, "add", 1, 2))
        corrupt[-1] ^= 1  # checksum_mismatch
        errors.append(bytes(corrupt))
        for data in errors:
            with self.subTest(data=data[16:]):
                self.assertIsNone(self.server._udp_datagram(data, who, broadcast=True))
                reply = self.server._udp_datagram(data, who)  # unicast: answered
                self.assertTrue(parse_datagram(reply).flags & ERROR)
        # A retransmission of a request whose error is cached: still nothing.
        self.assertIsNone(self.server._udp_datagram(errors[0], who, broadcast=True))
        for seq, data in ((7, frame(7, "rpc.info")), (9, frame(9, "rpc.ping"))):
            reply = parse_datagram(self.server._udp_datagram(data, who, broadcast=True))
            self.assertEqual((reply.kind, reply.seq), (RESPONSE, seq))
        # Only rpc.ping and rpc.info run when they came by broadcast (10.8 rule 1).
        calls = []
        self.server.register("count", lambda: calls.append(1) or len(calls))
        self.assertIsNone(self.server._udp_datagram(frame(10, "count"), who, broadcast=True))
        self.assertIsNone(self.server._udp_datagram(frame(11, "add", 1, 2), who, broadcast=True))
        self.assertEqual(calls, [])

    def test_broadcast_detection(self):
        ip = (socket.IPPROTO_IP, at_rpc.net._IP_PKTINFO)
        self.assertTrue(at_rpc.net._to_group([(*ip, bytes(8) + b"\xff" * 4)]))
        self.assertFalse(at_rpc.net._to_group([(*ip, bytes(8) + bytes([192, 0, 2, 255]))]))
        self.assertFalse(at_rpc.net._to_group([]))
        if hasattr(socket, "IPV6_PKTINFO"):
            v6 = (socket.IPPROTO_IPV6, socket.IPV6_PKTINFO)
            mapped = bytes(10) + b"\xff\xff" + b"\xff" * 4 + bytes(4)  # ::ffff:255.255.255.255 (dual stack)
            self.assertTrue(at_rpc.net._to_group([(*v6, mapped)]))
            self.assertTrue(at_rpc.net._to_group([(*v6, socket.inet_pton(socket.AF_INET6, "ff02::1") + bytes(4))]))
            self.assertFalse(at_rpc.net._to_group([(*v6, socket.inet_pton(socket.AF_INET6, "fe80::1") + bytes(4))]))

    def test_delayed_sends(self):
        receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(receiver.close)
        receiver.bind((LOOPBACK, 0))
        receiver.settimeout(WAIT)
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(sender.close)
        delayed = at_rpc.server._DelayedSends(sender, limit=3)
        began = time.monotonic()
        where = receiver.getsockname()
        for delay, data in ((0.15, b"late"), (0.0, b"now"), (0.08, b"soon"), (0.0, b"over the limit")):
            delayed.add(delay, data, where)
        thread = threading.Thread(target=delayed.run, daemon=True)
        thread.start()
        self.assertEqual([receiver.recv(100) for _ in range(3)], [b"now", b"soon", b"late"])
        self.assertGreaterEqual(time.monotonic() - began, 0.14)
        delayed.stop()
        thread.join(WAIT)
        self.assertFalse(thread.is_alive())


def _broadcast_works() -> bool:
    """Whether a datagram to 255.255.255.255 reaches a local socket and is
    recognised as a broadcast."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.bind(("0.0.0.0", 0))
        probe.settimeout(0.5)
        pktinfo = at_rpc.net._enable_pktinfo(probe)
        sender.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sender.sendto(b"x", ("255.255.255.255", probe.getsockname()[1]))
        return at_rpc.net._receive_datagram(probe, 100, pktinfo)[2]
    except OSError:
        return False
    finally:
        probe.close()
        sender.close()


class LiveDiscoveryTests(unittest.TestCase):
    """Discovery through the real broadcast path; skipped where the host
    does not deliver broadcasts to itself."""

    @classmethod
    def setUpClass(cls):
        if not _broadcast_works():
            raise unittest.SkipTest("no broadcast delivery on this host")

    def test_discover_dual_stack_server(self):
        name = f"live-{os.getpid()}"
        server = Server(tcp=None, udp=("::", 0), name=name).start()
        self.addCleanup(server.shutdown)
        port = server.udp_address[1]
        found = [d for d in at_rpc.discover(0.5, port) if d.name == name]
        v4 = [d for d in found if not d.address.startswith("[")]
        self.assertTrue(v4, found)
        self.assertEqual(v4[0].server, at_rpc.SERVER_SOFTWARE)
        self.assertEqual(v4[0].auth, "off")
        self.assertEqual(found, at_rpc.discovery.sort_discovered(found))
        # An error to a broadcast is never answered, nor a call other than
        # rpc.ping and rpc.info (10.8 rule 1); a success comes after 0-100 ms.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            s.settimeout(0.4)
            s.sendto(frame(1, "div", 1, 0), ("255.255.255.255", port))
            s.sendto(frame(2, "add", 1, 2), ("255.255.255.255", port))
            with self.assertRaises(socket.timeout):
                s.recv(70000)
            s.sendto(frame(3, "rpc.ping"), ("255.255.255.255", port))
            self.assertEqual(parse_datagram(s.recv(70000)).seq, 3)

    def test_discover_command(self):
        name = f"cli-{os.getpid()}"
        server = Server(tcp=None, udp=("0.0.0.0", 0), name=name, keys={KID: KEY}).start()
        self.addCleanup(server.shutdown)
        r = run_cli("discover", "--ipv4", "--timeout", "0.5", "--port", str(server.udp_address[1]))
        self.assertEqual(r.returncode, 0, r.stderr)
        line = next(line for line in r.stdout.splitlines() if f"  {name}  " in line)
        self.assertTrue(line.endswith(f"  {at_rpc.SERVER_SOFTWARE}  auth=required"), line)
        r = run_cli("discover", "--ipv4", "--json", "--timeout", "0.5", "--port", str(server.udp_address[1]))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn({"address": line.split()[0], "name": name, "server": at_rpc.SERVER_SOFTWARE,
                       "auth": "required"}, json.loads(r.stdout))


class DiscoveryFormatTests(unittest.TestCase):
    def test_sort_and_format(self):
        found = [
            Discovered("[fe80::2%eth0]:16724", "b", "at_rpc.py 0.2.0", "off"),
            Discovered("10.0.0.10:16724", "ten", "at-host 0.1.0", "required"),
            Discovered("[fd00::1]:16724", "ula", "at-host 0.1.0", "off"),
            Discovered("10.0.0.9:16724", "nine-long-name", "x", "off"),
            Discovered("[fe80::10%eth0]:16724", "c", "x", "off"),
            Discovered("192.168.1.1:80", "", "", ""),
            Discovered("10.0.0.9:20", "nine-again", "x", "off"),
        ]
        self.assertEqual(at_rpc.format_discovered(found), [
            "10.0.0.9:20            nine-again      x                auth=off",
            "10.0.0.9:16724         nine-long-name  x                auth=off",
            "10.0.0.10:16724        ten             at-host 0.1.0    auth=required",
            "192.168.1.1:80                                          auth=",
            "[fd00::1]:16724        ula             at-host 0.1.0    auth=off",
            "[fe80::2%eth0]:16724   b               at_rpc.py 0.2.0  auth=off",
            "[fe80::10%eth0]:16724  c               x                auth=off",
        ])
        self.assertEqual(json.loads(at_rpc.format_discovered(found[:2], as_json=True)[0]), [
            {"address": "10.0.0.10:16724", "name": "ten", "server": "at-host 0.1.0", "auth": "required"},
            {"address": "[fe80::2%eth0]:16724", "name": "b", "server": "at_rpc.py 0.2.0", "auth": "off"},
        ])
        self.assertEqual(at_rpc.format_discovered([]), [])
        self.assertEqual(at_rpc.format_discovered([], as_json=True), ["[]"])

    def test_parse_reply(self):
        info = {"protocol": 1, "server": "at-host 0.1.0", "name": "psu", "auth": "off",
                "max_body": 65536, "functions": 4}
        ok = pack_frame(RESPONSE, 77, at_rpc.success_body(info))
        self.assertEqual(at_rpc.parse_discovery_reply(ok, ("10.0.0.2", 16724), 77),
                         Discovered("10.0.0.2:16724", "psu", "at-host 0.1.0", "off"))
        self.assertEqual(at_rpc.parse_discovery_reply(ok, ("fe80::1", 16724, 0, 1), 77).address,
                         f"[fe80::1%{socket.if_indextoname(1)}]:16724")
        self.assertEqual(at_rpc.parse_discovery_reply(ok, ("fd00::1", 5, 0, 0), 77).address, "[fd00::1]:5")
        odd = pack_frame(RESPONSE, 77, b'{"status": "success", "result": {"name": 5}}')
        self.assertEqual(at_rpc.parse_discovery_reply(odd, ("10.0.0.2", 1), 77),
                         Discovered("10.0.0.2:1", "5", "", ""))
        for data in (ok, pack_frame(ERROR, 77, at_rpc.error_body("busy", "busy")),
                     pack_frame(RESPONSE, 77, at_rpc.success_body(True)),
                     pack_frame(RESPONSE | AUTH, 77, at_rpc.success_body(info) + bytes(24)),
                     pack_frame(REQUEST, 77, request_body("rpc.info")), b"garbage", ok[:-1]):
            with self.subTest(data=data[:20]):
                seq = 78 if data is ok else 77
                self.assertIsNone(at_rpc.parse_discovery_reply(data, ("10.0.0.2", 1), seq))

    def test_table_and_signatures(self):
        self.assertEqual(at_rpc.discovery.format_table([["a", "bb", ""], ["ccc", "d", "e"]]),
                         ["a    bb", "ccc  d   e"])
        sig = at_rpc.cli.format_signature
        self.assertEqual(sig({"name": "add", "params": ["number", "number"], "result": "number"}),
                         "add(number, number) -> number")
        self.assertEqual(sig({"name": "x", "params": None, "result": None}), "x(...)")
        self.assertEqual(sig({"name": "now", "params": [], "result": None}), "now()")


def cli_env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("AT_KEY", "AT_LOG")}
    env.update(extra)
    return env


def run_cli(*args, **env):
    return subprocess.run([AT_RPC, *args], capture_output=True, text=True,
                          timeout=20, env=cli_env(**env))


def run_main(*args):
    """at_rpc.main in this process (for what needs no network): (exit
    status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with mock.patch.object(sys, "argv", [SCRIPT]), mock.patch.dict(os.environ, {"AT_KEY": ""}), \
            contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = at_rpc.main(list(args))
    return status, out.getvalue(), err.getvalue()


class _ErrorServer:
    """A UDP server answering every request with unknown_function (a server
    that predates rpc.ping)."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LOOPBACK, 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self.run, daemon=True).start()

    def run(self):
        while True:
            try:
                data, addr = self.sock.recvfrom(70000)
                seq = parse_datagram(data).seq
                self.sock.sendto(at_rpc.error_frame(seq, "unknown_function", "unknown function"), addr)
            except OSError:
                return


class CliTests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.proc = subprocess.Popen(
            [AT_RPC, "serve", "--tcp", "127.0.0.1:0", "--udp", "127.0.0.1:0",
             "--name", "cli bench"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=cli_env())
        cls.tcp = cls.proc.stdout.readline().strip().rsplit("//", 1)[1]
        cls.udp = cls.proc.stdout.readline().strip().rsplit("//", 1)[1]
        cls.dead = f"127.0.0.1:{free_port()}"
        cls.dead_udp = f"127.0.0.1:{free_port(socket.SOCK_DGRAM)}"

    @classmethod
    def tearDownClass(cls):
        cls.proc.terminate()
        cls.proc.wait(WAIT)
        cls.proc.stdout.close()

    PING_LINE = re.compile(r"reply from (\S+): seq=(\d+) time=(\d+\.\d{3}) ms\Z")
    STATS = re.compile(r"(\d+) sent, (\d+) received, (\d+)% loss; "
                       r"rtt min/avg/max/mdev = (\d+\.\d{3})/(\d+\.\d{3})/(\d+\.\d{3})/(\d+\.\d{3}) ms\Z")

    def test_ping(self):
        for transport, server in (("tcp", self.tcp), ("udp", self.udp)):
            with self.subTest(transport=transport):
                extra = ["--udp"] if transport == "udp" else []
                r = run_cli("ping", "--server", server, *extra, "--count", "3", "--interval", "0.05",
                            "--size", "100")
                self.assertEqual((r.returncode, r.stderr), (0, ""))
                lines = r.stdout.splitlines()
                self.assertEqual(lines[0], f"PING {server} ({transport})")
                for k, line in enumerate(lines[1:4], 1):
                    m = self.PING_LINE.match(line)
                    self.assertTrue(m, line)
                    self.assertEqual((m[1], m[2]), (server, str(k)))
                self.assertEqual(lines[4], f"--- {server} ping statistics ---")
                m = self.STATS.match(lines[5])
                self.assertTrue(m, lines[5])
                self.assertEqual(m.groups()[:3], ("3", "3", "0"))
                low, avg, high = (float(x) for x in m.groups()[3:6])
                self.assertLessEqual(low, avg)
                self.assertLessEqual(avg, high)
                self.assertEqual(len(lines), 6)

    def test_ping_json_and_defaults(self):
        host, port = self.tcp.split(":")
        r = run_cli("ping", "--json", f"--server={host}:{port}", "--count=2", "--interval=0")
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = [json.loads(line) for line in r.stdout.splitlines()]
        self.assertEqual([list(x) for x in lines], [["seq", "time_ms"]] * 2 + [
            ["sent", "received", "loss_percent", "rtt_ms"]])
        self.assertEqual([x["seq"] for x in lines[:2]], [1, 2])
        self.assertEqual(lines[2]["sent"], 2)
        self.assertEqual(lines[2]["loss_percent"], 0)
        self.assertEqual(list(lines[2]["rtt_ms"]), ["min", "avg", "max", "mdev"])
        self.assertEqual(lines[2]["rtt_ms"]["min"], min(x["time_ms"] for x in lines[:2]))
        # The port defaults to 16724.
        r = run_cli("ping", "--server", "127.0.0.1", "--count", "1", "--timeout", "0.2", "--udp")
        self.assertTrue(r.stdout.startswith("PING 127.0.0.1:16724 (udp)\n"), r.stdout)

    def test_ping_dead_address(self):
        r = run_cli("ping", "--server", self.dead, "--count", "2", "--interval", "0.05")
        self.assertEqual(r.returncode, 3)
        self.assertEqual(r.stdout, f"PING {self.dead} (tcp)\n"
                         f"no reply from {self.dead}: seq=1: i/o error: Connection refused\n"
                         f"no reply from {self.dead}: seq=2: i/o error: Connection refused\n"
                         f"--- {self.dead} ping statistics ---\n"
                         f"2 sent, 0 received, 100% loss\n")
        r = run_cli("ping", "--udp", "--json", "--server", self.dead_udp, "--count", "2",
                    "--interval", "0", "--timeout", "0.2")
        self.assertEqual(r.returncode, 3)
        self.assertEqual([json.loads(line) for line in r.stdout.splitlines()], [
            {"seq": 1, "error": "timed out after 0.2 s"}, {"seq": 2, "error": "timed out after 0.2 s"},
            {"sent": 2, "received": 0, "loss_percent": 100, "rtt_ms": None}])

    def test_ping_loss_percent_rounds_down(self):
        server = Server(tcp=None, udp=(LOOPBACK, 0)).start()
        self.addCleanup(server.shutdown)
        answered = []
        real = server.handle

        def every_third_lost(frame, *a, **kw):
            answered.append(frame.seq)
            return None if len(answered) % 3 == 0 else real(frame, *a, **kw)

        server.handle = every_third_lost
        where = f"127.0.0.1:{server.udp_address[1]}"
        r = run_cli("ping", "--udp", "--server", where, "--count", "3", "--interval", "0",
                    "--timeout", "0.3")
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.splitlines()
        self.assertEqual(lines[3], f"no reply from {where}: seq=3: timed out after 0.3 s")
        self.assertTrue(lines[5].startswith("3 sent, 2 received, 33% loss; rtt "), lines[5])

    def test_ping_error_reply_exits_1(self):
        fake = _ErrorServer()
        self.addCleanup(fake.sock.close)
        where = f"127.0.0.1:{fake.port}"
        r = run_cli("ping", "--udp", "--server", where, "--count", "2", "--interval", "0")
        self.assertEqual(r.returncode, 1)
        self.assertEqual(r.stderr, "error: unknown_function: unknown function\n")
        # As at-host: a line per ping, then the summary.
        self.assertEqual(r.stdout.splitlines(), [
            f"PING {where} (udp)",
            f"no reply from {where}: seq=1: error: unknown_function: unknown function",
            f"no reply from {where}: seq=2: error: unknown_function: unknown function",
            f"--- {where} ping statistics ---",
            "2 sent, 0 received, 100% loss",
        ])

    def test_info(self):
        expected = ("protocol: 1\nserver: at_rpc.py 0.2.0\nname: cli bench\nauth: off\n"
                    "max_body: 65536\nfunctions: 4\next: " + ", ".join(EXT_TCP) + "\n")
        r = run_cli("info", "--server", self.tcp)
        self.assertEqual((r.returncode, r.stdout, r.stderr), (0, expected, ""))
        r = run_cli("info", "--udp", "--json", "--server", self.udp)
        self.assertEqual((r.returncode, r.stdout), (0, '{"protocol": 1, "server": "at_rpc.py 0.2.0", '
                                                       '"name": "cli bench", "auth": "off", '
                                                       '"max_body": 65536, "functions": 4, "ext": '
                                                       + EXT_JSON.decode() + '}\n'))

    def test_info_and_list_dead_address(self):
        for verb in ("info", "list"):
            with self.subTest(verb=verb):
                r = run_cli(verb, "--server", self.dead)
                self.assertEqual((r.returncode, r.stdout), (3, ""))
                self.assertEqual(r.stderr, f"transport error: {self.dead}: i/o error: Connection refused\n")
                r = run_cli(verb, "--udp", "--timeout", "0.3", "--server", self.dead_udp)
                self.assertEqual((r.returncode, r.stdout), (3, ""))
                self.assertIn("timed out", r.stderr)

    def test_list(self):
        expected = ("add  add(number, number) -> number  a + b\n"
                    "sub  sub(number, number) -> number  a - b\n"
                    "mul  mul(number, number) -> number  a * b\n"
                    "div  div(number, number) -> double  a / b, always a double\n")
        r = run_cli("list", "--server", self.tcp)
        self.assertEqual((r.returncode, r.stdout, r.stderr), (0, expected, ""))
        r = run_cli("list", "--udp", "--json", "--server", self.udp)
        self.assertEqual(r.returncode, 0)
        self.assertEqual(r.stdout, "[" + ", ".join(
            f'{{"name": "{n}", "params": ["number", "number"], "result": "{t}", "doc": "{d}"}}'
            for n, t, d in (("add", "number", "a + b"), ("sub", "number", "a - b"),
                            ("mul", "number", "a * b"), ("div", "double", "a / b, always a double")))
            + "]\n")

    def test_list_pages_and_unknown_signatures(self):
        server = Server(tcp=(LOOPBACK, 0), udp=None, max_frame=256, calculator=False).start()
        self.addCleanup(server.shutdown)
        server.register("echo", lambda *args: list(args))

        def greet(name: str, times: int = 1) -> str:
            """Greets."""
            return "hello, " + name

        server.register("greet", greet)
        server.register("now", signature([], "double")(lambda: time.time()))
        for i in range(40):
            server.register(f"f{i}", lambda: None)
        r = run_cli("list", "--server", f"127.0.0.1:{server.tcp_address[1]}")
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.splitlines()
        self.assertEqual(lines[:4], ["echo   echo(...)",
                                     "greet  greet(string, integer) -> string  Greets.",
                                     "now    now() -> double",
                                     "f0     f0(...)"])
        self.assertEqual(len(lines), 43)

    def test_list_needs_a_key_on_an_authenticating_server(self):
        server = Server(tcp=(LOOPBACK, 0), udp=None, keys={KID: KEY}).start()
        self.addCleanup(server.shutdown)
        where = f"127.0.0.1:{server.tcp_address[1]}"
        r = run_cli("list", "--server", where)
        self.assertEqual((r.returncode, r.stderr), (1, "error: unauthorized: authentication required\n"))
        r = run_cli("list", "--server", where, AT_KEY=f"{KID}:{KEY.hex()}")
        self.assertEqual((r.returncode, len(r.stdout.splitlines())), (0, 4))
        r = run_cli("info", "--server", where)
        self.assertEqual(r.returncode, 0)
        self.assertIn("auth: required\n", r.stdout)

    def test_discover_nobody(self):
        port = str(free_port(socket.SOCK_DGRAM))
        r = run_cli("discover", "--ipv4", "--timeout", "0.2", "--port", port)
        self.assertEqual((r.returncode, r.stdout), (3, ""))
        if not r.stderr.startswith("transport error: discovery: "):  # a host without a broadcast route
            self.assertEqual(r.stderr, "no server answered within 0.2 s\n")
        r = run_cli("discover", "--ipv4", "--json", "--timeout", "0.2", "--port", port)
        self.assertEqual((r.returncode, r.stdout), (3, "[]\n"))

    def test_usage_errors_exit_2(self):
        for args in (("ping", "--count", "0"), ("ping", "--count", "x"), ("ping", "--interval", "-1"),
                     ("ping", "--size", "-1"), ("ping", "--size", "70000"), ("ping", "--timeout", "0"),
                     ("ping", "extra"), ("ping", "--server"), ("info", "--bogus"), ("info", "x"),
                     ("list", "--timeout", "nan"), ("list", "--server", "a:b:c"),
                     ("info", "--key", "nope"), ("discover", "--ipv4", "--ipv6"),
                     ("discover", "--port", "0"), ("discover", "--port", "65536"),
                     ("discover", "--interface", "no-such-if0"), ("discover", "--timeout", "-1")):
            with self.subTest(args=args):
                status, out, err = run_main(*args)
                self.assertEqual((status, out), (2, ""), err)
                self.assertTrue(err.startswith("error: "), err)
        r = run_cli("ping", "--count", "0")  # the real exit status
        self.assertEqual(r.returncode, 2)
        self.assertTrue(r.stderr.startswith("error: --count: '0' is not a whole number"), r.stderr)

    def test_help(self):
        r = run_cli("--help")
        self.assertEqual(r.returncode, 0)
        for verb in ("serve", "call", "ping", "info", "list", "discover"):
            self.assertIn(f"at-rpc {verb} [", r.stdout)
            status, out, _ = run_main(verb, "--help")
            self.assertEqual(status, 0)
            self.assertTrue(out.startswith(f"usage: at_rpc.py {verb} "), out)
        with mock.patch.object(sys, "argv", ["/usr/bin/at-rpc"]), \
                contextlib.redirect_stdout(io.StringIO()) as out:
            at_rpc.main(["--help"])
        self.assertTrue(out.getvalue().startswith(
            "usage: at-rpc serve [--tcp ADDR] [--udp ADDR] [--max-frame BYTES] [--name NAME]\n"
            "                    [--key KID:HEX ...]"), out.getvalue())


if __name__ == "__main__":
    unittest.main()
