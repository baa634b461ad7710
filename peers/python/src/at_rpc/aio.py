"""The asyncio client: many calls in flight at once on one TCP connection
or UDP socket, plain or authenticated, with the errors of the blocking
Client."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from .auth import NONCE_LEN, pack_auth_frame
from .errors import FrameError, ProtocolError, RemoteError
from .frame import (
    ERROR,
    MAX_SEQ,
    NOTIFY,
    REQUEST,
    Frame,
    FrameReader,
    pack_frame,
    parse_datagram,
)
from .net import Address
from .replies import (
    ClientSession,
    Ignored,
    check_auth_reply,
    check_hello,
    check_info,
    closes_connection,
    encode_call,
    functions_page,
    hello_frame,
    reply_result,
)
from .settings import ClientSettings

log = logging.getLogger("at_rpc")

_T = TypeVar("_T")
# Replies to calls that timed out, still expected on a connection; past
# this many the connection is dropped (a new one starts clean).
_MAX_ABANDONED = 4096


class _ClientClosed(ConnectionError):
    """What calls in flight get when the client is closed (never resent)."""


class _CallState:
    """What a timeout message says: why the last UDP reply was ignored."""

    __slots__ = ("ignored",)

    def __init__(self) -> None:
        self.ignored: str | None = None


class _Tcp:
    """One TCP connection: its writer, the calls waiting for a reply by
    seq, the seqs of calls that gave up, and the task reading replies.
    `closed`: no new call may use it (it failed, or the server is about to
    close it); the calls on it still get their replies or an error."""

    def __init__(self, writer: asyncio.StreamWriter):
        self.writer = writer
        self.waiters: dict[int, asyncio.Future[Frame]] = {}
        self.abandoned: set[int] = set()
        self.closed = False
        self.task: asyncio.Task[None] | None = None

    def fail(self, error: Exception) -> None:
        """Closes the connection; every waiting call gets `error`."""
        self.closed = True
        for fut in self.waiters.values():
            if not fut.done():
                fut.set_exception(error)
        self.waiters.clear()
        self.writer.close()


class _UdpWaiter(Generic[_T]):
    """A UDP call waiting for its reply: the check a reply must pass, and
    the future its value goes to."""

    __slots__ = ("check", "fut", "state")

    def __init__(self, fut: asyncio.Future[_T], check: Callable[[Frame], _T], state: _CallState):
        self.fut = fut
        self.check = check
        self.state = state


class _UdpProtocol(asyncio.DatagramProtocol):
    """Hands every datagram to the client."""

    def __init__(self, client: AsyncClient):
        self.client = client

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.client._datagram(data)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and friends: nobody listens (yet). Keep
        # waiting until the deadline, as the blocking client does.
        log.debug("udp: %s; waiting on", exc)


class AsyncClient(ClientSettings):
    """Calls functions on an AT server from asyncio, many at a time.

        async with AsyncClient("127.0.0.1", 16724) as c:
            await c.call("add", 10, 20)                                # 30
            await asyncio.gather(*(c.call("mul", i, i) for i in range(100)))

    Concurrent calls share one TCP connection (pipelined: each request is
    written as soon as it is made, replies are matched by seq) or one UDP
    socket. call() returns the result or raises what Client.call raises:
    RemoteError (an error reply), TimeoutError (no reply within `timeout`
    seconds, the bound of the whole call), ConnectionError (refused, reset,
    closed; every call in flight on that connection gets it) or
    ProtocolError (a bad reply; it closes the TCP connection). Over UDP a
    request is retransmitted with the same seq up to `retries` times with
    exponential backoff and jitter; replies with another seq are ignored.

    key=(kid, 32-byte key) authenticates every call as Client does: one
    session (opened by the first call, with rpc.hello, while the others
    wait for it) serves every call, every reply's tag is checked (a bad one
    fails the call over TCP with AuthError, and counts as not received over
    UDP), a plain `unauthorized` fails the call with RemoteError and the
    next call opens a new session, a new session is opened after 5 idle
    minutes, and an authenticated call whose TCP connection broke is sent
    once more on a new connection (the server runs it at most once).

    One AsyncClient belongs to one event loop.
    """

    def _setup(self) -> None:
        self._in_use: set[int] = set()
        self._tcp: _Tcp | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._udp_waiters: dict[int, _UdpWaiter[Any]] = {}
        self._connect_lock = asyncio.Lock()
        self._session_lock = asyncio.Lock()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Closes the connection (or socket); calls in flight get
        ConnectionError. A later call opens a new one."""
        tcp, self._tcp = self._tcp, None
        if tcp is not None:
            tcp.fail(_ClientClosed("the client was closed"))
            if tcp.task is not None:
                tcp.task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await tcp.task
            with contextlib.suppress(OSError):
                await tcp.writer.wait_closed()
        udp, self._udp = self._udp, None
        if udp is not None:
            udp.close()
            for waiter in self._udp_waiters.values():
                if not waiter.fut.done():
                    waiter.fut.set_exception(_ClientClosed("the client was closed"))

    async def connect(self) -> AsyncClient:
        """Opens the TCP connection (or the UDP socket) now rather than at
        the first call, within `timeout`; raises OSError or TimeoutError."""
        try:
            async with asyncio.timeout(self.timeout):
                if self.udp:
                    await self._open_udp()
                else:
                    await self._open_tcp()
        except TimeoutError:
            raise TimeoutError(f"timed out after {self.timeout:g} s") from None
        return self

    async def ping(self, value: Any = None) -> Any:
        """rpc.ping: without `value` the result is True, else `value`."""
        if value is None:
            return await self.call("rpc.ping")
        return await self.call("rpc.ping", value)

    async def info(self) -> dict[str, Any]:
        """rpc.info: the server's description (members in its order)."""
        return check_info(await self.call("rpc.info"))

    async def functions(self, max_pages: int = 10000) -> list[dict[str, Any]]:
        """rpc.functions, every page, checked (as Client.functions)."""
        entries: list[dict[str, Any]] = []
        start = 0
        for _ in range(max_pages):
            if start:
                page = await self.call("rpc.functions", start)
            else:
                page = await self.call("rpc.functions")
            found, following = functions_page(page, start)
            entries.extend(found)
            if following is None:
                return entries
            start = following
        raise ProtocolError(f"rpc.functions: more than {max_pages} pages")

    async def call(self, func: str, *args: Any, deadline_ms: int | None = None) -> Any:
        """func(*args) on the server; see the class for what it raises.
        deadline_ms: sent as the call's "deadline_ms" (section 10.4), the
        same bytes in every UDP retransmission."""
        return (await self.call_raw(func, *args, deadline_ms=deadline_ms))[0]

    async def call_raw(
        self, func: str, *args: Any, deadline_ms: int | None = None
    ) -> tuple[Any, bytes]:
        """Like call(), but returns (result, reply body bytes)."""
        body = encode_call(func, args, self.max_frame, self.key is not None, deadline_ms)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        state = _CallState()
        try:
            async with asyncio.timeout_at(deadline):
                if self.key is not None:
                    reply = await self._call_authenticated(self.key, body, deadline, state)
                else:
                    seq = self._next_seq()
                    try:
                        frame = pack_frame(REQUEST, seq, body)
                        if self.udp:
                            reply = await self._exchange_udp(seq, frame, deadline, _accept, state)
                        else:
                            reply = await self._exchange_tcp(seq, frame, resend=False)
                    finally:
                        self._in_use.discard(seq)
        except TimeoutError:
            raise TimeoutError(self._timeout_text(state)) from None
        return reply_result(reply), reply.body

    async def notify(self, func: str, *args: Any, deadline_ms: int | None = None) -> None:
        """Sends func(*args) as a NOTIFY (section 10.2): run by the server,
        never answered, never retransmitted; sealed in the session with a
        key (opened first if need be). Raises OSError, TimeoutError or
        ProtocolError when it cannot be sent."""
        body = encode_call(func, args, self.max_frame, self.key is not None, deadline_ms)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        async with asyncio.timeout_at(deadline):
            if self.key is not None:
                session = await self._current_session(self.key, deadline, _CallState())
                seq = self._next_seq()
                self._in_use.discard(seq)  # nothing waits for a reply to it
                session.seq, session.last = seq, loop.time()
                frame = pack_auth_frame(NOTIFY, seq, body, session.sid, session.k_req)
            else:
                seq = self._next_seq()
                self._in_use.discard(seq)
                frame = pack_frame(NOTIFY, seq, body)
            if self.udp:
                (await self._open_udp()).sendto(frame)
            else:
                tcp = await self._open_tcp()
                tcp.writer.write(frame)
                await tcp.writer.drain()

    def _timeout_text(self, state: _CallState) -> str:
        if not self.udp:
            return f"timed out after {self.timeout:g} s"
        attempts = self.retries + 1
        ignored = f"; ignored {state.ignored}" if state.ignored else ""
        return (
            f"timed out after {self.timeout:g} s "
            f"({attempts} attempt{'s' if attempts > 1 else ''}){ignored}"
        )

    def _next_seq(self) -> int:
        """A seq no call in flight uses (never 0); marked in use."""
        while True:
            self._seq = self._seq + 1 if self._seq < MAX_SEQ else 1
            if self._seq not in self._in_use:
                self._in_use.add(self._seq)
                return self._seq

    # -- authentication (section 9)

    async def _call_authenticated(
        self, key: tuple[str, bytes], body: bytes, deadline: float, state: _CallState
    ) -> Frame:
        loop = asyncio.get_running_loop()
        session = await self._current_session(key, deadline, state)
        seq = self._next_seq()
        try:
            session.seq = seq
            session.last = loop.time()
            frame = pack_auth_frame(REQUEST, seq, body, session.sid, session.k_req)
            if self.udp:
                reply = await self._exchange_udp(
                    seq, frame, deadline, lambda f: self._check_reply(session, f, True), state
                )
            else:
                raw = await self._exchange_tcp(seq, frame, resend=True)
                reply = self._check_reply(session, raw, False)
        finally:
            self._in_use.discard(seq)
        session.last = loop.time()
        return reply

    async def _current_session(
        self, key: tuple[str, bytes], deadline: float, state: _CallState
    ) -> ClientSession:
        """The session, opened first (by one call while the others wait)
        when there is none or it is worn out."""
        async with self._session_lock:
            session = self._session
            if session is None or session.worn_out():
                self._session = None
                session = self._session = await self._handshake(key, deadline, state)
            return session

    async def _handshake(
        self, key: tuple[str, bytes], deadline: float, state: _CallState
    ) -> ClientSession:
        nc = self._random(NONCE_LEN)
        seq = self._next_seq()
        try:
            frame = hello_frame(seq, key[0], nc)
            if self.udp:
                return await self._exchange_udp(
                    seq, frame, deadline, lambda f: self._check_hello(key, f, nc, True), state
                )
            raw = await self._exchange_tcp(seq, frame, resend=False)
            return self._check_hello(key, raw, nc, False)
        finally:
            self._in_use.discard(seq)

    def _check_reply(self, session: ClientSession, frame: Frame, udp: bool) -> Frame:
        """check_auth_reply(); a plain `unauthorized` forgets the session, a
        ProtocolError closes the TCP connection."""
        try:
            return check_auth_reply(session, frame, udp)
        except RemoteError:
            if self._session is session:
                self._session = None  # later calls open a new session
            raise
        except ProtocolError as e:
            self._fail(udp, e)
            raise

    def _check_hello(
        self, key: tuple[str, bytes], frame: Frame, nc: bytes, udp: bool
    ) -> ClientSession:
        try:
            return check_hello(frame, key[0], key[1], nc, udp)
        except ProtocolError as e:
            self._fail(udp, e)
            raise

    def _fail(self, udp: bool, error: Exception) -> None:
        """After a failed TCP reply the stream is not to be trusted: close
        it (the other calls on it get ConnectionError)."""
        tcp = self._tcp
        if not udp and tcp is not None:
            self._tcp = None
            tcp.fail(ConnectionError(f"connection closed after a bad reply: {error}"))

    # -- TCP

    async def _open_tcp(self) -> _Tcp:
        async with self._connect_lock:
            tcp = self._tcp
            if tcp is not None and not tcp.closed:
                return tcp
            reader, writer = await asyncio.open_connection(self.host, self.port)
            sock = writer.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            tcp = self._tcp = _Tcp(writer)
            tcp.task = asyncio.get_running_loop().create_task(self._read_tcp(tcp, reader))
            return tcp

    async def _exchange_tcp(self, seq: int, frame: bytes, resend: bool) -> Frame:
        """Sends `frame` and waits for the reply to `seq`. resend: if the
        connection breaks, send the same frame once more on a new one (only
        for requests the server runs at most once: authenticated ones)."""
        for attempt in range(2 if resend else 1):
            tcp = await self._open_tcp()
            fut: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
            tcp.waiters[seq] = fut
            try:
                tcp.writer.write(frame)
                await tcp.writer.drain()
                return await fut
            except ConnectionError as e:
                if attempt or not resend or isinstance(e, _ClientClosed):
                    raise
                log.info(
                    "connection lost during seq %d (%s): sending it again on a new one", seq, e
                )
            except asyncio.CancelledError:
                # Timed out (or cancelled): its reply may still come.
                if tcp.waiters.pop(seq, None) is not None and not tcp.closed:
                    tcp.abandoned.add(seq)
                    if len(tcp.abandoned) > _MAX_ABANDONED:
                        tcp.fail(ConnectionError("too many calls gave up on this connection"))
                raise
            finally:
                if tcp.waiters.get(seq) is fut:
                    del tcp.waiters[seq]
        raise AssertionError("unreachable")  # pragma: no cover

    async def _read_tcp(self, tcp: _Tcp, reader: asyncio.StreamReader) -> None:
        """Reads replies and hands each to the call waiting for its seq,
        until the connection ends or breaks the protocol."""
        frames = FrameReader(self._reply_limit)
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    raise ConnectionError("connection closed by the server")
                for item in frames.feed(data):
                    if isinstance(item, FrameError):
                        raise ProtocolError(f"bad reply frame: {item}")
                    self._tcp_reply(tcp, item)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # the error every call in flight gets
            tcp.fail(e)
        finally:
            tcp.closed = True
            if self._tcp is tcp:
                self._tcp = None

    def _tcp_reply(self, tcp: _Tcp, frame: Frame) -> None:
        if frame.kind == NOTIFY:
            # An event or notification this client did not ask for (10.3):
            # dropped, never taken for a reply.
            log.debug("ignoring a NOTIFY frame (seq %d)", frame.seq)
            return
        if frame.kind == REQUEST:
            raise ProtocolError("a request frame arrived where a reply was due")
        if frame.seq == 0 and frame.kind == ERROR:
            # A connection-level error (busy, or a header the server could
            # not read): it answers every call in flight; the server closes.
            for fut in tcp.waiters.values():
                if not fut.done():
                    fut.set_result(frame)
            tcp.waiters.clear()
            tcp.closed = True
            return
        waiting = tcp.waiters.pop(frame.seq, None)
        if waiting is None:
            if frame.seq in tcp.abandoned:
                tcp.abandoned.discard(frame.seq)
                log.debug("ignoring the late reply to seq %d", frame.seq)
                return
            raise ProtocolError(f"reply with unexpected seq {frame.seq}")
        if not waiting.done():
            waiting.set_result(frame)
        if closes_connection(frame):
            tcp.closed = True  # the server closes after it: new calls connect anew

    # -- UDP

    async def _open_udp(self) -> asyncio.DatagramTransport:
        async with self._connect_lock:
            if self._udp is None or self._udp.is_closing():
                loop = asyncio.get_running_loop()
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: _UdpProtocol(self), remote_addr=(self.host, self.port)
                )
                self._udp = transport
            return self._udp

    async def _exchange_udp(
        self,
        seq: int,
        frame: bytes,
        deadline: float,
        check: Callable[[Frame], _T],
        state: _CallState,
    ) -> _T:
        """Sends `frame`, retransmitting, until a reply to `seq` passes
        check() (does not raise Ignored); returns what check() made of it."""
        loop = asyncio.get_running_loop()
        transport = await self._open_udp()
        fut: asyncio.Future[_T] = loop.create_future()
        self._udp_waiters[seq] = _UdpWaiter(fut, check, state)
        # Waits base, 2 base, 4 base, ... (each with +-25% jitter) add up to
        # the whole timeout; after the last attempt the call waits until the
        # deadline (where call_raw's timeout ends it).
        attempts = self.retries + 1
        base = max(0.0, deadline - loop.time()) / ((1 << attempts) - 1)
        timer: asyncio.TimerHandle | None = None

        def send(attempt: int) -> None:
            nonlocal timer
            if attempt:
                log.debug("no reply to seq %d yet: retransmitting", seq)
            transport.sendto(frame)
            if attempt < attempts - 1:
                wait = base * (1 << attempt) * random.uniform(0.75, 1.25)
                timer = loop.call_at(min(deadline, loop.time() + wait), send, attempt + 1)

        try:
            send(0)
            return await fut
        finally:
            if timer is not None:
                timer.cancel()
            waiter = self._udp_waiters.get(seq)
            if waiter is not None and waiter.fut is fut:
                del self._udp_waiters[seq]
            if not fut.done():
                fut.cancel()

    def _datagram(self, data: bytes) -> None:
        """One datagram: the reply to a call waiting, or ignored."""
        try:
            frame = parse_datagram(data, self._reply_limit)
        except FrameError as e:
            log.debug("ignoring a bad datagram: %s", e)
            return
        waiter = self._udp_waiters.get(frame.seq)
        if frame.kind in (REQUEST, NOTIFY) or waiter is None or waiter.fut.done():
            log.debug("ignoring a %s with seq %d", frame.kind_name, frame.seq)
            return
        try:
            value = waiter.check(frame)
        except Ignored as e:
            log.debug("ignoring %s", e.why)
            waiter.state.ignored = e.why
        except Exception as e:  # RemoteError, ProtocolError: the call fails
            waiter.fut.set_exception(e)
        else:
            waiter.fut.set_result(value)


def _accept(frame: Frame) -> Frame:
    """The check of a plain UDP reply: any reply to the seq will do."""
    return frame
