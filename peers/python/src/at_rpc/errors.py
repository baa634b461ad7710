"""The errors of the package: one hierarchy under ATError, plus the
ValueErrors of keys, bodies and encoding."""

from __future__ import annotations


class ATError(Exception):
    """Base of this module's errors."""


class RemoteError(ATError):
    """An error reply: `code` is for programs (one of CODES), `message` for
    people. Server functions raise it to answer with that error."""

    def __init__(self, code: str, message: str = "", body: bytes | None = None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.body = body  # the reply body, for errors a client received


class ProtocolError(ATError):
    """The peer broke the protocol (bad reply frame or body, unexpected seq,
    a request where a reply was due), or a request cannot be encoded."""


class FrameError(ProtocolError):
    """What is wrong with a received frame.

    code    -- the error code a receiver answers with (bad_frame, ...)
    seq     -- the seq the answer carries (0 when the header is unreadable)
    message -- the message of the answer (the Rust side's wording)
    fatal   -- the stream is out of step (wrong magic, length over the
               limit): a TCP receiver answers, then closes
    answer  -- False for a datagram of the wrong size: dropped, never answered
    flags   -- the header's flags where they were read (else 0): a frame
               whose only type bit is NOTIFY is never answered (section 10.2)
    """

    def __init__(
        self,
        code: str,
        seq: int,
        message: str,
        detail: str = "",
        fatal: bool = False,
        answer: bool = True,
        flags: int = 0,
    ):
        super().__init__(detail or message)
        self.flags = flags
        self.code = code
        self.seq = seq
        self.message = message
        self.fatal = fatal
        self.answer = answer


class KeyFormatError(ValueError):
    """A malformed key, key id or key file. The message says what is wrong
    and never contains key material."""


class AuthError(ProtocolError):
    """A reply that failed authentication: a bad hello (values, proof) or
    a reply to an authenticated request with a bad tag or without AUTH."""


class BadProof(AuthError):
    """A hello reply over TCP whose proof does not verify: the server does
    not hold the client's key (or is not who it claims). The command line
    reports it as `error: unauthorized: ...`, exit 1, as at-host does."""


class EncodeError(ValueError):
    """A value with no JSON form: `code` and `message` are what a server
    answers instead (overflow for a non-finite double or an integer outside
    i64, internal for other types)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class BodyError(ValueError):
    """What is wrong with a body; `code` and `message` are the error reply."""

    def __init__(self, message: str, code: str = "bad_request"):
        super().__init__(message)
        self.code = code
        self.message = message
