"""Calls in both directions over TCP (contract section 10.5): the server's
handle on a client that called rpc.peer (Peer), and a client that calls
home and is called back on its connection (CallHome).

Both sides number their own requests from one counter of the connection
and file each RESPONSE or ERROR with the call awaiting its seq; one nobody
awaits (seq 0 included, 10.8 rule 11) is dropped and logged, the connection
kept. At most 4 calls are outstanding towards a peer that can call back
(10.8 rule 8); more wait for a turn within their timeout."""

from __future__ import annotations

import logging
import queue
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from .auth import HELLO
from .body import Call, error_frame, parse_call, parse_notify
from .dispatch import Functions, ServerInfo, reply_body, respond_to_error
from .errors import BodyError, FrameError, ProtocolError
from .events import Outbox
from .frame import (
    AUTH,
    DEFAULT_PORT,
    ERROR,
    MAX_BODY,
    MAX_SEQ,
    NOTIFY,
    REQUEST,
    RESPONSE,
    Frame,
    FrameReader,
    pack_frame,
)
from .net import Address, _format_addr
from .replies import encode_call, reply_result
from .version import SERVER_SOFTWARE

log = logging.getLogger("at_rpc")

#: Calls one side keeps outstanding towards a peer that can call it back
#: (10.8 rule 8).
MAX_OUTSTANDING = 4
#: How long a call towards a peer waits for its reply by default, seconds.
DEFAULT_TIMEOUT = 5.0
#: The reply body that grants rpc.peer over TCP (contract 10.7, vector P2).
GRANTED = b'{"status": "success", "result": {"lease": null}}'


class _Waiter:
    """One outstanding call: its reply, or why there is none."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.frame: Frame | None = None
        self.why = ""


class Calls:
    """One side's calls towards the other over one connection: seqs from
    `next_seq`, frames written by `send(frame, timeout)` (raises OSError),
    at most MAX_OUTSTANDING waiting at once, replies filed by deliver()."""

    def __init__(
        self,
        send: Callable[[bytes, float], None],
        next_seq: Callable[[], int],
        name: str,
        limit: int = MAX_OUTSTANDING,
    ):
        self._send = send
        self._next_seq = next_seq
        self.name = name
        self._turns = threading.Semaphore(limit)
        self._lock = threading.Lock()
        self._waiting: dict[int, _Waiter] = {}
        self._closed = threading.Event()
        self.why_closed = ""

    @property
    def closed(self) -> bool:
        """True once the connection is closed (calls then fail at once)."""
        return self._closed.is_set()

    def wait_closed(self, timeout: float | None = None) -> bool:
        """Waits until the connection closes; False if `timeout` passed first."""
        return self._closed.wait(timeout)

    def _gone(self) -> ConnectionError:
        return ConnectionError(f"connection to {self.name} closed ({self.why_closed})")

    def request(self, body: bytes, timeout: float) -> Frame:
        """Sends a REQUEST of `body` and returns its reply frame. Raises
        ConnectionError (closed, now or while waiting; at once when already
        closed) or TimeoutError (the connection is kept; a late reply is
        dropped)."""
        deadline = time.monotonic() + timeout
        if self.closed:
            raise self._gone()
        if not self._turns.acquire(timeout=max(0.0, timeout)):
            raise TimeoutError(f"timed out after {timeout:g} s waiting for a turn")
        seq = 0
        try:
            waiter = _Waiter()
            with self._lock:
                if self.closed:
                    raise self._gone()
                seq = self._next_seq()
                self._waiting[seq] = waiter
            try:
                self._send(pack_frame(REQUEST, seq, body), max(0.001, deadline - time.monotonic()))
            except OSError as e:
                raise ConnectionError(f"sending to {self.name}: {e}") from None
            if not waiter.done.wait(max(0.0, deadline - time.monotonic())):
                raise TimeoutError(f"timed out after {timeout:g} s (seq {seq})")
            if waiter.frame is None:
                raise ConnectionError(
                    f"connection to {self.name} closed ({waiter.why}) before the reply to seq {seq}"
                )
            return waiter.frame
        finally:
            if seq:
                with self._lock:
                    self._waiting.pop(seq, None)
            self._turns.release()

    def notify(self, body: bytes, timeout: float) -> None:
        """Sends a NOTIFY of `body` (no reply); raises ConnectionError."""
        if self.closed:
            raise self._gone()
        try:
            self._send(pack_frame(NOTIFY, self._next_seq(), body), timeout)
        except OSError as e:
            raise ConnectionError(f"sending to {self.name}: {e}") from None

    def deliver(self, frame: Frame) -> bool:
        """Files a RESPONSE or ERROR with the call awaiting its seq; False
        (dropped and logged) when nobody awaits it."""
        if frame.flags & AUTH:
            log.warning("dropping a sealed reply (seq %d) from %s", frame.seq, self.name)
            return False
        with self._lock:
            waiter = self._waiting.pop(frame.seq, None) if frame.seq else None
        if waiter is None:
            log.warning(
                "dropping a %s (seq %d) from %s that no call awaits",
                frame.kind_name,
                frame.seq,
                self.name,
            )
            return False
        waiter.frame = frame
        waiter.done.set()
        return True

    def close(self, why: str) -> None:
        """The connection is closed: every waiting call fails at once."""
        with self._lock:
            if self._closed.is_set():
                return
            self.why_closed = why
            self._closed.set()
            waiting, self._waiting = self._waiting, {}
        for waiter in waiting.values():
            waiter.why = why
            waiter.done.set()


def _body(func: str, args: tuple[Any, ...], max_frame: int) -> bytes:
    return encode_call(func, args, max_frame, False)


class Peer:
    """A client connection that called rpc.peer, which the server may call
    back over it (Server.peers(), Server.next_peer()).

        board = server.next_peer(timeout=10)
        board.call("rpc.info")          # the board's rpc.info

    call() returns the result or raises RemoteError (an error reply),
    TimeoutError (no reply within the timeout; the connection is kept and
    the late reply dropped), ConnectionError (the connection is closed: at
    once when it already was) or ProtocolError (a bad reply). The server
    numbers its calls on the connection from 1 (contract 10.7, P3), with
    its events. Calls may come from any thread but the one serving this
    connection (a function the peer called): that one raises RuntimeError,
    as its reply could never be read."""

    def __init__(self, addr: Address, calls: Calls, serving: threading.Thread):
        #: The client's (host, port).
        self.addr = addr
        #: The default timeout of call(), seconds.
        self.timeout = DEFAULT_TIMEOUT
        self._calls = calls
        self._serving = serving

    def __repr__(self) -> str:
        return f"Peer({_format_addr(self.addr)}{', closed' if self.closed else ''})"

    @property
    def closed(self) -> bool:
        """True once the connection is closed."""
        return self._calls.closed

    def wait_closed(self, timeout: float | None = None) -> bool:
        """Waits until the connection closes; False if `timeout` passed first."""
        return self._calls.wait_closed(timeout)

    def call(self, func: str, *args: Any, timeout: float | None = None) -> Any:
        """func(*args) on the client; see the class for what it raises."""
        return reply_result(self._request(func, args, timeout))

    def call_raw(self, func: str, *args: Any, timeout: float | None = None) -> tuple[Any, bytes]:
        """Like call(), but returns (result, reply body bytes)."""
        frame = self._request(func, args, timeout)
        return reply_result(frame), frame.body

    def notify(self, func: str, *args: Any) -> None:
        """Sends func(*args) as a NOTIFY: run by the client, never answered."""
        self._calls.notify(_body(func, args, MAX_BODY), self.timeout)

    def _request(self, func: str, args: tuple[Any, ...], timeout: float | None) -> Frame:
        if threading.current_thread() is self._serving:
            raise RuntimeError(
                "a function cannot call back the peer it serves: the reply would never be read"
            )
        body = _body(func, args, MAX_BODY)
        return self._calls.request(body, self.timeout if timeout is None else timeout)


class Peers:
    """The server's connections that called rpc.peer (by their Outbox),
    and those not handed out yet."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_outbox: dict[Outbox, Peer] = {}
        self._new: queue.Queue[Peer] = queue.Queue()

    def alive(self) -> list[Peer]:
        """The open ones, in the order they called rpc.peer."""
        with self._lock:
            return [p for p in self._by_outbox.values() if not p.closed]

    def next(self, timeout: float | None) -> Peer | None:
        """The next one not handed out, or None after `timeout` seconds."""
        try:
            return self._new.get(timeout=timeout)
        except queue.Empty:
            return None

    def holds(self, outbox: Outbox) -> bool:
        """Whether the connection of `outbox` called rpc.peer."""
        with self._lock:
            return outbox in self._by_outbox

    def grant(self, seq: int, args: list[Any], outbox: Outbox, addr: Address) -> bytes:
        """The reply to rpc.peer over TCP without keys (on the connection's
        serving thread): no argument, or a lease 1 to 300 (ignored on TCP,
        10.8 rule 11), is granted (vector P2) and the connection may be
        called back from now on (again: the same answer, no second handle);
        anything else is invalid_arguments."""
        if args and not (len(args) == 1 and type(args[0]) is int and 1 <= args[0] <= MAX_LEASE):
            return error_frame(
                seq, "invalid_arguments", "rpc.peer takes no arguments, or a lease from 1 to 300 s"
            )
        with self._lock:
            handle = None
            if outbox not in self._by_outbox:
                calls = Calls(outbox.send_reply, outbox.next_seq, _format_addr(addr))
                handle = Peer(addr, calls, threading.current_thread())
                self._by_outbox[outbox] = handle
        if handle is not None:
            log.info("%s may be called back (rpc.peer)", _format_addr(addr))
            _keep_alive(outbox.sock)
            self._new.put(handle)
        return pack_frame(RESPONSE, seq, GRANTED)

    def reply(self, outbox: Outbox, frame: Frame) -> None:
        """A RESPONSE or ERROR on a TCP connection: filed with the server's
        call awaiting it, else dropped and logged (10.5), the connection kept."""
        with self._lock:
            handle = self._by_outbox.get(outbox)
        if handle is not None:
            handle._calls.deliver(frame)
        else:
            log.warning(
                "ignoring a %s frame (seq %d): no call of this server awaits it",
                frame.kind_name,
                frame.seq,
            )

    def closed(self, outbox: Outbox, why: str) -> None:
        """The connection of `outbox` closed: its waiting calls fail."""
        with self._lock:
            handle = self._by_outbox.pop(outbox, None)
        if handle is not None:
            handle._calls.close(why)


#: The longest lease rpc.peer takes (ignored on TCP).
MAX_LEASE = 300


def _keep_alive(sock: socket.socket) -> None:
    """TCP keepalive on a peer's connection, where the system lets it be set
    (probes after 60 s quiet, every 10 s, 3 unanswered: closed), so a board
    that vanished is found (as at-host does)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for option, value in (("TCP_KEEPIDLE", 60), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3)):
            if hasattr(socket, option):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)
    except OSError:
        pass


class CallHome:
    """A client that calls home: it connects to an AT server over TCP,
    calls rpc.peer there (as a board behind a NAT does, contract 10.5) and
    then answers the server's calls on that connection with `functions`
    (the same dispatch as the Python server: rpc.ping, rpc.info and
    rpc.functions are answered too), while it may itself call the server.

        with CallHome("host", 16724, {"temp": read_temp}) as home:
            home.notify("log", "boot python")   # at-host serve prints it
            home.wait()                         # until the connection closes

    start() (also by `with`) connects and sends rpc.peer as the first
    request (seq 1: vector P1), and raises what call() raises when it is
    not granted. The server's calls and notifications run one at a time on
    a worker thread, in the order they came, their replies in that order;
    the connection keeps reading meanwhile, so replies to this side's calls
    reach them and a function may call the server back. call() raises what
    Peer.call() raises. A sealed frame from the server is dropped (no keys
    here). rpc.info lists ext ["notify"]."""

    def __init__(
        self,
        host: str,
        port: int = DEFAULT_PORT,
        functions: Functions | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_frame: int = MAX_BODY,
        name: str | None = None,
    ):
        self.host = host
        self.port = port
        self.functions: Functions = dict(functions or {})
        self.timeout = timeout
        self.max_frame = max_frame
        self.name = socket.gethostname() if name is None else name
        #: The rpc.peer result once granted ({"lease": None} over TCP).
        self.granted: Any = None
        self._sock: socket.socket | None = None
        self._send_lock = threading.Lock()
        self._seq_lock = threading.Lock()
        self._seq = 0
        self._calls = Calls(self._send, self._next_seq, f"{host}:{port}")
        self._work: queue.Queue[Frame | None] = queue.Queue(maxsize=64)
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> CallHome:
        if self._sock is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _next_seq(self) -> int:
        with self._seq_lock:
            self._seq = self._seq + 1 if self._seq < MAX_SEQ else 1
            return self._seq

    def _send(self, frame: bytes, _timeout: float = 0.0) -> None:
        # The socket keeps the timeout it was made with: changing it here
        # would change the reader's too. A write waits at most `timeout`.
        sock = self._sock
        if sock is None:
            raise ConnectionError("not connected")
        with self._send_lock:
            sock.sendall(frame)

    @property
    def closed(self) -> bool:
        """True once the connection is closed (by either side)."""
        return self._calls.closed

    def start(self) -> CallHome:
        """Connects, starts serving and calls rpc.peer; returns self."""
        if self._sock is not None:
            raise RuntimeError("already started")
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        self._sock = sock
        for target, name in ((self._read_loop, "at-home-read"), (self._work_loop, "at-home-work")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            self._threads.append(thread)
            thread.start()
        try:
            granted = self.call("rpc.peer")
        except BaseException:
            self.close()
            raise
        if not isinstance(granted, dict) or "lease" not in granted:
            self.close()
            raise ProtocolError(f"rpc.peer answered {granted!r}, not an object with lease")
        self.granted = granted
        return self

    def call(self, func: str, *args: Any, timeout: float | None = None) -> Any:
        """func(*args) on the server, over this connection."""
        body = encode_call(func, args, self.max_frame, False)
        frame = self._calls.request(body, self.timeout if timeout is None else timeout)
        return reply_result(frame)

    def notify(self, func: str, *args: Any) -> None:
        """Sends func(*args) to the server as a NOTIFY (never answered)."""
        self._calls.notify(encode_call(func, args, self.max_frame, False), self.timeout)

    def wait(self, timeout: float | None = None) -> bool:
        """Serves until the connection closes; False if `timeout` passed first."""
        return self._calls.wait_closed(timeout)

    def close(self) -> None:
        """Closes the connection and stops serving."""
        sock = self._sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes the reader
            except OSError:
                pass
        self._calls.close("closed by this side")
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(self.timeout)
        if sock is not None:
            sock.close()

    # -- the connection's reader and the worker that runs the server's calls

    def _read_loop(self) -> None:
        sock = self._sock
        assert sock is not None
        reader = FrameReader(self.max_frame)
        why = "closed by the server"
        try:
            while True:
                # Idle for ever; close() wakes this by shutdown().
                try:
                    data = sock.recv(65536)
                except TimeoutError:
                    continue
                except OSError as e:
                    why = str(e)
                    break
                if not data:
                    break
                if not self._take(reader, data):
                    why = "stream out of step"
                    break
        finally:
            self._calls.close(why)
            self._work.put(None)
            log.info("call home to %s:%d ended: %s", self.host, self.port, why)

    def _take(self, reader: FrameReader, data: bytes) -> bool:
        """Handles the frames in `data`; False when the stream is out of step."""
        for item in reader.feed(data):
            if isinstance(item, FrameError):
                log.warning("bad frame from the server: %s", item)
                answer = respond_to_error(item)
                if answer is not None:
                    try:
                        self._send(answer, self.timeout)
                    except OSError:
                        return False
                if item.fatal:
                    return False
            elif item.kind in (RESPONSE, ERROR):
                self._calls.deliver(item)
            elif item.flags & AUTH:
                log.warning("dropping a sealed %s (seq %d): no key", item.kind_name, item.seq)
            else:
                self._work.put(item)  # waits when 64 are queued: reading stops
        return True

    def _info(self) -> ServerInfo:
        return ServerInfo(SERVER_SOFTWARE, self.name, False, self.max_frame, ("notify",))

    def _work_loop(self) -> None:
        while True:
            frame = self._work.get()
            if frame is None:
                return
            try:
                reply = self._run(frame)
            except Exception:
                log.exception("the server's call (seq %d) failed", frame.seq)
                reply = (
                    None
                    if frame.kind == NOTIFY
                    else error_frame(frame.seq, "internal", "the function failed")
                )
            if reply is not None:
                try:
                    self._send(reply, self.timeout)
                except OSError as e:
                    log.info("replying to the server (seq %d): %s", frame.seq, e)

    def _run(self, frame: Frame) -> bytes | None:
        """The reply frame to one of the server's frames (None for a NOTIFY)."""
        seq = frame.seq
        if frame.kind == NOTIFY:
            try:
                one = parse_notify(frame.body)
            except BodyError as e:
                log.info("dropping a NOTIFY (seq %d): %s", seq, e.message)
                return None
            if not isinstance(one, Call) or one.func == HELLO:
                log.info("dropping a NOTIFY (seq %d): no call to run", seq)
                return None
            kind, body = reply_body(
                self.functions, one.func, one.args, seq, self.max_frame, self._info(), frame.body
            )
            if kind == ERROR:
                log.info("NOTIFY %r (seq %d) failed: %s", one.func, seq, body.decode("utf-8"))
            return None
        try:
            call = parse_call(frame.body)
        except BodyError as e:
            return error_frame(seq, e.code, e.message)
        kind, body = reply_body(
            self.functions, call.func, call.args, seq, self.max_frame, self._info(), frame.body
        )
        return pack_frame(kind, seq, body)
