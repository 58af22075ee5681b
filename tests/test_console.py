"""The admin console's server side (app/console): the page, and /console/api authenticated exactly like
REST, against a real server and Valkey. Live events are read as Server-Sent Events with httpx; the
page itself is driven in a real browser by tests/test_console_browser.py."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from realtime.client import SyncClient
from tests.helpers import ACCOUNT_SID, AUTH_TOKEN, SCALE, RedisProcess, ServerProcess
from tests.sdk import token

TIMEOUT = 10 * SCALE


class Sse:
    """A Server-Sent Events stream read line by line: ``next()`` is the next ``change`` event."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.lines = response.aiter_lines()
        self.last_id: str | None = None

    async def frame(self) -> tuple[str, str, str | None]:
        event, data, sid = "message", "", None
        while True:
            line = await asyncio.wait_for(anext(self.lines), TIMEOUT)
            if line == "":
                if data or event != "message":
                    return event, data, sid
                continue
            if line.startswith(":") or line.startswith("retry:"):
                continue
            field, _, value = line.partition(": ")
            if field == "event":
                event = value
            elif field == "data":
                data += value
            elif field == "id":
                sid = self.last_id = value

    async def next(self) -> dict[str, Any]:
        while True:
            event, data, _ = await self.frame()
            if event == "change":
                found: dict[str, Any] = json.loads(data)
                return found


async def _stream(http: httpx.AsyncClient, url: str, **headers: str) -> AsyncIterator[Sse]:
    async with http.stream("GET", url, headers=headers, timeout=httpx.Timeout(TIMEOUT, read=None)) as r:
        assert r.status_code == 200, await r.aread()
        assert r.headers["content-type"].startswith("text/event-stream")
        yield Sse(r)


def stream(http: httpx.AsyncClient, url: str, **headers: str) -> Any:
    return contextlib.asynccontextmanager(_stream)(http, url, **headers)


async def _document(http: httpx.AsyncClient, service: str, name: str, data: dict[str, Any]) -> dict[str, Any]:
    r = await http.post(f"/v1/Services/{service}/Documents", data={"UniqueName": name, "Data": json.dumps(data)})
    assert r.status_code == 201, r.text
    return dict(r.json())


async def test_the_page_and_its_files_are_served(server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=server.base_url) as anon:
        page = await anon.get("/console")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert "/console/static/console.js" in page.text
        js = await anon.get("/console/static/console.js")
        assert js.status_code == 200 and "Last-Event-ID" in js.text
        assert (await anon.get("/console/static/console.css")).status_code == 200


async def test_the_console_api_authenticates_like_rest_and_keeps_to_the_account(
    server: ServerProcess, http: httpx.AsyncClient, service: str
) -> None:
    api = f"/console/api/Services/{service}"
    async with httpx.AsyncClient(base_url=server.base_url) as anon:
        for path in ("/events", "/webhooks", "/connections"):
            r = await anon.get(api + path)
            assert r.status_code == 401 and r.json()["code"] == 20003, r.text
        r = await anon.get(api + "/connections", auth=("AC" + "f" * 32, "wrong"))
        assert r.status_code == 401
        assert (await anon.post(api + "/webhooks/replay")).status_code == 401
    other = "IS" + "0" * 32  # not a Service of this account
    r = await http.get(f"/console/api/Services/{other}/connections")
    rest = await http.get(f"/v1/Services/{other}/Documents")
    assert r.status_code == rest.status_code == 404 and r.json()["code"] == rest.json()["code"], r.text
    r = await http.get(f"{api}/events", params={"object": "ET" + "0" * 32})
    assert r.status_code == 404, r.text
    r = await http.get(f"{api}/events", params={"object": "XX123"})
    assert r.status_code == 400, r.text


async def test_an_object_view_sends_the_log_then_live_writes_and_resumes_by_event_id(
    http: httpx.AsyncClient, service: str
) -> None:
    doc = await _document(http, service, "watched", {"n": 0})
    url = f"/console/api/Services/{service}/events?object={doc['sid']}"
    async with stream(http, url) as s:
        first = await s.next()
        assert (first["id"], first["type"], first["data"], first["origin"]) == (0, "document_created", {"n": 0}, "rest")
        assert first["revision"] == doc["revision"] and first["object_sid"] == doc["sid"]
        started = time.monotonic()
        r = await http.post(f"/v1/Services/{service}/Documents/watched", data={"Data": '{"n": 1}'})
        assert r.status_code == 200
        live = await s.next()
        took = time.monotonic() - started
        assert (live["id"], live["type"], live["data"]) == (1, "document_updated", {"n": 1})
        assert live["revision"] == r.json()["revision"]
        assert live["time"].endswith("Z") and live["identity"] == "system"
        assert took < 1.0 * SCALE, took
        last = s.last_id
    assert last == "1"
    for n in (2, 3):  # written while the view is disconnected
        await http.post(f"/v1/Services/{service}/Documents/watched", data={"Data": json.dumps({"n": n})})
    async with stream(http, url, **{"Last-Event-ID": last}) as s:
        assert [(await s.next())["id"] for _ in range(2)] == [2, 3]  # nothing lost, nothing doubled
        await http.delete(f"/v1/Services/{service}/Documents/watched")
        removed = await s.next()
        assert removed["type"] == "document_removed"
        event, _, _ = await s.frame()
        assert event == "removed"


async def test_an_sdk_write_shows_its_origin_and_identity(
    server: ServerProcess, http: httpx.AsyncClient, service: str, api_key: Any
) -> None:
    doc = await _document(http, service, "by-sdk", {})
    url = f"/console/api/Services/{service}/events?object={doc['sid']}"
    async with stream(http, url) as s:
        await s.next()
        async with await SyncClient.connect(server.ws_url, token(api_key.sid, api_key.secret, service, "alice")) as c:
            await c.call("POST", f"/v3/Documents/{doc['sid']}", {"data": {"from": "sdk"}})
            ev = await s.next()
        assert (ev["origin"], ev["identity"], ev["data"]) == ("sdk", "alice", {"from": "sdk"})
        assert ev["endpoint"]


async def _subscribers(redis: Any, channel: str) -> int:
    """Subscribers of a wake channel: a shard channel on Valkey 7+ (SSUBSCRIBE), so SHARDNUMSUB."""
    reply = await redis.execute_command("PUBSUB", "SHARDNUMSUB", channel)
    return int(reply[1])


async def test_the_service_view_gets_every_object_and_an_idle_service_is_not_watched(
    http: httpx.AsyncClient, service: str, redis: Any
) -> None:
    from storage import keys

    channel = keys.wake_channel(service)
    assert await _subscribers(redis, channel) == 0  # nobody watches: no subscription at all
    url = f"/console/api/Services/{service}/events"
    async with stream(http, url) as s:
        for _ in range(50):
            if await _subscribers(redis, channel) == 1:
                break
            await asyncio.sleep(0.05)
        assert await _subscribers(redis, channel) == 1
        doc = await _document(http, service, "a", {"x": 1})
        r = await http.post(f"/v1/Services/{service}/Maps", data={"UniqueName": "m"})
        await http.post(f"/v1/Services/{service}/Maps/m/Items", data={"Key": "k", "Data": '{"y": 2}'})
        got = [await s.next() for _ in range(3)]
        assert [(e["object_sid"], e["type"]) for e in got] == [
            (doc["sid"], "document_created"),
            (r.json()["sid"], "map_created"),
            (r.json()["sid"], "map_item_added"),
        ]
        assert got[2]["key"] == "k" and got[2]["data"] == {"y": 2}
        assert s.last_id == f"{r.json()['sid']}:1"
    for _ in range(50):  # the view closed: the Service costs nothing again
        if await _subscribers(redis, channel) == 0:
            break
        await asyncio.sleep(0.05)
    assert await _subscribers(redis, channel) == 0


async def test_webhooks_view_shows_the_queue_and_dead_letters_and_replays(
    http: httpx.AsyncClient, service: str
) -> None:
    from tests.webhook_receiver import Receiver

    api = f"/console/api/Services/{service}"
    w = (await http.get(api + "/webhooks")).json()
    assert (w["pending"], w["dead_letter_count"], w["dead_letters"], w["url"]) == (0, 0, [], None)
    assert (await http.post(api + "/webhooks/replay")).json() == {"replayed": 0}

    receiver = await Receiver().start()
    try:
        receiver.fail_all = True
        hooks = {"FriendlyName": "hooks", "WebhookUrl": receiver.url, "WebhooksFromRestEnabled": "true"}
        r = await http.post("/v1/Services", data=hooks)
        hooked = r.json()["sid"]
        api = f"/console/api/Services/{hooked}"
        await http.post(f"/v1/Services/{hooked}/Documents", data={"UniqueName": "d"})
        for _ in range(int(20 * SCALE / 0.05)):
            w = (await http.get(api + "/webhooks")).json()
            if w["dead_letter_count"]:
                break
            await asyncio.sleep(0.05)
        assert w["url"] == receiver.url and w["dead_letter_count"] == 1 and w["failing_since"] is not None, w
        dead = w["dead_letters"][0]
        assert dead["event"]["type"] == "document_created" and "HTTP 500" in dead["error"], dead
        assert dead["attempts"] >= 1
        receiver.fail_all = False
        r = await http.post(api + "/webhooks/replay", data={"Id": dead["id"]})
        assert r.json() == {"replayed": 1}
        got = await receiver.wait_for(1)
        assert got[-1].form["EventType"] == "document_created"
        assert (await http.get(api + "/webhooks")).json()["dead_letter_count"] == 0
    finally:
        await receiver.stop()


@pytest.mark.parametrize("identities", [("alice", "alice", "bob")])
async def test_connections_per_identity(
    server: ServerProcess, http: httpx.AsyncClient, service: str, api_key: Any, identities: tuple[str, ...]
) -> None:
    api = f"/console/api/Services/{service}/connections"
    assert (await http.get(api)).json()["connections"] == 0
    clients = [
        await SyncClient.connect(server.ws_url, token(api_key.sid, api_key.secret, service, who)) for who in identities
    ]
    try:
        c = (await http.get(api)).json()
        assert (c["connections"], c["identities"], c["workers"]) == (3, {"alice": 2, "bob": 1}, 1)
    finally:
        for client in clients:
            await client.close()
    for _ in range(50):
        if (await http.get(api)).json()["connections"] == 0:
            break
        await asyncio.sleep(0.05)
    assert (await http.get(api)).json()["connections"] == 0


async def test_open_event_streams_do_not_hold_up_a_graceful_shutdown(redis_server: RedisProcess) -> None:
    """SIGTERM ends every open console stream first (the page reconnects elsewhere by Last-Event-ID);
    without that, uvicorn would wait out its graceful timeout (10 s) for them."""
    server = await asyncio.to_thread(ServerProcess(redis_url=redis_server.url).start)
    try:
        async with httpx.AsyncClient(base_url=server.base_url, auth=(ACCOUNT_SID, AUTH_TOKEN), timeout=10) as http:
            service = (await http.post("/v1/Services", data={"FriendlyName": "x"})).json()["sid"]
            doc = await _document(http, service, "d", {})
            async with (
                stream(http, f"/console/api/Services/{service}/events") as whole,
                stream(http, f"/console/api/Services/{service}/events?object={doc['sid']}") as one,
            ):
                await one.next()
                started = time.monotonic()
                server.proc.send_signal(signal.SIGTERM)
                code = await asyncio.to_thread(server.proc.wait, 30 * SCALE)
                took = time.monotonic() - started
                with contextlib.suppress(httpx.HTTPError, StopAsyncIteration):  # both streams ended
                    await one.frame()
                with contextlib.suppress(httpx.HTTPError, StopAsyncIteration):
                    await whole.frame()
        print(f"shutdown with open streams: {took:.2f} s")
        assert code == 0 and took < 5 * SCALE, (code, took)
    finally:
        server.stop()


async def test_resuming_past_the_log_says_how_many_events_were_trimmed(
    http: httpx.AsyncClient, service: str, redis: Any
) -> None:
    from storage import keys

    doc = await _document(http, service, "trimmed", {"n": 0})
    for n in range(1, 6):
        await http.post(f"/v1/Services/{service}/Documents/trimmed", data={"Data": json.dumps({"n": n})})
    # events 0..3 gone, as a long log trims them
    await redis.xtrim(keys.events(service, doc["sid"]), minid="0-5", approximate=False)
    url = f"/console/api/Services/{service}/events?object={doc['sid']}"
    async with stream(http, url, **{"Last-Event-ID": "1"}) as s:
        assert await s.frame() == ("gap", "2", None)  # 2 and 3 were missed
        assert [(await s.next())["id"] for _ in range(2)] == [4, 5]
