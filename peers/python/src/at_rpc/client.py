"""The blocking client, over TCP or UDP, plain or authenticated."""

from __future__ import annotations

import hmac
import logging
import random
import re
import secrets
import select
import socket
import threading
import time
from typing import Any, Callable

from .auth import AUTH_TRAILER, HELLO, NONCE_LEN, SID_LEN, TAG_LEN, check_key, derive_keys, hello_proof, is_lower_hex, pack_auth_frame, split_auth, tag_ok
from .body import parse_reply, request_body
from .errors import AuthError, BadProof, BodyError, EncodeError, FrameError, ProtocolError, RemoteError
from .frame import AUTH, DEFAULT_PORT, ERROR, HEADER_LEN, MAX_BODY, MAX_SEQ, REQUEST, RESPONSE, Frame, FrameReader, pack_frame, parse_datagram

log = logging.getLogger("at_rpc")

_CLOSING_CODE = re.compile(rb'"code"\s*:\s*"(?:frame_too_large|bad_frame|busy)"')
CLIENT_SESSION_IDLE = 300.0  # a client opens a new session after 5 idle minutes


class _ClientSession:
    """A client's session: its id and keys, the last seq it used and when
    it was last used (time.monotonic)."""

    __slots__ = ("sid", "k_req", "k_rep", "seq", "last")

    def __init__(self, sid: bytes, k_req: bytes, k_rep: bytes):
        self.sid = sid
        self.k_req = k_req
        self.k_rep = k_rep
        self.seq = 0
        self.last = time.monotonic()


def _check_entry(entry: Any, start: int) -> dict[str, Any]:
    """An rpc.functions entry, checked: name a string, params null or a
    list of strings, result null or a string, doc a string ("" if missing)."""
    if isinstance(entry, dict):
        params, result, doc = entry.get("params"), entry.get("result"), entry.get("doc", "")
        if (isinstance(entry.get("name"), str) and isinstance(doc, str)
                and (result is None or isinstance(result, str))
                and (params is None or (isinstance(params, list)
                                        and all(isinstance(p, str) for p in params)))):
            return {"name": entry["name"], "params": params, "result": result, "doc": doc}
    raise ProtocolError(f"malformed rpc.functions entry (page from {start})")


def _plain_error(frame: Frame) -> tuple[str, str]:
    """(code, message) of a plain error reply; ("", "") for anything else."""
    if frame.kind != ERROR:
        return "", ""
    try:
        ok, _, code, message = parse_reply(frame.body)
    except BodyError:
        return "", ""
    return ("", "") if ok else (code, message)


class Client:
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

    def __init__(self, host: str = "127.0.0.1", port: int = DEFAULT_PORT, udp: bool = False,
                 timeout: float = 5.0, retries: int = 4, max_frame: int = MAX_BODY,
                 key: tuple[str, bytes] | None = None):
        self.host = host
        self.port = port
        self.udp = udp
        self.timeout = timeout
        self.retries = max(0, retries)
        self.max_frame = max_frame
        self.key = check_key(*key) if key is not None else None
        # Replies to authenticated requests carry 24 bytes more than their body.
        self._reply_limit = max_frame + (AUTH_TRAILER if key is not None else 0)
        self._session: _ClientSession | None = None
        self._random = secrets.token_bytes  # the source of nonces (tests replace it)
        self._ignored: str | None = None  # why the last UDP reply was not accepted
        self._seq = 0
        self._sock = None
        self._reader = None
        self._lock = threading.Lock()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None
                self._reader = None

    def _next_seq(self) -> int:
        self._seq = self._seq + 1 if self._seq < MAX_SEQ else 1  # 0 is for unreadable headers
        return self._seq

    def connect(self) -> "Client":
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
                    except socket.timeout:
                        self.close()
                        raise TimeoutError(f"timed out after {self.timeout:g} s") from None
        return self

    def ping(self, value: Any = None) -> Any:
        """rpc.ping: without `value` the result is True, else `value`."""
        return self.call("rpc.ping") if value is None else self.call("rpc.ping", value)

    def info(self) -> dict[str, Any]:
        """rpc.info: the server's description (members in its order)."""
        result = self.call("rpc.info")
        if not isinstance(result, dict):
            raise ProtocolError("the rpc.info result is not an object")
        return result

    def functions(self, max_pages: int = 10000) -> list[dict[str, Any]]:
        """rpc.functions from start 0, following `next` until null: every
        entry ({"name", "params", "result", "doc"}), checked. Raises
        ProtocolError for a malformed page, a `next` that does not move on
        or more than `max_pages` pages."""
        entries: list[dict[str, Any]] = []
        start = 0
        for _ in range(max_pages):
            page = self.call("rpc.functions", start) if start else self.call("rpc.functions")
            following = page.get("next") if isinstance(page, dict) else None
            if (not isinstance(page, dict) or not isinstance(page.get("functions"), list)
                    or "next" not in page or (following is not None and (
                        type(following) is not int or following <= start))):
                raise ProtocolError(f"malformed rpc.functions page (start {start})")
            for entry in page["functions"]:
                entries.append(_check_entry(entry, start))
            if following is None:
                return entries
            start = following
        raise ProtocolError(f"rpc.functions: more than {max_pages} pages")

    def call(self, func: str, *args) -> Any:
        """func(*args) on the server; see the class for what it raises."""
        return self.call_raw(func, *args)[0]

    def call_raw(self, func: str, *args) -> tuple[Any, bytes]:
        """Like call(), but returns (result, reply body bytes)."""
        try:
            body = request_body(func, args)
        except EncodeError as e:
            reason = ("a double that is not finite has no JSON form" if e.code == "overflow"
                      else "an argument has no JSON form")
            raise ProtocolError(f"request cannot be encoded: {reason}") from None
        except RecursionError:
            raise ProtocolError("request cannot be encoded: nested too deeply") from None
        trailer = AUTH_TRAILER if self.key is not None else 0
        if len(body) + trailer > self.max_frame:
            raise ProtocolError(f"request cannot be encoded: body of {len(body)} bytes "
                                f"is over the limit of {self.max_frame - trailer}")
        with self._lock:
            if self.key is not None:
                reply = self._call_authenticated(body)
            else:
                seq = self._next_seq()
                frame = pack_frame(REQUEST, seq, body)
                if self.udp:
                    reply = self._call_udp(seq, frame)
                else:
                    reply = self._call_tcp(seq, frame)
        return self._result(reply), reply.body

    @staticmethod
    def _result(frame: Frame) -> Any:
        try:
            ok, result, code, message = parse_reply(frame.body)
        except BodyError as e:
            raise ProtocolError(f"bad reply body: {e.message}") from None
        if ok != (frame.kind == RESPONSE):
            raise ProtocolError(f"a {frame.kind_name} frame with a "
                                f"{'success' if ok else 'error'} body")
        if not ok:
            raise RemoteError(code, message, frame.body)
        return result

    # -- authentication (section 9)

    def _call_authenticated(self, body: bytes) -> Frame:
        """One authenticated call (opening a session first if need be); the
        reply as a Frame whose body is the reply's body proper."""
        deadline = time.monotonic() + self.timeout
        session = self._session
        if (session is None or session.seq == MAX_SEQ
                or time.monotonic() - session.last >= CLIENT_SESSION_IDLE):
            self._session = None
            session = self._session = self._handshake(deadline)
        seq = self._next_seq()
        session.seq = seq
        session.last = time.monotonic()
        frame = pack_auth_frame(REQUEST, seq, body, session.sid, session.k_req)
        if self.udp:
            reply = self._call_udp(seq, frame, deadline,
                                   check=lambda f: self._check_reply(session, f, True))
        else:
            reply = self._check_reply(session, self._call_tcp(seq, frame, deadline, resend=True),
                                      False)
        session.last = time.monotonic()
        return reply

    def _check_reply(self, session: "_ClientSession", frame: Frame, udp: bool) -> Frame | None:
        """The reply to an authenticated request, checked: a Frame with the
        body proper; None over UDP for one that counts as not received.
        Raises RemoteError for a plain `unauthorized` (and forgets the
        session), ProtocolError for other failures."""
        if not frame.flags & AUTH:
            code, message = _plain_error(frame)
            if code == "unauthorized":
                self._session = None  # later calls open a new session
                raise RemoteError("unauthorized", message, frame.body)
            if code in ("busy", "frame_too_large") or (
                    not udp and code in ("checksum_mismatch", "bad_frame")):
                self._fail(udp)
                raise ProtocolError(f"the server answered {code} (unauthenticated): {message}")
            if udp:
                return self._ignore(f"a reply without AUTH to seq {frame.seq}")
            self._fail(udp)
            raise AuthError("a reply without AUTH to an authenticated request")
        parts = split_auth(frame)
        if (parts is None or not hmac.compare_digest(parts.sid, session.sid)
                or not tag_ok(session.k_rep, parts)):
            if udp:
                return self._ignore(f"a reply to seq {frame.seq} whose tag does not verify")
            self._fail(udp)
            raise AuthError("a reply whose tag does not verify")
        return Frame(frame.flags, frame.seq, parts.body)

    def _ignore(self, why: str) -> None:
        """A UDP reply that counts as not received; a timeout will say why."""
        log.debug("ignoring %s", why)
        self._ignored = why

    def _fail(self, udp: bool) -> None:
        """After a failed TCP reply the stream is not to be trusted: close."""
        if not udp:
            self.close()

    def _handshake(self, deadline: float) -> "_ClientSession":
        """rpc.hello: a new session, its proof checked."""
        kid, key = self.key
        nc = self._random(NONCE_LEN)
        seq = self._next_seq()
        frame = pack_frame(REQUEST, seq, request_body(HELLO, [kid, nc.hex()]))
        if self.udp:
            return self._call_udp(seq, frame, deadline,
                                  check=lambda f: self._check_hello(f, nc, True))
        return self._check_hello(self._call_tcp(seq, frame, deadline), nc, False)

    def _check_hello(self, frame: Frame, nc: bytes, udp: bool) -> "_ClientSession | None":
        """The session of a hello reply; None over UDP for a reply that
        counts as not received. Raises RemoteError for an error reply,
        AuthError for a bad reply over TCP."""
        kid, key = self.key

        def bad(why: str) -> None:
            if udp:
                return self._ignore(f"bad rpc.hello reply: {why}")
            self._fail(udp)
            raise AuthError(f"bad rpc.hello reply: {why}")

        if frame.flags & AUTH:
            return bad("it carries AUTH")
        try:
            ok, result, code, message = parse_reply(frame.body)
        except BodyError as e:
            return bad(e.message)
        if ok != (frame.kind == RESPONSE):
            return bad("its flags and its body disagree")
        if not ok:
            if code == "unauthorized":
                raise RemoteError(code, f"the server refused key id {kid!r}: {message}",
                                  frame.body)
            raise RemoteError(code, f"rpc.hello: {message}", frame.body)
        if not isinstance(result, dict) or not (
                is_lower_hex(result.get("session"), 2 * SID_LEN)
                and is_lower_hex(result.get("nonce"), 2 * NONCE_LEN)
                and is_lower_hex(result.get("proof"), 2 * TAG_LEN)):
            return bad("session, nonce or proof missing or not lowercase hex of the right length")
        sid, ns = bytes.fromhex(result["session"]), bytes.fromhex(result["nonce"])
        k_req, k_rep = derive_keys(key, kid, nc, ns)
        if not hmac.compare_digest(hello_proof(k_rep, sid), bytes.fromhex(result["proof"])):
            if udp:
                return self._ignore("bad rpc.hello reply: the proof does not verify (another key?)")
            self._fail(udp)
            raise BadProof("the server's proof does not verify: it does not hold this key")
        return _ClientSession(sid, k_req, k_rep)

    def _remaining(self, deadline: float) -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"timed out after {self.timeout:g} s")
        return left

    # -- TCP

    def _call_tcp(self, seq: int, frame: bytes, deadline: float | None = None,
                  resend: bool = False) -> Frame:
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
        except socket.timeout:
            self.close()
            raise TimeoutError(f"timed out after {self.timeout:g} s") from None
        except BaseException:
            self.close()
            raise

    def _open_tcp(self, deadline: float) -> None:
        self._sock = socket.create_connection((self.host, self.port),
                                              timeout=self._remaining(deadline))
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._reader = FrameReader(self._reply_limit)

    def _closed_by_peer(self) -> bool:
        """True when the idle connection has seen the server's FIN or RST
        (checked before a request is sent, so nothing is sent twice)."""
        try:
            if hasattr(select, "poll"):
                poller = select.poll()
                poller.register(self._sock, select.POLLIN)
                readable = bool(poller.poll(0))
            else:  # pragma: no cover (Windows)
                readable = bool(select.select([self._sock], [], [], 0)[0])
            if not readable:
                return False
            self._sock.setblocking(False)
            return self._sock.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    def _check_tcp_reply(self, seq: int, frame: Frame) -> Frame:
        if frame.kind == REQUEST:
            raise ProtocolError("a request frame arrived where a reply was due")
        if frame.seq == seq:
            if frame.kind == ERROR and _CLOSING_CODE.search(frame.body):
                self.close()  # the server closes after these: connect anew next time
            return frame
        if frame.seq == 0 and frame.kind == ERROR:
            # A connection-level error (busy, or our header was unreadable):
            # it answers this call, and the server closes the connection.
            self.close()
            return frame
        raise ProtocolError(f"reply with unexpected seq {frame.seq} (expected {seq})")

    # -- UDP

    def _call_udp(self, seq: int, frame: bytes, deadline: float | None = None,
                  check: Callable[[Frame], Any] | None = None) -> Any:
        """Sends `frame`, retransmitting, until a reply to `seq` comes that
        check() accepts (returns not None; without check any reply); returns
        that reply, or what check() made of it."""
        start = time.monotonic()
        if deadline is None:
            deadline = start + self.timeout
        self._ignored = None
        if self._sock is None:
            self._open_udp()
        sock = self._sock
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
                until = min(deadline, time.monotonic() + base * (1 << attempt)
                            * random.uniform(0.75, 1.25))
            reply = self._await_udp(sock, seq, until, check)
            if reply is not None:
                return reply
            if time.monotonic() >= deadline:
                break
            log.debug("no reply to seq %d yet: retransmitting", seq)
        ignored = f"; ignored {self._ignored}" if self._ignored else ""
        raise TimeoutError(f"timed out after {self.timeout:g} s "
                           f"({attempts} attempt{'s' if attempts > 1 else ''}){ignored}")

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

    def _await_udp(self, sock: socket.socket, seq: int, until: float,
                   check: Callable[[Frame], Any] | None = None) -> Any:
        size = max(self._reply_limit, MAX_BODY) + HEADER_LEN + 1
        while True:
            left = until - time.monotonic()
            if left <= 0:
                return None
            sock.settimeout(left)
            try:
                data = sock.recv(size)
            except socket.timeout:
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
                log.debug("ignoring a %s with seq %d (waiting for %d)",
                          reply.kind_name, reply.seq, seq)
                continue
            if check is None:
                return reply
            checked = check(reply)
            if checked is not None:
                return checked
