#!/usr/bin/env python3
"""Writes frames.json, the AT test vectors, using only Python's standard
library (struct, zlib, json): an implementation independent of the Rust one.

Each vector:
  name, note
  frame        hex of the bytes on the wire
  decode       what a receiver with max_body 65536 reads from them:
                 {"kind", "flags", "seq", "body"} for a good frame, or
                 {"error": CODE, "seq"} for a bad one
  reply        what an AT calculator server answers (null: no answer):
                 {"kind": "response", "seq", "result"} or
                 {"kind": "error", "seq", "code"}
  reply_frame  hex of the reply this project's servers write (the canonical
               body form; other peers may word `message` differently)

frames.tsv holds the same vectors for readers without a JSON parser (C):
one line per vector, tab-separated, '-' for none:
  name  frame_hex  decode  decode_seq  reply_kind  reply_seq  reply_value  reply_frame_hex
where decode is request|response|error or an error code (bad_frame, ...),
and reply_value is the result as JSON (reply_kind response) or the error
code (reply_kind error). Lines starting with '#' are comments.

Run: python3 tests/vectors/generate.py  (rewrites frames.json and frames.tsv beside it)
"""
import json
import os
import struct
import zlib

HEADER = struct.Struct(">HHIII")
MAGIC = 0x4154
REQUEST, RESPONSE, ERROR = 1, 2, 4
MAX_BODY = 65536
KINDS = {REQUEST: "request", RESPONSE: "response", ERROR: "error"}


def frame(flags, seq, body, magic=MAGIC, crc=None, length=None):
    body = body.encode() if isinstance(body, str) else body
    crc = zlib.crc32(body) if crc is None else crc
    length = len(body) if length is None else length
    return HEADER.pack(magic, flags, seq, length, crc) + body


def success(seq, result_json):
    body = '{"status": "success", "result": %s}' % result_json
    return {"kind": "response", "seq": seq, "result": json.loads(result_json)}, frame(RESPONSE, seq, body)


def failure(seq, code, message):
    body = '{"status": "error", "code": %s, "message": %s}' % (json.dumps(code), json.dumps(message, ensure_ascii=False))
    return {"kind": "error", "seq": seq, "code": code}, frame(ERROR, seq, body)


vectors = []


def add(name, note, wire, decode, reply):
    reply_spec, reply_frame = reply if reply else (None, None)
    vectors.append({
        "name": name,
        "note": note,
        "frame": wire.hex(),
        "decode": decode,
        "reply": reply_spec,
        "reply_frame": reply_frame.hex() if reply_frame else None,
    })


def call(name, note, body, seq, reply, flags=REQUEST):
    add(name, note, frame(flags, seq, body),
        {"kind": KINDS[flags & 7], "flags": flags, "seq": seq, "body": body}, reply)


TWO = "expected two numbers"

call("contract_add", "the contract's own vector: add(10, 20), seq 1",
     '{"func": "add", "args": [10, 20]}', 1, success(1, "30"))
call("sub_int", "integer subtraction below zero", '{"func": "sub", "args": [10, 20]}', 2, success(2, "-10"))
call("mul_int", "integer product", '{"func": "mul", "args": [6, 7]}', 3, success(3, "42"))
call("div_fraction", "div of integers gives a double", '{"func": "div", "args": [10, 4]}', 4, success(4, "2.5"))
call("div_whole", "div always gives a double: 5.0, never 5", '{"func": "div", "args": [10, 2]}', 5, success(5, "5.0"))
call("div_negative", "negative quotient", '{"func": "div", "args": [-7, 2]}', 6, success(6, "-3.5"))
call("add_doubles", "shortest round-trip form of 0.1 + 0.2", '{"func": "add", "args": [0.1, 0.2]}', 7,
     success(7, "0.30000000000000004"))
call("add_mixed", "integer + double is a double", '{"func": "add", "args": [1.5, 2]}', 8, success(8, "3.5"))
call("add_double_literals", "10.0 is a double even though it is whole", '{"func": "add", "args": [10.0, 20]}', 9,
     success(9, "30.0"))
call("mul_exponent", "1e3 is a double; a large double is written with an exponent",
     '{"func": "mul", "args": [1e3, 1e297]}', 10, success(10, "1e300"))
call("sub_i64_min", "exact 64-bit arithmetic down to i64::MIN",
     '{"func": "sub", "args": [-9223372036854775807, 1]}', 11, success(11, "-9223372036854775808"))
call("div_by_zero", "division by zero", '{"func": "div", "args": [1, 0]}', 12,
     failure(12, "division_by_zero", "division by zero"))
call("div_by_zero_double", "division by 0.0 too", '{"func": "div", "args": [1.5, 0.0]}', 13,
     failure(13, "division_by_zero", "division by zero"))
call("add_overflow", "integer result outside i64", '{"func": "add", "args": [9223372036854775807, 1]}', 14,
     failure(14, "overflow", "integer result outside 64-bit range"))
call("int_literal_overflow", "integer argument outside i64",
     '{"func": "add", "args": [9223372036854775808, 0]}', 15,
     failure(15, "overflow", "integer argument outside 64-bit range"))
call("double_overflow", "a double result that is not finite", '{"func": "mul", "args": [1e300, 1e300]}', 16,
     failure(16, "overflow", "result is not a finite number"))
call("one_arg", "a count other than two", '{"func": "add", "args": [1]}', 17,
     failure(17, "invalid_arguments", TWO))
call("empty_args", "an empty argument list", '{"func": "add", "args": []}', 18,
     failure(18, "invalid_arguments", TWO))
call("missing_args", "a missing args means []", '{"func": "mul"}', 19,
     failure(19, "invalid_arguments", TWO))
call("string_arg", "a non-numeric argument", '{"func": "add", "args": ["1", 2]}', 20,
     failure(20, "invalid_arguments", TWO))
call("bool_arg", "booleans are not numbers", '{"func": "add", "args": [true, 2]}', 21,
     failure(21, "invalid_arguments", TWO))
call("unknown_function", "no function of that name", '{"func": "pow", "args": [2, 8]}', 22,
     failure(22, "unknown_function", "unknown function"))
call("unicode_func", "unicode in a string: an unknown name", '{"func": "\u00e4dd \u2603 \U0001F600", "args": [1, 2]}',
     23, failure(23, "unknown_function", "unknown function"))
call("escaped_func", "escapes in func resolve before the lookup", '{"func": "a\\u0064d", "args": [2, 3]}', 24,
     success(24, "5"))
call("unicode_unknown_members", "unknown members of any type, nested, with unicode and surrogate pairs, are skipped",
     '{"v": 1, "meta": {"note": "na\u00efve \\ud83d\\ude00 \\"q\\"", "tags": [1, [2.5, {"x": null}], true]}, '
     '"func": "add", "args": [1, 2]}', 25, success(25, "3"))
call("not_json", "a body that is not JSON", 'add(1, 2)', 26, failure(26, "bad_request", "body is not valid JSON"))
call("missing_func", "func is required", '{"args": [1, 2]}', 27, failure(27, "bad_request", 'missing "func"'))
call("func_not_string", "func must be a string", '{"func": 7, "args": [1, 2]}', 28,
     failure(28, "bad_request", '"func" must be a string'))
call("empty_body", "an empty body is not a request", '', 29, failure(29, "bad_request", "body is not valid JSON"))
call("max_seq", "the largest seq", '{"func": "add", "args": [1, 1]}', 0xFFFFFFFF, success(0xFFFFFFFF, "2"))
call("reserved_flag_bits", "reserved flag bits are ignored", '{"func": "add", "args": [2, 2]}', 30,
     success(30, "4"), flags=REQUEST | 0x8000)

pad = MAX_BODY - len('{"func": "add", "args": [1, 2], "pad": ""}')
call("max_length_body", "a body of exactly 65536 bytes, the default limit",
     '{"func": "add", "args": [1, 2], "pad": "%s"}' % ("x" * pad), 31, success(31, "3"))

add("oversize_length", "length 65537 is over the limit: reported from the header alone (no body follows)",
    frame(REQUEST, 32, b"", length=MAX_BODY + 1, crc=0),
    {"error": "frame_too_large", "seq": 32}, failure(32, "frame_too_large", "frame too large"))
add("wrong_magic", "a wrong magic: the header is unreadable, the reply has seq 0",
    frame(REQUEST, 33, '{"func": "add", "args": [1, 2]}', magic=0x5441),
    {"error": "bad_frame", "seq": 0}, failure(0, "bad_frame", "bad magic"))
add("bad_crc", "a CRC that does not match the body; the stream stays in step",
    frame(REQUEST, 34, '{"func": "add", "args": [1, 2]}', crc=0xDEADBEEF),
    {"error": "checksum_mismatch", "seq": 34}, failure(34, "checksum_mismatch", "checksum mismatch"))
add("no_type_bit", "flags with no type bit",
    frame(0x0100, 35, '{"func": "add", "args": [1, 2]}'),
    {"error": "bad_frame", "seq": 35}, failure(35, "bad_frame", "no message type bit in flags"))
add("two_type_bits", "flags with two type bits",
    frame(REQUEST | RESPONSE, 36, '{"func": "add", "args": [1, 2]}'),
    {"error": "bad_frame", "seq": 36}, failure(36, "bad_frame", "more than one message type bit in flags"))
call("response_frame", "a success reply: a server does not answer replies",
     '{"status": "success", "result": 30}', 1, None, flags=RESPONSE)
call("error_frame", "an error reply: a server does not answer replies",
     '{"status": "error", "code": "division_by_zero", "message": "division by zero"}', 12, None, flags=ERROR)

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "frames.json")
with open(out, "w", encoding="utf-8") as f:
    json.dump({"version": 1, "max_body": MAX_BODY, "vectors": vectors}, f, indent=1, ensure_ascii=False)
    f.write("\n")

def tsv_line(v):
    d, r = v["decode"], v["reply"]
    if r is None:
        reply = ["-", "-", "-", "-"]
    elif r["kind"] == "response":
        reply = ["response", str(r["seq"]), json.dumps(r["result"]), v["reply_frame"]]
    else:
        reply = ["error", str(r["seq"]), r["code"], v["reply_frame"]]
    return "\t".join([v["name"], v["frame"], d.get("kind") or d["error"], str(d["seq"])] + reply)


with open(os.path.join(os.path.dirname(out), "frames.tsv"), "w", encoding="utf-8") as f:
    f.write("# AT test vectors, generated by generate.py from the same data as frames.json.\n")
    f.write("# name\tframe_hex\tdecode\tdecode_seq\treply_kind\treply_seq\treply_value\treply_frame_hex\n")
    for v in vectors:
        f.write(tsv_line(v) + "\n")
print(f"wrote {len(vectors)} vectors to {out} and frames.tsv")
