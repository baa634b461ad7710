"""Contract section 10.3 in the Python server: topics, rpc.subscribe,
rpc.unsubscribe and rpc.topics, leases, intervals, state, the per-subscriber
bound, UDP credit, sealed events and slow readers. Raw sockets on
127.0.0.1, OS-chosen ports."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from support import KEY, KID, LOOPBACK, WAIT
from test_section10_server import Tcp, request, session_of, udp_socket

from at_rpc import (
    AUTH,
    ERROR,
    NOTIFY,
    REQUEST,
    RESPONSE,
    Frame,
    Server,
    pack_auth_frame,
    pack_frame,
    parse_datagram,
    parse_event,
    parse_reply,
    request_body,
    split_auth,
    tag_ok,
)

with open(__import__("os").path.join(__import__("support").REPO, "tests", "vectors",
                                     "section10.json"), encoding="utf-8") as f:
    VECTORS = {v["name"]: bytes.fromhex(v["frame"]) for v in json.load(f)}


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server(tcp=(LOOPBACK, 0), udp=(LOOPBACK, 0), name="ev").start()
    yield s
    s.shutdown()


def result(frame: Frame | None) -> object:
    assert frame is not None
    ok, value, code, message = parse_reply(frame.body)
    assert ok, (code, message)
    return value


def error_code(frame: Frame | None) -> str:
    assert frame is not None and frame.kind == ERROR
    return parse_reply(frame.body)[2]


def event(frame: Frame | None) -> tuple[int, object, str | None]:
    assert frame is not None and frame.kind == NOTIFY, frame
    e = parse_event(frame.body)
    return e.n, e.value, e.end


def test_vectors_s1_s2_e1_over_tcp(server: Server) -> None:
    temp = server.topic("temp", "deg C")
    temp.publish(21.5)  # a state: event 1 right after the reply
    c = Tcp(server.tcp_address)
    c.send(VECTORS["S1"])
    reply = c.next()
    assert reply is not None and pack_frame(reply.flags, reply.seq, reply.body) == VECTORS["S2"]
    first = c.next()
    assert first is not None
    assert pack_frame(first.flags, first.seq, first.body) == VECTORS["E1"]
    c.close()


def test_events_interleave_and_n_counts(server: Server) -> None:
    t = server.topic("t", state=False)
    c = Tcp(server.tcp_address)
    c.send(request(1, "rpc.subscribe", "t"))
    assert result(c.next()) == {"topic": "t", "lease": 60, "interval": 0, "n": 0, "credit": None}
    t.publish(1)
    t.publish([2, {"x": None}])
    assert event(c.next()) == (1, 1, None)
    assert event(c.next()) == (2, [2, {"x": None}], None)
    # Replies keep their own seqs; events take the server's (2 and 3 now).
    c.send(request(2, "rpc.ping"))
    reply = c.next()
    assert reply is not None and (reply.kind, reply.seq) == (RESPONSE, 2)
    # A renewal keeps n and changes the interval.
    c.send(request(3, "rpc.subscribe", "t", 30, 5))
    assert result(c.next()) == {"topic": "t", "lease": 30, "interval": 5, "n": 2, "credit": None}
    t.publish(3)
    frame = c.next()
    assert event(frame) == (3, 3, None) and frame is not None and frame.seq == 3
    c.send(request(4, "rpc.unsubscribe", "t"))
    assert result(c.next()) is True
    c.send(request(5, "rpc.unsubscribe", "t"))
    assert result(c.next()) is False
    c.close()


def test_interval_keeps_only_the_newest_value(server: Server) -> None:
    t = server.topic("t")
    c = Tcp(server.tcp_address)
    c.send(request(1, "rpc.subscribe", "t", 60, 300))
    result(c.next())
    c.send(request(9, "rpc.ping"))  # once answered, the subscribe's reply is surely out
    assert result(c.next()) is True
    started = time.monotonic()
    for v in range(1, 6):
        t.publish(v)
    assert event(c.next()) == (1, 1, None)
    assert event(c.next()) == (2, 5, None)  # 2, 3 and 4 were replaced: no event, no n
    assert time.monotonic() - started >= 0.29
    c.send(request(2, "rpc.ping"))
    reply = c.next()
    assert reply is not None and reply.kind == RESPONSE  # nothing else came first
    c.close()


def test_a_lease_runs_out(server: Server) -> None:
    t = server.topic("t")
    t.publish("x")
    c = Tcp(server.tcp_address)
    c.send(request(1, "rpc.subscribe", "t", 1))
    assert result(c.next())["lease"] == 1  # type: ignore[index]
    assert event(c.next()) == (1, "x", None)
    started = time.monotonic()
    assert event(c.next(3.0)) == (2, None, "lease")
    assert 0.8 <= time.monotonic() - started <= 2.5
    assert server.events.subscriptions() == 0
    c.close()


def test_bad_subscribe_arguments_and_unknown_topics(server: Server) -> None:
    server.topic("t")
    c = Tcp(server.tcp_address)
    bad = [[], [1], ["t", 0], ["t", 301], ["t", 1.5], ["t", 60, -1], ["t", 60, 4294967296],
           ["t", 60, 0, 1], ["rpc.x"], ["a" * 65], ["sp ace"], ["t", True]]
    for seq, args in enumerate(bad, 1):
        c.send(pack_frame(REQUEST, seq, request_body("rpc.subscribe", args)))
        assert error_code(c.next()) == "invalid_arguments", args
    c.send(request(50, "rpc.subscribe", "nope"))
    assert error_code(c.next()) == "unknown_topic"
    c.send(request(51, "rpc.unsubscribe", 5))
    assert error_code(c.next()) == "invalid_arguments"
    c.send(request(52, "rpc.subscribe", "t", None, None))  # null: the defaults
    assert result(c.next())["lease"] == 60  # type: ignore[index]
    c.close()


def test_at_most_four_per_subscriber(server: Server) -> None:
    for i in range(6):
        server.topic(f"t{i}")
    c = Tcp(server.tcp_address)
    for i in range(4):
        c.send(request(i + 1, "rpc.subscribe", f"t{i}"))
        result(c.next())
    c.send(request(10, "rpc.subscribe", "t4"))
    reply = c.next()
    assert error_code(reply) == "busy"
    assert reply is not None and parse_reply(reply.body)[3] == "subscription table full"
    c.send(request(11, "rpc.subscribe", "t0"))  # a renewal needs no slot
    result(c.next())
    other = Tcp(server.tcp_address)  # another subscriber has its own four
    other.send(request(1, "rpc.subscribe", "t4"))
    result(other.next())
    c.close()
    # A connection's subscriptions end with it.
    deadline = time.monotonic() + WAIT
    while server.events.subscriptions() != 1:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    other.close()


def test_topics_are_listed_in_pages() -> None:
    server = Server(tcp=(LOOPBACK, 0), udp=None, max_frame=200).start()
    try:
        names = [f"topic/{i:02d}" for i in range(20)]
        for name in names:
            server.topic(name, f"doc of {name}")
        c = Tcp(server.tcp_address)
        seen: list[str] = []
        start, seq = 0, 0
        while True:
            seq += 1
            c.send(request(seq, "rpc.topics", start) if start else request(seq, "rpc.topics"))
            reply = c.next()
            assert reply is not None and len(reply.body) <= 200
            page = result(reply)
            assert isinstance(page, dict)
            assert page["topics"], page
            seen += [t["name"] for t in page["topics"]]
            assert all(t["doc"] == "doc of " + t["name"] for t in page["topics"])
            if page["next"] is None:
                break
            start = page["next"]
        assert seen == names and seq > 2
        c.send(request(99, "rpc.topics", 20))
        assert result(c.next()) == {"topics": [], "next": None}
        c.send(request(100, "rpc.topics", -1))
        assert error_code(c.next()) == "invalid_arguments"
        c.close()
    finally:
        server.shutdown()


def test_udp_credit_then_end(server: Server) -> None:
    t = server.topic("t", state=False)
    with udp_socket(server) as s:
        # Padded (an unknown member) so that 3 times its size covers 17 events.
        s.send(pack_frame(REQUEST, 1, b'{"func": "rpc.subscribe", "args": ["t"], "pad": "'
                          + b" " * 1000 + b'"}'))
        reply = parse_datagram(s.recv(70000))
        assert result(reply) == {"topic": "t", "lease": 60, "interval": 0, "n": 0, "credit": 16}
        s.send(request(2, "rpc.ping"))  # once answered, the subscribe is surely done
        assert result(parse_datagram(s.recv(70000))) is True
        for v in range(20):
            t.publish(v)
        frames = [parse_datagram(s.recv(70000)) for _ in range(17)]
        assert [event(f) for f in frames] == [(i + 1, i, None) for i in range(16)] + [
            (17, None, "lease")
        ]
        seqs = [f.seq for f in frames]
        assert all(b == a % 0xFFFFFFFF + 1 for a, b in zip(seqs, seqs[1:]))
        s.settimeout(0.2)
        with pytest.raises(TimeoutError):
            s.recv(70000)
    assert server.events.subscriptions() == 0


def test_sealed_subscription_events_under_k_rep() -> None:
    server = Server(tcp=(LOOPBACK, 0), udp=(LOOPBACK, 0), keys={KID: KEY}).start()
    try:
        t = server.topic("t")
        t.publish("hello")
        client, sid, k_req = session_of(server, False)
        session = client._session
        assert session is not None
        c = Tcp(server.tcp_address)
        # Plain subscribe to a server requiring authentication: unauthorized.
        c.send(request(1, "rpc.subscribe", "t"))
        assert error_code(c.next()) == "unauthorized"
        seq = client._seq + 1
        c.send(pack_auth_frame(REQUEST, seq, request_body("rpc.subscribe", ["t"]), sid, k_req))
        reply = c.next()
        assert reply is not None and reply.flags == RESPONSE | AUTH
        first = c.next()
        assert first is not None and (first.flags, first.seq) == (NOTIFY | AUTH, 1)
        parts = split_auth(first)
        assert parts is not None and tag_ok(session.k_rep, parts) and not tag_ok(k_req, parts)
        assert parse_event(parts.body).value == "hello"
        t.publish("again")
        second = c.next()
        assert second is not None and second.seq == 2
        # It belongs to the session, not the connection.
        c.close()
        time.sleep(0.05)
        assert server.events.subscriptions() == 1
        client.close()
    finally:
        server.shutdown()


def test_a_slow_reader_loses_events_not_replies(server: Server) -> None:
    t = server.topic("big", state=False)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(WAIT)
    sock.connect(server.tcp_address)
    c = Tcp.__new__(Tcp)
    c.sock, c.reader = sock, __import__("at_rpc").FrameReader(1 << 20)
    c.send(request(1, "rpc.subscribe", "big"))
    result(c.next())
    c.send(request(9, "rpc.ping"))  # once answered, the subscribe's reply is surely out
    assert result(c.next()) is True
    value = "x" * 4000
    started = time.monotonic()
    for _ in range(3000):  # 12 MB that nobody reads
        t.publish(value)
    assert time.monotonic() - started < WAIT  # publishing never waited for the reader
    c.send(request(2, "rpc.ping"))
    ns = []
    while True:
        frame = c.next()
        assert frame is not None
        if frame.kind == NOTIFY:
            ns.append(event(frame)[0])
        else:
            assert (frame.kind, frame.seq) == (RESPONSE, 2)
            break
    assert ns == sorted(ns) and len(ns) < 3000 and ns[0] == 1, (len(ns), ns[-5:])
    t.publish("last")
    assert event(c.next())[0] == 3001, (len(ns), ns[-5:])  # the lost ones were counted
    c.close()


def test_withdraw_and_shutdown_end_subscriptions() -> None:
    server = Server(tcp=(LOOPBACK, 0), udp=None).start()
    a, b = server.topic("a"), server.topic("b")
    c = Tcp(server.tcp_address)
    c.send(request(1, "rpc.subscribe", "a") + request(2, "rpc.subscribe", "b"))
    result(c.next())
    result(c.next())
    a.withdraw()
    assert event(c.next()) == (1, None, "topic")
    b.publish(1)
    assert event(c.next()) == (1, 1, None)
    server.shutdown()
    assert event(c.next()) == (2, None, "server")
    c.close()
    with pytest.raises(ValueError):
        Server(tcp=None, udp=None).topic("rpc.x")


def test_subscribe_by_notify_gets_events_without_a_reply(server: Server) -> None:
    t = server.topic("t")
    t.publish(7)
    c = Tcp(server.tcp_address)
    c.send(pack_frame(NOTIFY, 1, request_body("rpc.subscribe", ["t"])))
    assert event(c.next()) == (1, 7, None)
    c.close()


def test_calls_topic_of_serve_is_listed() -> None:
    # The serve command's topic is tested with the CLI; here the API shape.
    server = Server(tcp=None, udp=None)
    topic = server.topic("calls", "calls answered")
    assert (topic.name, topic.doc) == ("calls", "calls answered")
    with pytest.raises(ValueError):
        server.topic("calls")
    threading.Thread(target=lambda: None).start()


def test_udp_events_total_at_most_three_times_the_subscribe(server: Server) -> None:
    t = server.topic("t", state=False)
    with udp_socket(server) as s:
        subscribe = request(1, "rpc.subscribe", "t")
        s.send(subscribe)
        result(parse_datagram(s.recv(70000)))
        s.send(request(5, "rpc.ping"))
        assert result(parse_datagram(s.recv(70000))) is True
        for v in range(10):
            t.publish(v)
        got = []
        s.settimeout(0.3)
        while True:
            try:
                got.append(s.recv(70000))
            except TimeoutError:
                break
        assert got and sum(len(g) for g in got) <= 3 * len(subscribe)
        assert [event(parse_datagram(g))[0] for g in got] == list(range(1, len(got) + 1))
        # A new subscribe (a renewal) refills the budget; lost events were counted.
        s.settimeout(WAIT)
        s.send(request(2, "rpc.subscribe", "t"))
        assert result(parse_datagram(s.recv(70000)))["n"] == 10  # type: ignore[index]
        t.publish("again")
        assert event(parse_datagram(s.recv(70000))) == (11, "again", None)


def test_a_session_holding_a_lease_is_not_idle() -> None:
    from at_rpc import SessionTable

    now = [0.0]
    table = SessionTable({KID: KEY}, capacity=1, lifetime=600, min_idle=60, clock=lambda: now[0])
    sid, _, _ = table.open(KID, b"\1" * 16)
    session = table.get(sid)
    assert session is not None
    assert table.admit(session, 1, ("127.0.0.1", 1), False)[0] == "run"  # used
    table.leased = lambda: frozenset([sid])
    now[0] = 100.0  # idle 100 s: would give way, but holds a lease
    with pytest.raises(Exception) as e:
        table.open(KID, b"\2" * 16)
    assert getattr(e.value, "code", "") == "busy"
    now[0] = 700.0  # past its lifetime: kept while the lease runs
    assert table.get(sid) is session
    table.leased = frozenset
    assert table.get(sid) is None


def test_the_hub_reports_sessions_with_subscriptions() -> None:
    server = Server(tcp=(LOOPBACK, 0), udp=None, keys={KID: KEY}).start()
    try:
        server.topic("t")
        client, sid, k_req = session_of(server, False)
        c = Tcp(server.tcp_address)
        c.send(pack_auth_frame(REQUEST, client._seq + 1, request_body("rpc.subscribe", ["t"]),
                               sid, k_req))
        assert c.next() is not None
        assert server.sessions is not None and server.sessions.leased() == frozenset([sid])
        c.close()
        client.close()
    finally:
        server.shutdown()
