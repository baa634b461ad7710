"""The interop suite (interop.py, run by this Python: the installed
package) against the Python server and at-host (AT_HOST_BIN), with the
replies compared byte for byte with the shared vectors (--exact)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from support import HERE, LOOPBACK, Spawned, require

from at_rpc import Server


@pytest.fixture(params=["python", "at-host"])
def server(request: pytest.FixtureRequest) -> Iterator[dict[str, tuple[str, int]]]:
    if request.param == "python":
        srv = Server(tcp=(LOOPBACK, 0), udp=(LOOPBACK, 0)).start()
        assert srv.tcp_address is not None and srv.udp_address is not None
        try:
            yield {"tcp": srv.tcp_address, "udp": srv.udp_address}
        finally:
            srv.shutdown()
        return
    path = os.environ.get("AT_HOST_BIN")
    if not path or not os.access(path, os.X_OK):
        require("AT_HOST_BIN does not name the at-host binary")
    assert path is not None
    spawned = Spawned([path, "serve", "--tcp", "127.0.0.1:0", "--udp", "127.0.0.1:0"])
    try:
        yield spawned.addresses
    finally:
        spawned.stop()


def test_interop_suite(server: dict[str, tuple[str, int]]) -> None:
    tcp, udp = server["tcp"], server["udp"]
    r = subprocess.run(
        [
            sys.executable,
            os.path.join(HERE, "interop.py"),
            "--tcp",
            f"{tcp[0]}:{tcp[1]}",
            "--udp",
            f"{udp[0]}:{udp[1]}",
            "--exact",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    last = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""
    passed, _, failed = last.partition(" passed, ")
    assert r.returncode == 0 and failed == "0 failed", r.stdout + r.stderr
    assert int(passed) >= 200, last
