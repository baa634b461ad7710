"""Topics and subscriptions on the server (contract section 10.3): a
`Topic` handle publishes values from any thread; `EventHub` answers
rpc.subscribe, rpc.unsubscribe and rpc.topics, keeps each subscription's
lease, interval, `n` and credit, and writes event frames (NOTIFY; sealed
0x0018 under K_rep in a session) to TCP connections through their `Outbox`
and to UDP addresses, from one thread of its own for leases and intervals.

A subscriber is its request's association: the TCP connection, the UDP
address, or with AUTH the session (whose events go where its latest
verified subscribe came from). Event seqs come from the server's own
counter for that association: from 1 per connection and per session, from
a random non-zero value per UDP address (10.8 rule 3)."""

from __future__ import annotations

import logging
import random
import re
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from .auth import pack_auth_frame
from .body import Call, _string, _utf8, encode_value, error_body, event_body, success_body
from .frame import ERROR, HEADER_LEN, MAX_SEQ, NOTIFY, RESPONSE, pack_frame
from .net import Address, _format_addr
from .sessions import Session, SessionTable

try:  # Linux: bytes not yet sent on a TCP socket
    import fcntl
    import struct
    import termios

    _TIOCOUTQ: int | None = termios.TIOCOUTQ
except (ImportError, AttributeError):  # pragma: no cover (not Linux)
    _TIOCOUTQ = None

log = logging.getLogger("at_rpc")

EVENT_FUNCS = frozenset(("rpc.subscribe", "rpc.unsubscribe", "rpc.topics"))
MAX_PER_SUBSCRIBER = 4  # subscriptions one subscriber holds (10.3: SHOULD allow 4)
MAX_SUBSCRIPTIONS = 1024  # in all
AMPLIFICATION = 3  # plain UDP: event bytes per byte of the last subscribe (10.8 rule 1)
UDP_CREDIT = 16  # events a UDP subscription gets per subscribe (10.3, 10.8 rule 1)
DEFAULT_LEASE = 60
MAX_LEASE = 300
_REPLY_WAIT = 0.01  # the longest an event waits for a reply being written
_HELD = 64  # values kept for a subscription whose reply is being written
_TOPIC = re.compile(r"[A-Za-z0-9._/-]{1,64}")
_BAD_SUBSCRIBE = "expected topic, lease 1..300 s, interval ms"
# rpc.topics pages, as rpc.functions pages are built.
_PAGE_HEAD = '{"status": "success", "result": {"topics": ['
_PAGE_TAIL = len('], "next": 4294967295}}')


def valid_topic(name: Any) -> bool:
    """A topic name: 1 to 64 of A-Z a-z 0-9 . _ / -, not beginning "rpc."."""
    return isinstance(name, str) and bool(_TOPIC.fullmatch(name)) and not name.startswith("rpc.")


class Outbox:
    """One TCP connection's writer, shared by its serving thread (replies,
    which may wait) and event senders (which never wait: an event that
    does not fit in the send buffer with room left for a reply is lost)."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        # Events go through a non-blocking duplicate: a socket with a
        # timeout waits for room even with MSG_DONTWAIT. Made at the first
        # event, when the serving thread has put the socket in timeout mode
        # (O_NONBLOCK, shared by the duplicate, is then already set).
        self._nb: socket.socket | None = None
        self.closed = False
        self._seq = 0
        self._rest = b""  # the unsent end of an event frame
        self._lock = threading.Lock()

    def next_seq(self) -> int:
        """The server's next seq on this connection (from 1)."""
        with self._lock:
            self._seq = self._seq + 1 if self._seq < MAX_SEQ else 1
            return self._seq

    def send_reply(self, data: bytes, timeout: float) -> None:
        """Writes replies (after the end of an event begun); raises OSError."""
        with self._lock:
            self.sock.settimeout(timeout)
            self.sock.sendall(self._rest + data)
            self._rest = b""

    def close(self) -> None:
        """Marks the connection closed: later events are dropped."""
        with self._lock:
            self.closed = True
            if self._nb is not None:
                self._nb.close()
                self._nb = None

    def _room(self, size: int) -> bool:
        if _TIOCOUTQ is None:
            return True
        try:
            buf = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
            queued = struct.unpack("i", fcntl.ioctl(self.sock.fileno(), _TIOCOUTQ, b"\0" * 4))[0]
        except OSError:
            return False
        # Events use at most half the send buffer: the rest is for replies.
        return bool(queued + size <= buf // 2)

    def _nonblocking(self) -> socket.socket:
        if self._nb is None:
            self._nb = self.sock.dup()
            self._nb.setblocking(False)
        return self._nb

    def _flush(self) -> bool:
        if self._rest:
            try:
                sent = self._nonblocking().send(self._rest)
            except (BlockingIOError, InterruptedError):
                return False
            self._rest = self._rest[sent:]
        return not self._rest

    def send_event(self, frame: bytes) -> bool:
        """Writes one event frame now or not at all; False when dropped
        (also when a reply being written holds the connection more than
        10 ms: it may wait for the reader, other subscribers may not)."""
        if not self._lock.acquire(timeout=_REPLY_WAIT):
            return False
        try:
            if self.closed:
                return False
            try:
                if not self._flush() or not self._room(len(frame)):
                    return False
                sent = self._nonblocking().send(frame)
            except (BlockingIOError, InterruptedError):
                return False
            except OSError:
                self.closed = True
                return False
            self._rest = frame[sent:]
            return True
        finally:
            self._lock.release()

    def pending(self) -> bool:
        """Whether the end of an event frame waits to be written."""
        return bool(self._rest)

    def retry(self) -> None:
        """Tries to write the end of an event frame again (not while a
        reply is being written: that writes it first)."""
        if not self._lock.acquire(blocking=False):
            return
        try:
            if not self.closed:
                self._flush()
        except OSError:
            self.closed = True
        finally:
            self._lock.release()


class Origin:
    """Where a request came from, for rpc.subscribe: the TCP connection's
    outbox or the UDP address (and socket), the session for a verified
    sealed request; `after` collects what to do once its reply is written
    (a state topic's event 1)."""

    def __init__(
        self,
        outbox: Outbox | None = None,
        udp: socket.socket | None = None,
        addr: Address | None = None,
        size: int = 0,
    ):
        self.outbox = outbox
        self.udp = udp
        self.addr = addr
        self.size = size  # the datagram's size (UDP)
        self.session: Session | None = None
        self.after: list[Callable[[], None]] = []

    def run_after(self) -> None:
        """Runs (once) what waited for the reply."""
        actions, self.after = self.after, []
        for action in actions:
            action()


class Topic:
    """A topic a server offers (made by Server.topic): publish() sends a
    value to its subscribers; with `state` (the default) the latest value
    is also event 1 of every new subscription."""

    def __init__(self, hub: EventHub, name: str, doc: str, state: bool):
        self.hub = hub
        self.name = name
        self.doc = doc
        self.state = state
        self.value: Any = None
        self.has_value = False

    def publish(self, value: Any) -> None:
        """Sends `value` (any JSON value) to the subscribers, at most one
        event per subscription interval (meanwhile the newest is kept).
        Raises EncodeError for a value with no JSON form."""
        encode_value(value)
        self.hub.publish(self, value)

    def withdraw(self) -> None:
        """Removes the topic; its subscriptions end ("end": "topic")."""
        self.hub.withdraw(self)


class _Sub:
    """One subscription: (subscriber, topic) and its state."""

    __slots__ = (
        "credit",
        "dest",
        "held",
        "interval",
        "key",
        "last_sent",
        "lease",
        "n",
        "pending",
        "session",
        "topic",
        "until",
    )

    def __init__(self, key: tuple[Any, str], topic: Topic):
        self.key = key
        self.topic = topic
        self.n = 0
        self.lease = DEFAULT_LEASE
        self.interval = 0
        self.until = 0.0
        self.credit: int | None = None
        self.dest: Outbox | tuple[socket.socket, Address] | None = None
        self.session: Session | None = None
        self.held = True  # until the subscribe's reply is out
        self.last_sent = -1e18
        self.pending: list[Any] = []  # [] or [the newest value held back]


class EventHub:
    """A server's topics and subscriptions (thread-safe; one lock)."""

    def __init__(
        self,
        sessions: SessionTable | None = None,
        clock: Callable[[], float] = time.monotonic,
        per_subscriber: int = MAX_PER_SUBSCRIBER,
        limit: int = MAX_SUBSCRIPTIONS,
    ):
        self.sessions = sessions
        self.clock = clock
        self.per_subscriber = per_subscriber
        self.limit = limit
        self.topics: dict[str, Topic] = {}
        self._subs: dict[tuple[Any, str], _Sub] = {}
        self._udp_seq: dict[Address, int] = {}
        self._budget: dict[Address, int] = {}  # bytes still allowed, per plain UDP address
        self._session_seq: dict[bytes, int] = {}
        self._cond = threading.Condition()
        self._stopped = False
        self._outboxes: set[Outbox] = set()
        self._leased: frozenset[bytes] = frozenset()
        if sessions is not None:
            sessions.leased = self.leased_sessions

    # -- topics

    def topic(self, name: str, doc: str = "", state: bool = True) -> Topic:
        """A new topic (ValueError for a bad or taken name)."""
        if not valid_topic(name):
            raise ValueError(f"bad topic name {name!r}: 1 to 64 of A-Z a-z 0-9 . _ / -, not rpc.")
        _utf8(_string(doc))
        with self._cond:
            if name in self.topics:
                raise ValueError(f"topic {name!r} exists")
            topic = self.topics[name] = Topic(self, name, doc, state)
        return topic

    def publish(self, topic: Topic, value: Any) -> None:
        """See Topic.publish."""
        with self._cond:
            if self.topics.get(topic.name) is not topic:
                return
            if topic.state:
                topic.value, topic.has_value = value, True
            for sub in [s for s in self._subs.values() if s.topic is topic]:
                self._offer(sub, value)
            self._cond.notify_all()

    def withdraw(self, topic: Topic) -> None:
        """See Topic.withdraw."""
        with self._cond:
            if self.topics.get(topic.name) is topic:
                del self.topics[topic.name]
            for sub in [s for s in self._subs.values() if s.topic is topic]:
                self._end(sub, "topic")

    # -- rpc.subscribe, rpc.unsubscribe, rpc.topics

    def answer(self, call: Call, origin: Origin, limit: int) -> tuple[int, bytes]:
        """The reply (kind, body) to an rpc.* call of EVENT_FUNCS."""
        if call.func == "rpc.topics":
            return self._topics_page(call.args, limit)
        subscriber = self._subscriber(origin)
        if call.func == "rpc.unsubscribe":
            if len(call.args) != 1 or not isinstance(call.args[0], str):
                return ERROR, error_body("invalid_arguments", "expected a topic name")
            with self._cond:
                sub = self._subs.pop((subscriber, call.args[0]), None)
            return RESPONSE, success_body(sub is not None)
        return self._subscribe(call.args, origin, subscriber)

    def _subscriber(self, origin: Origin) -> Any:
        if origin.session is not None:
            return ("session", origin.session.sid)
        if origin.outbox is not None:
            return ("tcp", id(origin.outbox))
        return ("udp", origin.addr)

    def _subscribe(self, args: list[Any], origin: Origin, subscriber: Any) -> tuple[int, bytes]:
        def bad() -> tuple[int, bytes]:
            return ERROR, error_body("invalid_arguments", _BAD_SUBSCRIBE)

        if not 1 <= len(args) <= 3 or not isinstance(args[0], str):
            return bad()
        lease = args[1] if len(args) > 1 and args[1] is not None else DEFAULT_LEASE
        interval = args[2] if len(args) > 2 and args[2] is not None else 0
        if type(lease) is not int or not 1 <= lease <= MAX_LEASE:
            return bad()
        if type(interval) is not int or not 0 <= interval <= MAX_SEQ:
            return bad()
        name = args[0]
        if not valid_topic(name):
            return bad()
        with self._cond:
            topic = self.topics.get(name)
            if topic is None:
                return ERROR, error_body("unknown_topic", "unknown topic")
            key = (subscriber, name)
            sub = self._subs.get(key)
            new = sub is None
            if sub is None:
                held = sum(1 for k in self._subs if k[0] == subscriber)
                if held >= self.per_subscriber or len(self._subs) >= self.limit:
                    return ERROR, error_body("busy", "subscription table full")
                sub = self._subs[key] = _Sub(key, topic)
            sub.lease, sub.interval = lease, interval
            sub.until = self.clock() + lease
            sub.session = origin.session
            if origin.outbox is not None:
                sub.dest, sub.credit = origin.outbox, None
                self._outboxes.add(origin.outbox)
            elif origin.udp is not None and origin.addr is not None:
                sub.dest, sub.credit = (origin.udp, origin.addr), UDP_CREDIT
                if origin.session is None:
                    # 10.8 rule 1: what goes to this address from now on
                    # totals at most 3 times this datagram.
                    if len(self._budget) >= 4096 and origin.addr not in self._budget:
                        self._budget.clear()
                    self._budget[origin.addr] = AMPLIFICATION * origin.size
            else:  # handled without a transport (Server.handle called directly)
                sub.dest, sub.credit = None, None
            if new:
                if topic.has_value:
                    sub.pending = [topic.value]
                origin.after.append(lambda: self._release(sub))
            self._refresh_leased()
            result = {
                "topic": name,
                "lease": lease,
                "interval": interval,
                "n": sub.n,
                "credit": sub.credit,
            }
            self._cond.notify_all()
        return RESPONSE, success_body(result)

    def _topics_page(self, args: list[Any], limit: int) -> tuple[int, bytes]:
        if args and not (len(args) == 1 and type(args[0]) is int and args[0] >= 0):
            return ERROR, error_body(
                "invalid_arguments", "rpc.topics takes one optional integer start >= 0"
            )
        start = args[0] if args else 0
        with self._cond:
            topics = list(self.topics.values())
        room = limit - _PAGE_TAIL
        size = len(_PAGE_HEAD)
        entries: list[str] = []
        following = None
        for index in range(start, len(topics)):
            t = topics[index]
            entry = '{"name": ' + _string(t.name) + ', "doc": ' + _string(t.doc) + "}"
            grow = len(_utf8(entry)) + (2 if entries else 0)
            if entries and size + grow > room:
                following = index
                break
            if not entries and size + grow > room:
                return ERROR, error_body("internal", "reply buffer too small")
            entries.append(entry)
            size += grow
        tail = '], "next": ' + ("null" if following is None else str(following)) + "}}"
        return RESPONSE, _utf8(_PAGE_HEAD + ", ".join(entries) + tail)

    # -- sending

    def _release(self, sub: _Sub) -> None:
        """After the subscribe's reply: events may go (event 1 the state)."""
        with self._cond:
            sub.held = False
            values, sub.pending = sub.pending, []
            for value in values:
                if self._subs.get(sub.key) is sub:
                    self._emit(sub, value)
            self._cond.notify_all()

    def _offer(self, sub: _Sub, value: Any) -> None:
        if sub.held and sub.interval == 0:
            # Published while the subscribe's reply is being written: each
            # one is an event, sent right after the reply.
            sub.pending = [*sub.pending[-(_HELD - 1) :], value]
        elif sub.held or self.clock() < sub.last_sent + sub.interval / 1000.0:
            sub.pending = [value]  # only the newest is kept
        else:
            self._emit(sub, value)

    def _emit(self, sub: _Sub, value: Any) -> None:
        if sub.n + 1 >= MAX_SEQ:  # n is spent: the last event ends it
            self._end(sub, "lease")
            return
        sub.n += 1
        sub.last_sent = self.clock()
        self._send(sub, event_body(sub.topic.name, sub.n, value))
        if sub.credit is not None:
            sub.credit -= 1
            if sub.credit <= 0:
                self._end(sub, "lease")

    def _end(self, sub: _Sub, why: str) -> None:
        if self._subs.get(sub.key) is sub:
            del self._subs[sub.key]
        sub.n = min(sub.n + 1, MAX_SEQ)
        self._send(sub, event_body(sub.topic.name, sub.n, end=why))

    def _send(self, sub: _Sub, body: bytes) -> None:
        session = sub.session
        if session is not None:
            if self.sessions is None or self.sessions.get(session.sid) is not session:
                self._subs.pop(sub.key, None)  # the session is gone: so is this
                return
            seq = self._session_seq.get(session.sid, 0) + 1
            if seq > MAX_SEQ:  # past 0xFFFFFFFF the session's subscriptions end
                self._subs.pop(sub.key, None)
                return
            self._session_seq[session.sid] = seq
        dest = sub.dest
        if isinstance(dest, Outbox):
            if session is None:
                seq = dest.next_seq()
            frame = self._frame(seq, body, session)
            if not dest.send_event(frame):
                log.debug("event %d of %r lost (slow or closed reader)", sub.n, sub.topic.name)
        elif dest is not None:
            sock, addr = dest
            if session is None:
                frame_size = len(body) + HEADER_LEN
                if self._budget.get(addr, 0) < frame_size:
                    log.debug(
                        "event %d of %r to %s: over 3x the subscribe",
                        sub.n,
                        sub.topic.name,
                        _format_addr(addr),
                    )
                    return
                self._budget[addr] -= frame_size
                seq = self._udp_seq.get(addr) or random.randint(1, MAX_SEQ)
                if len(self._udp_seq) >= 4096 and addr not in self._udp_seq:
                    self._udp_seq.clear()
                self._udp_seq[addr] = seq % MAX_SEQ + 1
            try:
                sock.sendto(self._frame(seq, body, session), addr)
            except OSError as e:
                log.debug("event to %s: %s", _format_addr(addr), e)

    @staticmethod
    def _frame(seq: int, body: bytes, session: Session | None) -> bytes:
        if session is None:
            return pack_frame(NOTIFY, seq, body)
        return pack_auth_frame(NOTIFY, seq, body, session.sid, session.k_rep)

    # -- connections, leases, intervals

    def connection_closed(self, outbox: Outbox) -> None:
        """A TCP connection closed: its plain subscriptions end with it;
        sealed ones sent there drop their events until renewed elsewhere."""
        outbox.close()
        with self._cond:
            self._outboxes.discard(outbox)
            for key in [k for k in self._subs if k[0] == ("tcp", id(outbox))]:
                del self._subs[key]

    def leased_sessions(self) -> frozenset[bytes]:
        """The ids of the sessions holding a subscription (a snapshot,
        refreshed at each subscribe and at least every second)."""
        return self._leased

    def _refresh_leased(self) -> None:
        self._leased = frozenset(
            s.session.sid for s in self._subs.values() if s.session is not None
        )

    def subscriptions(self) -> int:
        """How many subscriptions are held."""
        with self._cond:
            return len(self._subs)

    def run(self) -> None:
        """The thread for leases and intervals: until stop()."""
        with self._cond:
            while not self._stopped:
                now = self.clock()
                wake = now + 1.0
                for sub in list(self._subs.values()):
                    session = sub.session
                    if session is not None and (
                        self.sessions is None or self.sessions.get(session.sid) is not session
                    ):
                        del self._subs[sub.key]  # ends with its session, silently
                        continue
                    if now >= sub.until:
                        self._end(sub, "lease")
                        continue
                    wake = min(wake, sub.until)
                    if sub.pending and not sub.held:
                        due = sub.last_sent + sub.interval / 1000.0
                        if now >= due:
                            value = sub.pending[-1]
                            sub.pending = []
                            self._emit(sub, value)
                        else:
                            wake = min(wake, due)
                self._refresh_leased()
                if self.sessions is not None and len(self._session_seq) > len(self._leased):
                    # Event counters of sessions gone (a live one keeps its
                    # counter, as its client's window remembers its seqs).
                    for sid in [k for k in self._session_seq if k not in self._leased]:
                        if self.sessions.get(sid) is None:
                            del self._session_seq[sid]
                if any(o.pending() for o in self._outboxes):
                    for o in list(self._outboxes):
                        o.retry()
                    wake = min(wake, now + 0.02)
                self._cond.wait(max(0.0, wake - self.clock()))

    def stop(self) -> None:
        """Ends every subscription ("end": "server") and run()."""
        with self._cond:
            for sub in list(self._subs.values()):
                self._end(sub, "server")
            self._stopped = True
            self._cond.notify_all()
