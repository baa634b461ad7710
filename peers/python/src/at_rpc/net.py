"""Socket helpers of the server: destination addresses of datagrams
(broadcast or not), waiting with a wake-up socket, lingering close, and
the delayed sender of replies to broadcasts."""

from __future__ import annotations

import heapq
import ipaddress
import logging
import select
import socket
import sys
import threading
import time
from typing import Any

log = logging.getLogger("at_rpc")

#: A socket address as the socket module gives it: (host, port, ...).
Address = tuple[Any, ...]

# Linux's IP_PKTINFO (socket.py of Python 3.11 does not export it).
_IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8 if sys.platform.startswith("linux") else None)
_LIMITED_BROADCAST = ipaddress.IPv4Address("255.255.255.255")


def _enable_pktinfo(sock: socket.socket) -> bool:
    """Asks the OS to report each datagram's destination address, so that
    one sent to a broadcast or multicast address can be told apart; False
    where it cannot."""
    if not hasattr(sock, "recvmsg"):
        return False
    try:
        if sock.family == socket.AF_INET and _IP_PKTINFO is not None:
            sock.setsockopt(socket.IPPROTO_IP, _IP_PKTINFO, 1)
            return True
        if sock.family == socket.AF_INET6 and hasattr(socket, "IPV6_RECVPKTINFO"):
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
            return True
    except OSError:
        pass
    return False


def _to_group(ancdata: list[tuple[int, int, bytes]]) -> bool:
    """Whether the destination in IP_PKTINFO / IPV6_PKTINFO is the limited
    broadcast 255.255.255.255 or a multicast address. (A subnet's directed
    broadcast, 192.0.2.255, is not recognised: that needs the netmask.)"""
    for level, kind, data in ancdata:
        dest: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
        if level == socket.IPPROTO_IP and kind == _IP_PKTINFO and len(data) >= 12:
            dest = ipaddress.IPv4Address(data[8:12])
        elif (
            level == socket.IPPROTO_IPV6
            and kind == getattr(socket, "IPV6_PKTINFO", None)
            and len(data) >= 16
        ):
            ip6 = ipaddress.IPv6Address(data[:16])
            dest = ip6.ipv4_mapped or ip6
        if dest is not None:
            return dest.is_multicast or dest == _LIMITED_BROADCAST
    return False


def _receive_datagram(sock: socket.socket, size: int, pktinfo: bool) -> tuple[bytes, Any, bool]:
    """(data, sender, came by broadcast or multicast) of one datagram."""
    if not pktinfo:
        data, addr = sock.recvfrom(size)
        return data, addr, False
    data, ancdata, _, addr = sock.recvmsg(size, socket.CMSG_SPACE(64))
    return data, addr, _to_group(ancdata)


def _wait_readable(sock: socket.socket, wake: socket.socket, timeout: float | None) -> str:
    """'data', 'wake' or 'timeout'."""
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(sock, select.POLLIN | select.POLLPRI)
        poller.register(wake, select.POLLIN)
        ms = None if timeout is None else max(0, int(timeout * 1000))
        while True:
            try:
                events = poller.poll(ms)
                break
            except InterruptedError:  # pragma: no cover (PEP 475 retries)
                continue
        fds = {fd for fd, _ in events}
    else:  # pragma: no cover (Windows)
        readable, _, _ = select.select([sock, wake], [], [], timeout)
        fds = {s.fileno() for s in readable}
    if wake.fileno() in fds:
        return "wake"
    if sock.fileno() in fds:
        return "data"
    return "timeout"


def _linger_close(sock: socket.socket, limit: float = 1.0) -> None:
    """Send FIN, then read and discard what the peer still sends for a short
    while, so the last reply is not destroyed by a reset; then close."""
    try:
        sock.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + limit
        drained = 0
        while drained < (1 << 20):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            sock.settimeout(left)
            data = sock.recv(65536)
            if not data:
                break
            drained += len(data)
    except OSError:
        pass
    finally:
        sock.close()


def _format_addr(addr: Address) -> str:
    """host:port, [host]:port for IPv6."""
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


BROADCAST_DELAY = 0.1  # a reply to a broadcast waits a random 0 to 100 ms
MAX_DELAYED = 1024  # replies waiting so at most; more are dropped


class _DelayedSends:
    """Sends datagrams later, from one thread: the replies to broadcasts,
    each after its own random delay, without holding up the UDP loop."""

    def __init__(self, sock: socket.socket, limit: int = MAX_DELAYED):
        self.sock = sock
        self.limit = limit
        self._heap: list[tuple[float, int, bytes, Address]] = []
        self._count = 0  # ties in time keep their order
        self._stopped = False
        self._cond = threading.Condition()

    def add(self, delay: float, data: bytes, addr: Address) -> None:
        """Sends `data` to `addr` after `delay` seconds (dropped when the
        queue is full or after stop())."""
        with self._cond:
            if self._stopped:
                return
            if len(self._heap) >= self.limit:
                log.warning("too many delayed replies: dropping one to %s", _format_addr(addr))
                return
            self._count += 1
            heapq.heappush(self._heap, (time.monotonic() + delay, self._count, data, addr))
            self._cond.notify()

    def stop(self) -> None:
        """Drops what waits and ends run()."""
        with self._cond:
            self._stopped = True
            self._heap.clear()
            self._cond.notify_all()

    def run(self) -> None:
        """The sending thread: until stop()."""
        while True:
            with self._cond:
                while True:
                    if self._stopped:
                        return
                    if self._heap:
                        wait = self._heap[0][0] - time.monotonic()
                        if wait <= 0:
                            _, _, data, addr = heapq.heappop(self._heap)
                            break
                        self._cond.wait(wait)
                    else:
                        self._cond.wait()
            try:
                self.sock.sendto(data, addr)
            except OSError as e:
                log.warning("udp reply to %s: %s", _format_addr(addr), e)
