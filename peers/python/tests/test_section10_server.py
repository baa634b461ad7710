"""Contract section 10 in the Python server: NOTIFY calls run and never
answered (TCP and UDP, plain and sealed), the UDP repeat memory, deadlines,
rpc.cancel and rpc.info's "ext". Raw sockets on 127.0.0.1, OS-chosen ports."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
from support import KEY, KID, LOOPBACK, WAIT

from at_rpc import (
    AUTH,
    ERROR,
    NOTIFY,
    REQUEST,
    RESPONSE,
    Client,
    Frame,
    FrameReader,
    RemoteError,
    Server,
    pack_auth_frame,
    pack_frame,
    parse_datagram,
    parse_reply,
    request_body,
    split_auth,
)
from at_rpc.oneway import LogLimit, RepeatMemory


def notify(seq: int, func: str, *args: object, deadline_ms: int | None = None) -> bytes:
    return pack_frame(NOTIFY, seq, request_body(func, args, deadline_ms))


def request(seq: int, func: str, *args: object, deadline_ms: int | None = None) -> bytes:
    return pack_frame(REQUEST, seq, request_body(func, args, deadline_ms))


class Counter:
    """A function for the server that counts its calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[object, ...]] = []
        self.cond = threading.Condition()

    def __call__(self, *args: object) -> int:
        with self.cond:
            self.calls.append(args)
            self.cond.notify_all()
            return len(self.calls)

    def wait_for(self, n: int) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.calls) >= n, WAIT), self.calls


class Tcp:
    """A raw TCP connection that reads frames with a bound."""

    def __init__(self, addr: tuple[str, int]):
        self.sock = socket.create_connection(addr, timeout=WAIT)
        self.reader = FrameReader(1 << 20)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def next(self, timeout: float = WAIT) -> Frame | None:
        """The next frame, or None when the server closed the connection."""
        end = time.monotonic() + timeout
        while True:
            for item in self.reader.feed():
                assert isinstance(item, Frame), item
                return item
            self.sock.settimeout(max(0.01, end - time.monotonic()))
            data = self.sock.recv(65536)
            if not data:
                return None
            self.reader.push(data)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server(tcp=(LOOPBACK, 0), udp=(LOOPBACK, 0), name="ten").start()
    yield s
    s.shutdown()


@pytest.fixture
def keyed() -> Iterator[Server]:
    s = Server(tcp=(LOOPBACK, 0), udp=(LOOPBACK, 0), name="ten", keys={KID: KEY}).start()
    yield s
    s.shutdown()


def body_of(frame: Frame | None) -> tuple[bool, object, str, str]:
    assert frame is not None
    return parse_reply(frame.body)


def test_tcp_notify_runs_and_nothing_it_does_is_answered(server: Server) -> None:
    count = Counter()
    server.register("count", count)

    def fail() -> None:
        raise RemoteError("internal", "no")

    server.register("fail", fail)
    corrupt = bytearray(notify(3, "count", "corrupt"))
    corrupt[-1] ^= 1
    frames = [
        notify(1, "count", "a"),
        notify(2, "count", "b", deadline_ms=60000),
        bytes(corrupt),  # bad CRC
        pack_frame(NOTIFY, 4, b"not json"),
        notify(5, "nope"),
        notify(6, "add", 1),  # wrong arguments
        notify(7, "fail"),
        notify(8, "count", "late", deadline_ms=0),  # deadline passed: not called
        notify(9, "rpc.hello", KID, "00" * 16),
        pack_frame(NOTIFY, 10, b'{"topic": "t", "n": 1, "value": 1}'),  # an event
        notify(11, "rpc.ping"),
        request(12, "rpc.ping"),
    ]
    c = Tcp(server.tcp_address)
    c.send(b"".join(frames))
    reply = c.next()
    assert reply is not None and (reply.kind, reply.seq) == (RESPONSE, 12)
    assert [a for a in count.calls] == [("a",), ("b",)]
    c.send(request(13, "rpc.ping"))
    reply = c.next()
    assert reply is not None and reply.seq == 13
    c.close()


def test_notify_with_another_type_bit_is_bad_frame_and_the_connection_stays(
    server: Server,
) -> None:
    c = Tcp(server.tcp_address)
    c.send(pack_frame(NOTIFY | REQUEST, 41, request_body("rpc.ping")) + request(42, "rpc.ping"))
    bad = c.next()
    assert bad is not None and (bad.kind, bad.seq) == (ERROR, 41)
    assert body_of(bad)[2] == "bad_frame"
    ok = c.next()
    assert ok is not None and (ok.kind, ok.seq) == (RESPONSE, 42)
    c.close()


def test_an_oversize_notify_on_tcp_closes_without_a_reply() -> None:
    server = Server(tcp=(LOOPBACK, 0), udp=None, max_frame=64).start()
    try:
        c = Tcp(server.tcp_address)
        c.send(pack_frame(NOTIFY, 5, b" " * 100))
        assert c.next() is None
        c.close()
    finally:
        server.shutdown()


def udp_socket(server: Server) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(WAIT)
    s.connect(server.udp_address)
    return s


def test_udp_notify_runs_once_and_is_never_answered(server: Server) -> None:
    count = Counter()
    server.register("count", count)
    with udp_socket(server) as s:
        for _ in range(3):
            s.send(notify(7, "count", "x"))  # one call, two repeats
        s.send(notify(7, "count", "y"))  # the same seq, another CRC: a new one
        corrupt = bytearray(notify(8, "count", "z"))
        corrupt[-1] ^= 1
        s.send(bytes(corrupt))
        s.send(notify(9, "nope"))
        s.send(notify(10, "count", deadline_ms=0))
        s.send(request(11, "rpc.ping"))
        reply = parse_datagram(s.recv(70000))
        assert (reply.kind, reply.seq) == (RESPONSE, 11)
        s.settimeout(0.2)
        with pytest.raises(TimeoutError):
            s.recv(70000)
    assert count.calls == [("x",), ("y",)]


def test_repeat_memory_bounds() -> None:
    now = [0.0]
    with pytest.raises(ValueError):
        RepeatMemory(7)
    mem = RepeatMemory(8, 60.0, clock=lambda: now[0])
    addr = ("10.0.0.1", 5)
    assert mem.first_time(addr, 1, 10, 99)
    assert not mem.first_time(addr, 1, 10, 99)
    assert mem.first_time(addr, 1, 10, 98)  # another CRC
    assert mem.first_time(("10.0.0.2", 5), 1, 10, 99)  # another address
    for seq in range(2, 8):
        assert mem.first_time(addr, seq, 10, 99)
    assert len(mem) == 8
    # Full: the oldest goes, and a new one still runs.
    assert mem.first_time(addr, 100, 10, 99)
    assert len(mem) == 8
    assert mem.first_time(addr, 1, 10, 99)  # forgotten: runs again
    now[0] = 61.0
    assert mem.first_time(addr, 100, 10, 99)  # older than 60 s: forgotten
    assert len(mem) == 1


def test_log_limit_holds_back_and_counts(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    limit = LogLimit(2, 1.0, clock=lambda: now[0])
    logger = "at_rpc"
    import logging

    logging.getLogger(logger).setLevel(logging.WARNING)
    try:
        with caplog.at_level(logging.WARNING, logger=logger):
            for i in range(5):
                limit.warning("drop %d", i)
            now[0] = 1.5
            limit.warning("drop %d", 9)
        assert [r.getMessage() for r in caplog.records] == [
            "drop 0",
            "drop 1",
            "drop 9 (and 3 more not logged)",
        ]
    finally:
        logging.getLogger(logger).setLevel(100)


def session_of(server: Server, udp: bool) -> tuple[Client, bytes, bytes]:
    """A client holding a session with the server: (client, SID, K_req)."""
    port = (server.udp_address if udp else server.tcp_address)[1]
    c = Client(LOOPBACK, port, udp=udp, key=(KID, KEY))
    assert c.call("add", 1, 2) == 3
    session = c._session
    assert session is not None
    return c, session.sid, session.k_req


@pytest.mark.parametrize("udp", [False, True])
def test_sealed_notify_runs_once_under_k_req_and_is_never_answered(
    keyed: Server, udp: bool
) -> None:
    count = Counter()
    keyed.register("count", count)
    client, sid, k_req = session_of(keyed, udp)
    seq = client._seq + 1
    client._seq += 1
    good = pack_auth_frame(NOTIFY, seq, request_body("count", ["sealed"]), sid, k_req)
    forged = pack_auth_frame(NOTIFY, seq + 1, request_body("count", ["forged"]), sid, KEY)
    unknown = pack_auth_frame(NOTIFY, seq + 2, request_body("count", ["?"]), b"\0" * 8, k_req)
    plain = notify(seq + 3, "count", "plain")  # authentication required: dropped
    hello = notify(seq + 4, "rpc.hello", KID, "00" * 16)
    frames = [good, good, forged, unknown, plain, hello]
    sessions = len(keyed.sessions) if keyed.sessions is not None else 0
    if udp:
        with udp_socket(keyed) as s:
            for f in frames:
                s.send(f)
            s.send(request(seq + 5, "rpc.ping"))
            reply = parse_datagram(s.recv(70000))
            assert (reply.kind, reply.seq) == (RESPONSE, seq + 5)
    else:
        c = Tcp(keyed.tcp_address)
        c.send(b"".join(frames) + request(seq + 5, "rpc.ping"))
        reply = c.next()
        assert reply is not None and (reply.kind, reply.seq) == (RESPONSE, seq + 5)
        c.close()
    assert count.calls == [("sealed",)]
    assert keyed.sessions is not None and len(keyed.sessions) == sessions  # no hello ran
    # The seq was used: the session's next call takes a later one.
    client._seq = seq
    assert client.call("count", "after") == 2
    client.close()


def test_deadline_zero_is_never_called(server: Server) -> None:
    count = Counter()
    server.register("count", count)
    d2 = b'{"status": "error", "code": "deadline_exceeded", "message": "deadline exceeded"}'
    # Vector D1 and its reply D2, byte for byte, over TCP and UDP.
    d1 = request(10, "add", 10, 20, deadline_ms=0)
    c = Tcp(server.tcp_address)
    c.send(d1 + request(11, "count", deadline_ms=0) + request(12, "count", deadline_ms=60000))
    replies = [c.next() for _ in range(3)]
    c.close()
    assert replies[0] is not None and replies[0].flags == ERROR and replies[0].body == d2
    assert replies[1] is not None and body_of(replies[1])[2] == "deadline_exceeded"
    assert replies[2] is not None and body_of(replies[2])[:2] == (True, 1)
    with udp_socket(server) as s:
        s.send(d1)
        assert s.recv(70000) == pack_frame(ERROR, 10, d2)
        s.send(request(13, "count", deadline_ms=0))
        assert parse_reply(parse_datagram(s.recv(70000)).body)[2] == "deadline_exceeded"
    assert count.calls == [()]


def test_a_deadline_that_passes_in_the_queue(server: Server) -> None:
    count = Counter()
    server.register("count", count)
    release = threading.Event()
    server.register("slow", lambda: release.wait(WAIT))
    c = Tcp(server.tcp_address)
    # Both in one write: the second waits behind the first, which holds it
    # past its 50 ms.
    c.send(request(1, "slow") + request(2, "count", deadline_ms=50))
    time.sleep(0.2)  # the server is inside slow() meanwhile
    release.set()
    first, second = c.next(), c.next()
    c.close()
    assert first is not None and body_of(first)[:2] == (True, True)
    assert second is not None and body_of(second)[2] == "deadline_exceeded"
    assert count.calls == []


def test_a_bad_deadline_is_bad_request(server: Server) -> None:
    c = Tcp(server.tcp_address)
    c.send(pack_frame(REQUEST, 3, b'{"func": "add", "args": [1, 2], "deadline_ms": -1}'))
    reply = c.next()
    c.close()
    assert body_of(reply)[2] == "bad_request"


def test_cancel_stops_nothing(server: Server) -> None:
    with Client(LOOPBACK, server.tcp_address[1]) as c:
        assert c.call("rpc.cancel", 11) is False
        for bad in ([], ["x"], [-1], [1, 2], [4294967296]):
            with pytest.raises(RemoteError) as e:
                c.call("rpc.cancel", *bad)
            assert e.value.code == "invalid_arguments"
    # Vector C1 (a NOTIFY cancel) is never answered.
    t = Tcp(server.tcp_address)
    t.send(bytes.fromhex("415400100000000c00000024a621020b7b2266756e63223a20227270632e63616e63656c222c202261726773223a205b31315d7d") + request(13, "rpc.ping"))
    reply = t.next()
    t.close()
    assert reply is not None and reply.seq == 13


def test_plain_cancel_to_a_keyed_server_is_unauthorized(keyed: Server) -> None:
    with Client(LOOPBACK, keyed.tcp_address[1]) as c:
        with pytest.raises(RemoteError) as e:
            c.call("rpc.cancel", 1)
        assert e.value.code == "unauthorized"


def test_info_lists_ext_last(server: Server) -> None:
    with Client(LOOPBACK, server.tcp_address[1]) as c:
        info = c.info()
    assert list(info)[-1] == "ext"
    assert info["ext"] == ["notify", "events", "deadline", "peer"]
    with Client(LOOPBACK, server.udp_address[1], udp=True) as c:
        assert c.info()["ext"] == ["notify", "events", "deadline"]  # no peers over UDP


def test_sealed_reply_frames_carry_auth(keyed: Server) -> None:
    # A sealed REQUEST with deadline 0 gets a sealed deadline_exceeded.
    client, sid, k_req = session_of(keyed, False)
    seq = client._seq + 1
    frame = pack_auth_frame(REQUEST, seq, request_body("add", [1, 2], 0), sid, k_req)
    c = Tcp(keyed.tcp_address)
    c.send(frame)
    reply = c.next()
    c.close()
    client.close()
    assert reply is not None and reply.flags == ERROR | AUTH
    parts = split_auth(reply)
    assert parts is not None
    assert parse_reply(parts.body)[2] == "deadline_exceeded"
