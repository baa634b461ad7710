#!/usr/bin/env python3
"""Writes the seed corpora for the fuzz targets from tests/vectors/frames.json
and tests/vectors/section10.json (contract section 10: NOTIFY frames, events,
deadlines, cancels, sealed frames of every kind).

    python3 fuzz/seed.py            # into fuzz/corpus/<target>/

Each target's input starts with a few steering bytes (see fuzz/src/lib.rs):
- decoder: [mode] [chunk sizes...] stream; mode's low 3 bits pick the body
  limit (6 = 65536), bits 3-6 how many chunk-size bytes follow, bit 7
  feeds through spare()/commit() instead of push().
- body:    the frame bodies themselves.
- respond: [limit choice] [reply buffer choice] [chunk size] frame.
- event:   the bodies themselves (events, and any NOTIFY body).
Seed files are named by content hash, so running it again adds nothing new.
"""
import hashlib
import json
import os
import struct
import sys
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
VECTORS = os.path.join(HERE, "..", "tests", "vectors", "frames.json")
SECTION10 = os.path.join(HERE, "..", "tests", "vectors", "section10.json")
LIMIT_65536 = 6  # index into at_fuzz::MAX_BODIES
LIMIT_48 = 3
BODY_MAX = 4096  # the body target runs with -max_len=4096


def write(target, data):
    folder = os.path.join(HERE, "corpus", target)
    os.makedirs(folder, exist_ok=True)
    name = hashlib.sha1(data).hexdigest()
    path = os.path.join(folder, name)
    if not os.path.exists(path):
        with open(path, "wb") as f:
            f.write(data)
        return 1
    return 0


def frame(flags, seq, body):
    """A frame: magic, flags, seq, length, CRC-32 of the body, body."""
    return b"AT" + struct.pack(">HIII", flags, seq, len(body), zlib.crc32(body)) + body


def main():
    with open(VECTORS) as f:
        vectors = json.load(f)["vectors"]
    with open(SECTION10) as f:
        section10 = json.load(f)  # a list of vectors
    frames10 = [bytes.fromhex(v["frame"]) for v in section10]
    frames = [bytes.fromhex(v["frame"]) for v in vectors] + frames10
    small = [fr for fr in frames if len(fr) <= 1024]
    count = {"decoder": 0, "body": 0, "respond": 0, "event": 0}

    for fr in frames:
        # decoder: one push; 1-byte pieces; pieces of 7 then 1 then 64.
        count["decoder"] += write("decoder", bytes([LIMIT_65536]) + fr)
        count["decoder"] += write("decoder", bytes([LIMIT_65536 | 1 << 3, 0]) + fr)
        count["decoder"] += write("decoder", bytes([LIMIT_65536 | 3 << 3, 6, 0, 63]) + fr)
        # The same through spare()/commit() (mode's top bit).
        count["decoder"] += write("decoder", bytes([0x80 | LIMIT_65536 | 1 << 3, 9]) + fr)
        # respond: limit 65536, a 256-byte reply buffer, 16-byte pieces.
        count["respond"] += write("respond", bytes([LIMIT_65536, 16, 15]) + fr)
        body = fr[16:]
        if len(body) <= BODY_MAX:
            count["body"] += write("body", body)
    # Streams of several frames, with garbage between them.
    stream = b"".join(small)
    noisy = b"\x00AT".join(small) + b"A"
    for data in (stream, noisy):
        count["decoder"] += write("decoder", bytes([LIMIT_65536 | 2 << 3, 4, 200]) + data)
        count["decoder"] += write("decoder", bytes([LIMIT_48 | 1 << 3, 30]) + data)
        count["respond"] += write("respond", bytes([LIMIT_65536, 0x80, 9]) + data)
    # A few bodies the vectors lack: nesting, unknown members, replies.
    for body in (
        b'{"func": "div", "args": [9007199254740993, 3]}',
        b'{"func": "add", "args": [1e308, 1e308]}',
        b'{"status": "success", "result": 0.30000000000000004}',
        b'{"status": "error", "code": "overflow", "message": "m"}',
        b'{"func": "f", "x": [[[{"a": [true, false, null, "\\ud83d\\ude00"]}]]]}',
        b'-12.5e-3',
    ):
        count["body"] += write("body", body)
    # The rpc.* functions (contract section 7) and an AUTH-flagged request,
    # which the vectors lack: with a roomy and the smallest reply buffer.
    for flags, body in (
        (1, b'{"func": "rpc.ping", "args": []}'),
        (1, b'{"func": "rpc.ping", "args": [{"a": [1, "x"]}]}'),
        (1, b'{"func": "rpc.info", "args": []}'),
        (1, b'{"func": "rpc.functions", "args": [1]}'),
        (1, b'{"func": "rpc.hello", "args": ["k", "00"]}'),
        (9, b'{"func": "add", "args": [1, 2]}'),
    ):
        fr = frame(flags, 7, body)
        for buffer in (0x80, 0):
            count["respond"] += write("respond", bytes([LIMIT_65536, buffer, 15]) + fr)
    # Section 10: every vector's body (plain, without a sealed frame's SID
    # and tag) for the body and event targets; the frames went to decoder
    # and respond above. Events the vectors lack: an end of each kind, a
    # status frame, values of every type, unknown members, bad ones.
    bodies10 = [v["body"].encode() for v in section10]
    for body in bodies10 + [
        b'{"topic": "calls", "n": 4294967295, "end": "lease"}',
        b'{"topic": "a/b.c-d_e", "n": 3, "end": "topic"}',
        b'{"n": 2, "end": "server", "topic": "t"}',
        b'{"topic": "rpc.status", "n": 0, "value": {"protocol": 1, "ext": ["notify"]}}',
        b'{"topic": "t", "n": 1, "value": [1, -2.5e-3, "\\u00e9", null, true]}',
        b'{"topic": "t", "n": 1, "value": 9223372036854775807, "x": {"y": []}}',
        b'{"topic": "t", "n": 1, "value": 1, "end": "lease"}',
        b'{"topic": "t", "n": 4294967296, "value": 1}',
        b'{"topic": "t", "n": 1.0, "value": 1}',
        # `-0` is the integer 0 (a fuzz run found the oracle reading it as
        # no u64 at all): seeded so that every run checks it.
        b'{"topic": "t", "n": -0, "value": [1, null, true]}',
        b'{"topic": "t", "n": 1, "end": "later"}',
        b'{"topic": "\\ud83d\\ude00", "n": 1, "value": "x"}',
        b'{"func": "rpc.cancel", "args": [11], "topic": "t"}',
        b'{"func": "add", "args": [10, 20], "deadline_ms": 4294967295}',
    ]:
        count["event"] += write("event", body)
        if len(body) <= BODY_MAX:
            count["body"] += write("body", body)
    # NOTIFY frames with another type bit (bad_frame), and a NOTIFY call and
    # cancel of each kind through respond (never answered).
    for flags, seq, body in (
        (0x11, 7, b'{"func": "log", "args": ["boot"]}'),
        (0x14, 7, b'{"func": "log", "args": ["boot"]}'),
        (0x10, 9, b'{"func": "add", "args": [1, 2], "deadline_ms": 0}'),
        (0x10, 12, b'{"func": "rpc.cancel", "args": [11]}'),
        (0x01, 13, b'{"func": "rpc.cancel", "args": [11]}'),
        (0x01, 14, b'{"func": "rpc.subscribe", "args": ["temp", 60, 1000]}'),
    ):
        fr = frame(flags, seq, body)
        count["respond"] += write("respond", bytes([LIMIT_65536, 0x80, 15]) + fr)
        count["decoder"] += write("decoder", bytes([LIMIT_65536]) + fr)
    print("seeded (new files):", ", ".join(f"{k} {v}" for k, v in count.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
