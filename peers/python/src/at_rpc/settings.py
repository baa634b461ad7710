"""What the blocking Client and the AsyncClient are both given: the server,
the transport, the time and retry bounds, the frame limit and the key."""

from __future__ import annotations

import secrets
from collections.abc import Callable

from .auth import AUTH_TRAILER, check_key
from .frame import DEFAULT_PORT, MAX_BODY
from .replies import ClientSession


class ClientSettings:
    """The settings both clients share, checked once (see Client for what
    each one means); the session and the seq counter start empty. A client
    sets up its own connection state in _setup()."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        udp: bool = False,
        timeout: float = 5.0,
        retries: int = 4,
        max_frame: int = MAX_BODY,
        key: tuple[str, bytes] | None = None,
    ):
        self.host = host
        self.port = port
        self.udp = udp
        self.timeout = timeout
        self.retries = max(0, retries)
        self.max_frame = max_frame
        self.key = check_key(*key) if key is not None else None
        # Replies to authenticated requests carry 24 bytes more than their body.
        self._reply_limit = max_frame + (AUTH_TRAILER if key is not None else 0)
        self._session: ClientSession | None = None
        # The source of nonces (tests replace it).
        self._random: Callable[[int], bytes] = secrets.token_bytes
        self._seq = 0
        self._setup()

    def _setup(self) -> None:
        """The client's own state (sockets, waiters), after the settings."""
