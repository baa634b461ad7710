"""The command line's usage texts, written with the name it was invoked
by (`at-rpc` when installed, `at_rpc.py` otherwise)."""

from __future__ import annotations

import os
import sys
from typing import TextIO

USAGE = """\
usage: at_rpc.py serve [--tcp ADDR] [--udp ADDR] [--max-frame BYTES] [--name NAME]
                       [--key KID:HEX ...] [--key-file PATH ...]
       at_rpc.py call [--server HOST[:PORT]] [--udp] [--timeout SECS] [--retries N]
                      [--json] [--deadline MS] [--key KID:HEX | --key-file PATH]
                      FUNC [ARG ...]
       at_rpc.py notify [--server HOST[:PORT]] [--udp] [--timeout SECS]
                        [--key KID:HEX | --key-file PATH] FUNC [ARG ...]
       at_rpc.py ping [--server HOST[:PORT]] [--udp] [--count N] [--interval SECS]
                      [--size BYTES] [--timeout SECS] [--json]
       at_rpc.py info [--server HOST[:PORT]] [--udp] [--timeout SECS] [--json]
                      [--key KID:HEX | --key-file PATH]
       at_rpc.py list [--server HOST[:PORT]] [--udp] [--timeout SECS] [--json]
                      [--key KID:HEX | --key-file PATH]
       at_rpc.py topics [--server HOST[:PORT]] [--udp] [--timeout SECS] [--json]
                        [--key KID:HEX | --key-file PATH]
       at_rpc.py watch [--server HOST[:PORT]] [--udp] [--interval MS] [--count N]
                       [--lease SECS] [--timeout SECS] [--json]
                       [--key KID:HEX | --key-file PATH] TOPIC
       at_rpc.py call-home [--server HOST[:PORT]] [--timeout SECS] [--name NAME]
       at_rpc.py discover [--timeout SECS] [--interface IF] [--ipv4 | --ipv6] [--port P]
                          [--json]

'at_rpc.py COMMAND --help' describes a command.
"""

SERVE_HELP = """\
usage: at_rpc.py serve [--tcp ADDR] [--udp ADDR] [--max-frame BYTES] [--name NAME]
                       [--key KID:HEX ...] [--key-file PATH ...]

Serves the calculator (add, sub, mul, div) and rpc.ping, rpc.info and
rpc.functions until SIGINT or SIGTERM.

  --tcp ADDR         TCP address IP:PORT, or none (default 0.0.0.0:16724)
  --udp ADDR         UDP address IP:PORT, or none (default 0.0.0.0:16724);
                     [::]:PORT takes IPv4 and IPv6 (both kinds of discovery)
  --max-frame BYTES  largest request body accepted (default 65536)
  --name NAME        the name rpc.info reports (default: the host name)
  --key KID:HEX      require authentication; accept this key (repeatable)
  --key-file PATH    require authentication; accept the keys of this file
                     (lines 'KID HEX', '#' comments; mode 600; repeatable)

Port 0 lets the OS choose. Prints 'listening on tcp://IP:PORT' and
'listening on udp://IP:PORT' once bound. Log level: AT_LOG=debug|info|warning.
A key is 64 hex digits (32 bytes); a key id 1 to 32 of A-Z a-z 0-9 . _ -.
"""

CALL_HELP = """\
usage: at_rpc.py call [--server HOST[:PORT]] [--udp] [--timeout SECS] [--retries N]
                      [--json] [--deadline MS] [--key KID:HEX | --key-file PATH]
                      FUNC [ARG ...]

Calls FUNC(ARG, ...) and prints the result as JSON.

  --server HOST[:PORT]  the server (default 127.0.0.1:16724)
  --udp                 call over UDP (default TCP)
  --timeout SECS        bound of the whole call (default 5)
  --retries N           UDP retransmissions (default 4)
  --json                print the whole reply body
  --deadline MS         send "deadline_ms": MS; a server listing `deadline` does
                        not start the call once MS ms have passed (0: never)
  --key KID:HEX         authenticate with this key
  --key-file PATH       authenticate with the first key of this file (mode 600)
  --                    everything after it is FUNC and ARGs

Without --key and --key-file, the environment variable AT_KEY (KID:HEX), if
set, gives the key. Each ARG is read as JSON if it is (10, 2.5, true, "x",
[1, 2]), else taken as a string. Exit status: 0 result, 1 error reply
(also `unauthorized`), 2 usage, 3 transport (also a reply that fails
authentication).
"""

PING_HELP = """\
usage: at_rpc.py ping [--server HOST[:PORT]] [--udp] [--count N] [--interval SECS]
                      [--size BYTES] [--timeout SECS] [--json]

Calls rpc.ping COUNT times and prints the round-trip times, like ping(8).

  --server HOST[:PORT]  the server (default 127.0.0.1:16724)
  --udp                 over UDP (default TCP; never retransmitted)
  --count N             how many pings (default 4)
  --interval SECS       from one ping to the next (default 1.0)
  --size BYTES          send a string of BYTES 'x' to echo (default 0: no argument)
  --timeout SECS        how long to wait for each reply (default 1.0)
  --json                one JSON object per ping, then one with the statistics

Exit status: 0 at least one reply, 1 an error reply, 2 usage, 3 no reply.
"""

INFO_HELP = """\
usage: at_rpc.py info [--server HOST[:PORT]] [--udp] [--timeout SECS] [--json]
                      [--key KID:HEX | --key-file PATH]

Prints what rpc.info says of the server, one 'key: value' line per member.

  --server HOST[:PORT]  the server (default 127.0.0.1:16724)
  --udp                 over UDP (default TCP)
  --timeout SECS        bound of the call (default 1)
  --json                print the result object as JSON
  --key KID:HEX         authenticate with this key (else --key-file, else AT_KEY)
  --key-file PATH       authenticate with the first key of this file (mode 600)

Exit status: 0 ok, 1 error reply, 2 usage, 3 transport.
"""

LIST_HELP = """\
usage: at_rpc.py list [--server HOST[:PORT]] [--udp] [--timeout SECS] [--json]
                      [--key KID:HEX | --key-file PATH]

Lists the server's functions (rpc.functions, every page): name, signature
and doc, one function per line.

  --server HOST[:PORT]  the server (default 127.0.0.1:16724)
  --udp                 over UDP (default TCP)
  --timeout SECS        bound of each call (default 1)
  --json                print the JSON array of all entries
  --key KID:HEX         authenticate with this key (else --key-file, else AT_KEY);
                        a server that requires authentication lists only then
  --key-file PATH       authenticate with the first key of this file (mode 600)

Exit status: 0 ok, 1 error reply, 2 usage, 3 transport.
"""

NOTIFY_HELP = """\
usage: at_rpc.py notify [--server HOST[:PORT]] [--udp] [--timeout SECS]
                        [--key KID:HEX | --key-file PATH] FUNC [ARG ...]

Sends FUNC(ARG, ...) as a notification (NOTIFY): the server runs it and
answers nothing, so nothing is printed and nothing is retransmitted.

  --server HOST[:PORT]  the server (default 127.0.0.1:16724)
  --udp                 over UDP (default TCP)
  --timeout SECS        bound of connecting (and of a session's rpc.hello; default 5)
  --key KID:HEX         seal it in a session with this key (else --key-file, else AT_KEY)
  --key-file PATH       the first key of this file (mode 600)

Exit status: 0 sent, 1 error reply to rpc.hello, 2 usage, 3 transport.
"""

TOPICS_HELP = """\
usage: at_rpc.py topics [--server HOST[:PORT]] [--udp] [--timeout SECS] [--json]
                        [--key KID:HEX | --key-file PATH]

Lists the server's event topics (rpc.topics, every page): name and doc.

  --server HOST[:PORT]  the server (default 127.0.0.1:16724)
  --udp                 over UDP (default TCP)
  --timeout SECS        bound of each call (default 1)
  --json                print the JSON array of all entries
  --key KID:HEX         authenticate with this key (else --key-file, else AT_KEY)
  --key-file PATH       authenticate with the first key of this file (mode 600)

Exit status: 0 ok, 1 error reply, 2 usage, 3 transport.
"""

WATCH_HELP = """\
usage: at_rpc.py watch [--server HOST[:PORT]] [--udp] [--interval MS] [--count N]
                       [--lease SECS] [--timeout SECS] [--json]
                       [--key KID:HEX | --key-file PATH] TOPIC

Subscribes to TOPIC (rpc.subscribe) and prints each event as 'n value', renewing
the subscription at half its lease. A gap in n is 'gap: events A to B lost' and
the end of the subscription 'end: REASON', both on stderr.

  --server HOST[:PORT]  the server (default 127.0.0.1:16724)
  --udp                 over UDP (default TCP)
  --interval MS         at most one event per MS ms (default 0)
  --count N             exit after N events (default: until the end)
  --lease SECS          the lease asked for, 1 to 300 (default 60)
  --timeout SECS        bound of each call (default 5)
  --json                print each event's body as JSON
  --key KID:HEX         authenticate with this key (else --key-file, else AT_KEY)
  --key-file PATH       authenticate with the first key of this file (mode 600)

Exit status: 0 after --count events, 1 error reply, 2 usage, 3 the server
went away or ended the subscription.
"""

CALL_HOME_HELP = """\
usage: at_rpc.py call-home [--server HOST[:PORT]] [--timeout SECS] [--name NAME]

Plays a board that calls home (contract 10.5): connects over TCP, calls
rpc.peer, sends the notification log("boot NAME"), prints 'called home to
HOST:PORT' and serves the calculator (and rpc.ping, rpc.info, rpc.functions)
to the server's calls on that connection until the server closes it.

  --server HOST[:PORT]  the server (default 127.0.0.1:16724)
  --timeout SECS        bound of connecting and of rpc.peer (default 5)
  --name NAME           the name in the boot line and rpc.info (default: the host name)

Exit status: 0 on SIGINT or SIGTERM, 1 rpc.peer refused, 2 usage, 3 transport
(also when the server closes the connection).
"""

DISCOVER_HELP = """\
usage: at_rpc.py discover [--timeout SECS] [--interface IF] [--ipv4 | --ipv6] [--port P]
                          [--json]

Finds the AT servers on the local network: sends rpc.info to the IPv4
broadcast address 255.255.255.255 and to the IPv6 all-nodes address ff02::1,
then lists each server that answers: address, name, implementation, auth.

  --timeout SECS   how long to collect replies (default 1.0)
  --interface IF   only on this interface (IPv4: SO_BINDTODEVICE); by default
                   IPv6 goes out on every interface but lo
  --ipv4, --ipv6   only this family (default both)
  --port P         the servers' UDP port (default 16724)
  --json           print a JSON array of {"address", "name", "server", "auth"}

Exit status: 0 at least one server, 2 usage, 3 none.
"""


def _prog() -> str:
    """The program's name as invoked (at_rpc.py for python -m at_rpc)."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return name if name and name not in ("-c", "__main__.py") else "at_rpc.py"


def write_help(text: str, stream: TextIO | None = None) -> None:
    """A usage text, with the program's name as it was invoked (at-rpc
    when installed), continuation lines kept aligned."""
    prog = _prog()
    delta = len(prog) - len("at_rpc.py")
    lines: list[str] = []
    usage = False
    for line in text.splitlines(keepends=True):
        if line.lstrip().startswith(("usage: at_rpc.py", "at_rpc.py ")):
            usage = True
        elif not line.strip():
            usage = False
        elif usage and line.startswith(" ") and delta:
            indent = len(line) - len(line.lstrip(" "))
            line = " " * max(1, indent + delta) + line.lstrip(" ")
        lines.append(line.replace("at_rpc.py", prog))
    (stream or sys.stdout).write("".join(lines))
