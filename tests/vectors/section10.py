#!/usr/bin/env python3
"""Writes section10.json and section10.tsv: the contract's section 10.7 vectors and the
implementation vectors 10.8 rule 12 asks for (X1 to X5), with the functions of the contract's
own section10-vectors.py (Python standard library only, independent of every implementation).

Each vector: name, note, flags, seq, body (the exact body text), key ("rep", "req" or null: the
section 9 vector session's K_rep or K_req, SID c0..c7) and frame (hex of the whole frame).
section10.tsv holds the same for C: name, flags (hex), seq, key (- for none), body, frame hex.

Run: python3 tests/vectors/section10.py  (rewrites both files beside it)
"""
import hashlib
import hmac
import json
import os
import struct
import zlib


def frame(flags, seq, body, trailer=b""):
    d = body + trailer
    return struct.pack(">HHIII", 0x4154, flags, seq, len(d), zlib.crc32(d)) + d


def sealed(flags, seq, body, key, sid):  # section 9: tag over H || body || SID
    h = struct.pack(">HHII", 0x4154, flags, seq, len(body) + 24)
    return frame(flags, seq, body, sid + hmac.new(key, h + body + sid, hashlib.sha256).digest()[:16])


# Section 9's vector session: key 00..1f, kid "demo", Nc a0..af, Ns b0..bf, SID c0..c7.
PRK = hmac.new(bytes(range(0xA0, 0xC0)), bytes(range(32)), hashlib.sha256).digest()
KEYS = {
    "req": hmac.new(PRK, b"AT1 request" + b"demo" + b"\x01", hashlib.sha256).digest(),
    "rep": hmac.new(PRK, b"AT1 reply" + b"demo" + b"\x01", hashlib.sha256).digest(),
}
assert KEYS["req"].hex() == "078a338e7c9a7cb26f514ace9492a0a274fd87ca376842fb11d414cb712e1b2e"
assert KEYS["rep"].hex() == "85218bd4b82a71a034757104a2297bf1e7eec1ba00d6166cbc6d9ff717c3fc24"
SID = bytes(range(0xC0, 0xC8))

ok = lambda r: {"status": "success", "result": r}  # noqa: E731
err = lambda c, m: {"status": "error", "code": c, "message": m}  # noqa: E731
INFO = {"protocol": 1, "server": "at-core 0.1.0", "name": "calc", "auth": "off",
        "max_body": 512, "functions": 4, "ext": ["notify", "events", "deadline"]}

# name, note, flags, seq, body object, key
VECTORS = [
    ("N1", "notification log(\"boot\")", 0x10, 7, {"func": "log", "args": ["boot"]}, None),
    ("E1", "event, the server's seq 1", 0x10, 1, {"topic": "temp", "n": 1, "value": 21.5}, None),
    ("E2", "E1 sealed under K_rep", 0x18, 1, {"topic": "temp", "n": 1, "value": 21.5}, "rep"),
    ("S1", "subscribe, seq 8", 0x01, 8, {"func": "rpc.subscribe", "args": ["temp", 60, 1000]}, None),
    ("S2", "its reply (TCP)", 0x02, 8,
     ok({"topic": "temp", "lease": 60, "interval": 1000, "n": 0, "credit": None}), None),
    ("D1", "deadline 0, seq 10", 0x01, 10, {"func": "add", "args": [10, 20], "deadline_ms": 0}, None),
    ("D2", "its reply", 0x04, 10, err("deadline_exceeded", "deadline exceeded"), None),
    ("C1", "cancel, NOTIFY seq 12", 0x10, 12, {"func": "rpc.cancel", "args": [11]}, None),
    ("C2", "the reply to seq 11", 0x04, 11, err("cancelled", "cancelled"), None),
    ("P1", "board's rpc.peer, seq 1", 0x01, 1, {"func": "rpc.peer", "args": []}, None),
    ("P2", "its reply (TCP)", 0x02, 1, ok({"lease": None}), None),
    ("P3", "host calls the board, host's seq 1", 0x01, 1, {"func": "rpc.info", "args": []}, None),
    ("M1", "MQTT will (offline), seq 0", 0x10, 0, {"topic": "rpc.status", "n": 0, "value": None}, None),
    # 10.8 rule 12: the implementations' own vectors.
    ("X1", "a sealed call from the server, server's seq 1, under K_rep", 0x09, 1,
     {"func": "add", "args": [1, 2]}, "rep"),
    ("X2", "its sealed reply, under K_req", 0x0A, 1, ok(3), "req"),
    ("X3", "a sealed NOTIFY call, under K_req", 0x18, 7, {"func": "log", "args": ["boot"]}, "req"),
    ("X4", "an end event (lease spent), the server's seq 2", 0x10, 2,
     {"topic": "temp", "n": 18, "end": "lease"}, None),
    ("X5", "rpc.info's reply with ext", 0x02, 3, ok(INFO), None),
]


def build():
    out = []
    for name, note, flags, seq, obj, key in VECTORS:
        # json.dumps's default separators ", " and ": " give the canonical form.
        body = json.dumps(obj).encode()
        f = sealed(flags, seq, body, KEYS[key], SID) if key else frame(flags, seq, body)
        out.append({"name": name, "note": note, "flags": flags, "seq": seq,
                    "body": body.decode(), "key": key, "frame": f.hex()})
    return out


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    vectors = build()
    with open(os.path.join(here, "section10.json"), "w") as fh:
        json.dump(vectors, fh, indent=1)
        fh.write("\n")
    with open(os.path.join(here, "section10.tsv"), "w") as fh:
        fh.write("# name\tflags\tseq\tkey\tbody\tframe (section10.py writes this file)\n")
        for v in vectors:
            fh.write(f"{v['name']}\t{v['flags']:04x}\t{v['seq']}\t{v['key'] or '-'}\t"
                     f"{v['body']}\t{v['frame']}\n")


if __name__ == "__main__":
    main()
