"""Calls per second from the Python clients (the installed package) to a
running server: the blocking Client one call at a time, the AsyncClient
with 1 and with 100 calls in flight (asyncio.gather), over TCP and UDP.

    VENV/bin/python peers/python/tests/bench_calls.py TCP_PORT UDP_PORT [CALLS]

A measurement, not a test (pytest does not collect it).
"""

from __future__ import annotations

import asyncio
import sys
import time

from at_rpc import AsyncClient, Client


async def pipelined(port: int, udp: bool, calls: int, batch: int) -> float:
    async with AsyncClient("127.0.0.1", port, udp=udp) as client:
        began = time.perf_counter()
        for start in range(0, calls, batch):
            await asyncio.gather(*(client.call("add", i, 1) for i in range(start, start + batch)))
        return calls / (time.perf_counter() - began)


def main() -> None:
    tcp, udp = int(sys.argv[1]), int(sys.argv[2])
    calls = int(sys.argv[3]) if len(sys.argv) > 3 else 20000
    for is_udp, port in ((False, tcp), (True, udp)):
        name = "udp" if is_udp else "tcp"
        with Client("127.0.0.1", port, udp=is_udp) as client:
            began = time.perf_counter()
            for i in range(calls):
                client.call("add", i, 1)
            rate = calls / (time.perf_counter() - began)
        print(f"Client       {name}: {rate:8,.0f} calls/s (one at a time)")
        for batch in (1, 100):
            rate = asyncio.run(pipelined(port, is_udp, calls, batch))
            print(f"AsyncClient  {name}: {rate:8,.0f} calls/s ({batch} in flight)")


if __name__ == "__main__":
    main()
