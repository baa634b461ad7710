"""Contract section 10 in the Python clients and the command line:
Client.notify, deadlines, subscriptions (gaps, renewal, ends, sealed
events), stray NOTIFY frames dropped by both clients, and the installed
at-rpc's notify, call --deadline, topics, watch and info."""

from __future__ import annotations

import asyncio
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
from support import AT_RPC, KEY, KID, LOOPBACK, WAIT
from test_section10_server import Counter

from at_rpc import (
    ERROR,
    NOTIFY,
    REQUEST,
    RESPONSE,
    AsyncClient,
    Client,
    FrameReader,
    RemoteError,
    Server,
    event_body,
    pack_frame,
    parse_datagram,
    parse_request,
    success_body,
)
from at_rpc.client import Received


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server(tcp=(LOOPBACK, 0), udp=(LOOPBACK, 0), name="cl").start()
    yield s
    s.shutdown()


@pytest.fixture
def keyed() -> Iterator[Server]:
    s = Server(tcp=(LOOPBACK, 0), udp=(LOOPBACK, 0), keys={KID: KEY}).start()
    yield s
    s.shutdown()


def port(server: Server, udp: bool) -> int:
    return (server.udp_address if udp else server.tcp_address)[1]


@pytest.mark.parametrize("udp", [False, True])
def test_notify_runs_without_a_reply(server: Server, udp: bool) -> None:
    count = Counter()
    server.register("count", count)
    with Client(LOOPBACK, port(server, udp), udp=udp) as c:
        c.notify("count", "a")
        c.notify("count", "b", deadline_ms=0)  # never called
        c.notify("count", "c")
        count.wait_for(2)
        assert c.call("count", "d") == 3  # the call's reply is its own
    assert count.calls == [("a",), ("c",), ("d",)]


@pytest.mark.parametrize("udp", [False, True])
def test_sealed_notify_from_the_client(keyed: Server, udp: bool) -> None:
    count = Counter()
    keyed.register("count", count)
    with Client(LOOPBACK, port(keyed, udp), udp=udp, key=(KID, KEY)) as c:
        c.notify("count", 1)  # opens the session first
        count.wait_for(1)
        assert c.call("count", 2) == 2
    with Client(LOOPBACK, port(keyed, udp), udp=udp) as plain:
        plain.notify("count", 3)  # plain: dropped by a server requiring keys
        assert plain.ping() is True
    assert count.calls == [(1,), (2,)]


@pytest.mark.parametrize("udp", [False, True])
def test_call_with_a_deadline(server: Server, udp: bool) -> None:
    count = Counter()
    server.register("count", count)
    with Client(LOOPBACK, port(server, udp), udp=udp) as c:
        with pytest.raises(RemoteError) as e:
            c.call("count", deadline_ms=0)
        assert e.value.code == "deadline_exceeded"
        assert c.call("count", deadline_ms=5000) == 1
        with pytest.raises(ValueError):
            c.call("count", deadline_ms=-1)
    assert count.calls == [()]


class LossyServer:
    """A UDP server that drops the first copy of each request and records
    every datagram it gets, then answers add(1, 2) by hand."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LOOPBACK, 0))
        self.port = self.sock.getsockname()[1]
        self.got: list[bytes] = []
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while True:
            try:
                data, addr = self.sock.recvfrom(70000)
            except OSError:
                return
            self.got.append(data)
            if len(self.got) >= 2:
                f = parse_datagram(data)
                self.sock.sendto(pack_frame(RESPONSE, f.seq, success_body(3)), addr)


def test_udp_retransmissions_repeat_the_same_bytes_deadline_unchanged() -> None:
    lossy = LossyServer()
    try:
        with Client(LOOPBACK, lossy.port, udp=True, timeout=3.0) as c:
            assert c.call("add", 1, 2, deadline_ms=2500) == 3
        assert len(lossy.got) >= 2 and len(set(lossy.got)) == 1
        assert b'"deadline_ms": 2500}' in lossy.got[0]
    finally:
        lossy.sock.close()


@pytest.mark.parametrize("udp", [False, True])
def test_subscribe_events_gaps_and_end(server: Server, udp: bool) -> None:
    t = server.topic("t")
    t.publish("first")
    with Client(LOOPBACK, port(server, udp), udp=udp) as c:
        sub = c.subscribe("t", 1)
        assert sub.result["n"] == 0
        assert sub.result["credit"] == (16 if udp else None)
        assert sub.next(WAIT) == Received("t", 1, "first", None, None)
        assert c.call("add", 1, 2) == 3
        t.publish("second")
        assert sub.next(WAIT) == Received("t", 2, "second", None, None)
        # A gap: n jumps (as if events were lost on the way).
        held = c._held["t"]
        held.largest, held.delivered = 4, 4  # the client saw up to 4
        t.publish("x")  # n 3: not above the largest seen: dropped
        t.publish("y")  # n 4: dropped too
        t.publish("z")  # n 5
        got = sub.next(WAIT)
        assert got is not None and (got.n, got.value) == (5, "z")
        held.delivered = 2  # as if 3 and 4 had not come
        t.publish("w")
        got = sub.next(WAIT)
        assert got is not None and got.lost == (3, 5) and got.n == 6
        sub.close()
        assert c.call("rpc.unsubscribe", "t") is False  # close() unsubscribed


def test_renewal_at_half_the_lease_keeps_the_subscription(server: Server) -> None:
    t = server.topic("t", state=False)
    with Client(LOOPBACK, port(server, False)) as c:
        sub = c.subscribe("t", 1)  # renewed every 0.5 s
        started = time.monotonic()
        while time.monotonic() - started < 1.6:
            assert sub.next(0.1) is None  # no end event: renewed
        assert sub.ended is None
        t.publish(1)
        assert sub.next(WAIT) == Received("t", 1, 1, None, None)


def test_udp_renews_at_half_the_credit(server: Server) -> None:
    t = server.topic("t", state=False)
    with Client(LOOPBACK, port(server, True), udp=True) as c:
        sub = c.subscribe("t")
        got = []
        for v in range(30):
            t.publish(v)
            got.append(sub.next(WAIT))  # renewals refill the credit
        assert [g.value for g in got if g is not None] == list(range(30))
        assert sub.ended is None


def test_sealed_subscription(keyed: Server) -> None:
    t = keyed.topic("t")
    t.publish(5)
    with Client(LOOPBACK, port(keyed, False), key=(KID, KEY)) as c:
        sub = c.subscribe("t")
        assert sub.next(WAIT) == Received("t", 1, 5, None, None)
        t.publish(6)
        assert sub.next(WAIT) == Received("t", 2, 6, None, None)


def test_the_end_of_a_subscription(server: Server) -> None:
    t = server.topic("t")
    with Client(LOOPBACK, port(server, False)) as c:
        sub = c.subscribe("t")
        t.withdraw()
        got = sub.next(WAIT)
        assert got is not None and got.end == "topic"
        assert sub.ended == "topic" and list(sub) == []


class StrayServer:
    """A TCP server that sends NOTIFY frames (an event, a call) with the
    request's seq before each reply: clients must drop them."""

    def __init__(self) -> None:
        self.listener = socket.create_server((LOOPBACK, 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self.run, daemon=True).start()

    def run(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        reader = FrameReader()
        with conn:
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                for f in reader.feed(data):
                    assert not isinstance(f, Exception)
                    func, args = parse_request(f.body)
                    stray = pack_frame(NOTIFY, f.seq, event_body("t", 1, 1))
                    stray += pack_frame(NOTIFY, f.seq, b'{"func": "x", "args": []}')
                    conn.sendall(stray + pack_frame(RESPONSE, f.seq, success_body(sum(args))))


def test_both_clients_drop_notify_frames_they_did_not_ask_for() -> None:
    stray = StrayServer()
    with Client(LOOPBACK, stray.port) as c:
        assert c.call("add", 1, 2) == 3
        assert c.call("add", 3, 4) == 7
    stray.listener.close()

    async def aio() -> list[int]:
        other = StrayServer()
        async with AsyncClient(LOOPBACK, other.port) as a:
            results = await asyncio.gather(a.call("add", 1, 2), a.call("add", 5, 5))
        other.listener.close()
        return list(results)

    assert asyncio.run(aio()) == [3, 10]


def test_udp_clients_drop_a_notify_with_the_awaited_seq() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((LOOPBACK, 0))

    def run() -> None:
        for _ in range(2):
            data, addr = sock.recvfrom(70000)
            f = parse_datagram(data)
            sock.sendto(pack_frame(NOTIFY, f.seq, event_body("t", 1, 1)), addr)
            sock.sendto(pack_frame(RESPONSE, f.seq, success_body(9)), addr)

    threading.Thread(target=run, daemon=True).start()
    with Client(LOOPBACK, sock.getsockname()[1], udp=True) as c:
        assert c.call("add", 4, 5) == 9

    async def aio() -> object:
        async with AsyncClient(LOOPBACK, sock.getsockname()[1], udp=True) as a:
            return await a.call("add", 4, 5)

    assert asyncio.run(aio()) == 9
    sock.close()


# -- the command line


def cli(*args: str, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [AT_RPC, *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


def test_cli_notify_and_call_deadline(server: Server) -> None:
    count = Counter()
    server.register("count", count)
    tcp = f"{LOOPBACK}:{server.tcp_address[1]}"
    udp = f"{LOOPBACK}:{server.udp_address[1]}"
    r = cli("notify", "--server", tcp, "count", "1", "x")
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    r = cli("notify", "--udp", "--server", udp, "count", "2")
    assert r.returncode == 0
    count.wait_for(2)
    assert sorted(count.calls) == [(1, "x"), (2,)]
    r = cli("call", "--deadline", "0", "--server", tcp, "count")
    assert (r.returncode, r.stderr) == (1, "error: deadline_exceeded: deadline exceeded\n")
    r = cli("call", "--deadline", "5000", "--udp", "--server", udp, "add", "1", "2")
    assert (r.returncode, r.stdout) == (0, "3\n")
    r = cli("call", "--deadline", "-1", "--server", tcp, "add", "1", "2")
    assert r.returncode == 2
    r = cli("notify", "--server", tcp)
    assert r.returncode == 2 and "FUNC is missing" in r.stderr
    dead = socket.socket()
    dead.bind((LOOPBACK, 0))
    where = f"{LOOPBACK}:{dead.getsockname()[1]}"
    dead.close()
    r = cli("notify", "--server", where, "count")
    assert r.returncode == 3 and r.stderr.startswith(f"transport error: {where}: ")


def test_cli_info_topics_and_watch(server: Server) -> None:
    t = server.topic("temp", "deg C")
    server.topic("a/b", "")
    t.publish(21.5)
    tcp = f"{LOOPBACK}:{server.tcp_address[1]}"
    udp = f"{LOOPBACK}:{server.udp_address[1]}"
    r = cli("info", "--server", tcp)
    assert r.stdout.endswith("functions: 4\next: notify, events, deadline, peer\n")  # TCP
    r = cli("topics", "--server", tcp)
    assert (r.returncode, r.stdout) == (0, "temp  deg C\na/b\n")
    r = cli("topics", "--json", "--udp", "--server", udp)
    assert r.stdout == '[{"name": "temp", "doc": "deg C"}, {"name": "a/b", "doc": ""}]\n'
    r = cli("watch", "--server", tcp, "--count", "1", "temp")
    assert (r.returncode, r.stdout, r.stderr) == (0, "1 21.5\n", "")
    r = cli("watch", "--udp", "--json", "--server", udp, "--count", "1", "temp")
    assert (r.returncode, r.stdout) == (0, '{"topic": "temp", "n": 1, "value": 21.5}\n')
    r = cli("watch", "--server", tcp, "nope")
    assert (r.returncode, r.stderr) == (1, "error: unknown_topic: unknown topic\n")
    r = cli("watch", "--server", tcp)
    assert r.returncode == 2
    r = cli("watch", "--server", tcp, "--interval", "x", "temp")
    assert r.returncode == 2


def test_cli_watch_prints_events_and_the_end() -> None:
    server = Server(tcp=(LOOPBACK, 0), udp=None).start()
    t = server.topic("t", state=False)
    proc = subprocess.Popen(
        [AT_RPC, "watch", "--server", f"{LOOPBACK}:{server.tcp_address[1]}", "t"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + WAIT
        while server.events.subscriptions() == 0:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        t.publish([1, 2])
        t.publish("two")
        server.shutdown()  # "end": "server"
        out, err = proc.communicate(timeout=WAIT)
    finally:
        proc.kill()
        server.shutdown()
    assert proc.returncode == 3
    assert out == '1 [1, 2]\n2 "two"\n'
    assert err == "end: server\n"


def test_cli_watch_reports_a_gap() -> None:
    # A hand-made server: the subscribe's reply, then events 1 and 4.
    listener = socket.create_server((LOOPBACK, 0))

    def run() -> None:
        conn, _ = listener.accept()
        with conn:
            f = next(iter(FrameReader().feed(conn.recv(65536))))
            assert not isinstance(f, Exception) and f.kind == REQUEST
            result = {"topic": "t", "lease": 60, "interval": 0, "n": 0, "credit": None}
            conn.sendall(
                pack_frame(RESPONSE, f.seq, success_body(result))
                + pack_frame(NOTIFY, 1, event_body("t", 1, "a"))
                + pack_frame(NOTIFY, 2, event_body("t", 4, "b"))
            )
            conn.recv(1)  # until the client goes

    threading.Thread(target=run, daemon=True).start()
    r = cli("watch", "--server", f"{LOOPBACK}:{listener.getsockname()[1]}", "--count", "2", "t")
    listener.close()
    assert (r.returncode, r.stdout, r.stderr) == (0, '1 "a"\n4 "b"\n', "gap: events 2 to 3 lost\n")


def test_cli_watch_exits_3_when_the_server_goes_away() -> None:
    listener = socket.create_server((LOOPBACK, 0))

    def run() -> None:
        conn, _ = listener.accept()
        f = next(iter(FrameReader().feed(conn.recv(65536))))
        assert not isinstance(f, Exception)
        result = {"topic": "t", "lease": 60, "interval": 0, "n": 0, "credit": None}
        conn.sendall(pack_frame(RESPONSE, f.seq, success_body(result)))
        conn.close()

    threading.Thread(target=run, daemon=True).start()
    r = cli("watch", "--server", f"{LOOPBACK}:{listener.getsockname()[1]}", "t")
    listener.close()
    assert r.returncode == 3 and r.stderr.startswith("transport error: ")


def test_python_m_at_rpc_lists_the_new_commands() -> None:
    r = subprocess.run([sys.executable, "-m", "at_rpc", "--help"], capture_output=True, text=True)
    for command in ("notify", "topics", "watch", "--deadline MS"):
        assert command in r.stdout


def test_a_renewal_refused_unauthorized_subscribes_again_in_a_new_session(keyed: Server) -> None:
    t = keyed.topic("t", state=False)
    with Client(LOOPBACK, port(keyed, False), key=(KID, KEY)) as c:
        sub = c.subscribe("t")
        old = c._session
        assert keyed.sessions is not None
        keyed.sessions._sessions.clear()  # the server forgot the session
        sub.renew()
        assert c._session is not None and c._session is not old
        t.publish("new")
        got = sub.next(WAIT)
        assert got is not None and got.value == "new"


@pytest.mark.parametrize("udp", [False, True])
def test_async_client_call_with_a_deadline(server: Server, udp: bool) -> None:
    async def run() -> tuple[object, str]:
        async with AsyncClient(LOOPBACK, port(server, udp), udp=udp) as a:
            ok = await a.call("add", 1, 2, deadline_ms=5000)
            try:
                await a.call("add", 1, 2, deadline_ms=0)
            except RemoteError as e:
                return ok, e.code
        return ok, ""

    assert asyncio.run(run()) == (3, "deadline_exceeded")


@pytest.mark.parametrize("udp", [False, True])
def test_a_call_from_the_server_is_answered_unknown_function(udp: bool) -> None:
    kind = socket.SOCK_DGRAM if udp else socket.SOCK_STREAM
    srv = socket.socket(socket.AF_INET, kind)
    srv.bind((LOOPBACK, 0))
    if not udp:
        srv.listen()
    answers: list[bytes] = []

    def run() -> None:
        if udp:
            data, addr = srv.recvfrom(70000)
            f = parse_datagram(data)
            srv.sendto(pack_frame(REQUEST, 1, b'{"func": "rpc.info", "args": []}'), addr)
            answers.append(srv.recvfrom(70000)[0])
            srv.sendto(pack_frame(RESPONSE, f.seq, success_body(3)), addr)
            return
        conn, _ = srv.accept()
        with conn:
            conn.settimeout(WAIT)
            f = next(iter(FrameReader().feed(conn.recv(65536))))
            assert not isinstance(f, Exception)
            conn.sendall(pack_frame(REQUEST, 1, b'{"func": "rpc.info", "args": []}'))
            answers.append(conn.recv(65536))
            conn.sendall(pack_frame(RESPONSE, f.seq, success_body(3)))
            conn.recv(1)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    with Client(LOOPBACK, srv.getsockname()[1], udp=udp, timeout=WAIT) as c:
        assert c.call("add", 1, 2) == 3
    thread.join(WAIT)
    srv.close()
    answer = parse_datagram(answers[0])
    assert (answer.kind, answer.seq) == (ERROR, 1)
    assert b'"code": "unknown_function"' in answer.body


def test_serve_publishes_the_calls_answered() -> None:
    from support import Spawned

    served = Spawned([AT_RPC, "serve", "--tcp", f"{LOOPBACK}:0", "--udp", "none"], lines=1)
    try:
        where = "{}:{}".format(*served.addresses["tcp"])
        for _ in range(3):
            assert cli("call", "--server", where, "add", "1", "2").returncode == 0
        r = cli("topics", "--server", where)
        assert r.stdout == "calls  calls answered\n"
        # The count is published at most once a second, when it changed.
        watch = subprocess.Popen(
            [AT_RPC, "watch", "--server", where, "--count", "2", "calls"],
            stdout=subprocess.PIPE,
            text=True,
        )
        lines: queue.Queue[str] = queue.Queue()

        def read() -> None:
            assert watch.stdout is not None
            for line in watch.stdout:
                lines.put(line)

        threading.Thread(target=read, daemon=True).start()
        try:
            n1, v1 = lines.get(timeout=WAIT).split()
            assert n1 == "1" and int(v1) >= 0
            assert cli("call", "--server", where, "add", "1", "2").returncode == 0
            n2, v2 = lines.get(timeout=WAIT).split()
            assert n2 == "2" and int(v2) > int(v1)
            assert watch.wait(WAIT) == 0
        finally:
            watch.kill()
    finally:
        served.stop()


def test_info_prints_ext_none() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((LOOPBACK, 0))
    info = {"protocol": 1, "server": "x", "name": "n", "auth": "off", "max_body": 64,
            "functions": 0, "ext": []}

    def run() -> None:
        data, addr = sock.recvfrom(70000)
        sock.sendto(pack_frame(RESPONSE, parse_datagram(data).seq, success_body(info)), addr)

    threading.Thread(target=run, daemon=True).start()
    r = cli("info", "--udp", "--server", f"{LOOPBACK}:{sock.getsockname()[1]}")
    sock.close()
    assert (r.returncode, r.stdout.splitlines()[-1]) == (0, "ext: none")


@pytest.mark.parametrize("udp", [False, True])
@pytest.mark.parametrize("keyed_server", [False, True])
def test_async_client_notify(udp: bool, keyed_server: bool) -> None:
    keys = {KID: KEY} if keyed_server else None
    server = Server(tcp=(LOOPBACK, 0), udp=(LOOPBACK, 0), keys=keys).start()
    count = Counter()
    server.register("count", count)

    async def run() -> object:
        key = (KID, KEY) if keyed_server else None
        async with AsyncClient(LOOPBACK, port(server, udp), udp=udp, key=key) as a:
            await a.notify("count", "n")
            await asyncio.to_thread(count.wait_for, 1)
            return await a.call("count", "c")

    try:
        assert asyncio.run(run()) == 2
        assert count.calls == [("n",), ("c",)]
    finally:
        server.shutdown()


def test_udp_renews_when_half_the_byte_budget_is_spent(server: Server) -> None:
    t = server.topic("t", state=False)
    big = "x" * 400  # 3 times a padded subscribe holds 7 such events
    with Client(LOOPBACK, port(server, True), udp=True) as c:
        sub = c.subscribe("t")
        for v in range(20):
            t.publish([v, big])
            got = sub.next(WAIT)
            assert got is not None and got.value == [v, big] and got.lost is None


def test_cli_watch_json_error_and_a_closed_stdout(server: Server) -> None:
    t = server.topic("t")
    t.publish(1)
    tcp = f"{LOOPBACK}:{server.tcp_address[1]}"
    r = cli("watch", "--json", "--server", tcp, "nope")
    assert (r.returncode, r.stdout, r.stderr) == (
        1,
        '{"status": "error", "code": "unknown_topic", "message": "unknown topic"}\n',
        "error: unknown_topic: unknown topic\n",
    )
    proc = subprocess.Popen(
        [AT_RPC, "watch", "--server", tcp, "t"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"1 1\n"
        proc.stdout.close()  # as `| head -1` does
        t.publish(2)
        t.publish(3)
        assert proc.wait(WAIT) == 0
        assert proc.stderr is not None and proc.stderr.read() == b""
    finally:
        proc.kill()
