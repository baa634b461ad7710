"""What a server keeps for one-way frames (contract section 10.2): the UDP
repeat memory of plain NOTIFY frames and a rate limit for the log lines of
the NOTIFY frames it drops (a NOTIFY is never answered, so the log is the
only trace)."""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable

from .net import Address

log = logging.getLogger("at_rpc")

_RepeatKey = tuple[Address, int, int, int]


class RepeatMemory:
    """Plain NOTIFY frames seen on UDP, by (address, seq, length, CRC), so
    that a repeat runs at most once (10.2; 10.8 rules 3 and 7): at most
    `max_entries` (at least 8), the oldest forgotten when full (a full
    table never stops a NOTIFY), each for `max_age` seconds."""

    def __init__(
        self,
        max_entries: int = 256,
        max_age: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        if max_entries < 8:
            raise ValueError("the NOTIFY repeat memory holds at least 8 entries")
        self.max_entries = max_entries
        self.max_age = max_age
        self.clock = clock
        self._seen: collections.OrderedDict[_RepeatKey, float] = collections.OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._seen)

    def first_time(self, addr: Address, seq: int, length: int, crc: int) -> bool:
        """True (and remembered) the first time within max_age; False for a
        repeat, which must not run again."""
        key = (addr, seq, length, crc)
        with self._lock:
            now = self.clock()
            limit = now - self.max_age
            while self._seen:
                oldest, stamp = next(iter(self._seen.items()))
                if stamp > limit:
                    break
                del self._seen[oldest]
            if key in self._seen:
                return False
            while len(self._seen) >= self.max_entries:
                self._seen.popitem(last=False)
            self._seen[key] = now
            return True


class LogLimit:
    """At most `per_interval` log lines every `interval` seconds; those held
    back are counted and the count is told with the next line let through."""

    def __init__(
        self,
        per_interval: int = 10,
        interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.per_interval = per_interval
        self.interval = interval
        self.clock = clock
        self._start = clock()
        self._count = 0
        self._held = 0
        self._lock = threading.Lock()

    def warning(self, message: str, *args: object) -> None:
        """log.warning(message, *args), unless over the limit."""
        with self._lock:
            now = self.clock()
            if now - self._start >= self.interval:
                self._start, self._count = now, 0
            if self._count >= self.per_interval:
                self._held += 1
                return
            self._count += 1
            held, self._held = self._held, 0
        if held:
            log.warning(message + " (and %d more not logged)", *args, held)
        else:
            log.warning(message, *args)
