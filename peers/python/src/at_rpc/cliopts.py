"""What the command line's subcommands share: option parsing (addresses,
numbers, keys), logging, error texts and one query of a server."""

from __future__ import annotations

import ipaddress
import logging
import math
import os
import sys
from collections.abc import Callable
from typing import Any

from .auth import load_key_file, parse_key
from .body import encode_value, parse_value
from .calculator import _is_number
from .client import Client
from .errors import AuthError, BadProof, BodyError, KeyFormatError, ProtocolError, RemoteError
from .frame import DEFAULT_PORT
from .net import _format_addr


class UsageError(Exception):
    pass


def parse_listen(text: str) -> tuple[str, int] | None:
    """IP:PORT ([IPv6]:PORT) or none."""
    if text.lower() == "none":
        return None
    bad = UsageError(f"{text!r} is not IP:PORT or none")
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise bad
    else:
        host, sep, port = text.rpartition(":")
        if not sep:
            raise bad
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise bad from None
    if text.startswith("[") != (ip.version == 6):
        raise bad
    if not port.isdigit() or not port.isascii() or int(port) > 65535:
        raise bad
    return str(ip), int(port)


def split_host_port(text: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """HOST[:PORT]: 127.0.0.1, box:80, [::1]:80, ::1."""
    bad = UsageError(f"{text!r} is not HOST[:PORT]")

    def port_of(p: str) -> int:
        if not (p.isascii() and p.isdigit()) or int(p) > 65535:
            raise bad
        return int(p)

    try:
        return str(ipaddress.ip_address(text)), default_port
    except ValueError:
        pass
    if text.startswith("["):
        host, sep, after = text[1:].partition("]")
        if not sep or not host:
            raise bad
        if not after:
            return host, default_port
        if not after.startswith(":"):
            raise bad
        return host, port_of(after[1:])
    host, sep, port = text.rpartition(":")
    if not sep:
        if not text:
            raise bad
        return text, default_port
    if not host or ":" in host:
        raise bad
    return host, port_of(port)


def cli_arg(text: str) -> Any:
    """A command-line argument: JSON if it is JSON, else a string."""
    try:
        return parse_value(text)
    except BodyError:
        return text


def _setup_logging(default: str) -> None:
    level = os.environ.get("AT_LOG", default).upper()
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _take_value(argv: list[str], i: int, name: str) -> tuple[str, int]:
    token = argv[i]
    if "=" in token:
        return token.split("=", 1)[1], i + 1
    if i + 1 >= len(argv):
        raise UsageError(f"{name} needs a value")
    return argv[i + 1], i + 2


def _looks_like_number(token: str) -> bool:
    try:
        return _is_number(parse_value(token))
    except BodyError:
        return False


def _key_option(text: str, name: str) -> tuple[str, bytes]:
    """--key KID:HEX (or AT_KEY); a usage error never quotes the value."""
    try:
        return parse_key(text)
    except KeyFormatError as e:
        raise UsageError(f"{name}: {e}") from None


def _key_file_option(path: str) -> list[tuple[str, bytes]]:
    try:
        return load_key_file(path)
    except KeyFormatError as e:
        raise UsageError(f"--key-file: {e}") from None


def _client_key(key_text: str | None, key_file: str | None) -> tuple[str, bytes] | None:
    """The key of --key, --key-file or AT_KEY (in that order), or None."""
    if key_text is not None and key_file is not None:
        raise UsageError("give --key or --key-file, not both")
    if key_text is not None:
        return _key_option(key_text, "--key")
    if key_file is not None:
        return _key_file_option(key_file)[0]
    if os.environ.get("AT_KEY"):
        return _key_option(os.environ["AT_KEY"], "AT_KEY")
    return None


def _failure_text(e: Exception) -> str:
    """What went wrong in a transport failure, as `call` reports it."""
    if isinstance(e, TimeoutError):
        return str(e)
    if isinstance(e, AuthError):
        return f"authentication failed: {e}"
    if isinstance(e, ProtocolError):
        return f"protocol error: {e}"
    if isinstance(e, OSError):  # refused, reset, unreachable, name resolution
        return f"i/o error: {e.strerror or e}"
    return str(e)


def _options(
    argv: list[str], flags: tuple[str, ...], values: tuple[str, ...]
) -> dict[str, Any] | None:
    """Options of a command without positional arguments: `flags` take no
    value (True when given), `values` one (--name VALUE or --name=VALUE).
    None for -h/--help."""
    opts: dict[str, Any] = {}
    i = 0
    while i < len(argv):
        token = argv[i]
        name = token.split("=", 1)[0]
        if token in ("-h", "--help"):
            return None
        if token in flags:
            opts[token], i = True, i + 1
        elif name in values:
            opts[name], i = _take_value(argv, i, name)
        else:
            raise UsageError(f"unexpected argument {token!r}")
    return opts


def _seconds_option(opts: dict[str, Any], name: str, default: float, zero: bool = False) -> float:
    if name not in opts:
        return default
    try:
        value = float(opts[name])
    except ValueError:
        raise UsageError(f"{name}: {opts[name]!r} is not a number of seconds") from None
    if not (math.isfinite(value) and (value >= 0 if zero else value > 0)):
        raise UsageError(
            f"{name} must be a {'non-negative' if zero else 'positive'} number of seconds"
        )
    return value


def _count_option(
    opts: dict[str, Any], name: str, default: int, least: int = 0, most: int = 0xFFFFFFFF
) -> int:
    if name not in opts:
        return default
    text = opts[name]
    if not (text.isascii() and text.isdigit()) or not least <= int(text) <= most:
        raise UsageError(f"{name}: {text!r} is not a whole number from {least} to {most}")
    return int(text)


def _client_options(
    argv: list[str], flags: tuple[str, ...] = (), values: tuple[str, ...] = (), keys: bool = True
) -> dict[str, Any] | None:
    """The options info and list share (and those given), parsed."""
    flags = ("--udp", "--json", *flags)
    values = ("--server", "--timeout", *(("--key", "--key-file") if keys else ()), *values)
    opts = _options(argv, flags, values)
    if opts is None:
        return None
    host, port = split_host_port(opts.get("--server", f"127.0.0.1:{DEFAULT_PORT}"))
    opts["host"], opts["port"], opts["where"] = host, port, _format_addr((host, port))
    if keys:
        opts["key"] = _client_key(opts.get("--key"), opts.get("--key-file"))
    return opts


def _query(opts: dict[str, Any], action: Callable[[Client], Any]) -> tuple[int, Any]:
    """action(client) for info and list: (0, its value), or (exit status,
    None) after reporting an error reply (1) or a transport failure (3)."""
    timeout = _seconds_option(opts, "--timeout", 1.0)
    _setup_logging("warning")
    try:
        with Client(
            opts["host"],
            opts["port"],
            udp=opts.get("--udp", False),
            timeout=timeout,
            key=opts["key"],
        ) as client:
            return 0, action(client)
    except RemoteError as e:
        print(f"error: {e.code}: {e.message}", file=sys.stderr)
        return 1, None
    except BadProof as e:
        print(f"error: unauthorized: {e}", file=sys.stderr)
        return 1, None
    except (OSError, ProtocolError) as e:
        print(f"transport error: {opts['where']}: {_failure_text(e)}", file=sys.stderr)
        return 3, None


def _value_text(value: Any) -> str:
    """A value for people: strings as they are, anything else as JSON."""
    return value if isinstance(value, str) else encode_value(value, any_int=True)
