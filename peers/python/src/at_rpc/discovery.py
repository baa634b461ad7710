"""Discovery on a local network (contract section 8)."""

from __future__ import annotations

import ipaddress
import logging
import secrets
import select
import socket
import time
from typing import NamedTuple

from .body import encode_value, parse_reply, request_body
from .errors import BodyError, FrameError
from .frame import (
    AUTH,
    DEFAULT_PORT,
    MAX_DATAGRAM,
    MAX_SEQ,
    REQUEST,
    RESPONSE,
    pack_frame,
    parse_datagram,
)
from .net import Address, _format_addr

log = logging.getLogger("at_rpc")


class Discovered(NamedTuple):
    """One server that answered discovery: its address as text
    ("10.0.0.2:16724", "[fe80::1%eth0]:16724") and what its rpc.info said."""

    address: str
    name: str
    server: str
    auth: str


def _sender_text(sender: Address) -> str:
    """A datagram's sender as text, with the interface for a scoped IPv6
    address: 10.0.0.2:16724, [fe80::1%eth0]:16724."""
    host, port = sender[0], sender[1]
    if len(sender) >= 4 and sender[3] and "%" not in host:
        try:
            host = f"{host}%{socket.if_indextoname(sender[3])}"
        except OSError:
            host = f"{host}%{sender[3]}"
    return _format_addr((host, port))


def parse_discovery_reply(data: bytes, sender: Address, seq: int) -> Discovered | None:
    """The server a datagram tells of: a plain success reply to `seq` whose
    result is an object (rpc.info); None for anything else."""
    try:
        frame = parse_datagram(data, MAX_DATAGRAM)
        if frame.kind != RESPONSE or frame.seq != seq or frame.flags & AUTH:
            return None
        ok, result, _, _ = parse_reply(frame.body)
    except (FrameError, BodyError):
        return None
    if not ok or not isinstance(result, dict):
        return None

    def text(key: str) -> str:
        value = result.get(key)
        if isinstance(value, str):
            return value
        return "" if value is None else encode_value(value, any_int=True)

    return Discovered(_sender_text(sender), text("name"), text("server"), text("auth"))


def address_key(address: str) -> tuple[int, int, str, int, str]:
    """Sorts addresses as text: IPv4 before IPv6, each numerically (then by
    interface and port); anything else last."""
    host, _, port = address.rpartition(":")
    port_number = int(port) if port.isdigit() else 0
    try:
        if host.startswith("["):
            ip = ipaddress.IPv6Address(host[1:-1])
            return (6, int(ip), ip.scope_id or "", port_number, address)
        return (4, int(ipaddress.IPv4Address(host)), "", port_number, address)
    except ValueError:
        return (9, 0, "", port_number, address)


def sort_discovered(found: list[Discovered]) -> list[Discovered]:
    """`found` sorted by address (see address_key)."""
    return sorted(found, key=lambda d: address_key(d.address))


def format_table(rows: list[list[str]]) -> list[str]:
    """Left-aligned columns two spaces apart, each as wide as its widest
    value (the last not padded); trailing spaces stripped."""
    if not rows:
        return []
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)).rstrip()
        for row in rows
    ]


def format_discovered(found: list[Discovered], as_json: bool = False) -> list[str]:
    """discover's output lines, sorted by address: ADDRESS NAME SERVER
    auth=..., or one JSON array."""
    found = sort_discovered(found)
    if as_json:
        return [
            encode_value(
                [
                    {"address": d.address, "name": d.name, "server": d.server, "auth": d.auth}
                    for d in found
                ],
                any_int=True,
            )
        ]
    return format_table([[d.address, d.name, d.server, f"auth={d.auth}"] for d in found])


def discover(
    timeout: float = 1.0,
    port: int = DEFAULT_PORT,
    interface: str | None = None,
    ipv4: bool = True,
    ipv6: bool = True,
) -> list[Discovered]:
    """Finds the servers on the local link: sends one rpc.info request to
    255.255.255.255:port (IPv4, SO_BROADCAST; with `interface`,
    SO_BINDTODEVICE) and to [ff02::1%IF]:port (IPv6: on `interface`, else on
    every interface but lo), then collects the success replies to it for
    `timeout` seconds, one per responder address. Sorted by address.
    Raises OSError when the request could not be sent at all."""
    seq = secrets.randbelow(MAX_SEQ) + 1
    frame = pack_frame(REQUEST, seq, request_body("rpc.info"))
    socks: list[socket.socket] = []  # all opened, to close
    live: list[socket.socket] = []  # those that sent the request
    errors: list[str] = []
    try:
        if ipv4:
            try:
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
                if interface is not None:
                    if not hasattr(socket, "SO_BINDTODEVICE"):
                        raise OSError("choosing the interface needs SO_BINDTODEVICE (Linux)")
                    sock.setsockopt(
                        socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode() + b"\0"
                    )
                sock.bind(("0.0.0.0", 0))
                sock.sendto(frame, ("255.255.255.255", port))
                live.append(sock)
            except OSError as e:
                log.debug("discover: IPv4 broadcast: %s", e)
                errors.append(f"IPv4: {e.strerror or e}")
        if ipv6 and socket.has_ipv6:
            if interface is not None:
                indexes = [(interface, socket.if_nametoindex(interface))]
            else:
                indexes = [(n, i) for i, n in socket.if_nameindex() if n != "lo"]
            try:
                sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
                socks.append(sock)
                sock.bind(("::", 0))
                for name, index in indexes:
                    try:
                        sock.sendto(frame, ("ff02::1", port, 0, index))
                        if sock not in live:
                            live.append(sock)
                    except OSError as e:
                        log.debug("discover: IPv6 multicast on %s: %s", name, e)
                        if interface is not None:
                            errors.append(f"IPv6 on {name}: {e.strerror or e}")
            except OSError as e:
                log.debug("discover: IPv6: %s", e)
                errors.append(f"IPv6: {e.strerror or e}")
        if not live:
            raise OSError(
                "discovery request not sent" + (": " + "; ".join(errors) if errors else "")
            )
        found: dict[str, Discovered] = {}
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            readable, _, _ = select.select(live, [], [], left)
            for sock in readable:
                try:
                    data, sender = sock.recvfrom(MAX_DATAGRAM + 1)
                except OSError as e:  # e.g. an ICMP error
                    log.debug("discover: receive: %s", e)
                    continue
                item = parse_discovery_reply(data, sender, seq)
                if item is not None and item.address not in found:
                    found[item.address] = item
        return sort_discovered(list(found.values()))
    finally:
        for sock in socks:
            sock.close()
