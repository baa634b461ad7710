"""The threaded TCP+UDP server."""

from __future__ import annotations

import ipaddress
import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from .auth import (
    HELLO,
    NONCE_LEN,
    PLAIN_FUNCS,
    is_lower_hex,
    pack_auth_frame,
    split_auth,
    tag_ok,
    valid_kid,
)
from .body import Call, _utf8, error_body, error_frame, parse_call, parse_notify, success_body
from .calculator import CALCULATOR
from .dispatch import (
    Functions,
    ServerInfo,
    is_reserved,
    reply_body,
    reply_limit,
    respond_to_error,
)
from .errors import BodyError, FrameError, RemoteError
from .events import EVENT_FUNCS, EventHub, Origin, Outbox, Topic
from .frame import (
    AUTH,
    DEFAULT_PORT,
    ERROR,
    HEADER,
    HEADER_LEN,
    KIND_MASK,
    MAX_BODY,
    MAX_DATAGRAM,
    MAX_FUNC_NAME,
    NOTIFY,
    REQUEST,
    RESPONSE,
    Frame,
    FrameReader,
    pack_frame,
    parse_datagram,
    unpack_header,
)
from .net import (
    BROADCAST_DELAY,
    Address,
    _DelayedSends,
    _enable_pktinfo,
    _format_addr,
    _linger_close,
    _receive_datagram,
    _wait_readable,
)
from .oneway import LogLimit, RepeatMemory
from .peer import Peer, Peers
from .sessions import SESSION_LIFETIME, SESSION_MIN_IDLE, ReplyCache, Session, SessionTable
from .version import SERVER_SOFTWARE

log = logging.getLogger("at_rpc")


class Server:
    """A threaded AT server over TCP and/or UDP: the calculator (unless
    calculator=False) plus functions added with register().

    tcp, udp -- (host, port) to listen on, or None; port 0: the OS chooses
    max_frame -- largest request body accepted
    idle_timeout -- a TCP connection with nothing buffered is closed after
        this long without a byte
    frame_timeout -- a TCP connection that sent part of a frame is closed if
        the rest does not come within this long; also bounds reply writes
    max_connections -- more TCP connections get `busy` and are closed
    udp_cache_* -- bounds of the UDP reply cache
    keys -- {kid: 32-byte key}: require authentication (contract section 9).
        Then only rpc.hello, rpc.ping and rpc.info are answered without it.
    name -- the name rpc.info reports (default: the host name)
    max_sessions, session_lifetime, session_min_idle, auth_reply_age -- the
        session table's capacity and times (see SessionTable)

    start() binds and starts the threads; shutdown() stops them. A request
    with AUTH is checked as the contract's section 9 says (also when no keys
    are given: then no session exists and it is `unauthorized`).

    The protocol's functions rpc.ping, rpc.info and rpc.functions (section
    7) are always served. A UDP request that came to a broadcast or
    multicast address (discovery, section 8; told by IP_PKTINFO or
    IPV6_PKTINFO) is never answered with an error, and its reply goes out
    after a random 0 to 100 ms. Listening on "::" accepts IPv4 too
    (IPV6_V6ONLY off), so one socket serves both kinds of discovery.
    """

    def __init__(
        self,
        tcp: tuple[str, int] | None = ("0.0.0.0", DEFAULT_PORT),
        udp: tuple[str, int] | None = ("0.0.0.0", DEFAULT_PORT),
        *,
        max_frame: int = MAX_BODY,
        calculator: bool = True,
        idle_timeout: float = 300.0,
        frame_timeout: float = 10.0,
        max_connections: int = 1024,
        udp_cache_entries: int = 4096,
        udp_cache_per_client: int = 256,
        udp_cache_age: float = 60.0,
        keys: dict[str, bytes] | None = None,
        max_sessions: int = 64,
        session_lifetime: float = SESSION_LIFETIME,
        session_min_idle: float = SESSION_MIN_IDLE,
        auth_reply_age: float = 60.0,
        name: str | None = None,
    ):
        if not 0 <= max_frame <= 0xFFFFFFFF:
            raise ValueError("max_frame must fit in 32 bits")
        self.name = socket.gethostname() if name is None else name
        _utf8(self.name)  # raises for a name that has no UTF-8 form
        # With keys: the sessions; None: this server does not authenticate.
        self.sessions = (
            SessionTable(keys, max_sessions, session_lifetime, session_min_idle, auth_reply_age)
            if keys
            else None
        )
        self.functions: Functions = dict(CALCULATOR) if calculator else {}
        self._tcp_bind = tcp
        self._udp_bind = udp
        self.max_frame = max_frame
        self.idle_timeout = idle_timeout
        self.frame_timeout = frame_timeout
        self.max_connections = max_connections
        self.cache = ReplyCache(udp_cache_entries, udp_cache_per_client, udp_cache_age)
        #: Plain NOTIFY frames seen on UDP (section 10.2): a repeat never runs.
        self.notify_memory = RepeatMemory(max_age=udp_cache_age)
        self._drops = LogLimit()  # log lines of dropped NOTIFY frames
        #: Topics and subscriptions (section 10.3).
        self.events = EventHub(self.sessions)
        #: Requests answered (or dropped) so far, over TCP and UDP.
        self.calls_answered = 0
        #: (host, port) bound, once started.
        self.tcp_address: Address | None = None
        self.udp_address: Address | None = None
        self._tcp_sock: socket.socket | None = None
        self._udp_sock: socket.socket | None = None
        self._stopping = threading.Event()
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._started = False
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._delayed: _DelayedSends | None = None
        # Connections that called rpc.peer (10.5), and those not handed out.
        self._peers = Peers()

    def register(self, name: str, fn: Callable[..., Any]) -> Server:
        """Adds (or replaces) `fn` under `name`. fn(*args) returns the result
        or raises RemoteError(code, message); any other exception is answered
        with `internal`. Names beginning with "rpc." belong to the protocol
        (ValueError). rpc.functions lists functions in registration order
        (the calculator first), with the signature given by @signature or
        read from fn's annotations (see describe_function)."""
        if is_reserved(name):
            raise ValueError(f"{name!r}: names beginning with 'rpc.' belong to the protocol")
        if len(name.encode("utf-8")) > MAX_FUNC_NAME:
            raise ValueError(f"function names are at most {MAX_FUNC_NAME} bytes")
        self.functions[name] = fn
        return self

    def topic(self, name: str, doc: str = "", state: bool = True) -> Topic:
        """A topic clients may subscribe to (rpc.subscribe, section 10.3):
        1 to 64 of A-Z a-z 0-9 . _ / - (ValueError otherwise, or when taken).
        topic.publish(value) sends a value to its subscribers; with `state`
        the latest value is event 1 of each new subscription.

            calls = server.topic("calls", "calls answered")
            calls.publish(17)
        """
        return self.events.topic(name, doc, state)

    def info(self, tcp: bool = False) -> ServerInfo:
        """What rpc.info says of this server (`tcp`: to a TCP client, which
        may call rpc.peer when the server has no keys)."""
        ext = (*EXT, "peer") if tcp and self.sessions is None else EXT
        return ServerInfo(
            SERVER_SOFTWARE, self.name, self.sessions is not None, self.max_frame, ext
        )

    # -- calls towards clients (section 10.5)

    def peers(self) -> list[Peer]:
        """The connections that called rpc.peer and are still open, in the
        order they did."""
        return self._peers.alive()

    def next_peer(self, timeout: float | None = None) -> Peer | None:
        """The next connection to call rpc.peer, each handed out once (in
        the order they called it; possibly closed since); None when none
        comes within `timeout` seconds (None: wait for ever)."""
        return self._peers.next(timeout)

    # -- life cycle

    def start(self) -> Server:
        """Binds the listeners and starts the threads; raises OSError when a
        listener cannot be bound, RuntimeError when already started."""
        if self._started:
            raise RuntimeError("server already started")
        self._started = True
        # Written to once at shutdown: wakes every thread waiting in poll.
        wake_r, wake_w = self._wake_r, self._wake_w = socket.socketpair()
        tcp = udp = None
        try:
            if self._tcp_bind is not None:
                tcp = self._tcp_sock = self._bind(socket.SOCK_STREAM, self._tcp_bind)
                tcp.listen(128)
                self.tcp_address = tcp.getsockname()[:2]
            if self._udp_bind is not None:
                udp = self._udp_sock = self._bind(socket.SOCK_DGRAM, self._udp_bind)
                self.udp_address = udp.getsockname()[:2]
        except OSError:
            self._close_listeners()
            wake_r.close()
            wake_w.close()
            raise
        self._spawn(self.events.run, "at-events")
        if tcp is not None and self.tcp_address is not None:
            self._spawn(self._accept_loop, "at-tcp-accept", tcp, wake_r)
            log.info("listening on tcp://%s", _format_addr(self.tcp_address))
        if udp is not None and self.udp_address is not None:
            delayed = self._delayed = _DelayedSends(udp)
            self._spawn(delayed.run, "at-udp-delayed")
            self._spawn(self._udp_loop, "at-udp", udp, wake_r, delayed)
            log.info("listening on udp://%s", _format_addr(self.udp_address))
        return self

    @staticmethod
    def _bind(kind: int, addr: Address) -> socket.socket:
        host, port = addr[0], addr[1]
        infos = socket.getaddrinfo(host, port, type=kind, flags=socket.AI_PASSIVE)
        family, _, _, _, sockaddr = infos[0]
        sock = socket.socket(family, kind)
        try:
            if kind == socket.SOCK_STREAM and os.name != "nt":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and ipaddress.ip_address(sockaddr[0]).is_unspecified:
                # "::" takes IPv4 too (IPv4 broadcasts and clients), whatever
                # the system's default (net.ipv6.bindv6only).
                try:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                except (OSError, AttributeError):
                    pass
            sock.bind(sockaddr)
        except OSError:
            sock.close()
            raise
        return sock

    def _spawn(self, target: Callable[..., object], name: str, *args: Any) -> threading.Thread:
        thread = threading.Thread(target=target, name=name, args=args, daemon=True)
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()
        return thread

    def _close_listeners(self) -> None:
        for sock in (self._tcp_sock, self._udp_sock):
            if sock is not None:
                try:
                    sock.close()
                except OSError:
                    pass

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stops accepting, lets each connection answer the requests it has
        already read, closes everything and waits for the threads."""
        if self._stopping.is_set() or not self._started:
            self._stopping.set()
            return
        self.events.stop()  # "end": "server" to every subscriber
        self._stopping.set()
        wake_r, wake_w = self._wake_r, self._wake_w
        assert wake_r is not None and wake_w is not None  # made by start()
        try:
            wake_w.send(b"x")
        except OSError:
            pass
        if self._delayed is not None:
            self._delayed.stop()
        deadline = time.monotonic() + timeout
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))
        self._close_listeners()
        if not any(t.is_alive() for t in threads if t is not threading.current_thread()):
            wake_r.close()
            wake_w.close()
        else:
            log.warning("some connections did not finish within %g s", timeout)
        log.info("server stopped")

    def __enter__(self) -> Server:
        if not self._started:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    # -- TCP

    def _accept_loop(self, listener: socket.socket, wake: socket.socket) -> None:
        while not self._stopping.is_set():
            if _wait_readable(listener, wake, None) != "data":
                break
            try:
                conn, peer = listener.accept()
            except OSError as e:
                if self._stopping.is_set():
                    break
                log.warning("accept failed: %s", e)
                time.sleep(0.05)
                continue
            with self._lock:
                busy = len(self._connections) >= self.max_connections
                if not busy:
                    self._connections.add(conn)
            if busy:
                log.warning(
                    "refusing %s: over %d connections", _format_addr(peer), self.max_connections
                )
                self._spawn(self._refuse_busy, "at-tcp-busy", conn)
            else:
                self._spawn(self._connection, f"at-tcp-{_format_addr(peer)}", conn, peer[:2], wake)

    def _refuse_busy(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(self.frame_timeout)
            conn.sendall(error_frame(0, "busy", "server busy"))
        except OSError:
            pass
        _linger_close(conn)

    def _connection(self, conn: socket.socket, peer: Address, wake: socket.socket) -> None:
        name = _format_addr(peer)
        log.info("connection from %s", name)
        outbox = Outbox(conn)
        try:
            reason = self._serve_connection(conn, peer, wake, outbox)
        except Exception as e:  # never let one connection take the server down
            log.exception("connection from %s failed", name)
            reason = f"internal error: {e}"
            conn.close()
        finally:
            self.events.connection_closed(outbox)
            with self._lock:
                self._connections.discard(conn)
            self._peers.closed(outbox, reason)
        log.info("connection from %s closed: %s", name, reason)

    def _serve_connection(
        self, conn: socket.socket, peer: Address, wake: socket.socket, outbox: Outbox
    ) -> str:
        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        reader = FrameReader(self.max_frame)
        data = b""
        received = time.monotonic()
        while True:
            replies: list[bytes] = []
            origins: list[Origin] = []
            fatal = None
            for item in reader.feed(data):
                if isinstance(item, FrameError):
                    log.warning("bad frame: %s", item)
                    answer = respond_to_error(item)
                    if answer is not None:
                        replies.append(answer)
                    if item.fatal:
                        fatal = item
                elif item.kind not in (REQUEST, NOTIFY):
                    self._peers.reply(outbox, item)
                else:
                    origin = Origin(outbox=outbox)
                    reply = self._answer(item, peer, False, False, received, origin)
                    if reply is not None:
                        replies.append(reply)
                    if origin.after:
                        origins.append(origin)
            if replies:
                try:
                    outbox.send_reply(b"".join(replies), self.frame_timeout)
                except TimeoutError:
                    conn.close()
                    return "peer does not read its replies"
                except OSError as e:
                    conn.close()
                    return str(e)
            for origin in origins:  # a state topic's event 1, after the reply
                origin.run_after()
            if fatal is not None:
                _linger_close(conn)
                return f"stream out of step ({fatal})"
            if self._stopping.is_set():
                conn.close()
                return "server shutting down"
            partial = reader.buffered() > 0
            # A peer waits to be called: not closed as idle (at-host's choice).
            idle = max(self.idle_timeout, PEER_IDLE) if self._peers.holds(outbox) else None
            timeout = self.frame_timeout if partial else idle or self.idle_timeout
            event = _wait_readable(conn, wake, timeout)
            if event == "wake":
                conn.close()
                return "server shutting down"
            if event == "timeout":
                conn.close()
                return "timeout in the middle of a frame" if partial else "idle timeout"
            try:
                conn.settimeout(self.frame_timeout)
                data = conn.recv(65536)
                received = time.monotonic()  # a deadline_ms counts from here
            except OSError as e:
                conn.close()
                return str(e)
            if not data:
                conn.close()
                return "by the peer in the middle of a frame" if partial else "by the peer"

    def _answer(
        self,
        frame: Frame,
        peer: Address | None,
        udp: bool,
        broadcast: bool = False,
        received: float | None = None,
        origin: Origin | None = None,
    ) -> bytes | None:
        if frame.kind == REQUEST:
            with self._lock:
                self.calls_answered += 1
        if log.isEnabledFor(logging.DEBUG):
            started = time.monotonic()
            reply = self.handle(frame, peer, udp, broadcast, received, origin)
            outcome = (
                "no reply"
                if reply is None
                else "success"
                if unpack_header(reply).flags & KIND_MASK == RESPONSE
                else "error"
            )
            log.debug(
                "call seq %d: %s in %.3f ms",
                frame.seq,
                outcome,
                (time.monotonic() - started) * 1000,
            )
            return reply
        return self.handle(frame, peer, udp, broadcast, received, origin)

    # -- requests, plain and authenticated

    def handle(
        self,
        frame: Frame,
        peer: Address | None = None,
        udp: bool = False,
        broadcast: bool = False,
        received: float | None = None,
        origin: Origin | None = None,
    ) -> bytes | None:
        """The reply frame to one checked request frame (None: no reply; a
        NOTIFY is run and never answered). peer -- the client's (host,
        port); udp -- it came by UDP (else TCP); broadcast -- it came to a
        broadcast or multicast address; received -- time.monotonic() when
        the whole frame was in, from which a deadline_ms counts (None: now);
        origin -- where events of an rpc.subscribe go, and what to do once
        the reply is out (None: no events; done before returning)."""
        if received is None:
            received = time.monotonic()
        if origin is None:
            origin = Origin(addr=peer)
            try:
                return self.handle(frame, peer, udp, broadcast, received, origin)
            finally:
                origin.run_after()
        if frame.kind == NOTIFY:
            if broadcast:
                self._drops.warning("dropping a NOTIFY (seq %d) that came by broadcast", frame.seq)
            elif frame.flags & AUTH:
                self._authenticated(frame, peer, udp, received, origin)
            else:
                self._plain_notify(frame, received, origin)
            return None
        if frame.kind != REQUEST:
            return None
        if frame.flags & AUTH:
            return self._authenticated(frame, peer, udp, received, origin)
        seq = frame.seq
        try:
            call = parse_call(frame.body)
        except BodyError as e:
            return error_frame(seq, e.code, e.message)
        if call.func == HELLO:
            if broadcast:
                log.info("no answer to rpc.hello that came by broadcast or multicast")
                return None
            return self._hello(seq, call.args)
        if broadcast and call.func not in BROADCAST_FUNCS:
            log.info("not running %r (seq %d): it came by broadcast", call.func, seq)
            return None
        if self.sessions is not None and call.func not in PLAIN_FUNCS:
            return error_frame(seq, "unauthorized", "authentication required")
        if call.func == "rpc.peer" and origin.outbox is not None:
            return self._peers.grant(seq, call.args, origin.outbox, peer or ("", 0))
        kind, body = self._execute(call, seq, frame.body, received, origin)
        return pack_frame(kind, seq, body)

    def _execute(
        self, call: Call, seq: int, body: bytes, received: float, origin: Origin
    ) -> tuple[int, bytes]:
        """Runs an admitted call (section 10.4: not once its deadline_ms
        has passed, counted from `received`); the reply's (kind, body)."""
        if call.deadline_ms is not None and (
            call.deadline_ms == 0 or (time.monotonic() - received) * 1000.0 >= call.deadline_ms
        ):
            log.info(
                "seq %d: deadline of %d ms passed, %r not called", seq, call.deadline_ms, call.func
            )
            return ERROR, error_body("deadline_exceeded", "deadline exceeded")
        if call.func in EVENT_FUNCS:
            return self.events.answer(call, origin, reply_limit(self.max_frame))
        info = self.info(tcp=origin.outbox is not None)
        return reply_body(self.functions, call.func, call.args, seq, self.max_frame, info, body)

    def _plain_notify(self, frame: Frame, received: float, origin: Origin) -> None:
        """Runs the call a plain NOTIFY carries and answers nothing (10.2):
        a body that is no call, rpc.hello, a plain NOTIFY to a server that
        requires authentication (10.6) and a passed deadline are dropped."""
        seq = frame.seq
        if self.sessions is not None:
            self._drops.warning("dropping a plain NOTIFY (seq %d): authentication required", seq)
            return
        self._one_way(seq, frame.body, received, origin)

    def _one_way(self, seq: int, body: bytes, received: float, origin: Origin) -> None:
        """The call of an admitted NOTIFY body, its outcome discarded."""
        try:
            one = parse_notify(body)
        except BodyError as e:
            self._drops.warning("dropping a NOTIFY (seq %d): %s", seq, e.message)
            return
        if not isinstance(one, Call):
            self._drops.warning("dropping an event (seq %d): servers subscribe to nothing", seq)
            return
        if one.func == HELLO:
            self._drops.warning("dropping rpc.hello by NOTIFY (seq %d)", seq)
            return
        kind, reply = self._execute(one, seq, body, received, origin)
        if kind == ERROR:
            self._drops.warning(
                "NOTIFY %r (seq %d) failed: %s", one.func, seq, reply.decode("utf-8", "replace")
            )

    def _hello(self, seq: int, args: list[Any]) -> bytes:
        """The handshake: arguments, key id, a new session; its reply."""
        if self.sessions is None:
            return error_frame(seq, "unauthorized", "this server does not authenticate")
        if len(args) != 2 or not all(isinstance(a, str) for a in args):
            return error_frame(seq, "invalid_arguments", "expected a key id and a nonce")
        kid, nonce = args
        if not valid_kid(kid):
            return error_frame(seq, "invalid_arguments", "a key id is 1 to 32 of A-Z a-z 0-9 . _ -")
        if not is_lower_hex(nonce, 2 * NONCE_LEN):
            return error_frame(seq, "invalid_arguments", "a nonce is 32 lowercase hex digits")
        try:
            sid, ns, proof = self.sessions.open(kid, bytes.fromhex(nonce))
        except RemoteError as e:
            log.warning("rpc.hello for key id %r: %s", kid, e)
            return error_frame(seq, e.code, e.message)
        log.info("session %s opened for key id %r", sid.hex(), kid)
        result = {"session": sid.hex(), "nonce": ns.hex(), "proof": proof.hex()}
        return pack_frame(RESPONSE, seq, success_body(result))

    def _authenticated(
        self, frame: Frame, peer: Address | None, udp: bool, received: float, origin: Origin
    ) -> bytes | None:
        """Steps 1 to 4 of section 9 for a request with AUTH; a NOTIFY with
        AUTH passes the same steps, runs, and is never answered (10.6)."""
        seq = frame.seq
        notify = frame.kind == NOTIFY
        parts = split_auth(frame)
        if parts is None:
            if notify:
                self._drops.warning("dropping a sealed NOTIFY (seq %d): too short", seq)
                return None
            return error_frame(seq, "unauthorized", "authenticated frame too short")
        sessions = self.sessions
        session = sessions.get(parts.sid) if sessions is not None else None
        if sessions is None or session is None:
            if notify:
                self._drops.warning("dropping a sealed NOTIFY (seq %d): unknown session", seq)
                return None
            log.info("seq %d for an unknown session", seq)
            return error_frame(seq, "unauthorized", "unknown session")

        def refuse(message: str) -> bytes | None:
            if notify:
                self._drops.warning(
                    "dropping a sealed NOTIFY (seq %d of session %s): %s",
                    seq,
                    session.sid.hex(),
                    message,
                )
                return None
            # On UDP dropped, so that forged datagrams cannot be reflected.
            log.warning(
                "seq %d of session %s: %s%s",
                seq,
                session.sid.hex(),
                message,
                " (dropped)" if udp else "",
            )
            return None if udp else error_frame(seq, "unauthorized", message)

        if not tag_ok(session.k_req, parts):
            return refuse("bad tag")
        status, value = sessions.admit(session, seq, peer, udp)
        if status == "run":
            origin.session = session  # verified: its subscriptions are the session's
        if notify:
            if status != "run":
                return refuse("replayed" if status != "gone" else value)
            try:
                self._one_way(seq, parts.body, received, origin)
            finally:
                sessions.finish(session, value, None)  # nothing to send again
            return None
        if status == "pending" and not udp:
            # The same request runs for another connection (a client that
            # lost its connection and sent it again): wait for its reply.
            value.done.wait(self.frame_timeout)
            status, value = sessions.admit(session, seq, peer, udp)
        if status == "resend":
            log.debug(
                "seq %d of session %s: sending the remembered reply again", seq, session.sid.hex()
            )
            resent: bytes = value
            return resent
        if status == "gone":
            return error_frame(seq, "unauthorized", value)
        if status != "run":
            return refuse("replayed (still running)" if status == "pending" else value)
        reply = None
        try:
            reply = self._authenticated_reply(session, seq, parts.body, udp, received, origin)
        finally:
            sessions.finish(session, value, reply)
        return reply

    def _authenticated_reply(
        self, session: Session, seq: int, body: bytes, udp: bool, received: float, origin: Origin
    ) -> bytes:
        """Step 4: call the function; the reply carries AUTH and K_rep's tag."""
        try:
            call = parse_call(body)
        except BodyError as e:
            kind, reply = ERROR, error_body(e.code, e.message)
        else:
            if call.func == HELLO:
                kind, reply = (
                    ERROR,
                    error_body("invalid_arguments", "rpc.hello is never authenticated"),
                )
            else:
                kind, reply = self._execute(call, seq, body, received, origin)
        frame = pack_auth_frame(kind, seq, reply, session.sid, session.k_rep)
        if udp and len(frame) > MAX_DATAGRAM:
            frame = pack_auth_frame(
                ERROR, seq, error_body("internal", "reply too large"), session.sid, session.k_rep
            )
        return frame

    # -- UDP

    def _udp_loop(self, sock: socket.socket, wake: socket.socket, delayed: _DelayedSends) -> None:
        size = max(MAX_BODY, self.max_frame) + HEADER_LEN + 1
        size = min(size, 1 << 20)
        pktinfo = _enable_pktinfo(sock)
        while not self._stopping.is_set():
            if _wait_readable(sock, wake, None) != "data":
                break
            try:
                data, addr, broadcast = _receive_datagram(sock, size, pktinfo)
            except OSError as e:  # e.g. ICMP errors reported on the socket
                log.debug("udp receive: %s", e)
                continue
            origin = Origin(udp=sock, addr=addr[:2], size=len(data))
            try:
                reply = self._udp_datagram(data, addr, broadcast, time.monotonic(), origin)
            except Exception:
                log.exception("udp datagram from %s failed", _format_addr(addr))
                continue
            if reply is None:
                origin.run_after()
                continue
            if len(reply) > MAX_DATAGRAM:
                if broadcast:
                    continue  # never an error to a broadcast
                reply = error_frame(unpack_header(reply).seq, "internal", "reply too large")
            if broadcast:
                # Many servers hear a broadcast: spread their replies out.
                delayed.add(random.uniform(0.0, BROADCAST_DELAY), reply, addr)
                continue
            try:
                sock.sendto(reply, addr)
            except OSError as e:
                log.warning("udp reply to %s: %s", _format_addr(addr), e)
            origin.run_after()

    def _udp_datagram(
        self,
        data: bytes,
        addr: Address,
        broadcast: bool = False,
        received: float | None = None,
        origin: Origin | None = None,
    ) -> bytes | None:
        """The reply to one datagram (None: none). A request that came by
        broadcast or multicast is never answered with an error (contract
        section 8) and runs only if it is rpc.ping or rpc.info (10.8 rule 1)."""
        reply = self._udp_reply(data, addr, broadcast, received, origin)
        if broadcast and reply is not None and unpack_header(reply).flags & ERROR:
            log.debug("no error reply to a broadcast from %s", _format_addr(addr))
            return None
        return reply

    def _udp_reply(
        self,
        data: bytes,
        addr: Address,
        broadcast: bool,
        received: float | None,
        origin: Origin | None,
    ) -> bytes | None:
        client = _format_addr(addr)
        try:
            frame = parse_datagram(data, self.max_frame)
        except FrameError as e:
            if e.flags & KIND_MASK == NOTIFY:
                self._drops.warning("dropping a NOTIFY from %s: %s", client, e)
                return None
            if not e.answer:
                log.warning("dropping a datagram from %s: %s", client, e)
                return None
            log.warning("bad frame from %s: %s", client, e)
            return respond_to_error(e)
        if frame.kind not in (REQUEST, NOTIFY):
            log.warning(
                "ignoring a %s frame from %s (seq %d): servers answer requests only",
                frame.kind_name,
                client,
                frame.seq,
            )
            return None
        key = addr[:2]
        if frame.flags & AUTH:
            # Authenticated requests have their own memory, by (SID, seq).
            return self._answer(frame, key, True, broadcast, received, origin)
        length, crc = HEADER.unpack_from(data)[3:5]
        if frame.kind == NOTIFY:
            if self.notify_memory.first_time(key, frame.seq, length, crc):
                self._answer(frame, key, True, broadcast, received, origin)
            else:
                log.debug("not running a repeated NOTIFY (seq %d) from %s", frame.seq, client)
            return None
        fingerprint = (frame.flags, length, crc)
        cached = self.cache.get(key, frame.seq, fingerprint)
        if cached is not None:
            log.debug("resending the reply to seq %d to %s (a retransmission)", frame.seq, client)
            return cached
        reply = self._answer(frame, key, True, broadcast, received, origin)
        if reply is not None:
            self.cache.put(key, frame.seq, fingerprint, reply)
        return reply


#: The parts of section 10 this server implements (rpc.info's "ext").
EXT = ("notify", "events", "deadline")
#: A connection that called rpc.peer is closed after this long without a
#: byte (at-host's choice: a board waits to be called), seconds.
PEER_IDLE = 86400.0
#: The only calls run when they came by broadcast or multicast (10.8 rule 1).
BROADCAST_FUNCS = frozenset(("rpc.ping", "rpc.info"))
