"""What the tests share: paths, the installed command, the contract's
section 9 vectors, and running outside servers (at-host, the device server)
as subprocesses."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", "..", ".."))
# The installed command: the console script beside this Python (a venv's bin).
AT_RPC = os.path.join(os.path.dirname(sys.executable), "at-rpc")
LOOPBACK = "127.0.0.1"
WAIT = 5.0  # the most any single network wait in these tests may take


def require(why: str) -> None:
    """Skips the test for want of an outside tool, or fails it under
    AT_REQUIRE_ALL=1 (as CI sets it)."""
    if os.environ.get("AT_REQUIRE_ALL") == "1":
        pytest.fail(f"AT_REQUIRE_ALL=1 and this test cannot run: {why}")
    pytest.skip(why)


class Spawned:
    """A server process and the addresses it printed; killed by stop()."""

    def __init__(self, argv: list[str], lines: int = 2, timeout: float = 60.0):
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        got: queue.Queue[str] = queue.Queue()

        def read() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                got.put(line.strip())

        threading.Thread(target=read, daemon=True).start()
        #: The lines printed after the addresses, as they come.
        self.lines = got
        self.addresses: dict[str, tuple[str, int]] = {}
        try:
            for _ in range(lines):
                line = got.get(timeout=timeout)
                kind, _, where = line.removeprefix("listening on ").partition("://")
                host, _, port = where.rpartition(":")
                self.addresses[kind] = (host.strip("[]"), int(port))
        except Exception:
            self.stop()
            raise

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(WAIT)


KEY = bytes(range(32))
KEY_HEX = KEY.hex()
KID = "demo"
NC = bytes.fromhex("a0a1a2a3a4a5a6a7a8a9aaabacadaeaf")
NS = bytes.fromhex("b0b1b2b3b4b5b6b7b8b9babbbcbdbebf")
SID = bytes.fromhex("c0c1c2c3c4c5c6c7")
OTHER_KEY = bytes(range(100, 132))

# The contract's section 9 frames, byte for byte.
AUTH_VECTORS = {
    name: bytes.fromhex(text)
    for name, text in {
        "hello": (
            "41 54 00 01 00 00 00 01 00 00 00 4b e5 9b 50 43"
            "7b 22 66 75 6e 63 22 3a 20 22 72 70 63 2e 68 65"
            "6c 6c 6f 22 2c 20 22 61 72 67 73 22 3a 20 5b 22"
            "64 65 6d 6f 22 2c 20 22 61 30 61 31 61 32 61 33"
            "61 34 61 35 61 36 61 37 61 38 61 39 61 61 61 62"
            "61 63 61 64 61 65 61 66 22 5d 7d"
        ),
        "hello_reply": (
            "41 54 00 02 00 00 00 01 00 00 00 9a c6 98 e3 b0"
            "7b 22 73 74 61 74 75 73 22 3a 20 22 73 75 63 63"
            "65 73 73 22 2c 20 22 72 65 73 75 6c 74 22 3a 20"
            "7b 22 73 65 73 73 69 6f 6e 22 3a 20 22 63 30 63"
            "31 63 32 63 33 63 34 63 35 63 36 63 37 22 2c 20"
            "22 6e 6f 6e 63 65 22 3a 20 22 62 30 62 31 62 32"
            "62 33 62 34 62 35 62 36 62 37 62 38 62 39 62 61"
            "62 62 62 63 62 64 62 65 62 66 22 2c 20 22 70 72"
            "6f 6f 66 22 3a 20 22 65 35 64 65 61 36 36 65 66"
            "36 37 32 32 66 37 39 66 34 64 30 32 36 33 38 32"
            "65 64 32 34 32 62 32 22 7d 7d"
        ),
        "add": (
            "41 54 00 09 00 00 00 02 00 00 00 39 62 72 e5 0f"
            "7b 22 66 75 6e 63 22 3a 20 22 61 64 64 22 2c 20"
            "22 61 72 67 73 22 3a 20 5b 31 30 2c 20 32 30 5d"
            "7d c0 c1 c2 c3 c4 c5 c6 c7 62 19 ac 0e 7a 6f db"
            "0f 3f aa c4 7d 20 f4 2c 37"
        ),
        "add_reply": (
            "41 54 00 0a 00 00 00 02 00 00 00 3b dc 1b f5 9a"
            "7b 22 73 74 61 74 75 73 22 3a 20 22 73 75 63 63"
            "65 73 73 22 2c 20 22 72 65 73 75 6c 74 22 3a 20"
            "33 30 7d c0 c1 c2 c3 c4 c5 c6 c7 6e 82 f4 b7 9e"
            "41 b5 23 5e 62 69 60 a5 d5 b4 4b"
        ),
        "div": (
            "41 54 00 09 00 00 00 03 00 00 00 37 3d aa 15 bc"
            "7b 22 66 75 6e 63 22 3a 20 22 64 69 76 22 2c 20"
            "22 61 72 67 73 22 3a 20 5b 31 2c 20 30 5d 7d c0"
            "c1 c2 c3 c4 c5 c6 c7 27 43 72 5f a7 ad 7e f4 dd"
            "ed e1 b0 17 b7 12 5c"
        ),
        "div_reply": (
            "41 54 00 0c 00 00 00 03 00 00 00 66 65 74 43 c8"
            "7b 22 73 74 61 74 75 73 22 3a 20 22 65 72 72 6f"
            "72 22 2c 20 22 63 6f 64 65 22 3a 20 22 64 69 76"
            "69 73 69 6f 6e 5f 62 79 5f 7a 65 72 6f 22 2c 20"
            "22 6d 65 73 73 61 67 65 22 3a 20 22 64 69 76 69"
            "73 69 6f 6e 20 62 79 20 7a 65 72 6f 22 7d c0 c1"
            "c2 c3 c4 c5 c6 c7 86 57 9b d2 97 ce b7 9d 32 08"
            "74 fb 1c b7 4c 3c"
        ),
    }.items()
}
