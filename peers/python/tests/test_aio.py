"""The asyncio client (at_rpc.AsyncClient) against the three kinds of
server: the Python one (in this process), at-host (AT_HOST_BIN) and the
device servers on the desktop (AT_DEVICE_BIN, the at-embedded-example std
binary); over TCP and UDP, plain and with keys; pipelining, timeouts, the
blocking client's errors and the contract's section 9 vectors. Loopback
only, OS-chosen ports."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from support import AUTH_VECTORS, KEY, KID, LOOPBACK, NC, OTHER_KEY, WAIT, Spawned, require

import at_rpc
from at_rpc import (
    AsyncClient,
    AuthError,
    BadProof,
    Client,
    FrameReader,
    ProtocolError,
    RemoteError,
    Server,
)

KEY_TEXT = f"{KID}:{KEY.hex()}"
CALLS = [  # (func, args): results and errors every server gives alike
    ("add", (10, 20)),
    ("sub", (10, 20)),
    ("mul", (6, 7)),
    ("div", (10, 4)),
    ("div", (1, 0)),
    ("add", (1,)),
    ("add", ("x", 1)),
    ("pow", (2, 8)),
    ("add", (2.5, 0.25)),
    ("mul", (9223372036854775807, 2)),
]


def run(coro: Any) -> Any:
    """Runs a coroutine to the end, bounded: no test hangs."""

    async def bounded() -> Any:
        async with asyncio.timeout(30):
            return await coro

    return asyncio.run(bounded())


# ---------------------------------------------------------------------------
# The servers


def _binary(variable: str, what: str) -> str:
    path = os.environ.get(variable)
    if not path or not os.access(path, os.X_OK):
        require(f"{variable} does not name the {what} binary (the Rust tests and .ci/run set it)")
    assert path is not None
    return path


def _python(keys: bool) -> Iterator[dict[str, tuple[str, int]]]:
    server = Server(tcp=(LOOPBACK, 0), udp=(LOOPBACK, 0), keys={KID: KEY} if keys else None).start()
    assert server.tcp_address is not None and server.udp_address is not None
    try:
        yield {"tcp": server.tcp_address, "udp": server.udp_address}
    finally:
        server.shutdown()


def _spawned(argv: list[str]) -> Iterator[dict[str, tuple[str, int]]]:
    spawned = Spawned(argv)
    try:
        yield spawned.addresses
    finally:
        spawned.stop()


@pytest.fixture(params=["python", "at-host", "device"])
def plain_server(request: pytest.FixtureRequest) -> Iterator[dict[str, tuple[str, int]]]:
    """A calculator server without keys: its tcp and udp addresses."""
    if request.param == "python":
        yield from _python(False)
    elif request.param == "at-host":
        yield from _spawned(
            [
                _binary("AT_HOST_BIN", "at-host"),
                "serve",
                "--tcp",
                "127.0.0.1:0",
                "--udp",
                "127.0.0.1:0",
            ]
        )
    else:
        yield from _spawned(
            [
                _binary("AT_DEVICE_BIN", "device server"),
                "--tcp",
                "127.0.0.1:0",
                "--udp",
                "127.0.0.1:0",
            ]
        )


@pytest.fixture(params=["python", "at-host"])
def keyed_server(request: pytest.FixtureRequest) -> Iterator[dict[str, tuple[str, int]]]:
    """A calculator server that requires authentication with KEY."""
    if request.param == "python":
        yield from _python(True)
    else:
        yield from _spawned(
            [
                _binary("AT_HOST_BIN", "at-host"),
                "serve",
                "--tcp",
                "127.0.0.1:0",
                "--udp",
                "127.0.0.1:0",
                "--key",
                KEY_TEXT,
            ]
        )


def outcome_of(call: Any) -> Any:
    """("ok", result) or (error type name, code or None)."""
    try:
        return ("ok", call())
    except RemoteError as e:
        return ("RemoteError", e.code)
    except Exception as e:
        return (type(e).__name__, None)


async def async_outcome(coro: Any) -> Any:
    try:
        return ("ok", await coro)
    except RemoteError as e:
        return ("RemoteError", e.code)
    except Exception as e:
        return (type(e).__name__, None)


# ---------------------------------------------------------------------------
# Against the real servers


@pytest.mark.parametrize("udp", [False, True], ids=["tcp", "udp"])
def test_results_and_errors_match_the_blocking_client(
    plain_server: dict[str, tuple[str, int]], udp: bool
) -> None:
    host, port = plain_server["udp" if udp else "tcp"]
    with Client(host, port, udp=udp, timeout=WAIT) as client:
        expected = [outcome_of(lambda f=f, a=a: client.call(f, *a)) for f, a in CALLS]
    assert expected[0] == ("ok", 30) and ("RemoteError", "division_by_zero") in expected

    async def go() -> list[Any]:
        async with AsyncClient(host, port, udp=udp, timeout=WAIT) as client:
            one_by_one = [await async_outcome(client.call(f, *a)) for f, a in CALLS]
            together = await asyncio.gather(*(async_outcome(client.call(f, *a)) for f, a in CALLS))
            return [one_by_one, list(together)]

    one_by_one, together = run(go())
    assert one_by_one == expected
    assert together == expected


@pytest.mark.parametrize("udp", [False, True], ids=["tcp", "udp"])
def test_pipelined_calls_with_gather(plain_server: dict[str, tuple[str, int]], udp: bool) -> None:
    host, port = plain_server["udp" if udp else "tcp"]
    count = 300

    async def go() -> list[Any]:
        async with AsyncClient(host, port, udp=udp, timeout=WAIT) as client:
            results = await asyncio.gather(*(client.call("add", i, 1000) for i in range(count)))
            info = await client.info()
            assert info["protocol"] == 1
            assert await client.ping() is True
            assert [f["name"] for f in await client.functions()][:4] == ["add", "sub", "mul", "div"]
            return list(results)

    assert run(go()) == [i + 1000 for i in range(count)]


@pytest.mark.parametrize("udp", [False, True], ids=["tcp", "udp"])
def test_keys(keyed_server: dict[str, tuple[str, int]], udp: bool) -> None:
    host, port = keyed_server["udp" if udp else "tcp"]

    async def go() -> None:
        async with AsyncClient(host, port, udp=udp, timeout=WAIT, key=(KID, KEY)) as client:
            results = await asyncio.gather(*(client.call("mul", i, 3) for i in range(100)))
            assert list(results) == [3 * i for i in range(100)]
            with pytest.raises(RemoteError) as e:
                await client.call("div", 1, 0)
            assert e.value.code == "division_by_zero"
            assert len(await client.functions()) >= 4
        async with AsyncClient(host, port, udp=udp, timeout=WAIT) as plain:
            with pytest.raises(RemoteError) as e:
                await plain.call("add", 1, 2)
            assert e.value.code == "unauthorized"
        async with AsyncClient(host, port, udp=udp, timeout=WAIT, key=("nobody", KEY)) as stranger:
            with pytest.raises(RemoteError) as e:
                await stranger.call("add", 1, 2)
            assert e.value.code == "unauthorized"

    run(go())


def test_a_server_with_another_key_fails_as_with_the_blocking_client(
    keyed_server: dict[str, tuple[str, int]],
) -> None:
    """The server proves another key: BadProof over TCP; over UDP the reply
    counts as not received and the call times out saying what it ignored."""
    tcp, udp = keyed_server["tcp"], keyed_server["udp"]
    with Client(*tcp, key=(KID, OTHER_KEY), timeout=WAIT) as blocking:
        with pytest.raises(BadProof):
            blocking.call("add", 1, 2)

    async def go() -> None:
        async with AsyncClient(*tcp, key=(KID, OTHER_KEY), timeout=WAIT) as client:
            with pytest.raises(BadProof):
                await client.call("add", 1, 2)
        async with AsyncClient(*udp, udp=True, key=(KID, OTHER_KEY), timeout=0.5) as client:
            with pytest.raises(TimeoutError, match="proof does not verify"):
                await client.call("add", 1, 2)

    run(go())


def test_transport_errors() -> None:
    """Refused TCP: ConnectionRefusedError (an OSError), as with Client;
    nobody on UDP: TimeoutError naming the attempts, within the timeout."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        dead = s.getsockname()[1]  # closed again: nobody listens there

    async def go() -> None:
        async with AsyncClient(LOOPBACK, dead, timeout=WAIT) as client:
            with pytest.raises(ConnectionRefusedError):
                await client.call("add", 1, 2)
        async with AsyncClient(LOOPBACK, dead, udp=True, timeout=0.3, retries=2) as client:
            began = time.monotonic()
            with pytest.raises(TimeoutError, match=r"timed out after 0.3 s \(3 attempts\)"):
                await client.call("add", 1, 2)
            assert 0.25 < time.monotonic() - began < 2.0

    run(go())


# ---------------------------------------------------------------------------
# Against fake servers: what real ones never do


class FakeTcp:
    """A one-connection TCP server running `script(conn, reader)` in a thread."""

    def __init__(self, script: Any):
        self.listener = socket.create_server((LOOPBACK, 0))
        self.port = self.listener.getsockname()[1]
        self.error: BaseException | None = None

        def serve() -> None:
            try:
                conn, _ = self.listener.accept()
                with conn:
                    conn.settimeout(WAIT)
                    script(conn, FrameReader())
            except BaseException as e:
                self.error = e

        self.thread = threading.Thread(target=serve, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.thread.join(WAIT)
        self.listener.close()


def read_requests(conn: socket.socket, reader: FrameReader, count: int) -> list[at_rpc.Frame]:
    frames: list[at_rpc.Frame] = []
    while len(frames) < count:
        for item in reader.feed(conn.recv(65536)):
            assert isinstance(item, at_rpc.Frame)
            frames.append(item)
    return frames


def test_pipelining_replies_in_any_order() -> None:
    """The server reads all ten requests before it answers any, then answers
    in reverse order: a client that waited for each reply before sending
    the next would time out; replies are matched by seq."""

    def script(conn: socket.socket, reader: FrameReader) -> None:
        requests = read_requests(conn, reader, 10)
        conn.sendall(
            b"".join(at_rpc.respond(at_rpc.CALCULATOR, f) or b"" for f in reversed(requests))
        )
        conn.recv(1)

    fake = FakeTcp(script)

    async def go() -> list[Any]:
        async with AsyncClient(LOOPBACK, fake.port, timeout=WAIT) as client:
            return list(await asyncio.gather(*(client.call("mul", i, i) for i in range(10))))

    assert run(go()) == [i * i for i in range(10)]
    fake.close()
    assert fake.error is None


def test_timeout_leaves_the_other_calls_alone() -> None:
    """The server never answers `sub`: that call times out (the bound of the
    whole call) while `add`, sent on the same connection, gets its reply;
    the late reply to `sub` is ignored and the connection goes on."""
    release = threading.Event()

    def script(conn: socket.socket, reader: FrameReader) -> None:
        slow, fast = read_requests(conn, reader, 2)
        conn.sendall(at_rpc.respond(at_rpc.CALCULATOR, fast) or b"")
        release.wait(WAIT)
        conn.sendall(at_rpc.respond(at_rpc.CALCULATOR, slow) or b"")
        (again,) = read_requests(conn, reader, 1)
        conn.sendall(at_rpc.respond(at_rpc.CALCULATOR, again) or b"")
        conn.recv(1)

    fake = FakeTcp(script)

    async def go() -> None:
        # 1.5 s: room for `add`'s reply on a loaded CI machine.
        async with AsyncClient(LOOPBACK, fake.port, timeout=1.5) as client:
            slow = asyncio.ensure_future(client.call("sub", 1, 1))
            await asyncio.sleep(0.05)  # sub is written first
            assert await client.call("add", 1, 1) == 2
            began = time.monotonic()
            with pytest.raises(TimeoutError, match=r"^timed out after 1.5 s$"):
                await slow
            assert time.monotonic() - began < 2.0
            release.set()
            await asyncio.sleep(0.05)
            assert await client.call("mul", 3, 3) == 9

    run(go())
    fake.close()
    assert fake.error is None


def test_connection_closed_fails_every_call_in_flight() -> None:
    def script(conn: socket.socket, reader: FrameReader) -> None:
        read_requests(conn, reader, 3)

    fake = FakeTcp(script)

    async def go() -> list[Any]:
        async with AsyncClient(LOOPBACK, fake.port, timeout=WAIT) as client:
            calls = [client.call("add", i, i) for i in range(3)]
            return list(await asyncio.gather(*calls, return_exceptions=True))

    outcomes = run(go())
    fake.close()
    assert [type(e) for e in outcomes] == [ConnectionError] * 3
    assert all("closed by the server" in str(e) for e in outcomes)


@pytest.mark.parametrize(
    "reply",
    [
        lambda seq: at_rpc.pack_frame(
            at_rpc.RESPONSE, seq + 7, b'{"status": "success", "result": 1}'
        ),
        lambda seq: at_rpc.pack_frame(at_rpc.REQUEST, seq, b'{"func": "add", "args": []}'),
        lambda seq: b"XX" + bytes(14),
        lambda seq: at_rpc.pack_frame(at_rpc.RESPONSE, seq, b"not json"),
    ],
    ids=["other seq", "a request", "bad magic", "bad body"],
)
def test_bad_replies_are_protocol_errors(reply: Any) -> None:
    def script(conn: socket.socket, reader: FrameReader) -> None:
        (frame,) = read_requests(conn, reader, 1)
        conn.sendall(reply(frame.seq))
        conn.recv(1)

    fake = FakeTcp(script)

    async def go() -> None:
        async with AsyncClient(LOOPBACK, fake.port, timeout=WAIT) as client:
            with pytest.raises(ProtocolError):
                await client.call("add", 1, 2)

    run(go())
    fake.close()


def test_udp_retransmits_through_loss() -> None:
    """The first copy of every request is dropped; the retransmission (same
    seq) is answered, once: the server's reply cache answers duplicates."""
    server = Server(tcp=None, udp=(LOOPBACK, 0)).start()
    assert server.udp_address is not None
    relay = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    relay.bind((LOOPBACK, 0))
    relay.settimeout(0.1)
    seen: set[bytes] = set()
    stop = threading.Event()

    def forward() -> None:
        upstream = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        upstream.settimeout(0.1)
        client_addr = None
        while not stop.is_set():
            try:
                data, addr = relay.recvfrom(70000)
            except TimeoutError:
                continue
            client_addr = addr
            if data not in seen:
                seen.add(data)
                continue  # lost
            upstream.sendto(data, server.udp_address)
            try:
                reply, _ = upstream.recvfrom(70000)
            except TimeoutError:
                continue
            relay.sendto(reply, client_addr)
        upstream.close()

    thread = threading.Thread(target=forward, daemon=True)
    thread.start()

    async def go() -> list[Any]:
        port = relay.getsockname()[1]
        async with AsyncClient(LOOPBACK, port, udp=True, timeout=3.0, retries=6) as client:
            return list(await asyncio.gather(*(client.call("add", i, 1) for i in range(20))))

    try:
        assert run(go()) == [i + 1 for i in range(20)]
    finally:
        stop.set()
        thread.join(WAIT)
        relay.close()
        server.shutdown()


def test_the_contract_vectors_byte_for_byte() -> None:
    """With the vectors' client nonce, the client sends exactly the
    contract's section 9 frames and accepts exactly its replies."""
    v = AUTH_VECTORS
    got: list[bytes] = []

    def script(conn: socket.socket, reader: FrameReader) -> None:
        for rep in ("hello_reply", "add_reply", "div_reply"):
            (frame,) = read_requests(conn, reader, 1)
            got.append(at_rpc.pack_frame(frame.flags, frame.seq, frame.body))
            conn.sendall(v[rep])
        conn.recv(1)

    fake = FakeTcp(script)

    async def go() -> None:
        async with AsyncClient(LOOPBACK, fake.port, key=(KID, KEY), timeout=WAIT) as client:
            client._random = lambda n: NC
            assert await client.call("add", 10, 20) == 30
            with pytest.raises(RemoteError) as e:
                await client.call("div", 1, 0)
            assert (e.value.code, e.value.message) == ("division_by_zero", "division by zero")

    run(go())
    fake.close()
    assert [g.hex() for g in got] == [v["hello"].hex(), v["add"].hex(), v["div"].hex()]


def test_a_tampered_reply_fails_with_auth_error() -> None:
    """A reply whose tag does not verify: AuthError over TCP (a ProtocolError)."""
    v = AUTH_VECTORS

    def script(conn: socket.socket, reader: FrameReader) -> None:
        read_requests(conn, reader, 1)
        conn.sendall(v["hello_reply"])
        read_requests(conn, reader, 1)
        bad = bytearray(v["add_reply"])
        bad[-1] ^= 1
        conn.sendall(at_rpc.pack_frame(bad[2] << 8 | bad[3], 2, bytes(bad[16:])))
        conn.recv(1)

    fake = FakeTcp(script)

    async def go() -> None:
        async with AsyncClient(LOOPBACK, fake.port, key=(KID, KEY), timeout=WAIT) as client:
            client._random = lambda n: NC
            with pytest.raises(AuthError):
                await client.call("add", 10, 20)

    run(go())
    fake.close()


def test_a_request_that_cannot_be_encoded() -> None:
    async def go() -> None:
        async with AsyncClient(LOOPBACK, 9, timeout=WAIT) as client:
            with pytest.raises(ProtocolError, match="cannot be encoded"):
                await client.call("add", float("nan"), 1)

    run(go())


def test_an_expired_session_fails_one_call_and_the_next_opens_a_new_one() -> None:
    """The server forgets the session (its lifetime passed): the call gets
    the plain `unauthorized` as RemoteError, never sent again; the next call
    opens a new session by itself."""
    server = Server(tcp=(LOOPBACK, 0), udp=(LOOPBACK, 0), keys={KID: KEY}, session_lifetime=0.3)
    server.start()
    assert server.tcp_address is not None and server.udp_address is not None
    ran: list[int] = []
    server.register("count", lambda: ran.append(1) or len(ran))

    async def go(address: tuple[str, int], udp: bool) -> None:
        async with AsyncClient(*address, udp=udp, key=(KID, KEY), timeout=WAIT) as client:
            first = await client.call("count")
            await asyncio.sleep(0.4)  # past the server's session lifetime
            with pytest.raises(RemoteError) as e:
                await client.call("count")
            assert e.value.code == "unauthorized"
            assert await client.call("count") == first + 1  # the failed call never ran

    try:
        run(go(server.tcp_address, False))
        run(go(server.udp_address, True))
    finally:
        server.shutdown()


def test_a_cut_connection_sends_the_authenticated_call_once_more() -> None:
    """The connection breaks after the server read an authenticated request:
    the client sends the same frame, byte for byte, once more on a new
    connection, and takes the reply that comes there."""
    v = AUTH_VECTORS
    listener = socket.create_server((LOOPBACK, 0))
    got: list[bytes] = []
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(WAIT)
                reader = FrameReader()
                read_requests(conn, reader, 1)
                conn.sendall(v["hello_reply"])
                (frame,) = read_requests(conn, reader, 1)
                got.append(at_rpc.pack_frame(frame.flags, frame.seq, frame.body))
            conn, _ = listener.accept()  # the first one closed: a new connection
            with conn:
                conn.settimeout(WAIT)
                (frame,) = read_requests(conn, FrameReader(), 1)
                got.append(at_rpc.pack_frame(frame.flags, frame.seq, frame.body))
                conn.sendall(v["add_reply"])
                conn.recv(1)
        except BaseException as e:
            errors.append(e)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()

    async def go() -> Any:
        port = listener.getsockname()[1]
        async with AsyncClient(LOOPBACK, port, key=(KID, KEY), timeout=WAIT) as client:
            client._random = lambda n: NC
            return await client.call("add", 10, 20)

    try:
        assert run(go()) == 30
        thread.join(WAIT)
    finally:
        listener.close()
    assert not errors, errors
    assert [g.hex() for g in got] == [v["add"].hex(), v["add"].hex()]


def test_close_fails_the_calls_in_flight() -> None:
    """close() while calls wait: each gets ConnectionError at once, and an
    authenticated one is not sent again on a new connection (where it would
    wait for a reply until its timeout)."""

    def script(conn: socket.socket, reader: FrameReader) -> None:
        read_requests(conn, reader, 1)
        conn.sendall(AUTH_VECTORS["hello_reply"])
        read_requests(conn, reader, 2)
        conn.recv(1)

    fake = FakeTcp(script)

    async def go() -> list[Any]:
        client = AsyncClient(LOOPBACK, fake.port, key=(KID, KEY), timeout=WAIT)
        client._random = lambda n: NC
        calls = [asyncio.ensure_future(client.call("add", i, i)) for i in range(2)]
        while len(client._in_use) < 2 or client._tcp is None or len(client._tcp.waiters) < 2:
            await asyncio.sleep(0.01)
        await client.close()
        return list(await asyncio.gather(*calls, return_exceptions=True))

    outcomes = run(go())
    fake.close()
    assert [type(e).__name__ for e in outcomes] == ["_ClientClosed"] * 2
    assert all(isinstance(e, ConnectionError) for e in outcomes)
