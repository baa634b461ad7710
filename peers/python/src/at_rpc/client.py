"""The blocking client, over TCP or UDP, plain or authenticated."""

from __future__ import annotations

import collections
import logging
import random
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple, TypeVar

from .auth import NONCE_LEN, pack_auth_frame, split_auth, tag_ok
from .body import Event, error_frame, parse_event
from .errors import BodyError, FrameError, ProtocolError, RemoteError
from .frame import (
    AUTH,
    ERROR,
    HEADER_LEN,
    MAX_BODY,
    MAX_SEQ,
    NOTIFY,
    REQUEST,
    RESPONSE,
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
        self._lock = threading.RLock()
        #: Topics subscribed to (or being subscribed): their events so far.
        self._held: dict[str, _Held] = {}

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

    def call(self, func: str, *args: Any, deadline_ms: int | None = None) -> Any:
        """func(*args) on the server; see the class for what it raises.
        deadline_ms: sent as the call's "deadline_ms" (section 10.4), so a
        server listing "deadline" does not start it once that many ms have
        passed (RemoteError deadline_exceeded). UDP retransmissions repeat
        the same bytes, deadline unchanged."""
        return self.call_raw(func, *args, deadline_ms=deadline_ms)[0]

    def notify(self, func: str, *args: Any, deadline_ms: int | None = None) -> None:
        """Sends func(*args) as a NOTIFY (section 10.2): the server runs it
        and answers nothing; no retransmission, no result. With a key it is
        sealed in the session (opened first if need be). Raises OSError,
        TimeoutError or ProtocolError when it cannot be sent."""
        body = encode_call(func, args, self.max_frame, self.key is not None, deadline_ms)
        with self._lock:
            if self.key is not None:
                session = self._session
                if session is None or session.worn_out():
                    self._session = None
                    deadline = time.monotonic() + self.timeout
                    session = self._session = self._handshake(self.key, deadline)
                seq = self._next_seq()
                session.seq, session.last = seq, time.monotonic()
                frame = pack_auth_frame(NOTIFY, seq, body, session.sid, session.k_req)
            else:
                frame = pack_frame(NOTIFY, self._next_seq(), body)
            if self.udp:
                if self._sock is None:
                    self._open_udp()
                assert self._sock is not None
                self._sock.send(frame)
                return
            if self._sock is not None and self._closed_by_peer():
                self.close()
            try:
                if self._sock is None:
                    self._open_tcp(time.monotonic() + self.timeout)
                assert self._sock is not None
                self._sock.settimeout(self.timeout)
                self._sock.sendall(frame)
            except BaseException:
                self.close()
                raise

    def subscribe(self, topic: str, lease: int = 60, interval: int = 0) -> Subscription:
        """rpc.subscribe (section 10.3): a Subscription whose next() and
        iteration give the topic's events, renewed at half the lease (on
        UDP also when half the credit is spent). Raises what call() raises
        (RemoteError unknown_topic, busy, invalid_arguments, ...)."""
        held = self._held.setdefault(topic, _Held())  # held from the moment it is sent
        try:
            result = self.call("rpc.subscribe", topic, lease, interval)
        except BaseException:
            self._held.pop(topic, None)
            raise
        sub = Subscription(self, topic, lease, interval)
        sub._granted(result, held)
        return sub

    def call_raw(self, func: str, *args: Any, deadline_ms: int | None = None) -> tuple[Any, bytes]:
        """Like call(), but returns (result, reply body bytes)."""
        body = encode_call(func, args, self.max_frame, self.key is not None, deadline_ms)
        if func == "rpc.subscribe" and self.udp and self.key is None:
            body = _padded(body, min(SUBSCRIBE_PAD, self.max_frame))
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
                    if item.kind == NOTIFY:
                        self._event(item)
                        continue
                    if item.kind == REQUEST:
                        self._refuse_call(sock, item)
                        continue
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
            if reply.kind == NOTIFY:
                self._event(reply)
                continue
            if reply.kind == REQUEST:
                self._refuse_call(sock, reply)
                continue
            if reply.seq != seq:
                log.debug(
                    "ignoring a %s with seq %d (waiting for %d)", reply.kind_name, reply.seq, seq
                )
                continue
            try:
                return check(reply)
            except Ignored:
                continue

    def _refuse_call(self, sock: socket.socket, frame: Frame) -> None:
        """A call from the server, which this client never invited with
        rpc.peer (10.5): answered unknown_function without running anything
        (unauthorized when holding a key and it is plain, 10.6); a sealed
        one is dropped."""
        if frame.flags & AUTH:
            log.debug("dropping a sealed call from the server (seq %d)", frame.seq)
            return
        code = "unauthorized" if self.key is not None else "unknown_function"
        try:
            sock.sendall(error_frame(frame.seq, code, code.replace("_", " ")))
        except OSError as e:
            log.debug("answering a call from the server: %s", e)

    # -- events (section 10.3)

    def _event(self, frame: Frame) -> None:
        """A NOTIFY frame from the server: an event of a topic held is
        queued for its Subscription; anything else is dropped (a client
        holding a key drops plain ones and checks sealed ones: SID, tag
        under K_rep, the window of the server's seqs)."""
        body = frame.body
        if self.key is not None:
            session = self._session
            parts = split_auth(frame) if frame.flags & AUTH else None
            if (
                session is None
                or parts is None
                or parts.sid != session.sid
                or not tag_ok(session.k_rep, parts)
                or not session.server_seqs.accept(frame.seq)
            ):
                log.debug("dropping a NOTIFY (seq %d) that fails the session checks", frame.seq)
                return
            body = parts.body
        elif frame.flags & AUTH:
            log.debug("dropping a sealed NOTIFY (seq %d): no key", frame.seq)
            return
        try:
            event = parse_event(body)
        except BodyError:
            log.debug("dropping a NOTIFY (seq %d) that is no event", frame.seq)
            return
        held = self._held.get(event.topic)
        if held is None or event.n <= held.largest:
            log.debug("dropping event %d of %r (not held, or old)", event.n, event.topic)
            return
        held.largest = event.n
        held.bytes += len(frame.body) + HEADER_LEN
        held.queue.append(event)

    def _pump(self, until: float) -> None:
        """Reads what the server sends until `until` or the first frame
        (events queued; late replies dropped). Raises ConnectionError when
        the TCP connection is closed, TimeoutError never."""
        with self._lock:
            sock = self._sock
            if sock is None:
                if self.udp:
                    self._open_udp()
                    sock = self._sock
                else:
                    raise ConnectionError("not connected")
            assert sock is not None
            if self._reader is not None and self._reader.buffered():
                buffered = list(self._reader.feed())  # read with a reply
                if buffered:
                    self._take(buffered)
                    return
            left = until - time.monotonic()
            if left <= 0:
                return
            sock.settimeout(left)
            try:
                data = sock.recv(max(self._reply_limit, MAX_BODY) + HEADER_LEN + 1)
            except TimeoutError:
                return
            except ConnectionRefusedError:
                if not self.udp:
                    self.close()
                    raise
                return
            except OSError:
                self.close()
                raise
            if self.udp:
                try:
                    frames: list[Frame | FrameError] = [parse_datagram(data, self._reply_limit)]
                except FrameError as e:
                    frames = [e]
            else:
                if not data:
                    self.close()
                    raise ConnectionError("connection closed by the server")
                assert self._reader is not None
                frames = list(self._reader.feed(data))
            self._take(frames)

    def _take(self, frames: list[Frame | FrameError]) -> None:
        """What _pump read: events queued, late replies dropped."""
        for item in frames:
            if isinstance(item, FrameError):
                if not self.udp:
                    self.close()
                    raise ProtocolError(f"bad frame from the server: {item}")
            elif item.kind == NOTIFY:
                self._event(item)
            elif item.kind in (RESPONSE, ERROR):
                log.debug("dropping a late reply (seq %d)", item.seq)


class Received(NamedTuple):
    """One event of a subscription: its topic, `n`, value (None for the
    last one, which has `end`: "lease", "topic" or "server"), and `lost`:
    (first, last) n of the events lost just before it, or None."""

    topic: str
    n: int
    value: Any
    end: str | None
    lost: tuple[int, int] | None


class _Held:
    """A topic the client holds: the largest n seen and the events queued."""

    def __init__(self) -> None:
        self.largest = 0
        self.delivered = 0
        self.bytes = 0  # of event frames since the last subscribe
        self.queue: collections.deque[Event] = collections.deque(maxlen=1024)


class Subscription:
    """One subscription of a Client (made by Client.subscribe). next()
    gives the next event (None when `timeout` passes first); iterating
    gives every event until the last one (with `end`). Renewal is due at
    half the lease, and on UDP when half the credit is spent; renewing
    raises what Client.call raises. close() unsubscribes."""

    def __init__(self, client: Client, topic: str, lease: int, interval: int):
        self.client = client
        self.topic = topic
        self.lease = lease
        self.interval = interval
        #: The last rpc.subscribe result, and why the subscription ended.
        self.result: dict[str, Any] = {}
        self.ended: str | None = None
        self._renew_at = 0.0
        self._credit: int | None = None
        self._full = 0
        # Plain UDP: the bytes of events a server sends until the next
        # subscribe, 3 times its datagram (10.8 rule 1): renew at half.
        self._budget = 0
        if client.udp and client.key is None:
            self._budget = 3 * (HEADER_LEN + min(SUBSCRIBE_PAD, client.max_frame))

    def _granted(self, result: Any, held: _Held) -> None:
        if not isinstance(result, dict) or type(result.get("n")) is not int:
            raise ProtocolError("the rpc.subscribe result is not an object with n")
        lease = result.get("lease")
        lease = lease if type(lease) is int and 1 <= lease <= 300 else self.lease
        self.result = result
        self._renew_at = time.monotonic() + lease / 2
        credit = result.get("credit")
        self._credit = credit if type(credit) is int else None
        self._full = self._credit or 0
        held.bytes = 0
        if result["n"] < held.largest:  # 10.8 rule 11: a reset
            held.largest = held.delivered = result["n"]

    def renew(self) -> None:
        """rpc.subscribe again: the lease restarts, n is kept."""
        held = self.client._held.setdefault(self.topic, _Held())
        args = (self.topic, self.lease, self.interval)
        try:
            result = self.client.call("rpc.subscribe", *args)
        except RemoteError as e:
            if e.code != "unauthorized" or self.client.key is None:
                raise
            # The session is gone (10.8 rule 6): subscribe again in a new one
            # (subscribe is idempotent; the failed call never ran).
            result = self.client.call("rpc.subscribe", *args)
        self._granted(result, held)

    def next(self, timeout: float | None = None) -> Received | None:
        """The next event, renewing when due; None after `timeout` seconds
        without one, or once ended. Raises ConnectionError when the TCP
        connection closes, and what renewals raise."""
        until = None if timeout is None else time.monotonic() + timeout
        while self.ended is None:
            held = self.client._held.get(self.topic)
            if held is None:
                self.ended = "lease"
                return None
            if held.queue:
                event = held.queue.popleft()
                lost = (held.delivered + 1, event.n - 1) if event.n > held.delivered + 1 else None
                held.delivered = event.n
                if self._credit is not None:
                    self._credit -= 1
                if event.end is not None:
                    self.ended = event.end
                    self.client._held.pop(self.topic, None)
                return Received(event.topic, event.n, event.value, event.end, lost)
            now = time.monotonic()
            if (
                now >= self._renew_at
                or (self._credit is not None and self._credit <= self._full // 2)
                or (self._budget and held.bytes * 2 >= self._budget)
            ):
                self.renew()
                continue
            if until is not None and now >= until:
                return None
            self.client._pump(self._renew_at if until is None else min(until, self._renew_at))
        return None

    def __iter__(self) -> Iterator[Received]:
        while self.ended is None:
            event = self.next()
            if event is not None:
                yield event

    def close(self) -> None:
        """Ends the subscription (rpc.unsubscribe) unless it has ended."""
        if self.ended is None:
            self.ended = "closed"
            self.client._held.pop(self.topic, None)
            try:
                self.client.call("rpc.unsubscribe", self.topic)
            except (OSError, RemoteError, ProtocolError) as e:
                log.debug("rpc.unsubscribe %r: %s", self.topic, e)


#: A plain UDP rpc.subscribe is padded to this many bytes of body: the
#: events a server sends an address total at most 3 times the size of its
#: last subscribe datagram (10.8 rule 1).
SUBSCRIBE_PAD = 1024


def _padded(body: bytes, size: int) -> bytes:
    """`body` (a JSON object) with a member "pad" of spaces, up to `size`
    bytes when it is shorter (unknown members are ignored)."""
    room = size - len(body) - len(', "pad": ""')
    if room <= 0:
        return body
    return body[:-1] + b', "pad": "' + b" " * room + b'"}'


def _accept(frame: Frame) -> Frame:
    """The check of a plain UDP reply: any reply to the seq will do."""
    return frame
