"""Hostile requests through the SDK tunnel, generated: a seeded mix of tunnelled HTTP requests with
fields missing or of the wrong type, odd methods, paths of valid prefixes and junk segments, and
bodies that are not what the route wants. Each gets an answer below 500 (an HTTP status in the reply,
or a twilsock refusal), the connection keeps serving (or is closed with twilsock 406 and a new one
is opened), and the server logs no traceback. The REST side had the same from the outside testers'
fuzzing (38,782 requests, no 5xx); this covers the tunnel's own parsing of ``http_request``."""

from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path
from typing import Any

from realtime import twilsock
from realtime.client import SyncClient, SyncClientError
from tests.helpers import Backend
from tests.sdk import token

REQUESTS = 400
SEED = int(os.environ.get("SYNC_FUZZ_SEED", "20261203"))  # another seed: another mix

JUNK: list[Any] = [
    None, 0, -1, 2**70, 1.5, "", " ", "%00", "..", "../../etc", "\u2028", "x" * 3000, [], {},
    [1, {"a": None}], {"$": "$"}, True, "TM" + "0" * 32, "*", "?", "#", "%", "%2F", "//", "\\",
]  # fmt: skip
SEGMENTS = ["v3", "Documents", "Lists", "Maps", "Streams", "Items", "Permissions", "Messages", "Subscriptions"]
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "get", "", "BREW", None, 7]


def _path(rng: random.Random) -> Any:
    if rng.random() < 0.1:
        return rng.choice(JUNK)
    parts = [rng.choice(SEGMENTS + [str(j) for j in JUNK if isinstance(j, str)]) for _ in range(rng.randint(0, 6))]
    if rng.random() < 0.7:
        parts[:0] = ["v3", rng.choice(["Documents", "Lists", "Maps", "Streams"])]
    return "/" + "/".join(parts)


def _body(rng: random.Random) -> Any:
    return rng.choice(
        [
            None,
            rng.choice(JUNK),
            {"data": rng.choice(JUNK)},
            {"unique_name": rng.choice(JUNK), "data": {"n": 1}},
            {"key": rng.choice(JUNK), "data": rng.choice(JUNK), "ttl": rng.choice(JUNK)},
            {"index": rng.choice(JUNK), "item_key": rng.choice(JUNK)},
            {"query": rng.choice(JUNK), "from": rng.choice(JUNK), "page_size": rng.choice(JUNK)},
        ]
    )


def _http_request(rng: random.Random, host: str) -> Any:
    if rng.random() < 0.05:
        return rng.choice(JUNK)
    request: dict[str, Any] = {
        "host": host if rng.random() < 0.9 else rng.choice(JUNK),
        "path": _path(rng),
        "method": rng.choice(METHODS),
        "params": rng.choice([{}, {"PageSize": rng.choice(JUNK)}, {"Order": "asc", "From": rng.choice(JUNK)}, []]),
        "headers": rng.choice(
            [
                {"Content-Type": "application/json"},
                {"Content-Type": rng.choice(JUNK)},
                {"If-Match": rng.choice(JUNK)},
                {"Twilio-Request-Id": rng.choice(JUNK)},
                [],
                None,
            ]
        ),
    }
    for field in list(request):
        if rng.random() < 0.05:
            del request[field]
    return request


async def test_generated_hostile_tunnel_requests_never_get_a_5xx(backend: Backend, api_key: Any, service: str) -> None:
    rng = random.Random(SEED)
    srv = backend.server_process().start()
    tok = token(api_key.sid, api_key.secret, service, "fuzz")
    client = await SyncClient.connect(srv.ws_url, tok)
    host = client.url("/").split("/")[2]
    answered, reconnects = 0, 0
    try:
        for _ in range(REQUESTS):
            header = {
                "method": "message",
                "id": twilsock.new_id(),
                "active_grant": "data_sync" if rng.random() < 0.95 else rng.choice(JUNK),
                "payload_type": "application/json" if rng.random() < 0.95 else rng.choice(JUNK),
                "http_request": _http_request(rng, host),
            }
            try:
                frame = await client._send(header, _body(rng))  # raw frames are the point
            except TimeoutError:
                raise AssertionError(f"no reply to {header}") from None
            except SyncClientError as refused:  # a twilsock-level refusal
                assert refused.status < 500, (header, refused)
            except ConnectionError:  # closed for a protocol error (twilsock 406): open another
                closed = client.control.get_nowait() if not client.control.empty() else {}
                assert not closed or closed.get("status", {}).get("code") == 406, closed
                await client.close()
                client = await SyncClient.connect(srv.ws_url, tok)
                reconnects += 1
            else:
                status = int(frame.header["http_status"]["code"])
                assert status < 500, (header, status, frame.body())
                answered += 1
    finally:
        await client.close()
        srv.stop()
    log = await asyncio.to_thread(Path(srv.log_path).read_text)
    assert "Traceback" not in log and " 500 " not in log, log[-3000:]
    assert answered > REQUESTS // 2, (answered, reconnects)  # most were answered over HTTP, not refused
