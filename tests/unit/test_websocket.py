"""realtime/websocket.py: the RFC 6455 server connection, driven byte by byte through a recording
transport (the end-to-end tests drive it through real clients: the SDK, websockets, browsers)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings, strategies as st

from realtime import twilsock
from realtime.gateway import is_ack
from realtime.websocket import ENDPOINTS, Message, ServerConnection, frame

KEY = base64.b64encode(b"0123456789abcdef").decode()


class Transport:
    """Records what the connection writes; enough of asyncio.Transport for ServerConnection."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.closed = False
        self.aborted = False
        self.reading = True

    def write(self, data: bytes) -> None:
        assert not self.closed
        self.out += data

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = self.closed = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def take(self) -> bytes:
        data, self.out = bytes(self.out), bytearray()
        return data


class Recorder:
    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.closed = 0
        self.heartbeats = 0

    def on_message(self, data: bytes) -> None:
        self.messages.append(data)

    def on_drained(self) -> None:
        pass

    def on_heartbeat(self) -> None:
        self.heartbeats += 1

    def on_close(self) -> None:
        self.closed += 1


class Endpoint:
    def __init__(self) -> None:
        self.handler = Recorder()

    def connect(self, ws: ServerConnection) -> Recorder:
        return self.handler


def opened(
    max_size: int = 1 << 20,
    deflate: bool = False,
    offer: bool = False,
    ping_s: float | None = None,
    state: Any = None,
) -> tuple[ServerConnection, Transport, Recorder]:
    """An open connection; ``deflate``: the server accepts permessage-deflate, ``offer``: the client offers it."""
    endpoint = Endpoint()
    config = SimpleNamespace(ws_max_size=max_size, ws_ping_interval=ping_s, ws_per_message_deflate=deflate)
    state = state or SimpleNamespace(connections=set(), default_headers=[(b"server", b"test")])
    ws = ServerConnection(config, state, {ENDPOINTS: {"/v3/wsconnect": endpoint}})
    t = Transport()
    ws.connection_made(t)  # type: ignore[arg-type]
    offered = b"\r\nsec-websocket-extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
    ws.data_received(request().replace(b"\r\n\r\n", offered) if offer else request())
    head = t.take()
    assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n"), head
    # RFC 6455's own example: key dGhlIHNhbXBsZSBub25jZQ== is accepted as s3pPLMBiTxaQ9kYGzzhZRbK+xOo=
    return ws, t, endpoint.handler


def request(path: str = "/v3/wsconnect", key: str = KEY, version: str = "13", method: str = "GET") -> bytes:
    lines = [
        f"{method} {path} HTTP/1.1",
        "host: example.com",
        "upgrade: websocket",
        "connection: Upgrade",
        f"sec-websocket-key: {key}",
        f"sec-websocket-version: {version}",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def client_frame(payload: bytes, opcode: int = 0x2, fin: bool = True, mask: bytes | None = None) -> bytes:
    """A masked client frame."""
    mask = mask if mask is not None else os.urandom(4)
    first = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        head = bytes((first, 0x80 | n))
    elif n < 65536:
        head = struct.pack("!BBH", first, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", first, 0x80 | 127, n)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


def server_frames(data: bytes) -> list[tuple[int, bytes]]:
    """Parse unmasked server frames: [(opcode, payload)]."""
    out, pos = [], 0
    while pos < len(data):
        first, size = data[pos], data[pos + 1] & 0x7F
        pos += 2
        if size == 126:
            size, pos = struct.unpack("!H", data[pos : pos + 2])[0], pos + 2
        elif size == 127:
            size, pos = struct.unpack("!Q", data[pos : pos + 8])[0], pos + 8
        out.append((first & 0x0F, data[pos : pos + size]))
        pos += size
    return out


def test_the_handshake_answers_rfc_6455s_example_key() -> None:
    endpoint = Endpoint()
    config = SimpleNamespace(ws_max_size=1024, ws_ping_interval=None, ws_per_message_deflate=False)
    state = SimpleNamespace(connections=set(), default_headers=[])
    ws = ServerConnection(config, state, {ENDPOINTS: {"/v3/wsconnect": endpoint}})
    t = Transport()
    ws.connection_made(t)  # type: ignore[arg-type]
    ws.data_received(request(path="/v3/wsconnect?x=1", key="dGhlIHNhbXBsZSBub25jZQ=="))
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in t.take()
    assert ws.path == "/v3/wsconnect" and ws.query == "x=1" and ws.host == "example.com"
    assert ws in state.connections


@pytest.mark.parametrize(
    ("req", "status", "code"),
    [
        (request(path="/elsewhere"), 404, 20404),
        (request(version="8"), 426, 20001),
        (request(key="short"), 400, 20001),
        (request(method="POST"), 405, 20004),
    ],
)
def test_a_refused_upgrade_gets_twilios_json_error_and_is_closed(req: bytes, status: int, code: int) -> None:
    config = SimpleNamespace(ws_max_size=1024, ws_ping_interval=None, ws_per_message_deflate=False)
    state = SimpleNamespace(connections=set(), default_headers=[])
    ws = ServerConnection(config, state, {ENDPOINTS: {"/v3/wsconnect": Endpoint()}})
    t = Transport()
    ws.connection_made(t)  # type: ignore[arg-type]
    ws.data_received(req)
    head, _, body = t.take().partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status} ".encode())
    assert json.loads(body)["code"] == code and json.loads(body)["status"] == status
    assert t.closed


def test_messages_fragments_and_control_frames() -> None:
    ws, t, h = opened()
    ws.data_received(client_frame(b"one") + client_frame(b"tw", fin=False) + client_frame(b"o", opcode=0))
    ws.data_received(client_frame(b"ping!", opcode=0x9))
    assert h.messages == [b"one", b"two"]
    assert server_frames(t.take()) == [(0xA, b"ping!")]  # pong with the ping's payload


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.binary(max_size=70000), min_size=1, max_size=5),
    st.lists(st.integers(min_value=1, max_value=9000), min_size=1, max_size=50),
)
def test_any_split_of_the_byte_stream_gives_the_same_messages(messages: list[bytes], cuts: list[int]) -> None:
    ws, _, h = opened()
    stream = b"".join(client_frame(m) for m in messages)
    pos, i = 0, 0
    while pos < len(stream):
        step = cuts[i % len(cuts)]
        ws.data_received(stream[pos : pos + step])
        pos, i = pos + step, i + 1
    assert h.messages == messages


def _unmasked(payload: bytes, first: int) -> bytes:
    return bytes((first, len(payload))) + payload


# reads of whole frames (or that look like them): the shortcut for them (``_whole_messages``) must
# answer exactly as the general parser, which sees the same bytes in two reads
ONE_READ = {
    "binary, empty": client_frame(b""),
    "binary, 125 bytes": client_frame(b"a" * 125),
    "binary, 126 bytes": client_frame(b"b" * 126),
    "text, 65535 bytes": client_frame(b"c" * 65535, opcode=0x1),
    "binary, 65536 bytes": client_frame(b"d" * 65536),
    "over the size limit": client_frame(b"e" * 2001),
    "unmasked": _unmasked(b"abc", 0x82),
    "RSV1 without deflate": bytes((0xC2,)) + client_frame(b"f")[1:],
    "a continuation without a message": client_frame(b"g", opcode=0x0),
    "a ping": client_frame(b"h", opcode=0x9),
    "two frames": client_frame(b"i") + client_frame(b"j"),
    "a frame and a half": client_frame(b"k") + client_frame(b"l")[:3],
    "five acks": b"".join(client_frame(b"ack %d" % n) for n in range(5)),
    "frames of every length form": client_frame(b"m" * 125) + client_frame(b"n" * 126, opcode=0x1) + client_frame(b""),
    "frames, then a ping": client_frame(b"o") + client_frame(b"p") + client_frame(b"q", opcode=0x9),
    "a frame, then a fragment and its end": client_frame(b"r")
    + client_frame(b"s", fin=False)
    + client_frame(b"t", opcode=0x0),
    "a frame, then an unmasked one": client_frame(b"u") + _unmasked(b"v", 0x82),
    "a frame, then one over the size limit": client_frame(b"w") + client_frame(b"x" * 2001),
    "a frame, then a close, then a frame": client_frame(b"y")
    + client_frame(struct.pack("!H", 1000), opcode=0x8)
    + client_frame(b"z"),
    "a frame, then a continuation without a message": client_frame(b"0") + client_frame(b"1", opcode=0x0),
}


@pytest.mark.parametrize("read", ONE_READ.values(), ids=ONE_READ.keys())
@pytest.mark.parametrize("mid_message", [False, True])
async def test_one_whole_frame_in_a_read_is_taken_as_the_general_parser_does(read: bytes, mid_message: bool) -> None:
    outcomes = []
    for split in (None, 1):
        ws, t, h = opened(max_size=70000 if len(read) > 60000 else 2000)
        if mid_message:  # a fragmented message has begun: a new data frame is an error now
            ws.data_received(client_frame(b"part", fin=False))
        for piece in [read] if split is None else [read[:split], read[split:]]:
            ws.data_received(piece)
        outcomes.append((h.messages, server_frames(t.take()), t.closed))
    assert outcomes[0] == outcomes[1]


async def test_a_message_that_pauses_reading_holds_the_rest_of_its_read_until_resumed() -> None:
    ws, t, h = opened()
    h.on_message = lambda data: (h.messages.append(data), ws.pause_reading())  # type: ignore[method-assign]
    ws.data_received(b"".join(client_frame(b"m%d" % n) for n in range(4)))
    assert h.messages == [b"m0"] and not t.reading
    h.on_message = h.messages.append  # type: ignore[method-assign]
    ws.resume_reading()
    assert h.messages == [b"m0", b"m1", b"m2", b"m3"] and t.reading


async def test_an_unmasked_or_oversized_frame_closes_the_connection() -> None:
    ws, t, h = opened(max_size=100)
    ws.data_received(bytes((0x82, 3)) + b"abc")  # unmasked
    assert server_frames(t.take())[0][0] == 0x8 and not h.messages
    ws2, t2, h2 = opened(max_size=100)
    ws2.data_received(client_frame(b"x" * 101))
    opcode, payload = server_frames(t2.take())[0]
    assert opcode == 0x8 and struct.unpack("!H", payload[:2])[0] == 1009 and not h2.messages


async def test_the_closing_handshake_either_way() -> None:
    ws, t, h = opened()
    ws.data_received(client_frame(struct.pack("!H", 1000), opcode=0x8))  # the client closes
    assert server_frames(t.take()) == [(0x8, struct.pack("!H", 1000))] and t.closed
    ws.connection_lost(None)
    assert h.closed == 1
    ws, t, h = opened()
    ws.close(1000, "bye")  # the server closes: waits for the client's answer
    assert server_frames(t.take())[0][0] == 0x8 and not t.closed
    ws.send(b"late")  # nothing is sent after the close frame
    assert t.take() == b""
    ws.data_received(client_frame(struct.pack("!H", 1000), opcode=0x8))
    assert t.closed


async def test_a_close_the_peer_never_answers_ends_in_an_abort() -> None:
    import realtime.websocket as module

    ws, t, _ = opened()
    old, module.CLOSE_TIMEOUT_S = module.CLOSE_TIMEOUT_S, 0.01
    try:
        ws.close()
        await asyncio.sleep(0.05)
    finally:
        module.CLOSE_TIMEOUT_S = old
    assert t.aborted


def test_paused_reading_keeps_frames_for_later() -> None:
    ws, t, h = opened()
    ws.pause_reading()
    ws.data_received(client_frame(b"a") + client_frame(b"b"))
    assert h.messages == [] and not t.reading
    ws.resume_reading()
    assert h.messages == [b"a", b"b"] and t.reading


def test_a_message_is_framed_once_for_every_connection() -> None:
    m = Message(b"x" * 300)
    assert m.wire == frame(b"x" * 300)
    conns = [opened() for _ in range(3)]
    for ws, _, _ in conns:
        ws.send_message(m)
    assert {t.take() for _, t, _ in conns} == {m.wire}
    ws, t, _ = conns[0]
    ws.send_many([Message(b"a"), Message(b"bc")])
    assert server_frames(t.take()) == [(0x2, b"a"), (0x2, b"bc")]


def test_compressed_messages_when_enabled_and_offered() -> None:
    from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
    from websockets.headers import parse_extension

    endpoint = Endpoint()
    config = SimpleNamespace(ws_max_size=1 << 20, ws_ping_interval=None, ws_per_message_deflate=True)
    state = SimpleNamespace(connections=set(), default_headers=[])
    ws = ServerConnection(config, state, {ENDPOINTS: {"/v3/wsconnect": endpoint}})
    t = Transport()
    ws.connection_made(t)  # type: ignore[arg-type]
    offer = request().replace(
        b"\r\n\r\n", b"\r\nsec-websocket-extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
    )
    ws.data_received(offer)
    head = t.take().decode()
    agreed = [line.split(": ", 1)[1] for line in head.split("\r\n") if line.startswith("Sec-WebSocket-Extensions")]
    assert agreed and agreed[0].startswith("permessage-deflate")
    client = ClientPerMessageDeflateFactory(client_max_window_bits=True)
    ext = client.process_response_params(parse_extension(agreed[0])[0][1], [])
    from websockets.frames import Frame, Opcode

    payload = b'{"hello": "world"}' * 20
    ws.send(payload)
    data = t.take()
    assert data[0] & 0x40  # RSV1: compressed
    (_, body) = server_frames(data)[0]
    assert ext.decode(Frame(Opcode.BINARY, body, rsv1=True)).data == payload
    sent = ext.encode(Frame(Opcode.BINARY, b"from the client" * 10))
    first = 0x80 | 0x40 | 0x2
    masked = client_frame(bytes(sent.data))
    ws.data_received(bytes((first,)) + masked[1:])
    assert endpoint.handler.messages == [b"from the client" * 10]


def test_acknowledgements_are_recognised_without_decoding() -> None:
    sdk_ack = twilsock.encode({"id": "TM1", "method": "reply", "payload_type": "application/json",
                               "status": {"code": 200, "status": "OK"}})  # fmt: skip
    assert is_ack(sdk_ack)
    assert is_ack(twilsock.encode({"method": "reply", "id": "TM2"}))
    request = {"method": "GET", "path": "/v3/Documents/x"}
    assert not is_ack(twilsock.encode({"id": "TM3", "method": "message", "http_request": request}))
    nested = {"id": "TM4", "method": "message", "x": {"a": "b", "method": "reply"}}
    assert not is_ack(twilsock.encode(nested))
    assert not is_ack(twilsock.encode({"id": "TM5", "method": "message"}, {"method": "reply"}))
    assert not is_ack(b"not twilsock at all")
    assert is_ack(twilsock.encode({"id": "TM" + "x" * 93, "method": "reply"}))  # an id of 95 characters
    assert not is_ack(twilsock.encode({"id": "TM" + "x" * 94, "method": "reply"}))  # longer: decoded


def _ack_by_hand(data: bytes) -> bool:
    """What is_ack answered before it was one regular expression (bytes methods, step by step)."""
    eol = data.find(b"\r\n", 14, 24)
    if eol < 0 or not data.startswith(twilsock.MAGIC):
        return False
    head = data[eol + 2 : eol + 2 + 120]
    if head.startswith(b'{"method":"reply"'):
        return True
    return head.startswith(b'{"id":"') and head.startswith(b',"method":"reply"', head.find(b'"', 7) + 1)


_PIECES = [b"TWILSOCK V3.0 ", b"12", b"\r", b"\n", b"{", b'"id":"', b'"method":"reply"', b'"', b",", b"x", b"\\"]


@given(st.lists(st.sampled_from(_PIECES), max_size=14), st.binary(max_size=8))
def test_an_ack_is_only_what_the_step_by_step_test_called_one(pieces: list[bytes], tail: bytes) -> None:
    data = b"".join(pieces) + tail
    assert not is_ack(data) or _ack_by_hand(data)  # never drops a frame the old test would decode
    framed = twilsock.MAGIC + b"%d\r\n" % len(data) + data
    assert not is_ack(framed) or _ack_by_hand(framed)


@given(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126, blacklist_characters='"\\'), max_size=95))
def test_every_sdk_shaped_ack_is_recognised(msg_id: str) -> None:
    frame = twilsock.encode({"id": msg_id, "method": "reply", "status": {"code": 200, "status": "OK"}})
    assert is_ack(frame) and _ack_by_hand(frame)


@pytest.mark.parametrize(
    ("allowed", "peer", "believed"),
    [
        ("127.0.0.1,::1", "127.0.0.1", True),
        ("127.0.0.1,::1", "10.0.0.5", False),
        ("10.0.0.0/8", "10.1.2.3", True),
        ("*", "203.0.113.9", True),
        ("::1", "0:0:0:0:0:0:0:1", True),
        ("127.0.0.1", "not-an-address", False),
    ],
)
def test_x_forwarded_proto_is_believed_only_from_trusted_proxies(allowed: str, peer: str, believed: bool) -> None:
    from realtime.websocket import _believed, _trusted

    assert _believed(peer, _trusted(allowed)) is believed


def _any_frame(first: int, masked: bool, payload: bytes) -> bytes:
    """A frame with any first byte (FIN, RSV bits, opcode), masked or not, of up to 125 bytes."""
    return bytes((first, (0x80 if masked else 0) | len(payload))) + (b"\x01\x02\x03\x04" if masked else b"") + payload


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.binary(max_size=40),  # garbage
            st.builds(_any_frame, st.integers(0, 255), st.booleans(), st.binary(max_size=125)),
        ),
        max_size=8,
    ),
    st.lists(st.integers(min_value=1, max_value=64), min_size=1, max_size=10),
    st.booleans(),
)
async def test_any_bytes_in_any_reads_never_raise(parts: list[bytes], cuts: list[int], deflate: bool) -> None:
    """Hostile input: whatever a client sends, however it is split, compressed connection or not, the
    parser answers with frames or a close and never raises out of data_received (uvicorn would log a
    fatal protocol error and drop the connection without a close frame)."""
    ws, t, _ = opened(max_size=100, deflate=deflate, offer=deflate)
    stream = b"".join(parts)
    pos, i = 0, 0
    while pos < len(stream):
        ws.data_received(stream[pos : pos + cuts[i % len(cuts)]])
        pos, i = pos + cuts[i % len(cuts)], i + 1
    server_frames(t.take())  # what it wrote is well-formed


@pytest.mark.parametrize(
    ("read", "code"),
    [
        (_any_frame(0xC2, True, b"\xff\xfe garbage, not deflate"), 1002),  # RSV1 data that does not decompress
        (_any_frame(0x83, True, b"x"), 1002),  # opcode 3 is reserved
        (_any_frame(0xC0, True, b"x"), 1002),  # RSV1 on a continuation
        (b"bomb", 1009),  # 64 KB of zeros, compressed to a few hundred bytes, past max_size once decompressed
    ],
    ids=["not deflate", "reserved opcode", "RSV1 continuation", "decompression bomb"],
)
async def test_bad_frames_on_a_compressed_connection_close_it_cleanly(read: bytes, code: int) -> None:
    import zlib

    ws, t, h = opened(max_size=1000, deflate=True, offer=True)
    if read == b"bomb":
        squeezer = zlib.compressobj(wbits=-15)
        body = squeezer.compress(bytes(65536)) + squeezer.flush(zlib.Z_SYNC_FLUSH)
        read = bytes((0xC2,)) + client_frame(body[:-4])[1:]  # RSV1: compressed; the last 4 bytes are implied
    ws.data_received(read)
    opcode, payload = server_frames(t.take())[0]
    assert opcode == 0x8 and struct.unpack("!H", payload[:2])[0] == code and not h.messages


async def _first_ping(t: Transport, within_s: float) -> list[tuple[int, bytes]]:
    loop = asyncio.get_running_loop()
    start = loop.time()
    while loop.time() - start < within_s:
        frames = server_frames(t.take())
        if frames:
            return frames
        await asyncio.sleep(0.002)
    return []


async def test_each_ping_is_a_heartbeat_for_the_handler_and_a_silent_peer_is_dropped() -> None:
    ws, t, handler = opened(ping_s=0.32)  # the heartbeat ticks every 5 ms
    assert ws.heartbeat_s == 0.32 and opened()[0].heartbeat_s is None
    assert await _first_ping(t, 0.34) == [(0x9, b"")] and handler.heartbeats == 1  # within one interval
    ws.data_received(client_frame(b"", opcode=0xA))  # the pong
    await asyncio.sleep(0.22)
    assert server_frames(t.take()) == [] and handler.heartbeats == 1
    await asyncio.sleep(0.23)  # one interval after the first (0.32), the next
    assert server_frames(t.take()) == [(0x9, b"")] and handler.heartbeats == 2
    await asyncio.sleep(0.35)  # no pong this time: dropped at its next turn (0.64), without a heartbeat
    assert t.aborted and handler.heartbeats == 2


async def test_the_connections_of_a_server_share_one_heartbeat_and_each_is_pinged_once_an_interval() -> None:
    """A crowd that connects at once is dealt over the slots: each tick pings a 64th of it, and each
    connection is pinged once an interval."""
    state = SimpleNamespace(connections=set(), default_headers=[])
    crowd = [opened(ping_s=0.64, state=state) for _ in range(256)]  # ticks every 10 ms
    beat = state.sync_heartbeat
    assert all(ws._beat is beat for ws, _, _ in crowd)
    assert sorted({len(slot) for slot in beat._slots}) == [4]  # 256 dealt over 64 slots
    pinged_at: dict[int, list[float]] = {i: [] for i in range(len(crowd))}
    loop = asyncio.get_running_loop()
    start = loop.time()
    while loop.time() - start < 1.45:  # over two intervals, answering every ping
        for i, (ws, t, _) in enumerate(crowd):
            for _ in server_frames(t.take()):
                pinged_at[i].append(loop.time() - start)
                ws.data_received(client_frame(b"", opcode=0xA))
        await asyncio.sleep(0.005)
    for times in pinged_at.values():
        assert 2 <= len(times) <= 3 and times[0] <= 0.7, times
        assert all(0.58 <= b - a <= 0.7 for a, b in zip(times, times[1:], strict=False)), times
    firsts = sorted(times[0] for times in pinged_at.values())
    assert firsts[63] < 0.25 and firsts[-64] > 0.4  # spread over the interval, not in one tick
    for ws, _, _ in crowd:
        ws.connection_lost(None)
    await asyncio.sleep(0.03)
    assert beat._timer is None and not any(beat._slots)  # no connection: no more wake-ups
