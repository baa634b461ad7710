"""JSON bodies (contract sections 3 and 7): writing them in the canonical
form the Rust side writes, reading them by the contract's rules."""

from __future__ import annotations

import json
import json.decoder
import json.scanner
import math
import re
from collections.abc import Callable
from typing import Any, NamedTuple

from .errors import BodyError, EncodeError
from .frame import ERROR, I64_MAX, I64_MIN, MAX_ARGS, MAX_DEADLINE_MS, MAX_DEPTH, pack_frame

# --------------------------------------------------------------------------
# Writing JSON in the canonical form


def format_double(x: float) -> str:
    """A finite double exactly as Rust's ryu writes it: the shortest digits
    that read back to the same value, always with a '.' or an exponent
    (5.0, 0.1, 1e300, 1.5e20, 1e-7, 0.30000000000000004)."""
    if not math.isfinite(x):
        raise ValueError("a double that is not finite has no JSON form")
    if x == 0.0:
        return "-0.0" if math.copysign(1.0, x) < 0 else "0.0"
    sign = "-" if x < 0 else ""
    mantissa, _, exp = repr(abs(x)).partition("e")
    whole, _, frac = mantissa.partition(".")
    digits = (whole + frac).lstrip("0")
    k = (int(exp) if exp else 0) - len(frac)
    stripped = digits.rstrip("0")
    k += len(digits) - len(stripped)
    digits = stripped
    length = len(digits)
    kk = length + k  # 10^(kk-1) <= |x| < 10^kk
    if 0 <= k and kk <= 16:
        text = digits + "0" * k + ".0"
    elif 0 < kk <= 16:
        text = digits[:kk] + "." + digits[kk:]
    elif -5 < kk <= 0:
        text = "0." + "0" * -kk + digits
    elif length == 1:
        text = f"{digits}e{kk - 1}"
    else:
        text = f"{digits[0]}.{digits[1:]}e{kk - 1}"
    return sign + text


def _string(s: str) -> str:
    # ensure_ascii=False escapes exactly ", \, and the control characters
    # (\n \r \t \b \f, else \u00xx): the canonical form.
    return json.dumps(s, ensure_ascii=False)


def encode_value(value: Any, *, any_int: bool = False) -> str:
    """`value` as canonical JSON text (", " and ": " separators, doubles in
    ryu's form). Integers must fit in i64 unless `any_int` (a client sends
    any integer as written, for the server to judge)."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, _BigInt):
        if any_int:
            return value.text
        raise EncodeError("overflow", "integer result outside 64-bit range")
    if isinstance(value, int):
        if not any_int and not I64_MIN <= value <= I64_MAX:
            raise EncodeError("overflow", "integer result outside 64-bit range")
        return int.__repr__(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise EncodeError("overflow", "result is not a finite number")
        return format_double(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(encode_value(v, any_int=any_int) for v in value) + "]"
    if isinstance(value, dict):
        parts = []
        for k, v in value.items():
            if not isinstance(k, str):
                raise EncodeError("internal", "result has no JSON form")
            parts.append(_string(k) + ": " + encode_value(v, any_int=any_int))
        return "{" + ", ".join(parts) + "}"
    raise EncodeError("internal", "result has no JSON form")


def _utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate in a Python str
        raise EncodeError("internal", "result has no JSON form") from None


def request_body(
    func: str, args: tuple[Any, ...] | list[Any] = (), deadline_ms: int | None = None
) -> bytes:
    """`{"func": "add", "args": [10, 20]}`; with `deadline_ms` (section
    10.4, an integer 0 to 4294967295, else ValueError) that member comes
    last: `{"func": "add", "args": [10, 20], "deadline_ms": 0}`."""
    tail = "]}"
    if deadline_ms is not None:
        if type(deadline_ms) is not int or not 0 <= deadline_ms <= MAX_DEADLINE_MS:
            raise ValueError("deadline_ms is an integer from 0 to 4294967295")
        tail = '], "deadline_ms": ' + str(deadline_ms) + "}"
    return _utf8(
        '{"func": '
        + _string(func)
        + ', "args": ['
        + ", ".join(encode_value(a, any_int=True) for a in args)
        + tail
    )


#: Why a subscription's last event ends it (section 10.3).
END_REASONS = ("lease", "topic", "server")


def event_body(topic: str, n: int, value: Any = None, end: str | None = None) -> bytes:
    """An event body (section 10.3), members in the contract's order:
    `{"topic": "temp", "n": 1, "value": 21.5}`, or with `end` (one of
    END_REASONS) instead of a value `{"topic": "temp", "n": 18, "end":
    "lease"}`. Raises EncodeError for a value with no JSON form."""
    head = '{"topic": ' + _string(topic) + ', "n": ' + str(int(n))
    if end is not None:
        if end not in END_REASONS:
            raise ValueError(f"end is one of {END_REASONS}")
        return _utf8(head + ', "end": ' + _string(end) + "}")
    return _utf8(head + ', "value": ' + encode_value(value) + "}")


def success_body(result: Any) -> bytes:
    """`{"status": "success", "result": 30}`; raises EncodeError."""
    return _utf8('{"status": "success", "result": ' + encode_value(result) + "}")


def error_body(code: str, message: str) -> bytes:
    """`{"status": "error", "code": "...", "message": "..."}`."""
    return (
        '{"status": "error", "code": ' + _string(code) + ', "message": ' + _string(message) + "}"
    ).encode("utf-8", "replace")


def error_frame(seq: int, code: str, message: str) -> bytes:
    """A whole ERROR frame with the error body (code, message)."""
    return pack_frame(ERROR, seq, error_body(code, message))


# --------------------------------------------------------------------------
# Reading JSON bodies
#
# The contract's reading rules, in the Rust reader's order: members are read
# in document order and the first problem met is the one reported (a
# syntax error, nesting deeper than 32, a lone surrogate, a member of the
# wrong type or given twice); after the whole body: a missing func, then
# too many arguments, then an integer argument outside i64. Values are
# scanned with json's C scanner and then checked for what it accepts but
# RFC 8259 does not (NaN and Infinity, lone surrogates).


def _syntax() -> BodyError:
    return BodyError("body is not valid JSON")


def _too_deep() -> BodyError:
    return BodyError("JSON nested too deeply")


class _BigInt:
    """An integer literal outside i64 (its text), as the reader found it."""

    __slots__ = ("text",)

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return self.text

    def to_int(self) -> int | str:
        try:
            return int(self.text)
        except ValueError:  # more digits than int() converts by default
            return self.text


class _Obj(list[tuple[str, Any]]):
    """A JSON object as its (key, value) pairs, duplicates kept."""


_BAD_CONSTANT = object()  # NaN, Infinity, -Infinity: not JSON


def _parse_int(text: str) -> int | _BigInt:
    if len(text) <= 20:
        value = int(text)
        if I64_MIN <= value <= I64_MAX:
            return value
    return _BigInt(text)


_DECODER = json.JSONDecoder(
    parse_int=_parse_int,
    parse_constant=lambda _: _BAD_CONSTANT,
    object_pairs_hook=_Obj,
    strict=True,
)
# json's C scanner and string reader (typeshed does not describe them).
_scan: Callable[[str, int], tuple[Any, int]] = json.scanner.make_scanner(_DECODER)  # type: ignore[arg-type]
_scanstring: Callable[[str, int, bool], tuple[str, int]] = json.decoder.scanstring  # type: ignore[attr-defined]
_WS = re.compile(r"[ \t\n\r]*")
_SURROGATE = re.compile("[\ud800-\udfff]")
_PREFIX_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"?|[\[\]{}]|NaN|-?Infinity', re.S)
_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{4}|.)", re.S)


def _check_value(value: Any, depth: int = 0) -> None:
    """Raises the first problem in `value`, in document order."""
    t = type(value)
    if t is str:
        if _SURROGATE.search(value):
            raise _syntax()
    elif t is list or t is _Obj:
        depth += 1
        if depth > MAX_DEPTH:
            raise _too_deep()
        if t is list:
            for v in value:
                _check_value(v, depth)
        else:
            for k, v in value:
                if _SURROGATE.search(k):
                    raise _syntax()
                _check_value(v, depth)
    elif value is _BAD_CONSTANT:
        raise _syntax()


def _prefix_error(text: str, start: int, stop: int, depth: int = 0) -> BodyError:
    """The error the Rust reader meets first in text[start:stop], the part
    of a value json's scanner accepted before it failed: nesting deeper than
    MAX_DEPTH, or what the scanner accepts and RFC 8259 does not (a lone
    surrogate escape, NaN, Infinity); else a syntax error at `stop`."""
    for m in _PREFIX_TOKENS.finditer(text, start, stop):
        token = m.group()
        if token in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return _too_deep()
        elif token in "]}":
            depth -= 1
        elif token[0] != '"' or _lone_surrogate_escape(token):
            return _syntax()
    return _syntax()


def _lone_surrogate_escape(token: str) -> bool:
    """True when a string's source text holds a \\uXXXX surrogate escape
    that is not a high one directly followed by a low one."""
    high_end = -1
    for m in _ESCAPE.finditer(token):
        e = m.group(1)
        unit = int(e[1:], 16) if len(e) == 5 else -1
        if high_end >= 0:
            if m.start() != high_end or not 0xDC00 <= unit <= 0xDFFF:
                return True
            high_end = -1
        elif 0xD800 <= unit <= 0xDBFF:
            high_end = m.end()
        elif 0xDC00 <= unit <= 0xDFFF:
            return True
    return high_end >= 0


def _plain(value: Any) -> Any:
    """A checked value as plain Python: dicts, lists, ints."""
    t = type(value)
    if t is list:
        return [_plain(v) for v in value]
    if t is _Obj:
        return {k: _plain(v) for k, v in value}
    if t is _BigInt:
        return value.to_int()
    return value


class _Reader:
    def __init__(self, text: str):
        self.text = text
        self.pos = 0

    def peek(self) -> str | None:
        match = _WS.match(self.text, self.pos)
        self.pos = match.end() if match is not None else self.pos
        return self.text[self.pos] if self.pos < len(self.text) else None

    def expect(self, char: str) -> None:
        if self.peek() != char:
            raise _syntax()
        self.pos += 1

    def expect_end(self) -> None:
        if self.peek() is not None:
            raise _syntax()

    def string(self) -> str:
        self.expect('"')
        try:
            value, self.pos = _scanstring(self.text, self.pos, True)
        except ValueError:
            raise _syntax() from None
        if _SURROGATE.search(value):
            raise _syntax()
        return value

    def value(self, depth: int = 0) -> Any:
        """Reads and checks any value (raw: _Obj, _BigInt and friends).
        `depth`: nesting levels already open (-1 for the args array, whose
        own brackets the Rust reader does not count)."""
        self.peek()
        start = self.pos
        try:
            value, end = _scan(self.text, start)
        except (StopIteration, ValueError, RecursionError) as e:  # ValueError: JSONDecodeError
            # Where the scanner stopped: StopIteration's value, or the
            # error's pos; the Rust reader may have failed before that.
            stop = e.value if isinstance(e, StopIteration) else getattr(e, "pos", len(self.text))
            if not isinstance(stop, int):
                stop = len(self.text)
            raise _prefix_error(self.text, start, stop, depth) from None
        _check_value(value, depth)
        if type(value) in (int, float, _BigInt):
            # json's scanner ends a number before a '.' or an exponent
            # without digits ("4.", "1e", "7E+"); RFC 8259 (and the Rust
            # reader) call the number itself malformed.
            number = self.text[start:end]
            after = self.text[end : end + 1]
            if (
                after
                and "e" not in number
                and "E" not in number
                and (after in "eE" or (after == "." and "." not in number))
            ):
                raise _syntax()
        self.pos = end
        return value

    def object(self, member: Callable[[str], None]) -> None:
        self.expect("{")
        if self.peek() == "}":
            self.pos += 1
            return
        while True:
            key = self.string()
            self.expect(":")
            member(key)
            c = self.peek()
            if c == ",":
                self.pos += 1
            elif c == "}":
                self.pos += 1
                return
            else:
                raise _syntax()


def _open_object(body: bytes) -> _Reader:
    try:
        text = bytes(body).decode("utf-8")
    except UnicodeDecodeError:
        raise BodyError("body is not UTF-8") from None
    reader = _Reader(text)
    c = reader.peek()
    if c == "{":
        return reader
    if c is not None and c in '["tfn-0123456789':
        reader.value()
        reader.expect_end()
        raise BodyError("body is not a JSON object")
    raise _syntax()


def _set_once(slots: dict[str, Any], name: str, value: Any) -> None:
    if name in slots:
        raise BodyError("a member appears twice")
    slots[name] = value


class Call(NamedTuple):
    """A request body read: the function, its arguments as plain Python
    values and `deadline_ms` (None when absent)."""

    func: str
    args: list[Any]
    deadline_ms: int | None


_BAD_DEADLINE = '"deadline_ms" must be an integer from 0 to 4294967295'


def parse_request(body: bytes) -> tuple[str, list[Any]]:
    """Reads a request body; returns (func, args) with args as plain Python
    values (arrays and objects as lists and dicts). Raises BodyError with the
    reply's code and message (also for a bad `deadline_ms`)."""
    call = parse_call(body)
    return call.func, call.args


def parse_call(body: bytes) -> Call:
    """Reads a request body (a REQUEST's or a NOTIFY call's) as a Call.
    `deadline_ms` must be an integer 0 to 4294967295, else bad_request
    (section 10.4). Raises BodyError with the reply's code and message."""
    reader = _open_object(body)
    slots: dict[str, Any] = {}
    flags = {"too_many": False, "overflow": False}

    def member(key: str) -> None:
        if key == "func":
            if reader.peek() != '"':
                reader.value()
                raise BodyError('"func" must be a string')
            _set_once(slots, "func", reader.string())
        elif key == "args":
            if reader.peek() != "[":
                reader.value()
                raise BodyError('"args" must be an array')
            items = reader.value(-1)
            # As the Rust reader counts: an integer outside i64 is flagged,
            # not counted as one of the MAX_ARGS arguments.
            big = sum(1 for v in items if type(v) is _BigInt)
            if len(items) - big > MAX_ARGS:
                flags["too_many"] = True
            if big:
                flags["overflow"] = True
            _set_once(slots, "args", items)
        elif key == "deadline_ms":
            d = reader.value()
            if type(d) is not int or not 0 <= d <= MAX_DEADLINE_MS:
                raise BodyError(_BAD_DEADLINE)
            _set_once(slots, "deadline_ms", d)
        else:
            reader.value()

    reader.object(member)
    reader.expect_end()
    if "func" not in slots:
        raise BodyError('missing "func"')
    if flags["too_many"]:
        raise BodyError("too many arguments", "invalid_arguments")
    if flags["overflow"]:
        raise BodyError("integer argument outside 64-bit range", "overflow")
    return Call(slots["func"], _plain(slots.get("args", [])), slots.get("deadline_ms"))


class Event(NamedTuple):
    """An event body read (section 10.3): topic, n, and either value or
    end (one of END_REASONS; None for an event with a value)."""

    topic: str
    n: int
    value: Any
    end: str | None


def parse_event(body: bytes) -> Event:
    """Reads an event body: a string `topic`, an integer `n` (0 to
    4294967295) and exactly one of `value` and `end`; unknown members are
    ignored. Raises BodyError."""
    reader = _open_object(body)
    slots: dict[str, Any] = {}
    flags = {"overflow": False}

    def member(key: str) -> None:
        if key in ("topic", "end"):
            if reader.peek() != '"':
                reader.value()
                raise BodyError("a member has the wrong type")
            text = reader.string()
            if key == "end" and text not in END_REASONS:
                raise BodyError("a member has the wrong type")
            _set_once(slots, key, text)
        elif key == "n":
            n = reader.value()
            if type(n) is not int or not 0 <= n <= MAX_DEADLINE_MS:
                raise BodyError("a member has the wrong type")
            _set_once(slots, "n", n)
        elif key == "value":
            v = reader.value()
            if type(v) is _BigInt:
                flags["overflow"] = True
            _set_once(slots, "value", v)
        else:
            reader.value()

    reader.object(member)
    reader.expect_end()
    if flags["overflow"]:
        raise BodyError("integer argument outside 64-bit range", "overflow")
    if "topic" not in slots or "n" not in slots or ("value" not in slots and "end" not in slots):
        raise BodyError("a required member is missing")
    if "value" in slots and "end" in slots:
        raise BodyError("a member appears twice")
    return Event(slots["topic"], slots["n"], _plain(slots.get("value")), slots.get("end"))


def parse_notify(body: bytes) -> Call | Event:
    """Reads a NOTIFY body (section 10.2): a call if it has `func`, else an
    event if it has `topic`; anything else raises BodyError (drop it)."""
    try:
        return parse_call(body)
    except BodyError as e:
        if e.message != 'missing "func"':
            raise
    return parse_event(body)


def parse_reply(body: bytes) -> tuple[bool, Any, str, str]:
    """Reads a reply body: (True, result, "", "") for success, (False, None,
    code, message) for an error (a missing message reads as ""). Raises
    BodyError."""
    reader = _open_object(body)
    slots: dict[str, Any] = {}

    def member(key: str) -> None:
        if key in ("status", "code", "message"):
            if reader.peek() != '"':
                reader.value()
                raise BodyError("a member has the wrong type")
            _set_once(slots, key, reader.string())
        elif key == "result":
            _set_once(slots, "result", reader.value())
        else:
            reader.value()

    reader.object(member)
    reader.expect_end()
    if "status" not in slots:
        raise BodyError("a required member is missing")
    if slots["status"] == "success":
        if type(slots.get("result")) is _BigInt:
            raise BodyError("integer argument outside 64-bit range", "overflow")
        if "result" not in slots:
            raise BodyError("a required member is missing")
        return True, _plain(slots["result"]), "", ""
    if slots["status"] == "error":
        if "code" not in slots:
            raise BodyError("a required member is missing")
        return False, None, slots["code"], slots.get("message", "")
    raise BodyError("a member has the wrong type")


def parse_value(text: str) -> Any:
    """Exactly one JSON value (whitespace around it allowed), as plain
    Python; an integer outside i64 stays a _BigInt that writes back as its
    text. Raises BodyError."""
    reader = _Reader(text)
    if reader.peek() is None:
        raise _syntax()
    value = reader.value()
    reader.expect_end()
    return value if type(value) is _BigInt else _plain(value)
