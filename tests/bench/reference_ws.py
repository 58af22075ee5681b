"""The reference of issue 10: what plain Python does for the same fan-out, in a few dozen lines.

Usage:  python tests/bench/reference_ws.py --port 9001 --http-port 9002 --redis-url redis://127.0.0.1:6379/0

One process on uvloop: a `websockets` asyncio server (the new implementation) and a tiny HTTP/1.1
keep-alive endpoint. Work per message is that of sync-server minus its storage: the writer POSTs a
form body ``Data=<JSON>`` (as to sync-server's Document update); the endpoint parses it, checks that
it is JSON and PUBLISHes it to one Redis channel (redis-py asyncio); the process's own pub/sub reader
gets it back, builds one twilsock ``notification`` frame (a fresh ``TM…`` id, sync-server's header
and a ``document_updated`` body with sync-server's fields, event ids in publish order) and
``websockets.broadcast()``s those bytes to every connection. So both servers do HTTP in, a Redis
round trip out, a pub/sub read and a frame per message in the measured process; sync-server does
its Lua write (the Document, its revision, the event log, the webhook queue) and its event
rendering on top, which the bench counts as part of its cost (rest_writes.py isolates the REST side).

The pub/sub reader is a bare asyncio Protocol fed to hiredis (redis-py's ``listen()`` costs an
await and a few Python calls per message): every message of one read is handed over at once, as
sync-server's feed hands over every event of one read. What it then does is the choice that
matters on this box, where each write to a socket is a system call of 5–10 µs (broadcast_micro.py):
by default each message is ``broadcast()`` on its own (the issue's reference: one write per
message and connection); with --coalesce the frames of one read go out in one write per connection
(the WebSocket frame bytes built once per message, joined, written to each transport; as
sync-server's ``send_many`` does; a lone frame too is written this way, without ``broadcast()``), when
compression is off.

Clients speak twilsock so the bench's client code is the same for both servers: ``init`` gets a
200 reply (the token is not checked), any ``message`` (the subscribe request) gets a frame saying
``subscription_established``, and everything else (the SDK's acks) is read and dropped.
Compression: declined, as by sync-server by default and by the reference of the issue (≈ 15 KB per
idle connection whether or not the client offers permessage-deflate); --compression accepts it with
websockets' defaults (fanout.py --server-compression passes it on).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import uuid
from urllib.parse import parse_qs, urlsplit

import hiredis
import redis.asyncio as aioredis
import uvloop
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

CHANNEL = b"bench:reference"
_ID = re.compile(rb'"id":"([^"]*)"')
CONNS: set[ServerConnection] = set()
EVENT = (  # the fields and size of sync-server's document_updated event
    b'{"event_type":"document_updated","event":{"id":%d,"document_sid":"ET00000000000000000000000000000000",'
    b'"date_created":"2026-01-01T00:00:00.000Z","document_revision":"%x","document_data":%s,'
    b'"document_unique_name":"fan-1000"}}'
)


def frame(header: dict[str, object], body: bytes = b"") -> bytes:
    head = json.dumps({**header, "payload_size": len(body)}, separators=(",", ":")).encode()
    return b"TWILSOCK V3.0 %d\r\n%s\r\n%s" % (len(head), head, body)


async def handler(ws: ServerConnection) -> None:
    CONNS.add(ws)
    try:
        async for msg in ws:
            raw = msg if isinstance(msg, bytes) else msg.encode()
            m = _ID.search(raw)
            if b'"method":"init"' in raw and m:
                await ws.send(frame({"method": "reply", "id": m[1].decode(), "status": {"code": 200, "status": "OK"}}))
            elif b'"method":"message"' in raw:
                body = b'{"event_type":"subscription_established"}'
                await ws.send(frame({"method": "notification", "id": f"TM{uuid.uuid4()}"}, body))
    except ConnectionClosed:
        pass
    finally:
        CONNS.discard(ws)


def ws_binary(payload: bytes) -> bytes:
    """An unmasked, unfragmented binary WebSocket frame (what websockets writes for a server)."""
    n = len(payload)
    if n < 126:
        return bytes([0x82, n]) + payload
    if n < 65536:
        return bytes([0x82, 126]) + n.to_bytes(2, "big") + payload
    return bytes([0x82, 127]) + n.to_bytes(8, "big") + payload


class FanOut(asyncio.Protocol):
    """The pub/sub connection: each published Data becomes a Document event (ids in publish order)
    in one frame for all; every message of one read is sent before the next read."""

    def __init__(self, coalesce: bool) -> None:
        self.coalesce = coalesce
        self.reader = hiredis.Reader()
        self.seq = 0
        self.subscribed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(b"*2\r\n$9\r\nSUBSCRIBE\r\n$%d\r\n%s\r\n" % (len(CHANNEL), CHANNEL))  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        frames = []
        while (m := self.reader.gets()) is not False:
            if m[0] == b"message":
                self.seq += 1
                body = EVENT % (self.seq, self.seq, m[2])
                head = {"method": "notification", "id": f"TM{uuid.uuid4()}", "message_type": "twilio.sync.event",
                        "payload_type": "application/json"}  # fmt: skip
                frames.append(frame(head, body))
            elif m[0] == b"subscribe" and not self.subscribed.done():
                self.subscribed.set_result(None)
        if not frames:
            return
        if not self.coalesce:
            for f in frames:
                broadcast(CONNS, f)
            return
        wire = b"".join([ws_binary(f) for f in frames])
        for ws in CONNS:
            if ws.protocol.state is State.OPEN:
                ws.transport.write(wire)

    def connection_lost(self, exc: Exception | None) -> None:
        raise SystemExit(f"pub/sub connection lost: {exc!r}")


async def publish_endpoint(r: aioredis.Redis, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """POST …  Data=<JSON>: checks the JSON and PUBLISHes it; keep-alive, any path."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length: *(\d+)", head)[1])  # type: ignore[index]
            data = parse_qs((await reader.readexactly(length)).decode())["Data"][0]
            json.loads(data)  # sync-server validates the data too
            await r.publish(CHANNEL, data)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


async def main(args: argparse.Namespace) -> None:
    r = aioredis.Redis.from_url(args.redis_url)
    url = urlsplit(args.redis_url)
    loop = asyncio.get_running_loop()
    _, fan = await loop.create_connection(
        lambda: FanOut(args.coalesce and not args.compression), url.hostname, url.port or 6379
    )
    await fan.subscribed
    http = await asyncio.start_server(lambda rd, wr: publish_endpoint(r, rd, wr), "127.0.0.1", args.http_port)
    compression = "deflate" if args.compression else None
    async with serve(handler, "127.0.0.1", args.port, compression=compression, ping_interval=None, backlog=2048):
        async with http:
            await loop.create_future()  # until terminated


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, required=True, help="WebSocket port")
    ap.add_argument("--http-port", type=int, required=True, help="the publish endpoint's port")
    ap.add_argument("--redis-url", required=True)
    ap.add_argument("--compression", action="store_true", help="accept permessage-deflate")
    ap.add_argument(
        "--coalesce", action="store_true", help="the frames of one pub/sub read in one write per connection"
    )
    uvloop.run(main(ap.parse_args()))
