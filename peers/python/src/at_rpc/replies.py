"""What a client makes of replies, without I/O, shared by the blocking
Client and the AsyncClient so that both raise the same errors: encoding a
call, the result of a reply, the TCP reply rules, the checks of section 9
(the hello reply, the tag of every reply) and rpc.functions pages."""

from __future__ import annotations

import hmac
import re
import time
from typing import Any

from .auth import (
    AUTH_TRAILER,
    HELLO,
    NONCE_LEN,
    SID_LEN,
    TAG_LEN,
    derive_keys,
    hello_proof,
    is_lower_hex,
    split_auth,
    tag_ok,
)
from .body import parse_reply, request_body
from .errors import AuthError, BadProof, BodyError, EncodeError, ProtocolError, RemoteError
from .frame import AUTH, ERROR, MAX_SEQ, REQUEST, RESPONSE, Frame, pack_frame

#: A client opens a new session after this many idle seconds (5 minutes).
CLIENT_SESSION_IDLE = 300.0
# Error codes after which the server closes the TCP connection.
_CLOSING_CODE = re.compile(rb'"code"\s*:\s*"(?:frame_too_large|bad_frame|busy)"')


class ClientSession:
    """A client's session: its id and keys, the last seq it used and when
    it was last used (time.monotonic)."""

    __slots__ = ("k_rep", "k_req", "last", "seq", "server_seqs", "sid")

    def __init__(self, sid: bytes, k_req: bytes, k_rep: bytes):
        self.sid = sid
        self.k_req = k_req
        self.k_rep = k_rep
        self.seq = 0
        self.last = time.monotonic()
        #: The seqs of the server's own sealed frames (events) accepted (10.6).
        self.server_seqs = SeqWindow()

    def worn_out(self) -> bool:
        """Whether a new session is due: after CLIENT_SESSION_IDLE idle
        seconds, or once the seq reached 0xFFFFFFFF."""
        return self.seq == MAX_SEQ or time.monotonic() - self.last >= CLIENT_SESSION_IDLE


class SeqWindow:
    """Section 9's 64-entry replay window, for the seqs a peer sends in its
    own REQUEST and NOTIFY frames: accept() checks and marks in one step."""

    __slots__ = ("mask", "top")

    def __init__(self) -> None:
        self.top = 0
        self.mask = 0  # bit i: seq top - i was accepted

    def accept(self, seq: int) -> bool:
        """True (and marked) for a seq not seen and not older than the
        window; 0 is never accepted."""
        if seq == 0:
            return False
        if seq > self.top:
            shift = seq - self.top
            self.mask = ((self.mask << shift) | 1) & ((1 << 64) - 1) if shift < 64 else 1
            self.top = seq
            return True
        offset = self.top - seq
        if offset >= 64 or (self.mask >> offset) & 1:
            return False
        self.mask |= 1 << offset
        return True


class Ignored(Exception):
    """A UDP reply that counts as not received (`why` says what it was);
    the call waits on, and its timeout names the last one ignored."""

    def __init__(self, why: str):
        super().__init__(why)
        self.why = why


def encode_call(
    func: str,
    args: tuple[Any, ...],
    max_frame: int,
    authenticated: bool,
    deadline_ms: int | None = None,
) -> bytes:
    """The request body of func(*args) (with `deadline_ms`, an integer 0
    to 4294967295, else ValueError); raises ProtocolError when it cannot be
    encoded or is over `max_frame` (less the 24 bytes of AUTH)."""
    if deadline_ms is not None and (
        type(deadline_ms) is not int or not 0 <= deadline_ms <= 0xFFFFFFFF
    ):
        raise ValueError("deadline_ms is an integer from 0 to 4294967295")
    try:
        body = request_body(func, args, deadline_ms)
    except EncodeError as e:
        reason = (
            "a double that is not finite has no JSON form"
            if e.code == "overflow"
            else "an argument has no JSON form"
        )
        raise ProtocolError(f"request cannot be encoded: {reason}") from None
    except RecursionError:
        raise ProtocolError("request cannot be encoded: nested too deeply") from None
    trailer = AUTH_TRAILER if authenticated else 0
    if len(body) + trailer > max_frame:
        raise ProtocolError(
            f"request cannot be encoded: body of {len(body)} bytes "
            f"is over the limit of {max_frame - trailer}"
        )
    return body


def reply_result(frame: Frame) -> Any:
    """The result of a reply frame; raises RemoteError for an error reply
    and ProtocolError for a bad body or one that disagrees with the flags."""
    try:
        ok, result, code, message = parse_reply(frame.body)
    except BodyError as e:
        raise ProtocolError(f"bad reply body: {e.message}") from None
    if ok != (frame.kind == RESPONSE):
        raise ProtocolError(f"a {frame.kind_name} frame with a {'success' if ok else 'error'} body")
    if not ok:
        raise RemoteError(code, message, frame.body)
    return result


def closes_connection(frame: Frame) -> bool:
    """Whether the server closes the TCP connection after this reply: an
    error frame_too_large, bad_frame or busy, or any error with seq 0."""
    return frame.kind == ERROR and (frame.seq == 0 or _CLOSING_CODE.search(frame.body) is not None)


def check_tcp_reply(frame: Frame, expected: int) -> None:
    """Raises ProtocolError unless `frame` may answer the request `expected`
    over TCP: a reply with that seq, or a connection-level error (seq 0)."""
    if frame.kind == REQUEST:
        raise ProtocolError("a request frame arrived where a reply was due")
    if frame.seq != expected and not (frame.seq == 0 and frame.kind == ERROR):
        raise ProtocolError(f"reply with unexpected seq {frame.seq} (expected {expected})")


def plain_error(frame: Frame) -> tuple[str, str]:
    """(code, message) of a plain error reply; ("", "") for anything else."""
    if frame.kind != ERROR:
        return "", ""
    try:
        ok, _, code, message = parse_reply(frame.body)
    except BodyError:
        return "", ""
    return ("", "") if ok else (code, message)


def hello_frame(seq: int, kid: str, nc: bytes) -> bytes:
    """The rpc.hello request (plain) with key id `kid` and nonce `nc`."""
    return pack_frame(REQUEST, seq, request_body(HELLO, [kid, nc.hex()]))


def check_hello(frame: Frame, kid: str, key: bytes, nc: bytes, udp: bool) -> ClientSession:
    """The session a hello reply opens, its proof checked. Raises
    RemoteError for an error reply; for a bad reply Ignored over UDP, else
    AuthError (BadProof when the proof does not verify)."""

    def bad(why: str) -> Exception:
        if udp:
            return Ignored(f"bad rpc.hello reply: {why}")
        return AuthError(f"bad rpc.hello reply: {why}")

    if frame.flags & AUTH:
        raise bad("it carries AUTH")
    try:
        ok, result, code, message = parse_reply(frame.body)
    except BodyError as e:
        raise bad(e.message) from None
    if ok != (frame.kind == RESPONSE):
        raise bad("its flags and its body disagree")
    if not ok:
        if code == "unauthorized":
            raise RemoteError(code, f"the server refused key id {kid!r}: {message}", frame.body)
        raise RemoteError(code, f"rpc.hello: {message}", frame.body)
    if not isinstance(result, dict) or not (
        is_lower_hex(result.get("session"), 2 * SID_LEN)
        and is_lower_hex(result.get("nonce"), 2 * NONCE_LEN)
        and is_lower_hex(result.get("proof"), 2 * TAG_LEN)
    ):
        raise bad("session, nonce or proof missing or not lowercase hex of the right length")
    sid, ns = bytes.fromhex(result["session"]), bytes.fromhex(result["nonce"])
    k_req, k_rep = derive_keys(key, kid, nc, ns)
    if not hmac.compare_digest(hello_proof(k_rep, sid), bytes.fromhex(result["proof"])):
        if udp:
            raise Ignored("bad rpc.hello reply: the proof does not verify (another key?)")
        raise BadProof("the server's proof does not verify: it does not hold this key")
    return ClientSession(sid, k_req, k_rep)


def check_auth_reply(session: ClientSession, frame: Frame, udp: bool) -> Frame:
    """The reply to an authenticated request, checked: a Frame with the body
    proper. Raises RemoteError for a plain `unauthorized` (the session is
    gone: open a new one), ProtocolError for a plain busy or frame_too_large
    (over TCP also checksum_mismatch or bad_frame); for other failures
    Ignored over UDP, else AuthError."""
    if not frame.flags & AUTH:
        code, message = plain_error(frame)
        if code == "unauthorized":
            raise RemoteError("unauthorized", message, frame.body)
        if code in ("busy", "frame_too_large") or (
            not udp and code in ("checksum_mismatch", "bad_frame")
        ):
            raise ProtocolError(f"the server answered {code} (unauthenticated): {message}")
        if udp:
            raise Ignored(f"a reply without AUTH to seq {frame.seq}")
        raise AuthError("a reply without AUTH to an authenticated request")
    parts = split_auth(frame)
    if (
        parts is None
        or not hmac.compare_digest(parts.sid, session.sid)
        or not tag_ok(session.k_rep, parts)
    ):
        if udp:
            raise Ignored(f"a reply to seq {frame.seq} whose tag does not verify")
        raise AuthError("a reply whose tag does not verify")
    return Frame(frame.flags, frame.seq, parts.body)


def check_info(result: Any) -> dict[str, Any]:
    """The rpc.info result, which must be an object (ProtocolError)."""
    if not isinstance(result, dict):
        raise ProtocolError("the rpc.info result is not an object")
    return result


def _check_entry(entry: Any, start: int) -> dict[str, Any]:
    """An rpc.functions entry, checked: name a string, params null or a
    list of strings, result null or a string, doc a string ("" if missing)."""
    if isinstance(entry, dict):
        params, result, doc = entry.get("params"), entry.get("result"), entry.get("doc", "")
        if (
            isinstance(entry.get("name"), str)
            and isinstance(doc, str)
            and (result is None or isinstance(result, str))
            and (
                params is None
                or (isinstance(params, list) and all(isinstance(p, str) for p in params))
            )
        ):
            return {"name": entry["name"], "params": params, "result": result, "doc": doc}
    raise ProtocolError(f"malformed rpc.functions entry (page from {start})")


def functions_page(page: Any, start: int) -> tuple[list[dict[str, Any]], int | None]:
    """The entries of the rpc.functions page from `start`, checked, and
    where the next page starts (None: this was the last). Raises
    ProtocolError for a malformed page or a `next` that does not move on."""
    following = page.get("next") if isinstance(page, dict) else None
    if (
        not isinstance(page, dict)
        or not isinstance(page.get("functions"), list)
        or "next" not in page
        or (following is not None and (type(following) is not int or following <= start))
    ):
        raise ProtocolError(f"malformed rpc.functions page (start {start})")
    return [_check_entry(entry, start) for entry in page["functions"]], following
