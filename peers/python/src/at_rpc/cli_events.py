"""The command line's subcommands of contract section 10: notify (a call
nobody answers), topics (rpc.topics), watch (a subscription's events),
with at-host's options, output and exit statuses, and call-home (a board's
side of 10.5)."""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
from typing import Any

from .body import encode_value, error_body, event_body
from .calculator import CALCULATOR
from .client import Client, Subscription
from .cliopts import (
    UsageError,
    _client_key,
    _client_options,
    _count_option,
    _failure_text,
    _options,
    _query,
    _seconds_option,
    _setup_logging,
    _take_value,
    cli_arg,
    split_host_port,
)
from .discovery import format_table
from .errors import BadProof, ProtocolError, RemoteError
from .frame import DEFAULT_PORT, MAX_SEQ
from .net import _format_addr
from .peer import CallHome
from .usage import CALL_HOME_HELP, NOTIFY_HELP, TOPICS_HELP, WATCH_HELP, write_help


def call_home_main(argv: list[str]) -> int:
    """`call-home ...`: plays a board calling home (10.5): connects, calls
    rpc.peer, sends NOTIFY log("boot ..."), then serves the calculator on
    that connection until the server closes it (exit 3) or SIGINT/SIGTERM
    (exit 0); 1 when rpc.peer is refused."""
    opts = _options(argv, (), ("--server", "--timeout", "--name"))
    if opts is None:
        write_help(CALL_HOME_HELP)
        return 0
    host, port = split_host_port(opts.get("--server", f"127.0.0.1:{DEFAULT_PORT}"))
    where = _format_addr((host, port))
    timeout = _seconds_option(opts, "--timeout", 5.0)
    name = opts.get("--name") or socket.gethostname()
    _setup_logging("warning")
    home = CallHome(host, port, CALCULATOR, timeout=timeout, name=name)
    stop = threading.Event()

    def on_signal(_signum: int, _frame: object) -> None:
        stop.set()
        home.close()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        home.start()
        home.notify("log", f"boot {name}")
    except RemoteError as e:
        print(f"error: {e.code}: {e.message}", file=sys.stderr)
        return 1
    except (OSError, ProtocolError) as e:
        home.close()
        print(f"transport error: {where}: {_failure_text(e)}", file=sys.stderr)
        return 3
    print(f"called home to {where}", flush=True)
    while not home.wait(0.5):
        pass
    home.close()
    if stop.is_set():
        return 0
    print(f"transport error: {where}: connection closed", file=sys.stderr)
    return 3


def notify_main(argv: list[str]) -> int:
    """`notify ...`: sends FUNC(ARG, ...) as a NOTIFY; exit 0 once sent,
    3 when it could not be sent (refused, reset, no session)."""
    server = f"127.0.0.1:{DEFAULT_PORT}"
    udp = False
    timeout = 5.0
    key_text = key_file = None
    positional: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        name = token.split("=", 1)[0]
        if positional or token == "--":
            rest = argv[i + 1 :] if token == "--" and not positional else argv[i:]
            if len(positional) == 1 and rest[:1] == ["--"]:
                rest = rest[1:]
            positional.extend(rest)
            break
        if token in ("-h", "--help"):
            write_help(NOTIFY_HELP)
            return 0
        if token == "--udp":
            udp, i = True, i + 1
        elif name == "--server":
            server, i = _take_value(argv, i, name)
        elif name == "--key":
            key_text, i = _take_value(argv, i, name)
        elif name == "--key-file":
            key_file, i = _take_value(argv, i, name)
        elif name == "--timeout":
            value, i = _take_value(argv, i, name)
            timeout = _seconds_option({name: value}, name, timeout)
        elif token.startswith("-") and len(token) > 1:
            raise UsageError(f"unexpected argument {token!r}")
        else:
            positional.append(token)
            i += 1
    if not positional:
        raise UsageError("FUNC is missing")
    key = _client_key(key_text, key_file)
    host, port = split_host_port(server)
    _setup_logging("warning")
    try:
        with Client(host, port, udp=udp, timeout=timeout, key=key) as client:
            client.notify(positional[0], *[cli_arg(a) for a in positional[1:]])
    except RemoteError as e:  # the hello of a session
        print(f"error: {e.code}: {e.message}", file=sys.stderr)
        return 1
    except (OSError, ProtocolError, ValueError) as e:
        print(f"transport error: {_format_addr((host, port))}: {_failure_text(e)}", file=sys.stderr)
        return 3
    return 0


def _all_topics(client: Client, max_pages: int = 10000) -> list[dict[str, Any]]:
    """Every rpc.topics entry ({"name", "doc"}), following `next`."""
    entries: list[dict[str, Any]] = []
    start = 0
    for _ in range(max_pages):
        page = client.call("rpc.topics", start) if start else client.call("rpc.topics")
        following = page.get("next") if isinstance(page, dict) else None
        if (
            not isinstance(page, dict)
            or not isinstance(page.get("topics"), list)
            or (following is not None and (type(following) is not int or following <= start))
        ):
            raise ProtocolError(f"malformed rpc.topics page (start {start})")
        for entry in page["topics"]:
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
                raise ProtocolError(f"malformed rpc.topics entry (page from {start})")
            doc = entry.get("doc")
            entries.append({"name": entry["name"], "doc": doc if isinstance(doc, str) else ""})
        if following is None:
            return entries
        start = following
    raise ProtocolError(f"rpc.topics: more than {max_pages} pages")


def topics_main(argv: list[str]) -> int:
    """`topics ...`: the server's topics, name and doc in columns."""
    opts = _client_options(argv)
    if opts is None:
        write_help(TOPICS_HELP)
        return 0
    status, entries = _query(opts, _all_topics)
    if status:
        return status
    if opts.get("--json"):
        print(encode_value(entries))
    else:
        for line in format_table([[e["name"], e["doc"]] for e in entries]):
            print(line)
    return 0


def watch_main(argv: list[str]) -> int:
    """`watch ... TOPIC`: prints each event as `n value` (with --json its
    body); a gap as `gap: events A to B lost` and the end as `end: REASON`
    on stderr. Exit 0 after --count events, 1 on an error reply, 3 when
    the server goes away or ends the subscription."""
    topic = None
    rest: list[str] = []
    for token in argv:
        if token.startswith("-") or topic is not None or (rest and _wants_value(rest[-1])):
            rest.append(token)
        else:
            topic = token
    opts = _client_options(rest, values=("--interval", "--count", "--lease"))
    if opts is None:
        write_help(WATCH_HELP)
        return 0
    if topic is None:
        raise UsageError("TOPIC is missing")
    interval = _count_option(opts, "--interval", 0, most=MAX_SEQ)
    lease = _count_option(opts, "--lease", 60, least=1, most=300)
    count = _count_option(opts, "--count", 0, least=1) if "--count" in opts else None
    timeout = _seconds_option(opts, "--timeout", 5.0)
    as_json = opts.get("--json", False)
    _setup_logging("warning")
    client = Client(
        opts["host"], opts["port"], udp=opts.get("--udp", False), timeout=timeout, key=opts["key"]
    )
    sub: Subscription | None = None
    seen = 0
    try:
        sub = client.subscribe(topic, lease, interval)
        for event in sub:
            if event.lost is not None:
                print(f"gap: events {event.lost[0]} to {event.lost[1]} lost", file=sys.stderr)
            if event.end is not None:
                print(f"end: {event.end}", file=sys.stderr)
                return 3
            if as_json:
                print(event_body(event.topic, event.n, event.value).decode(), flush=True)
            else:
                print(f"{event.n} {encode_value(event.value, any_int=True)}", flush=True)
            seen += 1
            if count is not None and seen >= count:
                sub.close()
                return 0
        return 3
    except RemoteError as e:
        if as_json:  # as call --json: the error body on stdout too
            body = e.body if e.body is not None else error_body(e.code, e.message)
            print(body.decode("utf-8", "replace"), flush=True)
        print(f"error: {e.code}: {e.message}", file=sys.stderr)
        return 1
    except BadProof as e:
        print(f"error: unauthorized: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # stdout closed (watch TOPIC | head -3): a quiet end.
        _quiet_stdout()
        return 0
    except (OSError, ProtocolError) as e:
        print(f"transport error: {opts['where']}: {_failure_text(e)}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        if sub is not None:
            sub.close()
        return 0
    finally:
        client.close()


def _quiet_stdout() -> None:
    """After a broken pipe: stdout goes to /dev/null, so that Python's
    final flush does not complain."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def _wants_value(option: str) -> bool:
    """Whether `option` (as given) takes the next word as its value."""
    return "=" not in option and option in (
        "--server",
        "--timeout",
        "--key",
        "--key-file",
        "--interval",
        "--count",
        "--lease",
    )
