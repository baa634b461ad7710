"""Authentication primitives (contract section 9): HKDF and HMAC, the
hello proof, frame tags, authenticated frames and pre-shared keys."""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import struct
from typing import Any, NamedTuple

from .errors import KeyFormatError
from .frame import AUTH, MAGIC, Frame, checksum

# --------------------------------------------------------------------------
# Authentication primitives (contract section 9)
#
# HKDF-SHA-256 (RFC 5869) derives a session's two keys from the pre-shared
# key and both nonces; HMAC-SHA-256 makes the hello proof and the frame tags.
# Inputs are raw bytes, labels ASCII without a terminator. Tags and proofs
# are compared with hmac.compare_digest. Nothing here logs or formats a key.

KEY_LEN = 32
NONCE_LEN = 16
SID_LEN = 8
TAG_LEN = 16
AUTH_TRAILER = SID_LEN + TAG_LEN  # SID and tag after the body: 24 bytes
HEADER12 = struct.Struct(">HHII")  # what a tag covers: magic, flags, seq, length
HELLO = "rpc.hello"
# Plain requests a server that requires authentication still answers.
PLAIN_FUNCS = frozenset((HELLO, "rpc.ping", "rpc.info"))
_KID = re.compile(r"[A-Za-z0-9._-]{1,32}")
_LOWER_HEX = {n: re.compile(f"[0-9a-f]{{{n}}}") for n in (16, 32)}
_ANY_HEX = re.compile(r"[0-9a-fA-F]*")


def valid_kid(kid: Any) -> bool:
    """A key id: 1 to 32 ASCII letters, digits, '.', '_' or '-'."""
    return isinstance(kid, str) and _KID.fullmatch(kid) is not None


def is_lower_hex(text: Any, digits: int) -> bool:
    """True for exactly `digits` characters of [0-9a-f] (16 or 32)."""
    return isinstance(text, str) and _LOWER_HEX[digits].fullmatch(text) is not None


def hkdf_extract(salt: bytes, ikm: bytes) -> bytes:
    """HKDF-Extract (RFC 5869) with SHA-256: the 32-byte PRK."""
    return hmac.new(salt, ikm, hashlib.sha256).digest()


def hkdf_expand(prk: bytes, info: bytes, length: int = 32) -> bytes:
    """HKDF-Expand (RFC 5869) with SHA-256: `length` bytes of T(1) || T(2)..."""
    if not 0 <= length <= 255 * 32:
        raise ValueError("HKDF-Expand gives at most 8160 bytes")
    out, block, counter = b"", b"", 0
    while len(out) < length:
        counter += 1
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
    return out[:length]


def derive_keys(key: bytes, kid: str, nc: bytes, ns: bytes) -> tuple[bytes, bytes]:
    """(K_req, K_rep) of a session: HKDF with salt Nc || Ns over the key,
    info "AT1 request" || kid and "AT1 reply" || kid."""
    prk = hkdf_extract(bytes(nc) + bytes(ns), bytes(key))
    label = kid.encode("ascii")
    return hkdf_expand(prk, b"AT1 request" + label), hkdf_expand(prk, b"AT1 reply" + label)


def hello_proof(k_rep: bytes, sid: bytes) -> bytes:
    """P: the first 16 bytes of HMAC-SHA-256(K_rep, "AT1 hello" || SID)."""
    return hmac.new(k_rep, b"AT1 hello" + bytes(sid), hashlib.sha256).digest()[:TAG_LEN]


def frame_tag(key: bytes, header12: bytes, body: bytes, sid: bytes) -> bytes:
    """The first 16 bytes of HMAC-SHA-256(key, H || body || SID), H being the
    header's first 12 bytes as sent or received."""
    mac = hmac.new(key, bytes(header12), hashlib.sha256)
    mac.update(body)
    mac.update(sid)
    return mac.digest()[:TAG_LEN]


def pack_auth_frame(flags: int, seq: int, body: bytes | str, sid: bytes, key: bytes) -> bytes:
    """An authenticated frame: flags with AUTH, then body || SID || tag
    (tag under `key`); length counts all three and the CRC covers them."""
    if isinstance(body, str):
        body = body.encode("utf-8")
    if len(sid) != SID_LEN:
        raise ValueError("a session id is 8 bytes")
    body = bytes(body)
    header12 = HEADER12.pack(MAGIC, flags | AUTH, seq, len(body) + AUTH_TRAILER)
    payload = body + bytes(sid) + frame_tag(key, header12, body, sid)
    return header12 + struct.pack(">I", checksum(payload)) + payload


class AuthFrame(NamedTuple):
    """A received AUTH frame taken apart: the 12 header bytes its tag
    covers, the body proper, the session id and the tag."""

    header: bytes
    body: bytes
    sid: bytes
    tag: bytes


def split_auth(frame: Frame) -> AuthFrame | None:
    """The parts of a checked frame with AUTH, or None when its length is
    under 24. H is the received header's first 12 bytes: magic, flags (every
    bit as received), seq and length re-packed from the exact integers read,
    which gives back the same bytes."""
    data = frame.body
    if len(data) < AUTH_TRAILER:
        return None
    header = HEADER12.pack(MAGIC, frame.flags, frame.seq, len(data))
    cut = len(data) - AUTH_TRAILER
    return AuthFrame(header, data[:cut], data[cut : cut + SID_LEN], data[cut + SID_LEN :])


def tag_ok(key: bytes, parts: AuthFrame) -> bool:
    """Whether the frame's tag verifies under `key` (constant time)."""
    return hmac.compare_digest(frame_tag(key, parts.header, parts.body, parts.sid), parts.tag)


def parse_key_hex(text: str) -> bytes:
    """64 hex digits (either case) -> 32 bytes; raises KeyFormatError."""
    if len(text) != 2 * KEY_LEN:
        raise KeyFormatError(
            f"a key is {2 * KEY_LEN} hex digits, this one has {len(text)} characters"
        )
    if not text.isascii() or not _ANY_HEX.fullmatch(text):
        raise KeyFormatError("a key is hex digits only, this one has other characters")
    return bytes.fromhex(text)


def parse_key(text: str) -> tuple[str, bytes]:
    """`KID:HEX` -> (kid, 32-byte key); raises KeyFormatError (without
    quoting the text, which may be a key typed in the wrong place)."""
    kid, sep, hex_text = text.strip().partition(":")
    if not sep:
        raise KeyFormatError("a key is written KID:HEX, and there is no ':'")
    if not valid_kid(kid):
        raise KeyFormatError("the key id (before ':') must be 1 to 32 of A-Z a-z 0-9 . _ -")
    return kid, parse_key_hex(hex_text)


def load_key_file(path: str) -> list[tuple[str, bytes]]:
    """The (kid, key) pairs of a key file, in file order: lines `KID HEX`,
    blank lines and lines starting with '#' skipped. Refuses a file that
    group or others may access (mode & 0o077), a key id given twice and a
    file without keys. Raises KeyFormatError naming the file and line."""
    try:
        with open(path, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            if os.name == "posix" and mode & 0o077:
                raise KeyFormatError(
                    f"{path}: group or others have access (mode "
                    f"{mode & 0o777:04o}); a key file must be private "
                    f"(chmod 600 {path})"
                )
            data = f.read(1 << 20)
    except OSError as e:
        raise KeyFormatError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise KeyFormatError(f"{path}: not ASCII text") from None
    keys: list[tuple[str, bytes]] = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) != 2:
            raise KeyFormatError(f"{path}:{number}: expected 'KID HEX' (two fields)")
        kid, hex_text = fields
        if not valid_kid(kid):
            raise KeyFormatError(
                f"{path}:{number}: the key id must be 1 to 32 of A-Z a-z 0-9 . _ -"
            )
        try:
            key = parse_key_hex(hex_text)
        except KeyFormatError as e:
            raise KeyFormatError(f"{path}:{number}: {e}") from None
        if any(kid == k for k, _ in keys):
            raise KeyFormatError(f"{path}:{number}: key id {kid!r} appears twice")
        keys.append((kid, key))
    if not keys:
        raise KeyFormatError(f"{path}: no keys in it")
    return keys


def check_key(kid: Any, key: Any) -> tuple[str, bytes]:
    """A (kid, key) pair for a Server or Client, checked; raises
    KeyFormatError (never quoting the key)."""
    if not valid_kid(kid):
        raise KeyFormatError("a key id must be a string of 1 to 32 of A-Z a-z 0-9 . _ -")
    if not isinstance(key, (bytes, bytearray)) or len(key) != KEY_LEN:
        raise KeyFormatError(f"the key for key id {kid!r} must be {KEY_LEN} bytes")
    return kid, bytes(key)
