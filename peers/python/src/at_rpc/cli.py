"""The command line: serve, call, notify, ping, info, list, topics, watch,
call-home, discover (the `at-rpc` command and `python -m at_rpc`)."""

from __future__ import annotations

import json
import logging
import math
import signal
import socket
import statistics
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from .body import _utf8, encode_value, error_body, request_body
from .cli_events import call_home_main, notify_main, topics_main, watch_main
from .client import Client
from .cliopts import (
    UsageError,
    _client_key,
    _client_options,
    _count_option,
    _failure_text,
    _key_file_option,
    _key_option,
    _looks_like_number,
    _options,
    _query,
    _seconds_option,
    _setup_logging,
    _take_value,
    _value_text,
    cli_arg,
    parse_listen,
    split_host_port,
)
from .discovery import discover, format_discovered, format_table
from .errors import (
    BadProof,
    EncodeError,
    ProtocolError,
    RemoteError,
)
from .frame import DEFAULT_PORT, MAX_BODY
from .net import _format_addr
from .server import Server
from .usage import (
    CALL_HELP,
    DISCOVER_HELP,
    INFO_HELP,
    LIST_HELP,
    PING_HELP,
    SERVE_HELP,
    USAGE,
    write_help,
)

log = logging.getLogger("at_rpc")


def _server_keys(key_texts: list[str], key_files: list[str]) -> dict[str, bytes]:
    """The keys of serve's --key and --key-file options, by key id."""
    keys: dict[str, bytes] = {}
    pairs = [_key_option(text, "--key") for text in key_texts]
    for path in key_files:
        pairs.extend(_key_file_option(path))
    for kid, key in pairs:
        if kid in keys:
            raise UsageError(f"key id {kid!r} is given twice")
        keys[kid] = key
    return keys


def serve_main(argv: list[str]) -> int:
    """`serve ...`: runs a server until SIGINT or SIGTERM; the exit status."""
    opts: dict[str, str | None] = {
        "--tcp": f"0.0.0.0:{DEFAULT_PORT}",
        "--udp": f"0.0.0.0:{DEFAULT_PORT}",
        "--max-frame": str(MAX_BODY),
        "--name": None,
    }
    key_texts: list[str] = []
    key_files: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        name = token.split("=", 1)[0]
        if token in ("-h", "--help"):
            write_help(SERVE_HELP)
            return 0
        if name in opts:
            opts[name], i = _take_value(argv, i, name)
        elif name == "--key":
            value, i = _take_value(argv, i, name)
            key_texts.append(value)
        elif name == "--key-file":
            value, i = _take_value(argv, i, name)
            key_files.append(value)
        else:
            raise UsageError(f"unexpected argument {token!r}")
    tcp = parse_listen(opts["--tcp"] or "")
    udp = parse_listen(opts["--udp"] or "")
    text = opts["--max-frame"] or ""
    if not (text.isascii() and text.isdigit()) or int(text) > 0xFFFFFFFF:
        raise UsageError(f"--max-frame: {text!r} is not a number of bytes")
    if tcp is None and udp is None:
        raise UsageError("nothing to serve: both --tcp and --udp are none")
    keys = _server_keys(key_texts, key_files)
    server_name = opts["--name"]
    if server_name is not None:
        try:
            _utf8(server_name)
        except EncodeError:
            raise UsageError("--name: the name is not valid text") from None
    _setup_logging("info")
    server = Server(tcp=tcp, udp=udp, max_frame=int(text), keys=keys or None, name=server_name)
    if keys:
        log.info(
            "authentication required: %d key%s (key ids %s)",
            len(keys),
            "" if len(keys) == 1 else "s",
            ", ".join(sorted(keys)),
        )
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("shutting down (%s)", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        server.start()
    except OSError as e:
        print(f"at_rpc: cannot listen: {e}", file=sys.stderr)
        return 1
    if server.tcp_address is not None:
        print(f"listening on tcp://{_format_addr(server.tcp_address)}")
    if server.udp_address is not None:
        print(f"listening on udp://{_format_addr(server.udp_address)}")
    sys.stdout.flush()
    # Topic "calls": the calls answered so far, published at most once a
    # second when it changed (as at-host serve does).
    calls = server.topic("calls", "calls answered")
    published = -1
    while not stop.wait(1.0):
        if server.calls_answered != published:
            published = server.calls_answered
            calls.publish(published)
    server.shutdown()
    return 0


def call_main(argv: list[str]) -> int:
    """`call ...`: one call, printed as the Rust at-host prints it; the exit status."""
    server = f"127.0.0.1:{DEFAULT_PORT}"
    udp = as_json = False
    timeout, retries = 5.0, 4
    deadline: int | None = None
    key_text = key_file = None
    positional: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        name = token.split("=", 1)[0]
        if token == "--":
            positional.extend(argv[i + 1 :])
            break
        if positional:
            # After FUNC every word is an ARG (as with clap's trailing
            # values): `call echo 1 --json` passes "--json"; only a `--`
            # right after FUNC is taken as the separator.
            rest = argv[i:]
            if len(positional) == 1 and rest[:1] == ["--"]:
                rest = rest[1:]
            positional.extend(rest)
            break
        if token in ("-h", "--help"):
            write_help(CALL_HELP)
            return 0
        if token == "--udp":
            udp, i = True, i + 1
        elif token == "--json":
            as_json, i = True, i + 1
        elif name == "--server":
            server, i = _take_value(argv, i, name)
        elif name == "--key":
            key_text, i = _take_value(argv, i, name)
        elif name == "--key-file":
            key_file, i = _take_value(argv, i, name)
        elif name == "--timeout":
            value, i = _take_value(argv, i, name)
            try:
                timeout = float(value)
            except ValueError:
                raise UsageError(f"--timeout: {value!r} is not a number of seconds") from None
            if not (math.isfinite(timeout) and timeout > 0):
                raise UsageError("--timeout must be a positive number of seconds")
        elif name == "--deadline":
            value, i = _take_value(argv, i, name)
            deadline = _count_option({name: value}, name, 0)
        elif name == "--retries":
            value, i = _take_value(argv, i, name)
            if not (value.isascii() and value.isdigit()):
                raise UsageError(f"--retries: {value!r} is not a count")
            retries = int(value)
        elif token.startswith("-") and len(token) > 1 and not _looks_like_number(token):
            raise UsageError(
                f"unexpected argument {token!r} (to pass it as FUNC, use '-- {token}')"
            )
        else:
            positional.append(token)
            i += 1
    if not positional:
        raise UsageError("FUNC is missing")
    key = _client_key(key_text, key_file)
    host, port = split_host_port(server)
    func, args = positional[0], [cli_arg(a) for a in positional[1:]]
    _setup_logging("warning")
    where = _format_addr((host, port))
    try:
        with Client(host, port, udp=udp, timeout=timeout, retries=retries, key=key) as client:
            result, body = client.call_raw(func, *args, deadline_ms=deadline)
    except RemoteError as e:
        if as_json:
            body = e.body if e.body is not None else error_body(e.code, e.message)
            print(body.decode("utf-8", "replace"))
        print(f"error: {e.code}: {e.message}", file=sys.stderr)
        return 1
    except BadProof as e:
        print(f"error: unauthorized: {e}", file=sys.stderr)
        return 1
    except (OSError, ProtocolError) as e:
        print(f"transport error: {where}: {_failure_text(e)}", file=sys.stderr)
        return 3
    print(body.decode("utf-8") if as_json else encode_value(result, any_int=True))
    return 0


def _print(line: str) -> None:
    print(line, flush=True)


def ping_main(argv: list[str]) -> int:
    """`ping ...`: rpc.ping COUNT times, like ping(8); the exit status."""
    opts = _client_options(argv, values=("--count", "--interval", "--size"), keys=False)
    if opts is None:
        write_help(PING_HELP)
        return 0
    count = _count_option(opts, "--count", 4, least=1)
    interval = _seconds_option(opts, "--interval", 1.0, zero=True)
    size = _count_option(opts, "--size", 0)
    timeout = _seconds_option(opts, "--timeout", 1.0)
    udp, as_json, where = opts.get("--udp", False), opts.get("--json", False), opts["where"]
    value = "x" * size if size else None
    length = len(request_body("rpc.ping", [value] if size else []))
    if length > MAX_BODY:
        raise UsageError(
            f"--size: the request body would be {length} bytes, over the limit of {MAX_BODY}"
        )
    _setup_logging("warning")
    if not as_json:
        _print(f"PING {where} ({'udp' if udp else 'tcp'})")
    times: list[float] = []
    sent = 0
    remote_error: RemoteError | None = None
    client = Client(opts["host"], opts["port"], udp=udp, timeout=timeout, retries=0)
    start = time.monotonic()
    try:
        for seq in range(1, count + 1):
            delay = start + (seq - 1) * interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            sent += 1
            try:
                client.connect()  # not timed: a ping measures a call
                began = time.perf_counter()
                result = client.ping(value)
                ms = (time.perf_counter() - began) * 1000.0
            except RemoteError as e:
                # As at-host: the line, the summary, then the error (exit 1).
                remote_error = remote_error or e
                reason = f"error: {e.code}: {e.message}"
            except (OSError, ProtocolError) as e:
                reason = (
                    f"timed out after {timeout:g} s"
                    if isinstance(e, TimeoutError)
                    else _failure_text(e)
                )
            else:
                if result is True if value is None else result == value:
                    times.append(ms)
                    _print(
                        json.dumps({"seq": seq, "time_ms": round(ms, 3)})
                        if as_json
                        else f"reply from {where}: seq={seq} time={ms:.3f} ms"
                    )
                    continue
                reason = "the reply does not match the request"
            _print(
                json.dumps({"seq": seq, "error": reason})
                if as_json
                else f"no reply from {where}: seq={seq}: {reason}"
            )
    except KeyboardInterrupt:
        pass  # like ping(8): the statistics of what was sent
    finally:
        client.close()
    received = len(times)
    loss = 100 * (sent - received) // sent if sent else 0
    rtt = None
    if times:
        rtt = {
            "min": min(times),
            "avg": statistics.fmean(times),
            "max": max(times),
            "mdev": statistics.pstdev(times),
        }
    if as_json:
        _print(
            json.dumps(
                {
                    "sent": sent,
                    "received": received,
                    "loss_percent": loss,
                    "rtt_ms": None if rtt is None else {k: round(v, 3) for k, v in rtt.items()},
                }
            )
        )
    else:
        _print(f"--- {where} ping statistics ---")
        line = f"{sent} sent, {received} received, {loss}% loss"
        if rtt is not None:
            line += (
                "; rtt min/avg/max/mdev = "
                + "/".join(f"{rtt[k]:.3f}" for k in ("min", "avg", "max", "mdev"))
                + " ms"
            )
        _print(line)
    if remote_error is not None:
        print(f"error: {remote_error.code}: {remote_error.message}", file=sys.stderr)
        return 1
    return 0 if times else 3


def info_main(argv: list[str]) -> int:
    """`info ...`: the rpc.info result as key: value lines; the exit status."""
    opts = _client_options(argv)
    if opts is None:
        write_help(INFO_HELP)
        return 0
    status, result = _query(opts, Client.info)
    if status:
        return status
    if opts.get("--json"):
        print(encode_value(result, any_int=True))
    else:
        for key, value in result.items():
            if key == "ext" and isinstance(value, list) and all(isinstance(v, str) for v in value):
                # As at-host: the parts of section 10, or "none".
                print("ext: " + (", ".join(value) if value else "none"))
            else:
                print(f"{key}: {_value_text(value)}")
    return 0


def format_signature(entry: dict[str, Any]) -> str:
    """add(number, number) -> number; name(...) when params is null; no
    ' -> ...' when result is null."""
    params = entry.get("params")
    text: str = entry["name"] + ("(...)" if params is None else "(" + ", ".join(params) + ")")
    if entry.get("result") is not None:
        text += " -> " + entry["result"]
    return text


def format_functions(entries: list[dict[str, Any]], as_json: bool = False) -> list[str]:
    """list's output lines: NAME SIGNATURE DOC in columns, or a JSON array."""
    if as_json:
        return [encode_value(entries, any_int=True)]
    return format_table([[e["name"], format_signature(e), e.get("doc") or ""] for e in entries])


def list_main(argv: list[str]) -> int:
    """`list ...`: every rpc.functions entry, one per line; the exit status."""
    opts = _client_options(argv)
    if opts is None:
        write_help(LIST_HELP)
        return 0
    status, entries = _query(opts, Client.functions)
    if status:
        return status
    for line in format_functions(entries, opts.get("--json", False)):
        print(line)
    return 0


def discover_main(argv: list[str]) -> int:
    """`discover ...`: the servers on the local network; the exit status."""
    opts = _options(argv, ("--ipv4", "--ipv6", "--json"), ("--timeout", "--interface", "--port"))
    if opts is None:
        write_help(DISCOVER_HELP)
        return 0
    timeout = _seconds_option(opts, "--timeout", 1.0)
    port = _count_option(opts, "--port", DEFAULT_PORT, least=1, most=65535)
    if opts.get("--ipv4") and opts.get("--ipv6"):
        raise UsageError("give --ipv4 or --ipv6, not both")
    interface = opts.get("--interface")
    if interface is not None:
        try:
            socket.if_nametoindex(interface)
        except (OSError, ValueError):
            raise UsageError(f"--interface: no interface {interface!r}") from None
    _setup_logging("warning")
    try:
        found = discover(
            timeout, port, interface, ipv4=not opts.get("--ipv6"), ipv6=not opts.get("--ipv4")
        )
    except OSError as e:
        print(f"transport error: discovery: {e.strerror or e}", file=sys.stderr)
        return 3
    for line in format_discovered(found, opts.get("--json", False)):
        print(line)
    if not found:
        if not opts.get("--json"):
            print(f"no server answered within {timeout:g} s", file=sys.stderr)
        return 3
    return 0


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "serve": serve_main,
    "call": call_main,
    "notify": notify_main,
    "ping": ping_main,
    "info": info_main,
    "list": list_main,
    "topics": topics_main,
    "watch": watch_main,
    "call-home": call_home_main,
    "discover": discover_main,
}


def main(argv: list[str] | None = None) -> int:
    """The command line (the `at-rpc` console script); returns the exit
    status: 0 ok, 1 error reply, 2 usage, 3 transport."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        write_help(USAGE, sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    try:
        if command not in COMMANDS:
            raise UsageError(f"unknown command {command!r}")
        return COMMANDS[command](rest)
    except UsageError as e:
        sys.stderr.write(f"error: {e}\n\n")
        write_help(USAGE, sys.stderr)
        return 2
