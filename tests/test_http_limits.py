"""The HTTP layer's own limits (app/http_protocol.py): a request head or body that stalls closes its
connection, and a head over SYNC_HTTP_MAX_HEADER_BYTES or SYNC_HTTP_MAX_HEADERS is refused with 431
before more of it is buffered. Raw sockets against a real server with short timeouts; healthy
clients, slow-but-progressing bodies and idle WebSockets are left alone."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from realtime.client import SyncClient
from tests.helpers import ACCOUNT_SID, AUTH_TOKEN, SCALE, RedisProcess, ServerProcess
from tests.sdk import token

HEAD_S = 1.0
BODY_S = 1.5
MAX_BYTES = 32768  # the default
MAX_HEADERS = 100  # the default
AUTH = "Basic " + base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()


@pytest.fixture(scope="module")
def limited(redis_server: RedisProcess) -> Iterator[ServerProcess]:
    env = {"SYNC_HTTP_HEAD_TIMEOUT_S": str(HEAD_S), "SYNC_HTTP_BODY_TIMEOUT_S": str(BODY_S)}
    with ServerProcess(redis_url=redis_server.url, env=env) as srv:
        yield srv


def _connect(server: ServerProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10 * SCALE)
    return sock


def _closed_after(sock: socket.socket, trickle: bytes, every_s: float, limit_s: float) -> tuple[float, bytes]:
    """Send ``trickle`` a byte every ``every_s`` until the server closes; (seconds, what it sent)."""
    start = time.monotonic()
    received = b""
    sock.setblocking(False)
    for byte in trickle:
        if time.monotonic() - start > limit_s:
            break
        try:
            sock.send(bytes([byte]))
        except OSError:
            return time.monotonic() - start, received
        deadline = time.monotonic() + every_s
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except BlockingIOError:
                time.sleep(0.02)
                continue
            except OSError:
                return time.monotonic() - start, received
            if not chunk:
                return time.monotonic() - start, received
            received += chunk
    raise AssertionError(f"still open after {time.monotonic() - start:.1f} s (received {received!r})")


def _response(sock: socket.socket) -> tuple[int, dict[str, Any], bytes]:
    """Read one response (with Content-Length) and what follows until the server closes."""
    data = b""
    sock.settimeout(10 * SCALE)
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body) if body else {}, head


def _one_response(sock: socket.socket) -> bytes:
    """One response with a Content-Length, read whole from a keep-alive connection."""
    sock.settimeout(5 * SCALE)
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head = data.split(b"\r\n\r\n", 1)[0].lower()
    length = int(head.split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
    while len(data) < len(head) + 4 + length:
        data += sock.recv(65536)
    return data


def _send_all_until_refused(sock: socket.socket, data: bytes) -> None:
    """Send ``data`` in pieces; stop quietly when the server has answered or closed."""
    for at in range(0, len(data), 16384):
        try:
            sock.sendall(data[at : at + 16384])
        except OSError:
            return


async def test_a_trickled_head_is_closed_while_another_client_is_served(limited: ServerProcess) -> None:
    sock = _connect(limited)
    trickle = b"GET /v1/Services HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000
    task = asyncio.create_task(asyncio.to_thread(_closed_after, sock, trickle, 0.1, 10 * SCALE))
    async with httpx.AsyncClient(base_url=limited.base_url, auth=(ACCOUNT_SID, AUTH_TOKEN)) as http:
        for _ in range(5):
            r = await http.get("/v1/Services")
            assert r.status_code == 200
            await asyncio.sleep(0.2)
    seconds, received = await task
    assert HEAD_S * 0.5 <= seconds <= HEAD_S + 2 * SCALE
    assert received == b""  # closed without an answer, as nginx does
    sock.close()


def test_a_connection_that_sends_nothing_is_closed(limited: ServerProcess) -> None:
    sock = _connect(limited)
    start = time.monotonic()
    assert sock.recv(1) == b""
    assert HEAD_S * 0.5 <= time.monotonic() - start <= HEAD_S + 2 * SCALE
    sock.close()


def test_the_head_of_a_keep_alive_request_is_timed_from_its_first_byte(limited: ServerProcess) -> None:
    sock = _connect(limited)
    request = f"GET /v1/Services HTTP/1.1\r\nHost: x\r\nAuthorization: {AUTH}\r\n\r\n".encode()
    for _ in range(3):  # more than the head timeout in all, each request well within it
        time.sleep(HEAD_S * 0.6)
        sock.sendall(request)
        assert _one_response(sock).startswith(b"HTTP/1.1 200 ")
    seconds, received = _closed_after(sock, b"GET /v1/Services HTTP/1.1\r\n" + b"X" * 100, 0.1, 10 * SCALE)
    assert HEAD_S * 0.5 <= seconds <= HEAD_S + 2 * SCALE and received == b""
    sock.close()


def test_a_stalled_body_is_answered_408_and_closed(limited: ServerProcess) -> None:
    sock = _connect(limited)
    start = time.monotonic()
    sock.sendall(
        b"POST /v1/Services HTTP/1.1\r\nHost: x\r\nAuthorization: " + AUTH.encode() + b"\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nFriendlyName=a"
    )
    status, body, head = _response(sock)
    assert BODY_S * 0.5 <= time.monotonic() - start <= BODY_S + 2 * SCALE
    assert status == 408 and body["code"] == 20408 and body["status"] == 408, body
    assert b"connection: close" in head.lower()
    sock.close()


def test_a_slow_but_progressing_body_is_served(limited: ServerProcess) -> None:
    sock = _connect(limited)
    body = b"FriendlyName=slow-body-slow"
    sock.sendall(
        b"POST /v1/Services HTTP/1.1\r\nHost: x\r\nAuthorization: " + AUTH.encode() + b"\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n" % len(body)
    )
    start = time.monotonic()
    for byte in body:  # 27 bytes, one every 0.15 s: 4 s in all, far beyond both timeouts
        sock.sendall(bytes([byte]))
        time.sleep(0.15)
    assert time.monotonic() - start > HEAD_S + BODY_S
    answer = _one_response(sock)
    assert answer.startswith(b"HTTP/1.1 201 "), answer[:200]
    assert b'"friendly_name":"slow-body-slow"' in answer.replace(b" ", b"")
    sock.close()


def _assert_431(server: ServerProcess, head: bytes) -> None:
    sock = _connect(server)
    _send_all_until_refused(sock, head)
    status, body, _ = _response(sock)
    assert status == 431, body
    assert body["code"] == 20431 and body["status"] == 431
    assert body["message"].startswith("Request Header Fields Too Large")
    sock.close()


def test_an_8_mib_header_gets_431(limited: ServerProcess) -> None:
    _assert_431(limited, b"GET /v1/Services HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (8 << 20) + b"\r\n\r\n")


def test_10000_headers_get_431(limited: ServerProcess) -> None:
    lines = b"".join(b"X-H%d: v\r\n" % i for i in range(10000))
    _assert_431(limited, b"GET /v1/Services HTTP/1.1\r\nHost: x\r\n" + lines + b"\r\n")


def test_a_huge_url_gets_431(limited: ServerProcess) -> None:
    _assert_431(limited, b"GET /v1/Services?x=" + b"a" * (1 << 20) + b" HTTP/1.1\r\nHost: x\r\n\r\n")


async def test_heads_just_under_the_caps_are_served(limited: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=limited.base_url, auth=(ACCOUNT_SID, AUTH_TOKEN)) as http:
        r = await http.get("/v1/Services", headers={"X-Pad": "a" * (MAX_BYTES - 1000)})
        assert r.status_code == 200
        r = await http.get("/v1/Services", headers={"X-Pad": "a" * (MAX_BYTES + 10)})
        assert r.status_code == 431 and r.json()["code"] == 20431
    async with httpx.AsyncClient(base_url=limited.base_url, auth=(ACCOUNT_SID, AUTH_TOKEN)) as http:
        few = {f"X-H{i}": "v" for i in range(MAX_HEADERS - 10)}  # httpx adds fewer than 10 of its own
        assert (await http.get("/v1/Services", headers=few)).status_code == 200
        many = {f"X-H{i}": "v" for i in range(MAX_HEADERS + 1)}
        assert (await http.get("/v1/Services", headers=many)).status_code == 431


async def test_an_idle_websocket_outlives_both_timeouts(limited: ServerProcess, api_key: Any, service: str) -> None:
    async with await SyncClient.connect(limited.ws_url, token(api_key.sid, api_key.secret, service, "alice")) as c:
        await asyncio.sleep(HEAD_S + BODY_S + 1)
        doc = await c.open("document", "idle-ws", {"n": 1})
        assert doc["data"] == {"n": 1}


def test_worker_processes_apply_the_limits(redis_server: RedisProcess) -> None:
    env = {"SYNC_WORKERS": "2", "SYNC_HTTP_HEAD_TIMEOUT_S": str(HEAD_S)}
    with ServerProcess(redis_url=redis_server.url, env=env) as srv:
        lines = b"".join(b"X-H%d: v\r\n" % i for i in range(MAX_HEADERS + 1))
        for _ in range(4):  # whichever worker accepts
            _assert_431(srv, b"GET /v1/Services HTTP/1.1\r\nHost: x\r\n" + lines + b"\r\n")
            sock = _connect(srv)
            start = time.monotonic()
            assert sock.recv(1) == b""
            assert time.monotonic() - start <= HEAD_S + 2 * SCALE
            sock.close()
