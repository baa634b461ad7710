"""The request -> reply path shared by the servers: calling a function,
the protocol's own functions (rpc.ping, rpc.info, rpc.functions) and the
reply limits."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, NamedTuple

from .auth import AUTH_TRAILER
from .body import (
    _open_object,
    _string,
    _syntax,
    _utf8,
    error_body,
    error_frame,
    parse_request,
    success_body,
)
from .errors import BodyError, EncodeError, FrameError, RemoteError
from .frame import (
    CODES,
    ERROR,
    HEADER_LEN,
    KIND_MASK,
    MAX_BODY,
    MAX_DATAGRAM,
    MAX_FUNC_NAME,
    MAX_SEQ,
    NOTIFY,
    REQUEST,
    RESPONSE,
    Frame,
    pack_frame,
    parse_datagram,
)
from .signature import Signature, describe_function
from .version import SERVER_SOFTWARE

log = logging.getLogger("at_rpc")

#: A server's functions by name: fn(*args) -> result.
Functions = dict[str, Callable[..., Any]]

# --------------------------------------------------------------------------
# The request -> reply path


def call_function(functions: Functions, func: str, args: list[Any]) -> tuple[int, bytes]:
    """Calls `func` from `functions`; returns (RESPONSE or ERROR, body)."""
    fn = functions.get(func) if len(func.encode("utf-8")) <= MAX_FUNC_NAME else None
    if fn is None:
        return ERROR, error_body("unknown_function", "unknown function")
    try:
        result = fn(*args)
    except RemoteError as e:
        code, message = e.code, str(e.message)
        if code not in CODES:
            log.warning("function %r raised RemoteError with unknown code %r", func, code)
            code = "internal"
        return ERROR, error_body(code, message)
    except Exception:
        log.exception("function %r failed", func)
        return ERROR, error_body("internal", "the function failed")
    try:
        return RESPONSE, success_body(result)
    except EncodeError as e:
        if e.code == "internal":
            log.error("function %r returned %r, which has no JSON form", func, type(result))
        return ERROR, error_body(e.code, e.message)
    except RecursionError:
        log.error("function %r returned a value nested too deeply", func)
        return ERROR, error_body("internal", "result has no JSON form")


def respond(
    functions: Functions, frame: Frame, max_body: int = MAX_BODY, info: ServerInfo | None = None
) -> bytes | None:
    """The reply frame to one checked frame, or None for a frame that is
    itself a reply (servers answer requests only). rpc.info describes the
    server with `info` (default: this module, no name, auth off)."""
    if frame.kind != REQUEST:
        return None
    seq = frame.seq
    try:
        func, args = parse_request(frame.body)
    except BodyError as e:
        return error_frame(seq, e.code, e.message)
    kind, body = reply_body(functions, func, args, seq, max_body, info, frame.body)
    return pack_frame(kind, seq, body)


def reply_limit(max_body: int) -> int:
    """The largest reply body a server sends: max(max_body, 128)."""
    return max(max_body, 128)


def reply_body(
    functions: Functions,
    func: str,
    args: list[Any],
    seq: int,
    max_body: int = MAX_BODY,
    info: ServerInfo | None = None,
    request: bytes | None = None,
) -> tuple[int, bytes]:
    """call_function(), or answer_rpc() for a name beginning with "rpc."
    (`request`: the request body, which rpc.ping echoes from), with a reply
    body over reply_limit(max_body) bytes replaced by the error `internal`
    ("reply too large")."""
    if func.startswith("rpc."):
        if info is None:
            info = ServerInfo(SERVER_SOFTWARE, "", False, max_body)
        kind, body = answer_rpc(functions, info, func, args, request, reply_limit(max_body))
    else:
        kind, body = call_function(functions, func, args)
    if len(body) > reply_limit(max_body):
        log.error(
            "reply to %r (seq %d) is %d bytes, over the limit of %d", func, seq, len(body), max_body
        )
        kind, body = ERROR, error_body("internal", "reply too large")
    return kind, body


# --------------------------------------------------------------------------
# The protocol's own functions: rpc.ping, rpc.info, rpc.functions (section 7)

# Room kept at the end of an rpc.functions page: `], "next": 4294967295}}`.
_PAGE_TAIL = len('], "next": 4294967295}}')
_PAGE_HEAD = '{"status": "success", "result": {"functions": ['
# A page never exceeds what a datagram carries, authenticated or not.
_PAGE_MAX = MAX_DATAGRAM - HEADER_LEN - AUTH_TRAILER


class ServerInfo(NamedTuple):
    """What rpc.info says of a server (besides its function count)."""

    server: str  # the implementation and its version
    name: str  # the name its operator chose
    auth_required: bool
    max_body: int  # the largest request body accepted
    #: The parts of section 10 implemented, in the order of EXT_ORDER.
    ext: tuple[str, ...] = ()


#: The parts of section 10 an `ext` lists, in the contract's order.
EXT_ORDER = ("notify", "events", "deadline", "cancel", "peer")


def is_reserved(name: str) -> bool:
    """Names beginning with "rpc." belong to the protocol."""
    return name.startswith("rpc.")


def function_names(functions: Functions) -> list[str]:
    """The functions rpc.info counts and rpc.functions lists, in order."""
    # list(dict) is one step under the GIL: safe while another thread registers.
    return [name for name in list(functions) if not is_reserved(name)]


def info_result(functions: Functions, info: ServerInfo) -> dict[str, Any]:
    """The rpc.info result, members in the contract's order."""
    return {
        "protocol": 1,
        "server": info.server,
        "name": info.name,
        "auth": "required" if info.auth_required else "off",
        "max_body": info.max_body,
        "functions": len(function_names(functions)),
        "ext": [part for part in EXT_ORDER if part in info.ext],
    }


def function_entry(name: str, sig: Signature | None, doc: bool = True) -> str:
    """One rpc.functions entry as canonical JSON (its doc left empty when
    `doc` is false)."""
    if sig is None:
        return '{"name": ' + _string(name) + ', "params": null, "result": null, "doc": ""}'
    return (
        '{"name": '
        + _string(name)
        + ', "params": ['
        + ", ".join(f'"{t}"' for t in sig.params)
        + '], "result": "'
        + sig.result
        + '", "doc": '
        + _string(sig.doc if doc else "")
        + "}"
    )


def functions_page(functions: Functions, start: int, limit: int) -> bytes | None:
    """The success body of rpc.functions from index `start`: the entries
    that fit in `limit` bytes of body (room kept for the largest `next`),
    at least one while any remain (without its doc if only so it fits); None
    when even that does not fit. As at-core writes it."""
    names = function_names(functions)
    room = min(limit, _PAGE_MAX) - _PAGE_TAIL
    size = len(_PAGE_HEAD)
    entries: list[str] = []
    following = None
    for index in range(start, len(names)):
        name = names[index]
        fn = functions.get(name)
        sig = describe_function(fn) if fn is not None else None
        entry = _utf8(function_entry(name, sig))
        if entries:
            if size + 2 + len(entry) > room:
                following = index
                break
            size += 2
        elif size + len(entry) > room:
            entry = _utf8(function_entry(name, sig, doc=False))
            if size + len(entry) > room:
                return None
        entries.append(entry.decode("utf-8"))
        size += len(entry)
    return _utf8(
        _PAGE_HEAD
        + ", ".join(entries)
        + '], "next": '
        + ("null" if following is None else str(following))
        + "}}"
    )


def _raw_args(body: bytes) -> list[str]:
    """The source text of each argument of a request body (already checked
    by parse_request): rpc.ping gives back strings, arrays and objects
    exactly as they came, as at-core does."""
    reader = _open_object(body)
    raw: list[str] = []

    def member(key: str) -> None:
        if key != "args" or reader.peek() != "[":
            reader.value()
            return
        raw.clear()
        reader.expect("[")
        if reader.peek() == "]":
            reader.pos += 1
            return
        while True:
            reader.peek()
            start = reader.pos
            reader.value()
            raw.append(reader.text[start : reader.pos])
            c = reader.peek()
            reader.pos += 1
            if c == "]":
                return
            if c != ",":
                raise _syntax()

    reader.object(member)
    return raw


def _echo(args: list[Any], request: bytes | None) -> bytes:
    """rpc.ping's success body for one argument."""
    if request is not None:
        try:
            raw = _raw_args(request)
        except BodyError:
            raw = []
        if len(raw) == 1 and raw[0][:1] in ('"', "[", "{"):
            return _utf8('{"status": "success", "result": ' + raw[0] + "}")
    return success_body(args[0])


def answer_rpc(
    functions: Functions,
    info: ServerInfo,
    func: str,
    args: list[Any],
    request: bytes | None = None,
    limit: int = MAX_BODY,
) -> tuple[int, bytes]:
    """The reply (kind, body) to `func`, a name beginning with "rpc.";
    rpc.hello is the server's, not answered here. `limit`: the largest
    reply body (an rpc.functions page fills at most that much)."""

    def invalid(message: str) -> tuple[int, bytes]:
        return ERROR, error_body("invalid_arguments", message)

    if func == "rpc.ping":
        if len(args) > 1:
            return invalid("rpc.ping takes no argument or one")
        try:
            return RESPONSE, success_body(True) if not args else _echo(args, request)
        except EncodeError as e:
            return ERROR, error_body(e.code, e.message)
        except RecursionError:
            return ERROR, error_body("internal", "result has no JSON form")
    if func == "rpc.info":
        if args:
            return invalid("rpc.info takes no arguments")
        return RESPONSE, success_body(info_result(functions, info))
    if func == "rpc.functions":
        if args and not (len(args) == 1 and type(args[0]) is int and args[0] >= 0):
            return invalid("rpc.functions takes one optional integer start >= 0")
        try:
            page = functions_page(functions, args[0] if args else 0, limit)
        except EncodeError as e:  # a name or doc that is not UTF-8 (a lone surrogate)
            return ERROR, error_body(e.code, e.message)
        if page is None:
            return ERROR, error_body("internal", "reply buffer too small")
        return RESPONSE, page
    if func == "rpc.cancel":
        # No queue to take a call out of, and functions cannot be stopped:
        # a cancel never stops anything (section 10.4, 10.8 rule 11).
        if len(args) != 1 or type(args[0]) is not int or not 0 <= args[0] <= MAX_SEQ:
            return invalid("rpc.cancel takes the seq of one call")
        return RESPONSE, success_body(False)
    return ERROR, error_body("unknown_function", "unknown function")


def respond_to_error(error: FrameError) -> bytes | None:
    """The error frame answering a rejected frame (None: drop silently). A
    frame whose one type bit is NOTIFY is never answered (section 10.2)."""
    if not error.answer or error.flags & KIND_MASK == NOTIFY:
        return None
    return error_frame(error.seq, error.code, error.message)


def respond_to_datagram(
    functions: Functions, data: bytes, max_body: int = MAX_BODY, info: ServerInfo | None = None
) -> bytes | None:
    """The whole path for one datagram: check it, answer it (or None)."""
    try:
        frame = parse_datagram(data, max_body)
    except FrameError as e:
        return respond_to_error(e)
    return respond(functions, frame, max_body, info)
