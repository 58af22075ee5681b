"""The gateway across processes and under stress: two server processes on one Redis, a stalled
client, shutdown, and the reachability records behind the endpoint_* webhooks."""

from __future__ import annotations

import asyncio
import base64
import os
import re
import socket
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from realtime import twilsock
from realtime.client import SyncClient
from storage import keys
from tests.helpers import ON_EVERY_BACKEND, SCALE, Backend, Endpoint, ServerProcess
from tests.sdk import token
from tests.webhook_receiver import Receiver

pytestmark = ON_EVERY_BACKEND


def ws_url(server: Endpoint) -> str:
    return f"ws://127.0.0.1:{server.port}/v3/wsconnect"


@pytest.fixture
def second(backend: Backend) -> Any:
    """Another server process on the test's Redis."""
    srv = backend.server_process().start()
    yield srv
    srv.stop()


async def test_write_through_one_process_reaches_a_socket_of_another(
    server: Endpoint, second: ServerProcess, api_key: Any, service: str
) -> None:
    tok = token(api_key.sid, api_key.secret, service, "alice")
    async with (
        await SyncClient.connect(ws_url(server), tok) as writer,
        await SyncClient.connect(ws_url(second), tok) as reader,
    ):
        m = await writer.open("map", "shared")
        await reader.subscribe(m["sid"], "map", m["last_event_id"])
        for n in range(20):
            await writer.call("PUT", f"{m['links']['items']}/k{n}", {"data": {"n": n}})
        got = [await reader.next_event() for _ in range(20)]
        assert [(e["event_type"], e["event"]["item_key"], e["event"]["id"]) for e in got] == [
            ("map_item_added", f"k{n}", n + 1) for n in range(20)
        ]
        # the item URL names the process the reader is connected to
        assert got[0]["event"]["item_url"].startswith(f"http://127.0.0.1:{second.port}/v3/Maps/")


async def _stalled_and_healthy(
    srv: ServerProcess, api_key: Any, service: str, kind: str, sid: str, since: int = 0, rcvbuf: int = 4096
) -> tuple[Any, SyncClient, socket.socket]:
    """A raw twilsock client whose socket is never read (tiny receive buffer), and a healthy
    SyncClient, both subscribed to ``sid``."""
    tok = token(api_key.sid, api_key.secret, service, "alice")
    sock = socket.create_connection(("127.0.0.1", srv.port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    stalled = await connect(
        ws_url(srv), sock=sock, max_queue=1, max_size=2**24, compression=None, close_timeout=0.5, ping_interval=None
    )
    healthy = await SyncClient.connect(ws_url(srv), tok)
    stalled_token = token(api_key.sid, api_key.secret, service, "stalled")
    await stalled.send(twilsock.encode({"method": "init", "id": "TM1", "token": stalled_token}))
    assert twilsock.decode(await stalled.recv()).header["status"]["code"] == 200
    poke = {"action": "establish", "correlation_id": 1, "requests": [
        {"object_sid": sid, "object_type": kind, "last_event_id": since}]}  # fmt: skip
    request = {"host": "x", "path": "/v4/Subscriptions", "method": "POST", "headers": {}}
    await stalled.send(twilsock.encode({"method": "message", "id": "TM2", "http_request": request}, poke))
    await healthy.subscribe(sid, kind, since)
    return stalled, healthy, sock


BIG = base64.b64encode(os.urandom(11000)).decode()  # incompressible, ~15 KB


async def test_a_stalled_collection_reader_is_closed_and_never_delays_the_others(
    backend: Backend, api_key: Any, service: str, twilio: Any, redis: Any
) -> None:
    # heartbeats are slow here (60 s): only the overflow policy can end the stalled connection in time
    srv = backend.server_process(SYNC_WS_QUEUE_FRAMES="150", SYNC_WS_PING_S="60").start()
    reachable(twilio, service)
    try:
        sync = twilio.sync.v1.services(service)
        m = sync.sync_maps.create(unique_name="firehose")
        sync.sync_maps(m.sid).sync_map_items.create(key="k", data={"n": 0})
        stalled, healthy, _ = await _stalled_and_healthy(srv, api_key, service, "map", m.sid, since=1)
        async with stalled, healthy:

            def write() -> None:  # ~9 MB of events: more than the socket buffers and the queue hold
                for n in range(1, 601):
                    sync.sync_maps(m.sid).sync_map_items("k").update(data={"n": n, "pad": BIG})

            writing = asyncio.create_task(asyncio.to_thread(write))  # the event loop keeps reading meanwhile
            for n in range(1, 601):
                ev = await healthy.next_event(30 * SCALE)
                assert ev["event"]["id"] == n + 1 and ev["event"]["item_data"]["n"] == n
            await writing
            # the stalled one was cut off: its endpoint is no longer connected (reachability record)
            await disconnected(redis, service, "stalled")
            assert await redis.smembers(keys.endpoints(service, "alice"))  # the healthy one still is
    finally:
        srv.stop()


async def test_a_stalled_document_reader_is_conflated_to_the_latest_state(
    backend: Backend, api_key: Any, service: str, twilio: Any, redis: Any
) -> None:
    """A Document's reader that falls behind is not closed and gets no backlog: while its socket is
    backed up only the latest state waits, and it arrives once the reader reads again."""
    srv = backend.server_process(SYNC_WS_QUEUE_FRAMES="10", SYNC_WS_PING_S="60").start()
    reachable(twilio, service)
    try:
        sync = twilio.sync.v1.services(service)
        doc = sync.documents.create(unique_name="firehose")
        stalled, healthy, _ = await _stalled_and_healthy(srv, api_key, service, "document", doc.sid, rcvbuf=65536)
        async with stalled, healthy:

            def write() -> None:
                for n in range(1, 301):  # ~4.5 MB: more than the socket buffers hold
                    sync.documents(doc.sid).update(data={"n": n, "pad": BIG})

            writing = asyncio.create_task(asyncio.to_thread(write))
            for n in range(1, 301):
                ev = await healthy.next_event(30 * SCALE)
                assert ev["event"]["id"] == n
            await writing
            assert await redis.smembers(keys.endpoints(service, "stalled"))  # still connected
            async with httpx.AsyncClient() as scrape:  # /metrics shows the send queue
                text = (await scrape.get(f"{srv.base_url}/metrics")).text
            assert re.search(r"^sync_ws_backed_up_connections [1-9]", text, re.M), text[-2000:]
            assert re.search(r"^sync_ws_buffered_bytes [1-9]", text, re.M)
            seen: list[int] = []
            async with asyncio.timeout(30 * SCALE):
                while not seen or seen[-1] != 300:
                    f = twilsock.decode(await stalled.recv())
                    if f.method == "notification" and f.body()["event_type"] == "document_updated":
                        seen.append(f.body()["event"]["document_data"]["n"])
            # in order, some conflated away, and never closed although far more than 10 frames were
            # due while its socket was backed up (a List or Map reader would have been: test above)
            assert seen == sorted(seen) and len(seen) < 300, seen
            # and /metrics counts every state it never got as conflated
            async with httpx.AsyncClient() as scrape:
                text = (await scrape.get(f"{srv.base_url}/metrics")).text
            assert re.search(rf"^sync_ws_conflated_frames(_total)? {300 - len(seen)}(\.0)?$", text, re.M), (
                300 - len(seen),
                re.findall(r"^sync_ws_conflated.*$", text, re.M),
            )
    finally:
        srv.stop()


async def test_a_reader_behind_on_acknowledgements_gets_its_document_conflated_and_every_list_item(
    backend: Backend, api_key: Any, service: str, twilio: Any
) -> None:
    """A client that acknowledges notifications, as twilio-sync does, and then falls behind on them
    while still reading its socket (the SDK's own queue, not the socket, holds the backlog) is held
    to SYNC_WS_ACK_WINDOW unacknowledged events: its Document is conflated meanwhile, and once it
    acknowledges what it got the latest state follows; its List loses nothing."""
    window = 8
    srv = backend.server_process(SYNC_WS_ACK_WINDOW=str(window)).start()
    try:
        sync = twilio.sync.v1.services(service)
        doc = sync.documents.create(unique_name="behind")
        lst = sync.sync_lists.create(unique_name="behind-list")
        async with connect(ws_url(srv), compression=None, ping_interval=None) as ws:
            tok = token(api_key.sid, api_key.secret, service, "slow")
            await ws.send(twilsock.encode({"method": "init", "id": "TM1", "token": tok}))
            assert twilsock.decode(await ws.recv()).header["status"]["code"] == 200
            poke = {"action": "establish", "correlation_id": 1, "requests": [
                {"object_sid": doc.sid, "object_type": "document", "last_event_id": 0},
                {"object_sid": lst.sid, "object_type": "list", "last_event_id": 0}]}  # fmt: skip
            request = {"host": "x", "path": "/v4/Subscriptions", "method": "POST", "headers": {}}
            await ws.send(twilsock.encode({"method": "message", "id": "TM2", "http_request": request}, poke))
            docs: list[int] = []
            items: list[int] = []
            unacked: list[str] = []

            async def read(until: Any, ack: bool) -> None:
                async with asyncio.timeout(30 * SCALE):
                    while not until():
                        f = twilsock.decode(await ws.recv())
                        if f.method != "notification":
                            continue
                        if ack:  # the SDK's acknowledgement: its id first, then the method
                            await ws.send(twilsock.encode({"id": f.header["id"], "method": "reply"}))
                        else:
                            unacked.append(f.header["id"])
                        body = f.body()
                        if body.get("event_type") == "document_updated":
                            docs.append(body["event"]["document_data"]["n"])
                        elif body.get("event_type") == "list_item_added":
                            items.append(body["event"]["item_data"]["n"])

            established = 0

            async with asyncio.timeout(30 * SCALE):  # both subscriptions, acknowledged
                while established < 2:
                    f = twilsock.decode(await ws.recv())
                    if f.method == "notification":
                        await ws.send(twilsock.encode({"id": f.header["id"], "method": "reply"}))
                        events = f.body().get("events") or []
                        established += sum(1 for e in events if f.body()["event_type"] == "subscription_established")
            for n in range(1, 4):  # in step: every state arrives
                await asyncio.to_thread(lambda n=n: sync.documents(doc.sid).update(data={"n": n}))
            await read(lambda: docs[-1:] == [3], ack=True)
            assert docs == [1, 2, 3]

            def write(first: int) -> None:  # the client reads on but acknowledges nothing of these
                for n in range(first, first + 20):
                    sync.documents(doc.sid).update(data={"n": 100 + n})
                    sync.sync_lists(lst.sid).sync_list_items.create(data={"n": n})

            # twice: caught up by acknowledging only the last event it got (the count alone would
            # still say it is behind), then by acknowledging each
            for first, catch_up in ((1, "last"), (21, "each")):
                unacked.clear()
                await asyncio.to_thread(write, first)
                await read(lambda first=first: len(items) == first + 19, ack=False)
                assert items == list(range(1, first + 20))  # a List is never held back
                behind = [n for n in docs if n > 100 + first - 1]
                assert len(behind) <= window and behind == sorted(behind), behind  # conflated meanwhile
                assert await behind_connections(srv) == 1  # /metrics shows it
                for msg_id in unacked[-1:] if catch_up == "last" else unacked:
                    await ws.send(twilsock.encode({"id": msg_id, "method": "reply"}))
                await read(lambda first=first: docs[-1] == 100 + first + 19, ack=True)  # the latest state
                assert await behind_connections(srv) == 0
            after = [n for n in docs if n > 100]
            assert after == sorted(set(after)) and len(after) < 40, after
    finally:
        srv.stop()


async def behind_connections(srv: ServerProcess) -> int:
    """The ``sync_ws_behind_connections`` gauge of ``srv``'s /metrics."""
    async with httpx.AsyncClient() as scrape:
        text = (await scrape.get(f"{srv.base_url}/metrics")).text
    m = re.search(r"^sync_ws_behind_connections (\d+)", text, re.M)
    assert m, text[-2000:]
    return int(m[1])


def reachable(twilio: Any, service: str) -> None:
    """Connections are recorded (keys.endpoints) only in a Service with reachability webhooks."""
    twilio.sync.v1.services(service).update(reachability_webhooks_enabled=True)


async def disconnected(redis: Any, service: str, identity: str) -> None:
    """Wait until no endpoint of ``identity`` is connected any more (the gateway's reachability record)."""
    async with asyncio.timeout(30 * SCALE):
        while True:
            if not await redis.smembers(keys.endpoints(service, identity)):
                return
            await asyncio.sleep(0.05)


async def test_heartbeat_drops_a_peer_that_stops_answering(
    backend: Backend, api_key: Any, service: str, redis: Any, twilio: Any
) -> None:
    reachable(twilio, service)
    srv = backend.server_process(SYNC_WS_PING_S="1").start()
    try:
        async with connect(ws_url(srv), close_timeout=0.5) as ws:
            await ws.send(twilsock.encode({"method": "init", "id": "TM1", "token": token(
                api_key.sid, api_key.secret, service, "frozen")}))  # fmt: skip
            assert twilsock.decode(await ws.recv()).header["status"]["code"] == 200
            assert await redis.smembers(keys.endpoints(service, "frozen"))
            ws.transport.pause_reading()  # alive at the TCP level, but no pong ever comes back
            await disconnected(redis, service, "frozen")
    finally:
        srv.stop()


async def test_shutdown_closes_sockets_and_clients_resume_elsewhere(
    backend: Backend, server: Endpoint, api_key: Any, service: str, twilio: Any
) -> None:
    srv = backend.server_process().start()
    try:
        tok = token(api_key.sid, api_key.secret, service, "alice")
        doc = twilio.sync.v1.services(service).documents.create(unique_name="moving", data={"v": 0})
        c = await SyncClient.connect(ws_url(srv), tok)
        await c.subscribe(doc.sid, "document", 0)
        srv.stop()
        closed = await asyncio.wait_for(c.control.get(), 10 * SCALE)
        assert closed["method"] in ("close", "disconnected")
        await c.close()
        twilio.sync.v1.services(service).documents(doc.sid).update(data={"v": 1})
        async with await SyncClient.connect(ws_url(server), tok) as again:
            est = await again.subscribe(doc.sid, "document", 0)
            assert est["last_event_id"] == 1
            ev = again.events.get_nowait()
            assert ev["event"]["document_data"] == {"v": 1}
    finally:
        srv.stop()


async def test_connect_and_disconnect_become_reachability_webhooks(server: Endpoint, api_key: Any, http: Any) -> None:
    receiver = await Receiver().start()
    try:
        r = await http.post(
            "/v1/Services",
            data={"FriendlyName": "reach", "WebhookUrl": receiver.url, "ReachabilityWebhooksEnabled": "true"},
        )
        service = r.json()["sid"]
        async with await SyncClient.connect(ws_url(server), token(api_key.sid, api_key.secret, service, "alice")):
            (connected,) = await receiver.wait_for(1)
        delivered = await receiver.wait_for(2)
        assert [d.form["EventType"] for d in delivered] == ["endpoint_connected", "endpoint_disconnected"]
        assert {d.form["Identity"] for d in delivered} == {"alice"}
        assert delivered[0].form["EndpointId"] == delivered[1].form["EndpointId"] != ""
        assert connected.signature_valid
    finally:
        await receiver.stop()


async def test_without_reachability_webhooks_connections_cost_no_record(
    server: Endpoint, api_key: Any, http: Any, redis: Any
) -> None:
    """A Service without reachability webhooks (the default) runs no reachability script per connect."""
    r = await http.post("/v1/Services", data={"FriendlyName": "quiet", "WebhookUrl": "http://127.0.0.1:9/x"})
    service = r.json()["sid"]
    async with await SyncClient.connect(ws_url(server), token(api_key.sid, api_key.secret, service, "alice")) as c:
        await c.open("document", "d")
        assert not await redis.smembers(keys.endpoints(service, "alice"))
    assert await redis.xlen(keys.webhook_queue(service)) == 1  # document_created, no endpoint_* webhook
