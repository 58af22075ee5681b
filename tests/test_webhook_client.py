"""The webhook HTTP client (realtime/webhooks/client.py) against a real receiver on loopback.

No Redis and no server: these pin down the guarded client's own behaviour (policy at connect time,
Basic auth from the URL, no redirects, keep-alive, both timeouts), which the end-to-end tests in
test_webhooks.py only see through dead letters.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from app.settings import DENY_NETWORKS
from realtime.webhooks.client import DeliveryError, WebhookClient
from realtime.webhooks.policy import DestinationBlockedError, NetworkPolicy
from tests.helpers import SCALE
from tests.webhook_receiver import Receiver

LOOPBACK = ("127.0.0.0/8", "::1/128")
DEFAULT = NetworkPolicy(allow=(), deny=DENY_NETWORKS)
HEADERS = [("Content-Type", "application/x-www-form-urlencoded"), ("User-Agent", "TwilioProxy/1.1")]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver(validate=False).start()
    yield r
    if r.hold is not None:
        r.hold.set()
    await r.stop()


@pytest.fixture
async def client() -> AsyncIterator[WebhookClient]:
    c = WebhookClient(DEFAULT, connect_s=2.0 * SCALE, read_s=2.0 * SCALE)
    await c.start()
    yield c
    await c.aclose()


async def blocking_client(connect_s: float = 2.0, read_s: float = 2.0) -> WebhookClient:
    c = WebhookClient(NetworkPolicy(allow=(), deny=(*DENY_NETWORKS, *LOOPBACK)), connect_s=connect_s, read_s=read_s)
    await c.start()
    return c


async def test_posts_the_body_and_returns_the_status_over_one_kept_connection(
    client: WebhookClient, receiver: Receiver
) -> None:
    receiver.statuses = [204, 500]
    got = [await client.post(receiver.url + "?a=%7E", b"x=1", HEADERS) for _ in range(3)]
    assert got == [204, 500, 200]
    assert [r.form for r in receiver.requests] == [{"x": "1"}] * 3
    assert receiver.requests[0].path == "/hook?a=%7E"  # the URL as configured, not re-encoded
    headers = receiver.requests[0].headers
    assert headers["host"] == f"127.0.0.1:{receiver.port}" and headers["user-agent"] == "TwilioProxy/1.1"
    assert "accept-encoding" not in headers and "cookie" not in headers
    assert len(receiver._writers) == 1  # keep-alive: all three on one connection


async def test_credentials_in_the_url_become_basic_auth(client: WebhookClient, receiver: Receiver) -> None:
    url = receiver.url.replace("http://", "http://us%C3%A9r:p%40ss@")
    assert await client.post(url, b"", HEADERS) == 200
    auth = receiver.requests[0].headers["authorization"]
    assert base64.b64decode(auth.removeprefix("Basic ")).decode() == "usér:p@ss"
    assert receiver.requests[0].headers["host"] == f"127.0.0.1:{receiver.port}"


async def test_redirects_are_not_followed(client: WebhookClient, receiver: Receiver) -> None:
    receiver.statuses = [302]
    assert await client.post(receiver.url, b"", HEADERS) == 302
    assert len(receiver.requests) == 1


async def test_only_http_urls(client: WebhookClient) -> None:
    for url in ("ftp://127.0.0.1/x", "file:///etc/passwd", "http:///nohost", "http://127.0.0.1:99999/"):
        with pytest.raises(DestinationBlockedError):
            await client.post(url, b"", HEADERS)


async def test_a_denied_address_is_never_connected_to(receiver: Receiver) -> None:
    c = await blocking_client()
    try:
        for url in (receiver.url, receiver.url.replace("127.0.0.1", "localhost")):  # literal, then resolved
            with pytest.raises(DestinationBlockedError, match="not an allowed network"):
                await c.post(url, b"", HEADERS)
        assert receiver.requests == [] and not receiver._writers
    finally:
        await c.aclose()


async def test_a_kept_connection_closed_by_the_receiver_is_retried_once_on_another(client: WebhookClient) -> None:
    connections, served = 0, 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections, served
        connections += 1
        first = connections == 1
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).lower()
                await reader.readexactly(int(head.split(b"content-length:")[1].split(b"\r\n")[0]))
                if first and served:
                    break  # the race: the receiver drops its kept connection as the next request arrives
                served += 1
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
    try:
        assert await client.post(url, b"a=1", HEADERS) == 200
        assert await client.post(url, b"a=2", HEADERS) == 200
        assert connections == 2 and served == 2
    finally:
        server.close()


async def test_a_receiver_that_does_not_answer_in_time_is_a_read_timeout(receiver: Receiver) -> None:
    receiver.hold = asyncio.Event()
    c = WebhookClient(DEFAULT, connect_s=5.0, read_s=0.3)
    await c.start()
    try:
        start = time.monotonic()
        with pytest.raises(DeliveryError, match=r"read timeout \(0.3 s\)"):
            await c.post(receiver.url, b"", HEADERS)
        assert time.monotonic() - start < 0.3 + 2 * SCALE  # read_s, not connect_s + read_s
    finally:
        await c.aclose()


@pytest.fixture
def unanswered_port() -> Iterator[int]:
    """A listening port whose accept queue is full: a new connection's SYN is never answered."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    for _ in range(4):  # the kernel accepts backlog+1 unaccepted connections; then SYNs are dropped
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        fillers.append(s)
    time.sleep(0.05)
    yield port
    for s in [*fillers, server]:
        s.close()


async def test_a_connection_that_is_not_established_in_time_is_a_connect_timeout(unanswered_port: int) -> None:
    c = WebhookClient(DEFAULT, connect_s=0.3, read_s=5.0)
    await c.start()
    try:
        with pytest.raises(DeliveryError, match=rf"connect timeout \(0.3 s\) to 127.0.0.1:{unanswered_port}"):
            await c.post(f"http://127.0.0.1:{unanswered_port}/", b"", HEADERS)
    finally:
        await c.aclose()


async def test_nothing_listening_is_a_delivery_error(client: WebhookClient, receiver: Receiver) -> None:
    url = receiver.url
    await receiver.stop()
    with pytest.raises(DeliveryError, match="cannot connect to 127.0.0.1"):
        await client.post(url, b"", HEADERS)


async def test_a_url_that_cannot_be_sent_as_written_is_refused_before_any_request(
    client: WebhookClient, receiver: Receiver
) -> None:
    """A URL queued before WebhookUrl was validated: aiohttp would send a space or non-ASCII in the
    request line as is (or re-encoded: not the URL signed), and raise a bare ValueError on a control
    character. None of them reach the receiver; each is a DestinationBlockedError (dead-lettered)."""
    for suffix in ("/a b", "/a\x01b", "/a\nb", "/caf\u00e9", "/\u2603"):
        with pytest.raises(DestinationBlockedError, match="not a valid URL"):
            await client.post(receiver.url + suffix, b"x=1", [])
    assert receiver.requests == []
    assert await client.post(receiver.url + "/a%20b", b"x=1", []) == 200
