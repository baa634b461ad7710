"""Contract 10.5, calls in both directions over TCP, in the Python peer:
rpc.peer (P1 -> exactly P2), the server's calls towards the client (P3,
replies routed, unawaited ones dropped, at most 4 outstanding, a closed
peer), both sides calling at once, ext, and CallHome, the client that calls
home (against the Python server, a raw socket and at-host). Real sockets on
127.0.0.1, OS-chosen ports, bounded waits."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from support import AT_RPC, KEY, KID, LOOPBACK, WAIT, Spawned, require

from at_rpc import (
    ERROR,
    NOTIFY,
    REQUEST,
    RESPONSE,
    CallHome,
    Client,
    Frame,
    FrameReader,
    Peer,
    RemoteError,
    Server,
    error_frame,
    pack_frame,
    parse_reply,
    request_body,
    success_body,
)

HERE = os.path.dirname(os.path.abspath(__file__))
with open(
    os.path.join(HERE, "..", "..", "..", "tests", "vectors", "section10.json"), encoding="utf-8"
) as f:
    VECTORS = {v["name"]: bytes.fromhex(v["frame"]) for v in json.load(f)}
P1, P2, P3 = VECTORS["P1"], VECTORS["P2"], VECTORS["P3"]


class Tcp:
    """A raw TCP connection that reads frames with a bound."""

    def __init__(self, addr: tuple[str, int] | socket.socket):
        self.sock = addr if isinstance(addr, socket.socket) else socket.create_connection(addr)
        self.sock.settimeout(WAIT)
        self.reader = FrameReader(1 << 20)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def next(self, timeout: float = WAIT) -> Frame | None:
        """The next frame; None when the connection closed or `timeout` passed."""
        end = time.monotonic() + timeout
        while True:
            for item in self.reader.feed():
                assert isinstance(item, Frame), item
                return item
            left = end - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                return None
            if not data:
                return None
            self.reader.push(data)

    def close(self) -> None:
        self.sock.close()


def raw(frame: Frame | None) -> bytes:
    """A frame's bytes as they were on the wire."""
    assert frame is not None
    return pack_frame(frame.flags, frame.seq, frame.body)


def request(seq: int, func: str, *args: object) -> bytes:
    return pack_frame(REQUEST, seq, request_body(func, args))


def result(seq: int, value: Any) -> bytes:
    return pack_frame(RESPONSE, seq, success_body(value))


class Background:
    """fn() on a thread; outcome() gives its result or raises its error."""

    def __init__(self, fn: Callable[[], Any]):
        self._done: queue.Queue[tuple[bool, Any]] = queue.Queue()

        def run() -> None:
            try:
                self._done.put((True, fn()))
            except BaseException as e:
                self._done.put((False, e))

        threading.Thread(target=run, daemon=True).start()

    def outcome(self, timeout: float = WAIT) -> Any:
        ok, value = self._done.get(timeout=timeout)
        if not ok:
            raise value
        return value


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server(tcp=(LOOPBACK, 0), udp=(LOOPBACK, 0), name="home").start()
    yield s
    s.shutdown()


def tcp_port(server: Server) -> int:
    assert server.tcp_address is not None
    return int(server.tcp_address[1])


def board(server: Server) -> tuple[Tcp, Peer]:
    """A raw client that sent P1 and got P2, and the server's handle on it."""
    assert server.tcp_address is not None
    c = Tcp(server.tcp_address)
    c.send(P1)
    assert raw(c.next()) == P2
    peer = server.next_peer(WAIT)
    assert peer is not None
    return c, peer


# -- rpc.peer


def test_p1_is_answered_exactly_p2_and_again_without_a_second_handle(server: Server) -> None:
    c, peer = board(server)
    assert not peer.closed and peer.addr == c.sock.getsockname()[:2]
    assert server.peers() == [peer]
    # A lease 1 to 300 is taken and ignored on TCP; a second rpc.peer, the
    # same answer and no second handle.
    c.send(request(2, "rpc.peer", 300))
    reply = c.next()
    assert reply is not None and (reply.kind, reply.seq) == (RESPONSE, 2)
    assert reply.body == P2[16:]
    assert server.next_peer(0) is None
    assert server.peers() == [peer]
    c.close()
    assert peer.wait_closed(WAIT)
    assert server.peers() == []


@pytest.mark.parametrize("args", [[0], [301], ["60"], [1.5], [True], [None], [60, 1]])
def test_rpc_peer_other_arguments_are_invalid(server: Server, args: list[Any]) -> None:
    assert server.tcp_address is not None
    c = Tcp(server.tcp_address)
    c.send(request(1, "rpc.peer", *args))
    ok, _, code, _ = parse_reply(c.next().body)  # type: ignore[union-attr]
    assert (ok, code) == (False, "invalid_arguments")
    assert server.next_peer(0) is None
    c.close()


def test_rpc_peer_by_notify_grants_nothing(server: Server) -> None:
    assert server.tcp_address is not None
    c = Tcp(server.tcp_address)
    c.send(pack_frame(NOTIFY, 1, request_body("rpc.peer", ())) + request(2, "rpc.ping"))
    reply = c.next()
    assert reply is not None and (reply.kind, reply.seq) == (RESPONSE, 2)
    assert server.next_peer(0) is None and server.peers() == []
    c.close()


def test_ext_lists_peer_only_over_tcp_without_keys(server: Server) -> None:
    with Client(LOOPBACK, tcp_port(server)) as c:
        info = c.info()
        assert list(info)[-1] == "ext"
        assert info["ext"] == ["notify", "events", "deadline", "peer"]
    assert server.udp_address is not None
    with Client(LOOPBACK, server.udp_address[1], udp=True) as u:
        assert "peer" not in u.info()["ext"]
        with pytest.raises(RemoteError) as e:
            u.call("rpc.peer")
        assert e.value.code == "unknown_function"
    keyed = Server(tcp=(LOOPBACK, 0), udp=None, keys={KID: KEY}).start()
    try:
        with Client(LOOPBACK, tcp_port(keyed)) as c:
            assert "peer" not in c.info()["ext"]
            with pytest.raises(RemoteError) as e:
                c.call("rpc.peer")
            assert e.value.code == "unauthorized"
        with Client(LOOPBACK, tcp_port(keyed), key=(KID, KEY)) as c:
            assert "peer" not in c.info()["ext"]
            with pytest.raises(RemoteError) as e:
                c.call("rpc.peer")  # sealed: no peers in sessions (yet)
            assert e.value.code == "unknown_function"
        assert keyed.next_peer(0) is None
    finally:
        keyed.shutdown()


# -- the server's calls towards the client


def test_server_calls_the_client_p3_and_the_reply_reaches_the_call(server: Server) -> None:
    c, peer = board(server)
    info = Background(lambda: peer.call("rpc.info"))
    assert raw(c.next()) == P3  # the server's seq 1, though the client's 1 is taken
    c.send(result(1, {"name": "board"}))
    assert info.outcome() == {"name": "board"}
    failing = Background(lambda: peer.call("div", 1, 0))
    call = c.next()
    assert call is not None and (call.kind, call.seq) == (REQUEST, 2)
    c.send(error_frame(2, "division_by_zero", "division by zero"))
    with pytest.raises(RemoteError) as e:
        failing.outcome()
    assert e.value.code == "division_by_zero"
    c.close()


def test_both_sides_call_at_once(server: Server) -> None:
    c, peer = board(server)
    waiting = Background(lambda: peer.call("temp"))
    call = c.next()
    assert call is not None and (call.kind, call.seq) == (REQUEST, 1)
    # The server's call waits; the client calls the server meanwhile and
    # is answered before it answers the server.
    c.send(request(2, "add", 10, 20))
    reply = c.next()
    assert reply is not None and (reply.kind, reply.seq) == (RESPONSE, 2)
    assert parse_reply(reply.body)[1] == 30
    c.send(result(1, 21.5))
    assert waiting.outcome() == 21.5
    c.close()


def test_replies_nobody_awaits_are_dropped_and_the_connection_kept(server: Server) -> None:
    c, peer = board(server)
    c.send(result(77, "stray") + error_frame(0, "internal", "seq 0") + request(2, "rpc.ping"))
    reply = c.next()
    assert reply is not None and (reply.kind, reply.seq) == (RESPONSE, 2)
    # A timeout keeps the connection; the late reply is dropped.
    with pytest.raises(TimeoutError):
        peer.call("slow", timeout=0.2)
    late = c.next()
    assert late is not None and late.seq == 1
    c.send(result(1, "late"))
    answered = Background(lambda: peer.call("again"))
    call = c.next()
    assert call is not None and call.seq == 2
    c.send(result(2, "on time"))
    assert answered.outcome() == "on time"
    # Without rpc.peer, a reply is dropped too and the connection kept.
    assert server.tcp_address is not None
    plain = Tcp(server.tcp_address)
    plain.send(result(1, "stray") + request(1, "rpc.ping"))
    reply = plain.next()
    assert reply is not None and (reply.kind, reply.seq) == (RESPONSE, 1)
    plain.close()
    c.close()


def test_at_most_four_calls_are_outstanding(server: Server) -> None:
    c, peer = board(server)
    calls = [Background(lambda i=i: peer.call("n", i)) for i in range(6)]  # type: ignore[misc]
    seen = [c.next() for _ in range(4)]
    assert all(f is not None and f.kind == REQUEST for f in seen)
    assert c.next(0.3) is None  # the 5th waits for a turn
    first = seen[0]
    assert first is not None
    c.send(result(first.seq, "one"))
    fifth = c.next()
    assert fifth is not None and fifth.kind == REQUEST

    def echo(f: Frame | None) -> None:
        assert f is not None
        c.send(pack_frame(RESPONSE, f.seq, success_body(json.loads(f.body)["args"][0])))

    for f in [*seen[1:], fifth]:
        echo(f)
    echo(c.next())  # the 6th, once a turn was free
    outcomes = {call.outcome() for call in calls}
    assert outcomes == {"one", 0, 1, 2, 3, 4, 5} - {json.loads(first.body)["args"][0]}
    c.close()


def test_a_call_to_a_closed_peer_fails_at_once(server: Server) -> None:
    c, peer = board(server)
    waiting = Background(lambda: peer.call("temp", timeout=WAIT))
    assert c.next() is not None
    started = time.monotonic()
    c.close()
    with pytest.raises(ConnectionError):
        waiting.outcome()  # the waiting call fails as the connection closes
    assert peer.wait_closed(WAIT)
    with pytest.raises(ConnectionError):
        peer.call("temp", timeout=WAIT)
    assert time.monotonic() - started < WAIT / 2


def test_a_function_cannot_call_back_its_own_caller(server: Server) -> None:
    def callback() -> Any:
        return server.peers()[0].call("x")

    server.register("callback", callback)
    c, _ = board(server)
    c.send(request(2, "callback"))
    reply = c.next()
    assert reply is not None and (reply.kind, reply.seq) == (ERROR, 2)
    assert parse_reply(reply.body)[2] == "internal"
    c.close()


# -- CallHome


def test_call_home_sends_p1_then_its_notification_and_serves() -> None:
    with socket.create_server((LOOPBACK, 0)) as listener:
        port = listener.getsockname()[1]
        listener.settimeout(WAIT)
        home = CallHome(LOOPBACK, port, {"temp": lambda: 21.5}, timeout=WAIT)
        started = Background(home.start)
        conn, _ = listener.accept()
        host = Tcp(conn)
        assert raw(host.next()) == P1
        host.send(P2)
        assert started.outcome() is home and home.granted == {"lease": None}
        home.notify("log", "boot python")
        boot = host.next()
        assert boot is not None and (boot.kind, boot.seq) == (NOTIFY, 2)
        assert json.loads(boot.body) == {"func": "log", "args": ["boot python"]}
        host.send(P3 + request(2, "temp") + request(3, "nope"))
        replies = [host.next() for _ in range(3)]
        assert [(f.kind, f.seq) for f in replies if f is not None] == [
            (RESPONSE, 1),
            (RESPONSE, 2),
            (ERROR, 3),
        ]
        info = parse_reply(replies[0].body)[1]  # type: ignore[union-attr]
        assert info["ext"] == ["notify"] and info["functions"] == 1
        assert parse_reply(replies[1].body)[1] == 21.5  # type: ignore[union-attr]
        assert parse_reply(replies[2].body)[2] == "unknown_function"  # type: ignore[union-attr]
        host.send(result(99, "stray"))  # dropped; the connection stays
        host.send(request(4, "rpc.ping"))
        assert host.next() is not None
        host.close()
        assert home.wait(WAIT) and home.closed
        with pytest.raises(ConnectionError):
            home.call("rpc.ping")
        home.close()


def test_call_home_refused_raises() -> None:
    keyed = Server(tcp=(LOOPBACK, 0), udp=None, keys={KID: KEY}).start()
    try:
        with pytest.raises(RemoteError) as e:
            CallHome(LOOPBACK, tcp_port(keyed), timeout=WAIT).start()
        assert e.value.code == "unauthorized"
    finally:
        keyed.shutdown()


def test_python_client_calls_home_to_the_python_server(server: Server) -> None:
    logged: queue.Queue[str] = queue.Queue()
    server.register("log", logged.put)
    home = CallHome(LOOPBACK, tcp_port(server), timeout=WAIT)

    def ask(a: int, b: int) -> Any:
        # The server waits for this reply while this calls the server.
        return home.call("add", a, b)

    home.functions.update({"temp": lambda: 21.5, "ask": ask})
    with home:
        home.notify("log", "boot python")
        assert logged.get(timeout=WAIT) == "boot python"
        peer = server.next_peer(WAIT)
        assert peer is not None
        assert peer.call("temp") == 21.5
        assert peer.call("ask", 2, 3) == 5
        assert peer.call("rpc.info")["ext"] == ["notify"]
        with pytest.raises(RemoteError) as e:
            peer.call("nope")
        assert e.value.code == "unknown_function"
        assert home.call("mul", 6, 7) == 42
        peer.notify("temp")  # runs, unanswered
        assert peer.call("rpc.ping") is True
    assert peer.wait_closed(WAIT)


def test_python_client_calls_home_to_at_host() -> None:
    path = os.environ.get("AT_HOST_BIN")
    if not path or not os.access(path, os.X_OK):
        require("AT_HOST_BIN does not name the at-host binary (the Rust tests and .ci/run set it)")
    assert path is not None
    host = Spawned([path, "serve", "--tcp", "127.0.0.1:0", "--udp", "none"], lines=1)
    try:
        addr = host.addresses["tcp"]
        with CallHome(addr[0], addr[1], timeout=WAIT) as home:
            assert home.granted == {"lease": None}  # P2's result
            assert "peer" in home.call("rpc.info")["ext"]
            home.notify("log", "boot python")
            where = f"{LOOPBACK}:{home._sock.getsockname()[1]}"  # type: ignore[union-attr]
            end = time.monotonic() + WAIT
            while True:
                line = host.lines.get(timeout=max(0.01, end - time.monotonic()))
                if line.startswith("log from"):
                    break
            assert line == f"log from {where}: boot python"
            assert home.call("add", 1, 2) == 3
    finally:
        host.stop()


def test_the_command_line_calls_home(server: Server) -> None:
    logged: queue.Queue[str] = queue.Queue()
    server.register("log", logged.put)
    argv = [AT_RPC, "call-home", "--server", f"{LOOPBACK}:{tcp_port(server)}", "--name", "b1"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert logged.get(timeout=WAIT) == "boot b1"
        peer = server.next_peer(WAIT)
        assert peer is not None
        assert peer.call("add", 10, 20) == 30
        assert peer.call("rpc.info")["name"] == "b1"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=WAIT)
    finally:
        proc.kill()
        proc.wait(WAIT)
    assert (proc.returncode, out, err) == (0, f"called home to {LOOPBACK}:{tcp_port(server)}\n", "")
    assert peer.wait_closed(WAIT)


def test_call_home_stays_connected_longer_than_its_timeout(server: Server) -> None:
    with CallHome(LOOPBACK, tcp_port(server), {"temp": lambda: 21.5}, timeout=0.2) as home:
        peer = server.next_peer(WAIT)
        assert peer is not None
        home.notify("rpc.ping")
        assert not home.wait(0.6)  # idle three timeouts: still connected
        assert peer.call("temp", timeout=WAIT) == 21.5
        assert home.call("add", 1, 1) == 2
