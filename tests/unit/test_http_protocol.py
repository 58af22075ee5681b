"""app/http_protocol.py without a server: the body stall timer does not count time where the server
itself is not reading (flow control, 100-continue not yet sent), and uvicorn builds it, by its import string, with the
limits of the environment (as in every worker process)."""

from __future__ import annotations

import asyncio
import gc
import re
import weakref
from typing import Any

import pytest
from hypothesis import given, settings, strategies as st
from uvicorn.config import Config
from uvicorn.server import ServerState

from app.http_protocol import PROTOCOL, HeadWithBody, HttpLimits, LimitedHttpToolsProtocol, limits_from_env
from app.observe import HEADER

BODY_S = 0.25
LIMITS = HttpLimits(head_timeout_s=BODY_S, body_timeout_s=BODY_S, max_header_bytes=1024, max_headers=10)


class Transport:
    """What the protocol uses of an asyncio transport, recording what it is told."""

    def __init__(self) -> None:
        self.written = b""
        self.closed = False
        self.reading = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1234) if name in ("peername", "sockname") else default

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def set_protocol(self, protocol: Any) -> None:  # a WebSocket upgrade hands the connection over
        self.protocol = protocol


def _protocol(app: Any, transport: Transport | None = None) -> tuple[LimitedHttpToolsProtocol, Transport]:
    config = Config(app=app, loop="asyncio", lifespan="off")
    config.load()
    protocol = LimitedHttpToolsProtocol(
        config=config, server_state=ServerState(), app_state={}, _loop=asyncio.get_running_loop(), limits=LIMITS
    )
    transport = transport or Transport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    return protocol, transport


async def _finish(protocol: LimitedHttpToolsProtocol) -> None:
    protocol.connection_lost(None)
    tasks = list(protocol.tasks)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _never_reads(scope: Any, receive: Any, send: Any) -> None:
    await asyncio.sleep(3600)


HEAD = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"


async def test_a_stalled_body_is_answered_408() -> None:
    protocol, transport = _protocol(_never_reads)
    protocol.data_received(HEAD + b"\r\nsome")
    await asyncio.sleep(BODY_S * 3)
    assert transport.closed and transport.written.startswith(b"HTTP/1.1 408 ")
    await _finish(protocol)


async def test_time_with_reading_paused_does_not_count() -> None:
    protocol, transport = _protocol(_never_reads)
    protocol.data_received(HEAD + b"\r\nsome")
    protocol.flow.pause_reading()  # as uvicorn does while the app has not consumed the body
    await asyncio.sleep(BODY_S * 3)
    assert not transport.closed
    protocol.flow.resume_reading()
    await asyncio.sleep(BODY_S * 3)
    assert transport.closed
    await _finish(protocol)


async def test_time_before_the_app_asks_for_a_100_continue_body_does_not_count() -> None:
    protocol, transport = _protocol(_never_reads)
    protocol.data_received(HEAD + b"Expect: 100-continue\r\n\r\n")
    await asyncio.sleep(BODY_S * 3)
    assert not transport.closed and transport.written == b""
    await _finish(protocol)


async def test_progress_resets_the_body_timer() -> None:
    protocol, transport = _protocol(_never_reads)
    protocol.data_received(HEAD + b"\r\n")
    for _ in range(12):  # 3 times the timeout in all
        await asyncio.sleep(BODY_S / 4)
        protocol.data_received(b"x")
    assert not transport.closed
    await _finish(protocol)


async def test_requests_that_come_whole_arm_no_timer_and_a_cut_one_is_timed() -> None:
    """The connection's one timer is armed when it is made. The usual request arrives in one read:
    its head and body waits begin and end inside the parser, the keep-alive wait after its answer
    reuses the timer, and no timer is made for any of them. One cut short, even the fourth on a
    keep-alive connection, is timed all the same."""
    protocol, transport = _protocol(_echo)
    assert protocol._timer is not None  # the first request's head, from the connection
    armed = 0
    arm = protocol._arm

    def counting(now: float | None = None) -> None:
        nonlocal armed
        armed += 1
        arm(now)

    protocol._arm = counting  # type: ignore[method-assign]
    for _ in range(3):
        protocol.data_received(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nab")
        for _ in range(5):
            await asyncio.sleep(0)
    assert armed == 0 and not transport.closed
    assert transport.written.count(b"HTTP/1.1 200 OK") == 3
    protocol.data_received(HEAD + b"\r\nsome")  # the fourth stalls in its body
    await asyncio.sleep(BODY_S * 3)
    assert transport.closed and transport.written.count(b"HTTP/1.1 408 ") == 1
    await _finish(protocol)


async def test_a_keep_alive_timeout_of_zero_closes_after_the_answer_without_spinning() -> None:
    """uvicorn's ``timeout_keep_alive=0``: the connection closes once answered. The one timer, whose
    period is capped by the shortest timeout, still fires at most every 10 ms meanwhile."""
    config = Config(app=_echo, loop="asyncio", lifespan="off", timeout_keep_alive=0)
    config.load()
    limits = HttpLimits(head_timeout_s=30, body_timeout_s=30, max_header_bytes=1024, max_headers=10)
    protocol = LimitedHttpToolsProtocol(
        config=config, server_state=ServerState(), app_state={}, _loop=asyncio.get_running_loop(), limits=limits
    )
    checks = 0
    check = protocol._check

    def counting() -> None:
        nonlocal checks
        checks += 1
        check()

    protocol._check = counting  # type: ignore[method-assign]
    transport = Transport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    await asyncio.sleep(0.3)  # no request yet: the head's 30 s wait
    assert 0 < checks <= 40 and not transport.closed
    protocol.data_received(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nab")
    await asyncio.sleep(0.1)
    assert transport.closed and transport.written.startswith(b"HTTP/1.1 200 OK")
    await _finish(protocol)


class ClockedTransport(Transport):
    closed_at: float | None = None

    def close(self) -> None:
        self.closed_at = asyncio.get_running_loop().time()
        super().close()


async def test_an_idle_keep_alive_connection_closes_after_timeout_keep_alive_and_not_before() -> None:
    """uvicorn's keep-alive timeout, kept by the one timer: not while a request is answered, not
    while requests keep coming, and soon after the last answer once the client is idle."""
    config = Config(app=_echo, loop="asyncio", lifespan="off", timeout_keep_alive=1)
    config.load()
    limits = HttpLimits(head_timeout_s=30, body_timeout_s=30, max_header_bytes=1024, max_headers=10)
    protocol = LimitedHttpToolsProtocol(
        config=config, server_state=ServerState(), app_state={}, _loop=asyncio.get_running_loop(), limits=limits
    )
    loop = asyncio.get_running_loop()
    transport = ClockedTransport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    for _ in range(6):  # 1.5 s of requests, more than the keep-alive timeout in all
        protocol.data_received(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nab")
        idle = loop.time()  # about when the answer went (the app answers at once)
        await asyncio.sleep(0.25)
    assert not transport.closed and transport.written.count(b"HTTP/1.1 200 OK") == 6
    await asyncio.sleep(2.0)
    assert transport.closed_at is not None and 0.9 <= transport.closed_at - idle < 1.6  # not the head timeout's 30 s
    await _finish(protocol)


async def _headers_seen(protocol_class: type, request: bytes) -> list[tuple[bytes, bytes]]:
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(list(scope["headers"]))
        await _answers(scope, receive, send)

    config = Config(app=app, loop="asyncio", lifespan="off")
    config.load()
    kwargs = {"limits": LIMITS} if protocol_class is LimitedHttpToolsProtocol else {}
    protocol = protocol_class(
        config=config, server_state=ServerState(), app_state={}, _loop=asyncio.get_running_loop(), **kwargs
    )
    protocol.connection_made(Transport())
    protocol.data_received(request)
    for _ in range(5):
        await asyncio.sleep(0)
    protocol.connection_lost(None)
    return seen[0]  # type: ignore[no-any-return]


async def test_header_fields_reach_the_app_as_uvicorn_gives_them() -> None:
    """on_header does uvicorn's work itself (one call per line): names lowercased, trailing
    whitespace dropped, order and repeats kept, ``Expect: 100-continue`` noticed."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    request = (
        b"POST /x HTTP/1.1\r\nHost: x\r\nX-Trail: value \t\r\nX-Twice: 1\r\nx-twice: 2\r\n"
        b"EXPECT: 100-Continue\r\nContent-Length: 0\r\n\r\n"
    )
    ours = await _headers_seen(LimitedHttpToolsProtocol, request)
    assert ours == await _headers_seen(HttpToolsProtocol, request)
    assert (b"x-trail", b"value") in ours and (b"expect", b"100-Continue") in ours


async def test_a_head_over_the_cap_in_pieces_is_refused_before_it_completes() -> None:
    protocol, transport = _protocol(_never_reads)
    protocol.data_received(b"GET / HTTP/1.1\r\nX-Big: ")
    for _ in range(4):
        protocol.data_received(b"a" * 300)  # one unfinished header: httptools buffers it
    assert transport.closed and transport.written.startswith(b"HTTP/1.1 431 ")
    await _finish(protocol)


async def test_without_limits_given_the_protocol_reads_them_from_the_environment(monkeypatch: Any) -> None:
    """How uvicorn builds it (``http=PROTOCOL``, in every worker process): from SYNC_HTTP_*."""
    monkeypatch.setenv("SYNC_HTTP_MAX_HEADERS", "7")
    monkeypatch.setenv("SYNC_HTTP_BODY_TIMEOUT_S", "2.5")
    limits_from_env.cache_clear()
    try:
        config = Config(app=_never_reads, http=PROTOCOL, lifespan="off")
        config.load()
        protocol = config.http_protocol_class(config=config, server_state=ServerState(), app_state={})  # type: ignore[call-arg]
        assert isinstance(protocol, LimitedHttpToolsProtocol)
        assert (protocol.limits.max_headers, protocol.limits.body_timeout_s) == (7, 2.5)
    finally:
        limits_from_env.cache_clear()


class Writes(Transport):
    """A transport that keeps each write apart."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        super().write(data)
        self.writes.append(bytes(data))


RESPONSE_HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: application/json\r\n\r\n"


def test_a_response_head_leaves_with_its_body_in_one_write() -> None:
    t = Writes()
    held = HeadWithBody(t)  # type: ignore[arg-type]
    held.write(RESPONSE_HEAD)
    assert t.writes == []  # held for the body
    held.write(b"{}")
    assert t.writes == [RESPONSE_HEAD + b"{}"]
    held.flush()  # the response is complete: nothing left
    assert t.writes == [RESPONSE_HEAD + b"{}"]


def test_a_head_without_a_body_write_leaves_when_the_response_is_complete_or_closed() -> None:
    t = Writes()
    held = HeadWithBody(t)  # type: ignore[arg-type]
    held.write(RESPONSE_HEAD)  # a HEAD request's answer: uvicorn writes no body
    held.flush()
    assert t.writes == [RESPONSE_HEAD]
    t2 = Writes()
    held2 = HeadWithBody(t2)  # type: ignore[arg-type]
    held2.write(RESPONSE_HEAD)
    held2.close()
    assert t2.writes == [RESPONSE_HEAD] and t2.closed


def test_a_streamed_head_and_100_continue_are_not_held() -> None:
    t = Writes()
    held = HeadWithBody(t)  # type: ignore[arg-type]
    held.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert t.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]
    chunked = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    held.write(chunked)
    assert t.writes[-1] == chunked  # an event stream's client sees its head at once
    held.write(b"5\r\nhello\r\n")
    assert t.writes[-1] == b"5\r\nhello\r\n"


def test_a_closed_connection_gets_no_late_head() -> None:
    t = Writes()
    held = HeadWithBody(t)  # type: ignore[arg-type]
    held.write(RESPONSE_HEAD)
    t.closed = True
    held.flush()
    assert t.writes == []


async def _answers(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"{}"})


async def test_the_protocol_answers_in_one_write_and_a_head_request_gets_its_head() -> None:
    t = Writes()
    protocol, _ = _protocol(_answers, t)
    protocol.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    for _ in range(20):
        await asyncio.sleep(0.01)
    assert len(t.writes) == 1 and t.writes[0].startswith(b"HTTP/1.1 200 OK\r\n") and t.writes[0].endswith(b"\r\n\r\n{}")
    protocol.data_received(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")  # keep-alive: the next request
    for _ in range(20):
        await asyncio.sleep(0.01)
    assert len(t.writes) == 2 and t.writes[1].startswith(b"HTTP/1.1 200 OK\r\n") and t.writes[1].endswith(b"\r\n\r\n")
    await _finish(protocol)


async def _echo(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


_REQUEST_PARTS = st.one_of(
    st.binary(max_size=60),  # garbage
    st.sampled_from(
        [
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"POST /v1/Services HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nab",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            b"HEAD / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
            b"GET / HTTP/1.1\r\n" + b"X: " + b"y" * 2000 + b"\r\n\r\n",  # past the head limit
            b"\r\n",
        ]
    ),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_REQUEST_PARTS, max_size=6), st.lists(st.integers(min_value=1, max_value=80), min_size=1, max_size=8))
async def test_any_bytes_in_any_reads_never_raise(parts: list[bytes], cuts: list[int]) -> None:
    """Hostile input: whatever a client sends, however it is split, the protocol answers (or closes)
    and never raises out of data_received; what it writes are HTTP responses."""
    protocol, transport = _protocol(_echo)
    stream = b"".join(parts)
    pos, i = 0, 0
    while pos < len(stream) and not transport.closed and not hasattr(transport, "protocol"):
        protocol.data_received(stream[pos : pos + cuts[i % len(cuts)]])
        pos, i = pos + cuts[i % len(cuts)], i + 1
        await asyncio.sleep(0)
    for _ in range(3):
        await asyncio.sleep(0)
    assert not transport.written or transport.written.startswith(b"HTTP/1.1 ")
    await _finish(protocol)


async def test_an_upgraded_connection_frees_its_http_protocol_at_once_without_a_gc_pass() -> None:
    """The HTTP protocol and its httptools parser refer to each other; once the WebSocket protocol
    has the connection, neither may wait for the cyclic GC (rare here: app/main.py GC_THRESHOLDS)
    with the request's scope, headers and addresses, ~1.5 KB for every connection of a connect burst."""
    config = Config(app=_answers, loop="asyncio", lifespan="off", ws="realtime.websocket:ServerConnection")
    config.load()
    gc.disable()
    try:
        protocol = LimitedHttpToolsProtocol(
            config=config, server_state=ServerState(), app_state={}, _loop=asyncio.get_running_loop(), limits=LIMITS
        )
        transport = Transport()
        protocol.connection_made(transport)  # type: ignore[arg-type]
        protocol.data_received(
            b"GET /v3/wsconnect HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        assert transport.protocol is not protocol and b" 404 " in transport.written  # handed over (no endpoint here)
        gone = weakref.ref(protocol)
        del protocol
        assert gone() is None
    finally:
        gc.enable()


# -- a plain WebSocket upgrade in one read skips the HTTP parser (_upgrade_at_once) -------------------


class RecordingWs:
    """A WebSocket protocol class (uvicorn's ``ws=``) that records the request it is handed."""

    def __init__(self, config: Any, server_state: Any, app_state: Any) -> None:
        self.request = b""

    def connection_made(self, transport: Any) -> None:
        pass

    def data_received(self, data: bytes) -> None:
        self.request += data


UPGRADE = (
    b"GET /v3/wsconnect?x=1 HTTP/1.1\r\nHost: example.com:8080\r\nUpgrade: WebSocket\r\n"
    b"Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) \xe9\r\n\r\n"
)


async def _handed_over(data: bytes, at_once: bool = True) -> tuple[bytes | None, Transport]:
    """Feed ``data`` in one read to a fresh protocol (``at_once``: as a connection's first read, else
    as uvicorn alone would take it): the request the WebSocket protocol got, or None."""
    config = Config(app=_echo, loop="asyncio", lifespan="off", ws=RecordingWs)
    config.load()
    protocol = LimitedHttpToolsProtocol(
        config=config, server_state=ServerState(), app_state={}, _loop=asyncio.get_running_loop(), limits=LIMITS
    )
    transport = Transport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    protocol._first = at_once
    protocol.data_received(data)
    ws = getattr(transport, "protocol", None)
    await asyncio.sleep(0)
    if ws is None:
        await _finish(protocol)
        return None, transport
    assert protocol._timer is None and protocol not in protocol.connections  # the head timer is off
    return ws.request, transport


def _answer(written: bytes) -> bytes:
    """What was written, without the request id (a new one per answer)."""
    return re.sub(rb"(?im)^" + HEADER.encode() + rb": [^\r]*\r\n", b"", written)


def _fields(request: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """(request line, header fields with names lowercased and values stripped): what a request says."""
    line, *lines = request.split(b"\r\n\r\n")[0].split(b"\r\n")
    return line, [(n.strip().lower(), v.strip()) for n, _, v in (h.partition(b":") for h in lines)]


async def test_a_plain_upgrade_goes_to_the_websocket_protocol_as_it_came() -> None:
    got, _ = await _handed_over(UPGRADE)
    assert got == UPGRADE  # the bytes as sent (uvicorn's way rebuilds them, lowercasing the names)
    rebuilt, _ = await _handed_over(UPGRADE, at_once=False)
    assert rebuilt is not None and rebuilt != UPGRADE and _fields(rebuilt) == _fields(UPGRADE)


@pytest.mark.parametrize(
    "request_",
    [
        UPGRADE.replace(b"GET ", b"POST "),
        UPGRADE.replace(b"HTTP/1.1", b"HTTP/1.0"),
        UPGRADE.replace(b"/v3/wsconnect?x=1", b"http://example.com/v3/wsconnect"),  # absolute form
        UPGRADE + b"\x81\x80abcd",  # bytes after the head: not what a client sends before the 101
        UPGRADE.replace(b"Upgrade: WebSocket", b"Upgrade: h2c"),
        UPGRADE.replace(b"keep-alive, Upgrade", b"keep-alive"),
        UPGRADE.replace(b"Host:", b"Upgrade: websocket\r\nHost:"),  # Upgrade twice
        UPGRADE.replace(b"Host:", b"Connection: close\r\nHost:"),  # Connection twice
        UPGRADE.replace(b"Host:", b"Bad Name: 1\r\nHost:"),  # not a header line uvicorn's parser takes
        UPGRADE.replace(b"Host:", b"X: a\x00b\r\nHost:"),
        UPGRADE.replace(b"\r\n\r\n", b"\r\n" + b"X: 1\r\n" * 10 + b"\r\n"),  # over max_headers (10)
        UPGRADE.replace(b"Host:", b"X: " + b"y" * 1024 + b"\r\nHost:"),  # over max_header_bytes
    ],
)
async def test_anything_but_a_plain_upgrade_goes_the_usual_way(request_: bytes) -> None:
    """The short cut takes only what uvicorn would upgrade as it is; for anything else the outcome
    (answer, refusal or upgrade) is uvicorn's own, whatever that is."""
    got, transport = await _handed_over(request_)
    usual, usual_transport = await _handed_over(request_, at_once=False)
    assert got == usual and _answer(transport.written) == _answer(usual_transport.written)


_HEADER_LINES = st.sampled_from(
    [
        b"Host: x",
        b"Upgrade: websocket",
        b"upgrade:WEBSOCKET \t",
        b"Upgrade: websocket, h2c",
        b"Connection: Upgrade",
        b"connection: keep-alive,upgrade",
        b"Connection: close",
        b"Sec-WebSocket-Version: 13",
        b"Upgrade-Insecure-Requests: 1",
        b"Proxy-Connection: upgrade",
        b"X-Upgrade: websocket",
        b"X:",
        b"Bad Name: 1",
        b"X: \x7f",
        b" Folded: 1",
    ]
)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([b"GET /v3/wsconnect HTTP/1.1", b"GET / HTTP/1.1", b"GET /a b HTTP/1.1", b"GET * HTTP/1.1"]),
    st.lists(_HEADER_LINES, max_size=8),
    st.sampled_from([b"\r\n\r\n", b"\r\n\r\nx", b"\r\n"]),
)
async def test_the_short_cut_upgrades_exactly_what_uvicorn_upgrades(
    line: bytes, headers: list[bytes], end: bytes
) -> None:
    request = b"\r\n".join([line, *headers]) + end
    got, transport = await _handed_over(request)
    usual, usual_transport = await _handed_over(request, at_once=False)
    assert (got is None) == (usual is None)
    assert got is None or usual is None or got == request or _fields(got) == _fields(usual)
    assert _answer(transport.written) == _answer(usual_transport.written)
