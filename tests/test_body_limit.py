"""The 256 KiB limit on REST bodies holds whatever the framing (issue 9 #5): a chunked body, which has
no Content-Length to refuse up front, is read only up to the limit and answered 413/54006 there."""

from __future__ import annotations

import asyncio
import base64

import httpx

from tests.helpers import ACCOUNT_SID, AUTH_TOKEN, ON_EVERY_BACKEND, Endpoint

pytestmark = ON_EVERY_BACKEND

CHUNK = b"x" * 65536
BODY_MIB = 16  # far past the limit: a server reading it whole would take it all before answering


async def _chunked_post(server: Endpoint, path: str, content_type: str, first: bytes) -> bytes:
    """POST a chunked body of ``first`` then BODY_MIB MiB that never ends (no last chunk) and return the
    answer: only a server that stops reading answers at all (one reading the body whole waits for its
    end, and the test times out). How much was sent by then says nothing: the sockets buffer megabytes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    auth = base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\nContent-Type: {content_type}\r\n"
        "Transfer-Encoding: chunked\r\n\r\n".encode()
    )

    async def send() -> None:
        for piece in [first] + [CHUNK] * (BODY_MIB * 16):
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
        await asyncio.sleep(3600)  # the body never ends: only a server that stops reading answers

    sender = asyncio.create_task(send())
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        body = await reader.readexactly(length)
        return head + body
    finally:
        sender.cancel()
        writer.close()


async def test_a_chunked_form_past_the_limit_is_413_54006_before_it_is_read_whole(
    server: Endpoint, service: str, http: httpx.AsyncClient
) -> None:
    path = f"/v1/Services/{service}/Documents"
    answer = await _chunked_post(server, path, "application/x-www-form-urlencoded", b"UniqueName=big&Data=")
    assert answer.startswith(b"HTTP/1.1 413 ") and b'"code":54006' in answer, answer[:300]
    assert (await http.get(f"{path}/big")).status_code == 404  # nothing was written
    assert (await http.get(path)).json()["documents"] == []


async def test_a_chunked_multipart_form_past_the_limit_is_413_54006(server: Endpoint, service: str) -> None:
    first = b'--b\r\nContent-Disposition: form-data; name="FriendlyName"\r\n\r\n'
    answer = await _chunked_post(server, f"/v1/Services/{service}", "multipart/form-data; boundary=b", first)
    assert answer.startswith(b"HTTP/1.1 413 ") and b'"code":54006' in answer, answer[:300]


async def test_a_chunked_form_under_the_limit_is_read_as_usual(http: httpx.AsyncClient, service: str) -> None:
    async def body():  # type: ignore[no-untyped-def]
        yield b"UniqueName=small&"
        yield b"Data=%7B%22a%22%3A1%7D"

    r = await http.post(
        f"/v1/Services/{service}/Documents",
        content=body(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 201 and r.json()["data"] == {"a": 1} and "content-length" not in r.request.headers
