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
from urllib.parse import parse_qs

import redis.asyncio as aioredis
import uvloop
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed

CHANNEL = "bench:reference"
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


async def fan_out(r: aioredis.Redis) -> None:
    """Each published Data becomes a Document event (ids in publish order) in one frame for all."""
    seq = 0
    async with r.pubsub() as ps:
        await ps.subscribe(CHANNEL)
        async for m in ps.listen():
            if m["type"] == "message":
                seq += 1
                body = EVENT % (seq, seq, m["data"])
                head = {"method": "notification", "id": f"TM{uuid.uuid4()}", "message_type": "twilio.sync.event",
                        "payload_type": "application/json"}  # fmt: skip
                broadcast(CONNS, frame(head, body))


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
    fan = asyncio.create_task(fan_out(r))
    http = await asyncio.start_server(lambda rd, wr: publish_endpoint(r, rd, wr), "127.0.0.1", args.http_port)
    compression = "deflate" if args.compression else None
    async with serve(handler, "127.0.0.1", args.port, compression=compression, ping_interval=None, backlog=2048):
        async with http:
            await fan


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, required=True, help="WebSocket port")
    ap.add_argument("--http-port", type=int, required=True, help="the publish endpoint's port")
    ap.add_argument("--redis-url", required=True)
    ap.add_argument("--compression", action="store_true", help="accept permessage-deflate")
    uvloop.run(main(ap.parse_args()))
