"""AT remote calls in Python: the protocol, a threaded TCP+UDP server, a
blocking and an asyncio client, discovery and the command line (Python 3.11,
standard library only).

The wire contract is AT-PROTOCOL.md (version 1); docs/PROTOCOL.md records
this project's decisions where the contract is silent. Bodies are written in
exactly the canonical form the Rust side writes, so replies match the shared
test vectors (tests/vectors/frames.json) byte for byte.

    pip install ./peers/python      # this package and the command at-rpc
    at-rpc serve [--tcp ADDR] [--udp ADDR] [--max-frame BYTES] [--name NAME]
                 [--key KID:HEX ...] [--key-file PATH ...]
    at-rpc call [--server HOST[:PORT]] [--udp] [--timeout SECS] [--retries N]
                [--json] [--key KID:HEX | --key-file PATH] FUNC [ARG ...]
    at-rpc ping|info|list [--server HOST[:PORT]] [--udp] ...
    at-rpc call-home [--server HOST[:PORT]] [--timeout SECS] [--name NAME]
    at-rpc discover [--timeout SECS] [--interface IF] [--ipv4 | --ipv6] ...

(`python -m at_rpc` is the same command line.) As a library:

    server = Server(tcp=("127.0.0.1", 0), udp=("127.0.0.1", 0)).start()

    def hello(name: str) -> str:        # rpc.functions: hello(string) -> string
        '''Greets someone.'''
        return "hello, " + name

    server.register("hello", hello)
    with Client("127.0.0.1", server.tcp_address[1]) as client:
        client.call("add", 10, 20)          # 30
        client.functions()                  # [{"name": "add", ...}, ..., {"name": "hello", ...}]

    async with AsyncClient("127.0.0.1", server.tcp_address[1]) as client:
        await asyncio.gather(client.call("add", 1, 2), client.call("mul", 3, 4))  # [3, 12]
    server.shutdown()
    discover()                              # [Discovered(address, name, server, auth), ...]

Every server answers rpc.ping, rpc.info and rpc.functions (contract section
7) and discovery (section 8). With pre-shared keys (contract section 9),
Server(..., keys={kid: key}) requires authentication and Client(...,
key=(kid, key)) and AsyncClient(..., key=(kid, key)) provide it; keys are
32 bytes.

The modules, one concept each: frame (header, CRC, stream reader), body
(the JSON rules), auth (section 9 primitives and keys), signature,
calculator, dispatch (request -> reply, rpc.*), sessions (the server's
reply cache and session table), oneway and events (section 10: NOTIFY
repeats, topics and subscriptions), net (socket helpers), server, client
(blocking), aio (AsyncClient), discovery, cli.

Section 10: NOTIFY calls (Client.notify), deadline_ms (call(...,
deadline_ms=N)), topics (Server.topic(name).publish(value)) and
subscriptions (Client.subscribe(topic) -> Subscription), calls in both
directions over TCP (CallHome(host, port, functions) calls rpc.peer and is
called back; Server.next_peer() -> Peer, Peer.call(func, *args)).
"""

from __future__ import annotations

from .aio import AsyncClient
from .auth import (
    AUTH_TRAILER,
    HELLO,
    KEY_LEN,
    NONCE_LEN,
    PLAIN_FUNCS,
    SID_LEN,
    TAG_LEN,
    AuthFrame,
    check_key,
    derive_keys,
    frame_tag,
    hello_proof,
    hkdf_expand,
    hkdf_extract,
    is_lower_hex,
    load_key_file,
    pack_auth_frame,
    parse_key,
    parse_key_hex,
    split_auth,
    tag_ok,
    valid_kid,
)
from .body import (
    END_REASONS,
    Call,
    Event,
    encode_value,
    error_body,
    error_frame,
    event_body,
    format_double,
    parse_call,
    parse_event,
    parse_notify,
    parse_reply,
    parse_request,
    parse_value,
    request_body,
    success_body,
)
from .calculator import CALCULATOR
from .cli import main
from .client import Client, Received, Subscription
from .discovery import Discovered, discover, format_discovered, parse_discovery_reply
from .dispatch import (
    ServerInfo,
    answer_rpc,
    call_function,
    respond,
    respond_to_datagram,
    respond_to_error,
)
from .errors import (
    ATError,
    AuthError,
    BadProof,
    BodyError,
    EncodeError,
    FrameError,
    KeyFormatError,
    ProtocolError,
    RemoteError,
)
from .events import Topic
from .frame import (
    AUTH,
    CODES,
    DEFAULT_PORT,
    ERROR,
    HEADER_LEN,
    I64_MAX,
    I64_MIN,
    KIND_MASK,
    MAGIC,
    MAX_ARGS,
    MAX_BODY,
    MAX_DATAGRAM,
    MAX_DEADLINE_MS,
    MAX_DEPTH,
    MAX_FUNC_NAME,
    MAX_SEQ,
    NOTIFY,
    REQUEST,
    RESPONSE,
    Frame,
    FrameReader,
    Header,
    checksum,
    pack_frame,
    parse_datagram,
    unpack_header,
)
from .peer import CallHome, Peer
from .server import Server
from .sessions import ReplyCache, SessionTable
from .signature import TYPES, Signature, describe_function, signature
from .version import SERVER_SOFTWARE, __version__

__all__ = [
    "AUTH",
    "AUTH_TRAILER",
    "CALCULATOR",
    "CODES",
    "DEFAULT_PORT",
    "END_REASONS",
    "ERROR",
    "HEADER_LEN",
    "HELLO",
    "I64_MAX",
    "I64_MIN",
    "KEY_LEN",
    "KIND_MASK",
    "MAGIC",
    "MAX_ARGS",
    "MAX_BODY",
    "MAX_DATAGRAM",
    "MAX_DEADLINE_MS",
    "MAX_DEPTH",
    "MAX_FUNC_NAME",
    "MAX_SEQ",
    "NONCE_LEN",
    "NOTIFY",
    "PLAIN_FUNCS",
    "REQUEST",
    "RESPONSE",
    "SERVER_SOFTWARE",
    "SID_LEN",
    "TAG_LEN",
    "TYPES",
    "ATError",
    "AsyncClient",
    "AuthError",
    "AuthFrame",
    "BadProof",
    "BodyError",
    "Call",
    "CallHome",
    "Client",
    "Discovered",
    "EncodeError",
    "Event",
    "Frame",
    "FrameError",
    "FrameReader",
    "Header",
    "KeyFormatError",
    "Peer",
    "ProtocolError",
    "Received",
    "RemoteError",
    "ReplyCache",
    "Server",
    "ServerInfo",
    "SessionTable",
    "Signature",
    "Subscription",
    "Topic",
    "__version__",
    "answer_rpc",
    "call_function",
    "check_key",
    "checksum",
    "derive_keys",
    "describe_function",
    "discover",
    "encode_value",
    "error_body",
    "error_frame",
    "event_body",
    "format_discovered",
    "format_double",
    "frame_tag",
    "hello_proof",
    "hkdf_expand",
    "hkdf_extract",
    "is_lower_hex",
    "load_key_file",
    "main",
    "pack_auth_frame",
    "pack_frame",
    "parse_call",
    "parse_datagram",
    "parse_discovery_reply",
    "parse_event",
    "parse_key",
    "parse_key_hex",
    "parse_notify",
    "parse_reply",
    "parse_request",
    "parse_value",
    "request_body",
    "respond",
    "respond_to_datagram",
    "respond_to_error",
    "signature",
    "split_auth",
    "success_body",
    "tag_ok",
    "unpack_header",
    "valid_kid",
]
