"""A server's memory: the UDP reply cache (at most once) and the
authenticated sessions of section 9 (replay window, remembered replies)."""

from __future__ import annotations

import collections
import logging
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

from .auth import NONCE_LEN, SID_LEN, check_key, derive_keys, hello_proof
from .errors import RemoteError
from .frame import MAX_SEQ
from .net import Address

log = logging.getLogger("at_rpc")

_CacheKey = tuple[Address, int]


class ReplyCache:
    """UDP's at-most-once memory: replies by (client address, seq), bounded
    by entries in all, entries per client and age. An entry also holds the
    request's fingerprint (flags, length, CRC): a different request reusing
    an address and seq (a restarted client) runs anew."""

    def __init__(
        self,
        max_entries: int = 4096,
        max_per_client: int = 256,
        max_age: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.max_entries = max_entries
        self.max_per_client = max_per_client
        self.max_age = max_age
        self.clock = clock
        self._entries: collections.OrderedDict[_CacheKey, tuple[float, Any, bytes]] = (
            collections.OrderedDict()
        )
        self._clients: dict[Address, collections.OrderedDict[int, None]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def _remove(self, key: _CacheKey) -> None:
        del self._entries[key]
        addr, seq = key
        seqs = self._clients[addr]
        del seqs[seq]
        if not seqs:
            del self._clients[addr]

    def _expire(self) -> None:
        limit = self.clock() - self.max_age
        while self._entries:
            key, (stamp, _, _) = next(iter(self._entries.items()))
            if stamp > limit:
                break
            self._remove(key)

    def get(self, addr: Address, seq: int, fingerprint: Any) -> bytes | None:
        """The reply remembered for (addr, seq) if the request's fingerprint
        matches, else None."""
        self._expire()
        entry = self._entries.get((addr, seq))
        if entry is None or entry[1] != fingerprint:
            return None
        return entry[2]

    def put(self, addr: Address, seq: int, fingerprint: Any, reply: bytes) -> None:
        """Remembers `reply` for (addr, seq), dropping the oldest entries
        over the bounds."""
        key = (addr, seq)
        if key in self._entries:
            self._remove(key)
        self._expire()
        seqs = self._clients.get(addr)
        if seqs is not None and len(seqs) >= self.max_per_client:
            self._remove((addr, next(iter(seqs))))
        while len(self._entries) >= self.max_entries:
            self._remove(next(iter(self._entries)))
        self._entries[key] = (self.clock(), fingerprint, reply)
        self._clients.setdefault(addr, collections.OrderedDict())[seq] = None


WINDOW = 64  # seqs a session's replay window covers
SESSION_LIFETIME = 600.0  # a session lives 10 minutes after its last verified request
SESSION_MIN_IDLE = 60.0  # a used session idle this long may give way to a new one
MAX_RESENDS = 4  # a remembered reply is sent again at most this often


class _Remembered:
    """A reply remembered under (SID, seq): who asked (the address and
    whether over UDP), the reply once made (None while the function runs),
    how often it was sent again and when it was made."""

    __slots__ = ("addr", "done", "reply", "resends", "stamp", "udp")

    def __init__(self, addr: Address | None, udp: bool):
        self.addr = addr
        self.udp = udp
        self.reply: bytes | None = None
        self.done = threading.Event()
        self.resends = 0
        self.stamp = 0.0


class Session:
    """One authenticated session: its keys, when it was last used, its
    replay window (the highest accepted seq `top` and a bit mask of the 64
    seqs up to it) and its remembered replies by seq."""

    __slots__ = ("k_rep", "k_req", "kid", "last", "replies", "sid", "top", "used", "window")

    def __init__(self, sid: bytes, kid: str, k_req: bytes, k_rep: bytes, now: float):
        self.sid = sid
        self.kid = kid
        self.k_req = k_req
        self.k_rep = k_rep
        self.last = now  # creation, then the last verified request
        self.used = False  # carried a verified request
        self.top = 0
        self.window = 0  # bit i: seq top - i was accepted
        self.replies: collections.OrderedDict[int, _Remembered] = collections.OrderedDict()

    def fresh(self, seq: int) -> bool:
        """seq was not accepted yet and is not older than the window."""
        if seq > self.top:
            return True
        offset = self.top - seq
        return offset < WINDOW and not (self.window >> offset) & 1

    def mark(self, seq: int) -> None:
        """Records `seq` as accepted, moving the window up if it is the highest."""
        if seq > self.top:
            shift = seq - self.top
            self.window = (
                ((self.window << shift) | 1) & ((1 << WINDOW) - 1) if shift < WINDOW else 1
            )
            self.top = seq
        else:
            self.window |= 1 << (self.top - seq)


class SessionTable:
    """A server's sessions (contract section 9), safe to share between its
    threads: one lock makes each step atomic, whichever connection or
    transport a request came by.

    keys -- {kid: 32-byte key}
    capacity -- sessions held at once. A new session takes a free or
        expired slot, else that of the least recently used session that never
        carried a verified request, else that of the least recently used
        session idle for `min_idle` seconds; else the hello is answered busy.
    lifetime -- a session expires this long after its last verified request
        (or its creation, while unused)
    reply_age -- remembered replies are dropped this long after they were made
    clock, random_bytes -- for tests: the time and the source of nonces and
        session ids (secrets.token_bytes, a CSPRNG)
    """

    def __init__(
        self,
        keys: dict[str, bytes],
        capacity: int = 64,
        lifetime: float = SESSION_LIFETIME,
        min_idle: float = SESSION_MIN_IDLE,
        reply_age: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        random_bytes: Callable[[int], bytes] = secrets.token_bytes,
    ):
        if capacity < 1:
            raise ValueError("a session table holds at least one session")
        self.keys = dict(check_key(kid, key) for kid, key in keys.items())
        self.capacity = capacity
        self.lifetime = lifetime
        self.min_idle = min_idle
        self.reply_age = reply_age
        self.clock = clock
        self.random_bytes = random_bytes
        self._sessions: dict[bytes, Session] = {}
        self._lock = threading.Lock()
        #: The ids of sessions holding a lease (a subscription, 10.8 rule
        #: 6): they neither expire nor give way as idle while it runs. Set
        #: by the server's EventHub (read without its lock).
        self.leased: Callable[[], frozenset[bytes]] = frozenset

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def _expired(self, session: Session, now: float) -> bool:
        return now - session.last >= self.lifetime and session.sid not in self.leased()

    def _make_room(self, now: float) -> bool:
        """Frees a slot if the policy allows; False when none may go."""
        for sid in [sid for sid, s in self._sessions.items() if self._expired(s, now)]:
            del self._sessions[sid]
        if len(self._sessions) < self.capacity:
            return True
        unused = [s for s in self._sessions.values() if not s.used]
        leased = self.leased()
        idle = [
            s
            for s in self._sessions.values()
            if s.used and now - s.last >= self.min_idle and s.sid not in leased
        ]
        victim = min(unused or idle, key=lambda s: s.last, default=None)
        if victim is None:
            return False
        log.debug(
            "session %s of key id %r gives way to a new one (%s)",
            victim.sid.hex(),
            victim.kid,
            "never used" if not victim.used else "idle",
        )
        del self._sessions[victim.sid]
        return True

    def open(self, kid: str, nc: bytes) -> tuple[bytes, bytes, bytes]:
        """A new session for `kid` and the client's nonce: (SID, Ns, P).
        Raises RemoteError unauthorized (unknown kid) or busy (no slot)."""
        key = self.keys.get(kid)
        if key is None:
            raise RemoteError("unauthorized", "unknown key id")
        ns = self.random_bytes(NONCE_LEN)
        k_req, k_rep = derive_keys(key, kid, nc, ns)
        with self._lock:
            now = self.clock()
            if not self._make_room(now):
                raise RemoteError("busy", "no free session slot")
            while True:
                sid = self.random_bytes(SID_LEN)
                if sid not in self._sessions:
                    break
            self._sessions[sid] = Session(sid, kid, k_req, k_rep, now)
        return sid, ns, hello_proof(k_rep, sid)

    def get(self, sid: bytes) -> Session | None:
        """The live session `sid`, or None (never issued, expired, evicted)."""
        with self._lock:
            session = self._sessions.get(sid)
            if session is not None and self._expired(session, self.clock()):
                del self._sessions[sid]
                return None
            return session

    def admit(self, session: Session, seq: int, addr: Address | None, udp: bool) -> tuple[str, Any]:
        """Steps 3 and 4 for a request whose tag verified, as one atomic step:
        ("run", entry) -- seq marked, call the function, then finish(entry)
        ("resend", reply) -- a remembered reply, for the original address
        ("pending", entry) -- the same seq is running: wait for entry.done
        ("gone", message) -- the session went meanwhile (step 1)
        ("refuse", message) -- not called, nothing to send again"""
        with self._lock:
            now = self.clock()
            if self._sessions.get(session.sid) is not session or self._expired(session, now):
                return "gone", "unknown session"
            if seq == 0:
                return "refuse", "seq 0 is never accepted"
            if session.fresh(seq):
                if session.top == MAX_SEQ:
                    return "refuse", "session used up (seq 0xffffffff was accepted)"
                session.mark(seq)
                session.used = True
                session.last = now
                entry = _Remembered(addr, udp)
                session.replies[seq] = entry
                while len(session.replies) > WINDOW:
                    session.replies.popitem(last=False)
                return "run", entry
            old = session.replies.get(seq)
            if old is not None and old.reply is not None and now - old.stamp >= self.reply_age:
                del session.replies[seq]
                old = None
            if old is None:
                return "refuse", "replayed"
            if old.reply is None:
                return "pending", old
            if not _same_origin(old, addr, udp) or old.resends >= MAX_RESENDS:
                return "refuse", "replayed"
            old.resends += 1
            return "resend", old.reply

    def finish(self, session: Session, entry: _Remembered, reply: bytes | None) -> None:
        """Remembers the reply to a request admit() let run (None: the call
        produced none) and wakes those waiting for it."""
        with self._lock:
            entry.reply = reply
            entry.stamp = self.clock()
            if reply is None:
                for seq, e in list(session.replies.items()):
                    if e is entry:
                        del session.replies[seq]
        entry.done.set()


def _same_origin(entry: _Remembered, addr: Address | None, udp: bool) -> bool:
    """Whether a remembered reply may go to `addr`: the IP address must be
    the original request's; over UDP the port too (and the original must have
    come over UDP). A TCP peer's address cannot be forged, and a new
    connection gets a new port, so over TCP the port is not compared."""
    if addr is None or entry.addr is None or addr[0] != entry.addr[0]:
        return False
    if udp:
        return entry.udp and addr[1] == entry.addr[1]
    return True
