"""realtime/twilsock.py: the sans-I/O twilsock V3.0 codec, fuzzed with hypothesis.

Properties: every frame round-trips (headers and payloads of any shape), ``decode`` raises nothing but
ProtocolError whatever the bytes, and a frame cut short is refused.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from hypothesis import given, strategies as st

from realtime import twilsock

# JSON values as Python's json module round-trips them (no NaN: NaN != NaN)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
HEADERS = st.builds(
    lambda method, rest: {**rest, "method": method},
    st.text(),
    st.dictionaries(st.text(), JSON, max_size=6),
)


def _frame(header_json: bytes, payload: bytes = b"") -> bytes:
    """A frame built by hand, so tests can state exactly what is on the wire."""
    return twilsock.MAGIC + str(len(header_json)).encode() + b"\r\n" + header_json + b"\r\n" + payload


# -- round trips ------------------------------------------------------------------------------------


@given(HEADERS, st.binary())
def test_any_header_and_byte_payload_round_trip(header: dict[str, Any], payload: bytes) -> None:
    frame = twilsock.decode(twilsock.encode(header, payload))
    assert frame.header == {**header, "payload_size": len(payload)}
    assert frame.payload == payload
    assert frame.method == header["method"]


@given(HEADERS, JSON.filter(lambda v: not isinstance(v, str | None)))
def test_any_json_payload_reads_back_as_itself(header: dict[str, Any], value: Any) -> None:
    header.pop("payload_type", None)  # absent = JSON (a str payload would be sent as raw text)
    assert twilsock.decode(twilsock.encode(header, value)).body() == value


@given(st.text())
def test_text_payload_is_utf8_and_sized_in_bytes(text: str) -> None:
    frame = twilsock.decode(twilsock.encode({"method": "message", "payload_type": "text/plain"}, text))
    assert frame.header["payload_size"] == len(text.encode())
    assert frame.body() == (text or None)


def test_frame_round_trip_counts_bytes_not_characters() -> None:
    frame = twilsock.encode({"method": "message", "id": "TM1"}, {"data": {"name": "Zoë ✓"}})
    decoded = twilsock.decode(frame)
    assert decoded.method == "message" and decoded.id == "TM1"
    assert decoded.header["payload_size"] == len('{"data":{"name":"Zoë ✓"}}'.encode()) == 28
    assert decoded.body() == {"data": {"name": "Zoë ✓"}}


def test_frame_payload_that_is_not_json_reads_as_absent() -> None:
    """twilio-sync 4.0.1 sends ``data_sync`` as the payload of a DELETE while declaring JSON."""
    decoded = twilsock.decode(twilsock.encode({"method": "message", "payload_type": "application/json"}, b"data_sync"))
    assert decoded.body() is None


def test_a_given_payload_size_is_replaced_by_the_real_one() -> None:
    assert twilsock.decode(twilsock.encode({"method": "m", "payload_size": 99}, b"abc")).header["payload_size"] == 3


# -- refusals ---------------------------------------------------------------------------------------


@given(st.binary())
def test_arbitrary_bytes_raise_nothing_but_protocol_error(data: bytes) -> None:
    try:
        twilsock.decode(data)
    except twilsock.ProtocolError:
        pass


@given(st.binary())
def test_arbitrary_bytes_after_the_magic_raise_nothing_but_protocol_error(rest: bytes) -> None:
    try:
        twilsock.decode(twilsock.MAGIC + rest)
    except twilsock.ProtocolError:
        pass


@given(st.binary(max_size=64), st.binary(max_size=64))
def test_arbitrary_header_bytes_raise_nothing_but_protocol_error(header: bytes, payload: bytes) -> None:
    """A well-formed length line in front of any header bytes: reaches the header and payload checks."""
    try:
        twilsock.decode(_frame(header, payload))
    except twilsock.ProtocolError:
        pass


@given(HEADERS, st.binary(), st.data())
def test_a_frame_cut_short_is_refused(header: dict[str, Any], payload: bytes, data: st.DataObject) -> None:
    frame = twilsock.encode(header, payload)
    # The separator after the header is not checked, so a frame with no payload that lost only its
    # final CRLF still decodes: every cut into the length line, header or payload is refused.
    last = len(frame) - 1 if payload else len(frame) - 3
    cut = data.draw(st.integers(0, last), label="cut")
    with pytest.raises(twilsock.ProtocolError):
        twilsock.decode(frame[:cut])


@pytest.mark.parametrize(
    "data",
    [
        b"HELLO",
        b"TWILSOCK V3.0 x\r\n{}",
        b"TWILSOCK V3.0 50\r\n{}",
        b"TWILSOCK V3.0 2\r\n{}\r\n",
        b"TWILSOCK V3.0 3\r\n[1]\r\n",
        b"TWILSOCK V3.0 0\r\n\r\n",
        b'TWILSOCK V3.0 14\r\n{"method": 1}\r\n',
        b'TWILSOCK V3.0 34\r\n{"method":"m","payload_size":-1}\r\n',
        b'TWILSOCK V3.0 35\r\n{"method":"m","payload_size":1.5}\r\n',
        b'TWILSOCK V3.0 34\r\n{"method":"m","payload_size":"1"}\r\n',
        b"TWILSOCK V3.0 2\xff\r\n{}",
        b"TWILSOCK V3.0 2",
    ],
)
def test_malformed_frames_are_protocol_errors(data: bytes) -> None:
    with pytest.raises(twilsock.ProtocolError):
        twilsock.decode(data)


def test_deeply_nested_header_is_a_protocol_error() -> None:
    with pytest.raises(twilsock.ProtocolError):
        twilsock.decode(_frame(b"[" * 100_000))


def test_deeply_nested_payload_is_pruned_so_the_rest_still_reads() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    body = twilsock.Frame({"method": "message"}, b'{"ttl":5,"data":{"a":' + deep + b'},"s":"[{\\"]"}').body()
    assert body["ttl"] == 5 and body["s"] == '[{"]'
    value, levels = body["data"], 1
    while value:
        value, levels = value["a"] if isinstance(value, dict) else value[0], levels + 1
    assert levels == twilsock.MAX_BODY_DEPTH  # still too deep to be Sync data (limits.MAX_DEPTH)
    assert twilsock.Frame({"method": "message"}, b"[" * 100_000).body() is None  # deep and not JSON


@pytest.mark.parametrize(
    ("text", "pruned"),
    [(b'{"a":[[1]],"b":"[[["}', b'{"a":[[]],"b":"[[["}'), (b"[[],[[2]]]", b"[[],[[]]]"), (b"[1]", b"[1]")],
)
def test_prune_replaces_what_nests_deeper_than_the_limit(text: bytes, pruned: bytes) -> None:
    assert twilsock.prune(text, 2) == pruned


# -- the server's messages --------------------------------------------------------------------------


def test_reply_carries_the_request_id_status_and_payload() -> None:
    frame = twilsock.decode(twilsock.reply("TM1", payload={"a": 1}, extra="x"))
    assert (frame.method, frame.id, frame.header["status"]) == ("reply", "TM1", {"code": 200, "status": "OK"})
    assert frame.header["payload_type"] == twilsock.JSON_TYPE and frame.body() == {"a": 1}
    assert frame.header["extra"] == "x"
    assert "payload_type" not in twilsock.decode(twilsock.reply("TM2")).header


def test_error_reply_carries_the_twilio_error_code() -> None:
    frame = twilsock.decode(twilsock.error_reply("TM1", 401, "Unauthorized", 20101, "bad token"))
    assert frame.header["status"] == {
        "code": 401,
        "status": "Unauthorized",
        "errorCode": 20101,
        "description": "bad token",
    }
    assert frame.payload == b""


def test_http_reply_is_a_transport_success_carrying_the_http_outcome() -> None:
    frame = twilsock.decode(twilsock.http_reply("TM1", 404, "Not Found", {"code": 54100}, {"ETag": "0"}))
    assert frame.header["status"]["code"] == 200 and frame.header["http_status"] == {"code": 404, "status": "Not Found"}
    assert frame.header["http_headers"] == {"ETag": "0"} and frame.body() == {"code": 54100}
    assert twilsock.decode(twilsock.http_reply("TM2", 204, "No Content", None)).payload == b""


def test_pushes_get_fresh_message_ids_in_the_sdks_shape() -> None:
    note = twilsock.decode(twilsock.notification({"event_type": "document_updated"}))
    update = twilsock.decode(twilsock.client_update())
    close = twilsock.decode(twilsock.close(308, "Reconnect", {"backoff_policy": {}}))
    assert note.method == "notification" and note.header["message_type"] == "twilio.sync.event"
    assert update.header["client_update_type"] == "token_about_to_expire"
    assert close.header["status"] == {"code": 308, "status": "Reconnect"} and close.body() == {"backoff_policy": {}}
    ids = {note.id, update.id, close.id}
    assert len(ids) == 3 and all(i.startswith("TM") and len(i) == 38 for i in ids)


def test_header_json_is_compact_and_not_ascii_escaped() -> None:
    frame = twilsock.encode({"method": "m", "who": "Zoë"})
    header = frame.split(b"\r\n")[1]
    assert header == '{"method":"m","who":"Zoë","payload_size":0}'.encode()
    assert json.loads(header)["who"] == "Zoë"


def test_message_ids_are_dashed_version_4_uuids_as_the_sdk_makes_them() -> None:
    seen = set()
    for _ in range(2000):
        mid = twilsock.new_id()
        assert mid.startswith("TM")
        parsed = uuid.UUID(mid[2:])
        assert str(parsed) == mid[2:]  # dashed, lower case: the shape of `TM${uuid()}`
        assert (parsed.version, parsed.variant) == (4, uuid.RFC_4122)
        seen.add(mid)
    assert len(seen) == 2000
    assert {mid[21] for mid in seen} == set("89ab")  # the variant digit takes each of its values


def test_header_id_finds_the_id_of_this_servers_frames_and_of_the_sdks_acks_without_decoding() -> None:
    note = twilsock.notification({"event_type": "document_updated", "id": "not this"})
    assert twilsock.header_id(note) == twilsock.decode(note).header["id"].encode()
    sdk_ack = (  # twilio-sync's acknowledgement: id first, then the method
        b'TWILSOCK V3.0 118\r\n{"id":"TMab-1","method":"reply","payload_type":"application/json",'
        b'"status":{"code":200,"status":"OK"},"payload_size":0}\r\n'
    )
    assert twilsock.header_id(sdk_ack) == b"TMab-1"
    assert twilsock.header_id(twilsock.reply("TM7")) == b"TM7"
    assert twilsock.header_id(b"TWILSOCK V3.0 2\r\n{}\r\n") is None
