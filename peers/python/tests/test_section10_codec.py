"""Contract section 10, the codec: the NOTIFY type bit, event bodies,
deadline_ms and the new error codes, checked against every vector of
tests/vectors/section10.json (encoded from the values, and decoded back,
sealed ones under the section 9 vector session's keys)."""

from __future__ import annotations

import json
import os

import pytest
from support import REPO

from at_rpc import (
    AUTH,
    CODES,
    ERROR,
    NOTIFY,
    REQUEST,
    RESPONSE,
    BodyError,
    Call,
    Event,
    FrameError,
    FrameReader,
    error_body,
    event_body,
    pack_auth_frame,
    pack_frame,
    parse_call,
    parse_datagram,
    parse_event,
    parse_notify,
    parse_reply,
    request_body,
    split_auth,
    success_body,
    tag_ok,
)

with open(os.path.join(REPO, "tests", "vectors", "section10.json"), encoding="utf-8") as f:
    VECTORS = json.load(f)

# Section 9's vector session (tests/vectors/section10.py): SID c0..c7.
KEYS = {
    "req": bytes.fromhex("078a338e7c9a7cb26f514ace9492a0a274fd87ca376842fb11d414cb712e1b2e"),
    "rep": bytes.fromhex("85218bd4b82a71a034757104a2297bf1e7eec1ba00d6166cbc6d9ff717c3fc24"),
}
SID = bytes(range(0xC0, 0xC8))


def encode(v: dict) -> bytes:
    """The vector's body written by at_rpc's own writers, from its values."""
    obj = json.loads(v["body"])
    kind = v["flags"] & ~AUTH
    if "func" in obj:
        return request_body(obj["func"], obj["args"], obj.get("deadline_ms"))
    if "topic" in obj:
        return event_body(obj["topic"], obj["n"], obj.get("value"), obj.get("end"))
    if obj["status"] == "success":
        assert kind == RESPONSE
        return success_body(obj["result"])
    assert kind == ERROR
    return error_body(obj["code"], obj["message"])


@pytest.mark.parametrize("v", VECTORS, ids=[v["name"] for v in VECTORS])
def test_vector_encodes_byte_for_byte(v: dict) -> None:
    body = encode(v)
    assert body == v["body"].encode()
    if v["key"]:
        frame = pack_auth_frame(v["flags"] & ~AUTH, v["seq"], body, SID, KEYS[v["key"]])
    else:
        frame = pack_frame(v["flags"], v["seq"], body)
    assert frame.hex() == v["frame"]


@pytest.mark.parametrize("v", VECTORS, ids=[v["name"] for v in VECTORS])
def test_vector_decodes(v: dict) -> None:
    data = bytes.fromhex(v["frame"])
    frame = parse_datagram(data)
    streamed = list(FrameReader().feed(data))
    assert streamed == [frame]
    assert (frame.flags, frame.seq) == (v["flags"], v["seq"])
    body = frame.body
    if v["key"]:
        parts = split_auth(frame)
        assert parts is not None and parts.sid == SID
        assert tag_ok(KEYS[v["key"]], parts)
        other = "req" if v["key"] == "rep" else "rep"
        assert not tag_ok(KEYS[other], parts), "the key follows the direction"
        body = parts.body
    assert body == v["body"].encode()
    obj = json.loads(v["body"])
    if frame.kind == NOTIFY:
        got = parse_notify(body)
        if "func" in obj:
            assert got == Call(obj["func"], obj["args"], obj.get("deadline_ms"))
        else:
            assert got == Event(obj["topic"], obj["n"], obj.get("value"), obj.get("end"))
    elif frame.kind == REQUEST:
        assert parse_call(body) == Call(obj["func"], obj["args"], obj.get("deadline_ms"))
    else:
        ok, result, code, message = parse_reply(body)
        if ok:
            assert result == obj["result"]
        else:
            assert (code, message) == (obj["code"], obj["message"])


@pytest.mark.parametrize("other", [REQUEST, RESPONSE, ERROR])
def test_notify_with_another_type_bit_is_bad_frame_with_its_seq(other: int) -> None:
    for flags in (NOTIFY | other, NOTIFY | other | AUTH):
        data = pack_frame(flags, 77, b'{"func": "add", "args": [1, 2]}')
        with pytest.raises(FrameError) as e:
            parse_datagram(data)
        assert (e.value.code, e.value.seq, e.value.fatal) == ("bad_frame", 77, False)
        # On a stream it consumes its frame and the next one reads.
        items = list(FrameReader().feed(data + pack_frame(NOTIFY, 78, b"{}")))
        assert isinstance(items[0], FrameError) and items[0].seq == 77
        assert items[1].kind == NOTIFY and items[1].seq == 78


def test_notify_alone_or_with_auth_is_a_frame() -> None:
    for flags in (NOTIFY, NOTIFY | AUTH):
        frame = parse_datagram(pack_frame(flags, 5, b"{}"))
        assert frame.kind == NOTIFY and frame.kind_name == "notify"


def test_new_error_codes() -> None:
    for code in ("deadline_exceeded", "cancelled", "unknown_topic"):
        assert code in CODES


@pytest.mark.parametrize(
    "text",
    ["-1", "4294967296", "2.5", "1e3", '"5"', "true", "null", "[]", "99999999999999999999999"],
)
def test_a_bad_deadline_is_bad_request(text: str) -> None:
    with pytest.raises(BodyError) as e:
        parse_call(('{"func": "add", "args": [1, 2], "deadline_ms": ' + text + "}").encode())
    assert e.value.code == "bad_request"
    assert "deadline_ms" in e.value.message


def test_deadline_edges_and_order() -> None:
    for d in (0, 1, 4294967295):
        assert parse_call(request_body("f", [1], d)).deadline_ms == d
    # Anywhere in the body; absent is None; given twice is bad_request.
    assert parse_call(b'{"deadline_ms": 5, "func": "f"}') == Call("f", [], 5)
    assert parse_call(b'{"func": "f"}').deadline_ms is None
    with pytest.raises(BodyError):
        parse_call(b'{"func": "f", "deadline_ms": 1, "deadline_ms": 2}')
    # Checked in document order, before a missing func is noticed.
    with pytest.raises(BodyError) as e:
        parse_call(b'{"deadline_ms": -1}')
    assert "deadline_ms" in e.value.message
    with pytest.raises(ValueError):
        request_body("f", [], -1)
    with pytest.raises(ValueError):
        request_body("f", [], 1 << 32)


def test_event_bodies_are_read_by_the_contract_rules() -> None:
    assert parse_event(b'{"n": 3, "value": [1, {"a": 2}], "topic": "t", "x": 0}') == Event(
        "t", 3, [1, {"a": 2}], None
    )
    assert parse_event(b'{"topic": "t", "n": 4, "value": null}') == Event("t", 4, None, None)
    for bad in (
        b'{"topic": "t", "n": 1}',  # neither value nor end
        b'{"topic": "t", "value": 1}',  # no n
        b'{"n": 1, "value": 1}',  # no topic
        b'{"topic": "t", "n": 1, "value": 1, "end": "lease"}',
        b'{"topic": "t", "n": -1, "value": 1}',
        b'{"topic": "t", "n": 4294967296, "value": 1}',
        b'{"topic": "t", "n": 1.0, "value": 1}',
        b'{"topic": 5, "n": 1, "value": 1}',
        b'{"topic": "t", "n": 1, "end": "later"}',
        b'{"topic": "t", "n": 1, "value": 99999999999999999999}',
    ):
        with pytest.raises(BodyError):
            parse_event(bad)


def test_a_notify_body_is_a_call_an_event_or_dropped() -> None:
    assert isinstance(parse_notify(b'{"func": "log", "args": ["x"]}'), Call)
    assert isinstance(parse_notify(b'{"topic": "t", "n": 1, "end": "server"}'), Event)
    for bad in (b"{}", b'{"func": 1, "topic": "t", "n": 1, "value": 1}', b"[]", b"nope"):
        with pytest.raises(BodyError):
            parse_notify(bad)
    with pytest.raises(ValueError):
        event_body("t", 1, end="later")
