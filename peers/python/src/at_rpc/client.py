"""The blocking client, over TCP or UDP, plain or authenticated."""

from __future__ import annotations

import logging
import random
import select
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from .auth import NONCE_LEN, pack_auth_frame
from .errors import FrameError, ProtocolError, RemoteError
from .frame import (
    HEADER_LEN,
    MAX_BODY,
    MAX_SEQ,
    REQUEST,
    Frame,
    FrameReader,
    pack_frame,
    parse_datagram,
)
from .replies import (
    ClientSession,
    Ignored,
    check_auth_reply,
    check_hello,
    check_info,
    check_tcp_reply,
    closes_connection,
    encode_call,
    functions_page,
    hello_frame,
    reply_result,
)
from .settings import ClientSettings

log = logging.getLogger("at_rpc")

_T = TypeVar("_T")


class Client(ClientSettings):
    """Calls functions on an AT server.

        with Client("127.0.0.1", 16724) as c:
            c.call("add", 10, 20)    # 30

    call() returns the result or raises RemoteError (an error reply),
    TimeoutError (no reply within `timeout` seconds, the bound of the whole
    call), ConnectionError (refused, reset, closed) or ProtocolError (a bad
    reply). Over UDP a request is retransmitted with the same seq up to
    `retries` times, waiting longer each time (exponential backoff with
    jitter). One client makes one call at a time (calls from several threads
    take turns).

    key=(kid, 32-byte key) authenticates every call (contract section 9):
    the first call opens a session with rpc.hello (and checks the server's
    proof), every request carries AUTH and every reply's tag is checked. A
    reply that fails the check fails the call over TCP (AuthError, a
    ProtocolError) and counts as not received over UDP. A plain
    `unauthorized` fails the call with RemoteError("unauthorized") and the
    next call opens a new session; the call is never sent again in a new
    session. A new session is also opened after 5 idle minutes and before
    the seq would pass 0xFFFFFFFF. If the TCP connection breaks during an
    authenticated call, the same frame is sent once more on a new
    connection: the server runs it at most once and answers from memory.
    One seq counter serves plain and authenticated requests, so a session's
    seqs increase from the one after its hello.
    """

    def _setup(self) -> None:
        self._ignored: str | None = None  # why the last UDP reply was not accepted
        self._sock: socket.socket | None = None
        self._reader: FrameReader | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Closes the connection (or socket); a later call opens a new one."""
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None
                self._reader = None

    def _next_seq(self) -> int:
        self._seq = self._seq + 1 if self._seq < MAX_SEQ else 1  # 0 is for unreadable headers
        return self._seq

    def connect(self) -> Client:
        """Opens the TCP connection (or the UDP socket) now rather than at
        the first call, within `timeout`; raises OSError or TimeoutError.
        A call after a failure connects again by itself."""
        with self._lock:
            if self._sock is None:
                if self.udp:
                    self._open_udp()
                else:
                    try:
                        self._open_tcp(time.monotonic() + self.timeout)
                    except TimeoutError:
                        self.close()
                        raise TimeoutError(f"timed out after {self.timeout:g} s") from None
        return self

    def ping(self, value: Any = None) -> Any:
        """rpc.ping: without `value` the result is True, else `value`."""
        return self.call("rpc.ping") if value is None else self.call("rpc.ping", value)

    def info(self) -> dict[str, Any]:
        """rpc.info: the server's description (members in its order)."""
        return check_info(self.call("rpc.info"))

    def functions(self, max_pages: int = 10000) -> list[dict[str, Any]]:
        """rpc.functions from start 0, following `next` until null: every
        entry ({"name", "params", "result", "doc"}), checked. Raises
        ProtocolError for a malformed page, a `next` that does not move on
        or more than `max_pages` pages."""
        entries: list[dict[str, Any]] = []
        start = 0
        for _ in range(max_pages):
            page = self.call("rpc.functions", start) if start else self.call("rpc.functions")
            found, following = functions_page(page, start)
            entries.extend(found)
            if following is None:
                return entries
            start = following
        raise ProtocolError(f"rpc.functions: more than {max_pages} pages")

    def call(self, func: str, *args: Any) -> Any:
        """func(*args) on the server; see the class for what it raises."""
        return self.call_raw(func, *args)[0]

    def call_raw(self, func: str, *args: Any) -> tuple[Any, bytes]:
        """Like call(), but returns (result, reply body bytes)."""
        body = encode_call(func, args, self.max_frame, self.key is not None)
        with self._lock:
            if self.key is not None:
                reply = self._call_authenticated(self.key, body)
            else:
                seq = self._next_seq()
                frame = pack_frame(REQUEST, seq, body)
                if self.udp:
                    reply = self._call_udp(seq, frame, None, _accept)
                else:
                    reply = self._call_tcp(seq, frame)
        return reply_result(reply), reply.body

    # -- authentication (section 9)

    def _call_authenticated(self, key: tuple[str, bytes], body: bytes) -> Frame:
        """One authenticated call (opening a session first if need be); the
        reply as a Frame whose body is the reply's body proper."""
        deadline = time.monotonic() + self.timeout
        session = self._session
        if session is None or session.worn_out():
            self._session = None
            session = self._session = self._handshake(key, deadline)
        seq = self._next_seq()
        session.seq = seq
        session.last = time.monotonic()
        frame = pack_auth_frame(REQUEST, seq, body, session.sid, session.k_req)
        if self.udp:
            reply = self._call_udp(
                seq, frame, deadline, lambda f: self._check_reply(session, f, True)
            )
        else:
            reply = self._check_reply(
                session, self._call_tcp(seq, frame, deadline, resend=True), False
            )
        session.last = time.monotonic()
        return reply

    def _check_reply(self, session: ClientSession, frame: Frame, udp: bool) -> Frame:
        """check_auth_reply(), and what follows from a failure: Ignored is
        noted (UDP), a plain `unauthorized` forgets the session, a
        ProtocolError closes the TCP connection."""
        try:
            return check_auth_reply(session, frame, udp)
        except Ignored as e:
            self._ignore(e.why)
            raise
        except RemoteError:
            self._session = None  # later calls open a new session
            raise
        except ProtocolError:
            self._fail(udp)
            raise

    def _ignore(self, why: str) -> None:
        """A UDP reply that counts as not received; a timeout will say why."""
        log.debug("ignoring %s", why)
        self._ignored = why

    def _fail(self, udp: bool) -> None:
        """After a failed TCP reply the stream is not to be trusted: close."""
        if not udp:
            self.close()

    def _handshake(self, key: tuple[str, bytes], deadline: float) -> ClientSession:
        """rpc.hello: a new session, its proof checked."""
        nc = self._random(NONCE_LEN)
        seq = self._next_seq()
        frame = hello_frame(seq, key[0], nc)
        if self.udp:
            return self._call_udp(
                seq, frame, deadline, lambda f: self._check_hello(key, f, nc, True)
            )
        return self._check_hello(key, self._call_tcp(seq, frame, deadline), nc, False)

    def _check_hello(
        self, key: tuple[str, bytes], frame: Frame, nc: bytes, udp: bool
    ) -> ClientSession:
        """check_hello(), noting an ignored reply (UDP) and closing the TCP
        connection after a bad one."""
        try:
            return check_hello(frame, key[0], key[1], nc, udp)
        except Ignored as e:
            self._ignore(e.why)
            raise
        except ProtocolError:
            self._fail(udp)
            raise

    def _remaining(self, deadline: float) -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"timed out after {self.timeout:g} s")
        return left

    # -- TCP

    def _call_tcp(
        self, seq: int, frame: bytes, deadline: float | None = None, resend: bool = False
    ) -> Frame:
        """Sends `frame` and returns the reply to `seq`. resend: if the
        connection breaks, send the same frame once more on a new one (only
        for requests the server runs at most once: authenticated ones)."""
        if deadline is None:
            deadline = time.monotonic() + self.timeout
        try:
            return self._exchange_tcp(seq, frame, deadline)
        except ConnectionError as e:
            if not resend:
                raise
            log.info("connection lost during seq %d (%s): sending it again on a new one", seq, e)
        return self._exchange_tcp(seq, frame, deadline)

    def _exchange_tcp(self, seq: int, frame: bytes, deadline: float) -> Frame:
        if self._sock is not None and self._closed_by_peer():
            self.close()  # e.g. the server's idle timeout: connect again
        try:
            if self._sock is None:
                self._open_tcp(deadline)
            sock, reader = self._sock, self._reader
            assert sock is not None and reader is not None
            sock.settimeout(self._remaining(deadline))
            sock.sendall(frame)
            while True:
                for item in reader.feed():
                    if isinstance(item, FrameError):
                        raise ProtocolError(f"bad reply frame: {item}")
                    reply = self._check_tcp_reply(seq, item)
                    return reply
                sock.settimeout(self._remaining(deadline))
                data = sock.recv(65536)
                if not data:
                    raise ConnectionError("connection closed by the server")
                reader.push(data)
        except TimeoutError:
            self.close()
            raise TimeoutError(f"timed out after {self.timeout:g} s") from None
        except BaseException:
            self.close()
            raise

    def _open_tcp(self, deadline: float) -> None:
        sock = socket.create_connection((self.host, self.port), timeout=self._remaining(deadline))
        self._sock = sock
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._reader = FrameReader(self._reply_limit)

    def _closed_by_peer(self) -> bool:
        """True when the idle connection has seen the server's FIN or RST
        (checked before a request is sent, so nothing is sent twice)."""
        sock = self._sock
        if sock is None:
            return True
        try:
            if hasattr(select, "poll"):
                poller = select.poll()
                poller.register(sock, select.POLLIN)
                readable = bool(poller.poll(0))
            else:  # pragma: no cover (Windows)
                readable = bool(select.select([sock], [], [], 0)[0])
            if not readable:
                return False
            sock.setblocking(False)
            return sock.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    def _check_tcp_reply(self, seq: int, frame: Frame) -> Frame:
        check_tcp_reply(frame, seq)
        if closes_connection(frame):
            # The server closes after these (busy, a connection-level error
            # with seq 0, ...): connect anew next time.
            self.close()
        return frame

    # -- UDP

    def _call_udp(
        self,
        seq: int,
        frame: bytes,
        deadline: float | None,
        check: Callable[[Frame], _T],
    ) -> _T:
        """Sends `frame`, retransmitting, until a reply to `seq` comes that
        check() accepts (does not raise Ignored); returns what check() made
        of it."""
        start = time.monotonic()
        if deadline is None:
            deadline = start + self.timeout
        self._ignored = None
        if self._sock is None:
            self._open_udp()
        sock = self._sock
        assert sock is not None
        # Waits base, 2 base, 4 base, ... (each with +-25% jitter) add up to
        # the whole timeout; the last attempt waits until the deadline.
        attempts = self.retries + 1
        base = max(0.0, deadline - start) / ((1 << attempts) - 1)
        for attempt in range(attempts):
            try:
                sock.send(frame)
            except ConnectionRefusedError:
                pass  # an earlier ICMP error reported late; the wait below retries
            if attempt == attempts - 1:
                until = deadline
            else:
                until = min(
                    deadline, time.monotonic() + base * (1 << attempt) * random.uniform(0.75, 1.25)
                )
            reply = self._await_udp(sock, seq, until, check)
            if reply is not None:
                return reply
            if time.monotonic() >= deadline:
                break
            log.debug("no reply to seq %d yet: retransmitting", seq)
        ignored = f"; ignored {self._ignored}" if self._ignored else ""
        raise TimeoutError(
            f"timed out after {self.timeout:g} s "
            f"({attempts} attempt{'s' if attempts > 1 else ''}){ignored}"
        )

    def _open_udp(self) -> None:
        infos = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_DGRAM)
        family, _, _, _, sockaddr = infos[0]
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.connect(sockaddr)
        except OSError:
            sock.close()
            raise
        self._sock = sock

    def _await_udp(
        self,
        sock: socket.socket,
        seq: int,
        until: float,
        check: Callable[[Frame], _T],
    ) -> _T | None:
        size = max(self._reply_limit, MAX_BODY) + HEADER_LEN + 1
        while True:
            left = until - time.monotonic()
            if left <= 0:
                return None
            sock.settimeout(left)
            try:
                data = sock.recv(size)
            except TimeoutError:
                return None
            except ConnectionRefusedError:
                # ICMP port unreachable: nobody listens (yet). Keep trying
                # until the deadline, as a server may be (re)starting.
                log.debug("udp: connection refused; waiting on")
                time.sleep(min(0.05, max(0.0, until - time.monotonic())))
                continue
            try:
                reply = parse_datagram(data, self._reply_limit)
            except FrameError as e:
                log.debug("ignoring a bad datagram: %s", e)
                continue
            if reply.kind == REQUEST or reply.seq != seq:
                log.debug(
                    "ignoring a %s with seq %d (waiting for %d)", reply.kind_name, reply.seq, seq
                )
                continue
            try:
                return check(reply)
            except Ignored:
                continue


def _accept(frame: Frame) -> Frame:
    """The check of a plain UDP reply: any reply to the seq will do."""
    return frame
