"""A store that comes back older than what its clients saw (a restored backup; a failover without
SYNC_DURABILITY=replica): every client gets the current state and every later write, never silence.

The rollback is made for real: the object's keys (hash, event log, items, item order, history) are
DUMPed at one point and RESTOREd after later writes that clients saw, the way a replica promoted
without those writes, or a restored backup, leaves them. Twilio's own ``twilio-sync`` SDK drops any
event whose id is at or below one it has seen; the server rebases the object past every cursor
(storage/rebase.py), so these tests drive the real SDK: a client that stayed subscribed through the
rollback (the feed notices a write that reused an id it read), a client that reconnects with its
newer cursor (the subscribe notices the cursor ahead of the log), for a Document, a Map item and a
List item. The storage tests check the rebase script itself: idempotent under concurrent calls, no
webhook, the REST revision, a Stream.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from realtime import replay
from realtime.client import SyncClient
from realtime.hub import Hub
from storage import Kind, events, keys, rebase
from tests.helpers import ON_EVERY_BACKEND, Backend, Endpoint
from tests.sdk import Sdk, token

pytestmark = ON_EVERY_BACKEND

Snapshot = dict[str, bytes | None]


def object_keys(service: str, sid: str) -> list[str]:
    """Every key one object's state lives in (storage/keys.py), items and history included."""
    return [
        keys.obj(service, sid),
        keys.events(service, sid),
        keys.items(service, sid),
        keys.item_order(service, sid),
        keys.history_records(service, sid),
        keys.history(service, sid),
        keys.history_keys(service, sid),
    ]


async def snapshot(redis: Any, service: str, sid: str) -> Snapshot:
    return {k: await redis.dump(k) for k in object_keys(service, sid)}


async def roll_back(redis: Any, snap: Snapshot) -> None:
    """Put the object's keys back as they were at ``snapshot`` (absent ones deleted)."""
    for k, dumped in snap.items():
        if dumped is None:
            await redis.delete(k)
        else:
            await redis.restore(k, 0, dumped, replace=True)


@pytest.fixture
def tokens(api_key: Any, service: str) -> Callable[[str], str]:
    return lambda identity: token(api_key.sid, api_key.secret, service, identity)


async def settle(sdk: Sdk, obj: str) -> None:
    await sdk.expect("_subscriptionStateChanged", obj, lambda a: a[0] == "established")


def remote(args: list[Any]) -> bool:
    return args[0]["isLocal"] is False


# -- the SyncClient (realtime/client.py): the ids on the wire --------------------------------------


async def test_a_subscriber_ahead_of_a_rolled_back_log_gets_the_current_state_above_its_cursor(
    server: Endpoint, http: Any, service: str, redis: Any, api_key: Any
) -> None:
    """The Document is put back as it was two events ago. A client arriving with its newer cursor
    gets the current (older) state at an id above that cursor, not silence and not an id it has
    seen; so does a client that stayed subscribed through the rollback; both then get the next
    change above it, and the REST revision agrees with the ids."""
    doc = (await http.post(f"/v1/Services/{service}/Documents", data={"Data": '{"v": 0}'})).json()
    sid, base = doc["sid"], f"/v1/Services/{service}/Documents/{doc['sid']}"
    await http.post(base, data={"Data": '{"v": 1}'})
    snap = await snapshot(redis, service, sid)
    for v in (2, 3):
        assert (await http.post(base, data={"Data": json.dumps({"v": v})})).status_code == 200
    tok = token(api_key.sid, api_key.secret, service, "alice")
    connect = SyncClient.connect
    async with await connect(server.ws_url, tok) as stayed, await connect(server.ws_url, tok) as back:
        await stayed.subscribe(sid, "document", 2)
        assert (await stayed.next_event())["event"]["id"] == 3
        await roll_back(redis, snap)
        established = await back.subscribe(sid, "document", 3)
        assert established["event_type"] == "subscription_established", established
        assert established.get("last_event_id") == 4, established
        for client in (back, stayed):
            state = await client.next_event()
            assert state["event_type"] == "document_updated"
            assert state["event"]["id"] == 4 and state["event"]["document_data"] == {"v": 1}
            assert state["event"]["document_revision"] == "4"
        assert (await http.get(base)).json()["revision"] == "4"
        assert (await http.post(base, data={"Data": '{"v": 9}'})).json()["revision"] == "5"
        for client in (stayed, back):
            ev = await client.next_event()
            assert ev["event"]["id"] == 5 and ev["event"]["document_data"] == {"v": 9}


async def test_a_subscriber_behind_a_feed_that_read_lost_ids_is_not_left_waiting(
    backend: Backend, http: Any, service: str, redis: Any, api_key: Any
) -> None:
    """After the rollback a client arrives with a cursor the log reaches (1), but this process's
    feed has read up to 3, ids the store lost: the object is rebased past 3, so the newcomer is
    established with the current state and the client that stayed gets it too (before, the
    newcomer waited for the feed to pass 3). A Stream, which has no state, just moves on."""
    doc = (await http.post(f"/v1/Services/{service}/Documents", data={"Data": '{"v": 0}'})).json()
    sid, base = doc["sid"], f"/v1/Services/{service}/Documents/{doc['sid']}"
    await http.post(base, data={"Data": '{"v": 1}'})
    stream = (await http.post(f"/v1/Services/{service}/Streams", data={})).json()["sid"]
    publish = f"/v1/Services/{service}/Streams/{stream}/Messages"
    snaps = [await snapshot(redis, service, sid), await snapshot(redis, service, stream)]
    for v in (2, 3):
        await http.post(base, data={"Data": json.dumps({"v": v})})
        await http.post(publish, data={"Data": json.dumps({"v": v})})
    tok = token(api_key.sid, api_key.secret, service, "alice")
    node = backend.server_process().start()  # both clients on one process: one feed
    try:
        await rolled_back_under_a_feed(node.ws_url, tok, sid, stream, snaps, redis, http, publish)
    finally:
        node.stop()


async def rolled_back_under_a_feed(
    url: str, tok: str, sid: str, stream: str, snaps: list[Snapshot], redis: Any, http: Any, publish: str
) -> None:
    connect = SyncClient.connect
    async with await connect(url, tok) as stayed, await connect(url, tok) as low:
        await stayed.subscribe(sid, "document", 2)
        assert (await stayed.next_event())["event"]["id"] == 3
        await stayed.subscribe(stream, "stream", 1)
        assert (await stayed.next_event())["event"]["id"] == 2
        for snap in snaps:
            await roll_back(redis, snap)
        established = await low.subscribe(sid, "document", 1)
        assert established.get("last_event_id") == 4, established
        for client in (low, stayed):
            state = await client.next_event()
            assert (state["event"]["id"], state["event"]["document_data"]) == (4, {"v": 1})
        assert (await low.subscribe(stream, "stream", 0)).get("last_event_id") == 3
        await http.post(publish, data={"Data": '{"m": 1}'})
        for client in (low, stayed):
            ev = await client.next_event()
            assert (ev["event"]["id"], ev["event"]["message_data"]) == (4, {"m": 1})


# -- Twilio's SDK ----------------------------------------------------------------------------------


async def test_sdk_subscribed_through_a_rollback_gets_the_write_that_reused_an_id(
    sdk: Sdk, tokens: Any, twilio: Any, service: str, redis: Any
) -> None:
    """No client resubscribes: the first write after the rollback takes an id the SDK has seen
    (it would drop it); the feed sees that id come back and rebases, so the SDK gets it."""
    doc = twilio.sync.v1.services(service).documents.create(unique_name="kept", data={"v": 0})
    rest = twilio.sync.v1.services(service).documents(doc.sid)
    rest.update(data={"v": 1})
    snap = await snapshot(redis, service, doc.sid)
    await sdk.client("a", tokens("alice"))
    opened = await sdk.open("a", "document", "kept", "d")
    assert opened["data"] == {"v": 1}
    await settle(sdk, "d")
    for v in (2, 3):
        rest.update(data={"v": v})
    await sdk.expect("updated", "d", lambda a: a[0]["data"] == {"v": 3})
    await roll_back(redis, snap)
    rest.update(data={"v": 9})  # takes id 2 again: the SDK, at 3, would ignore it
    (ev,) = await sdk.expect("updated", "d", lambda a: a[0]["data"] == {"v": 9})
    assert remote([ev])
    assert int(rest.fetch().revision, 16) > 3  # the ids went past every cursor
    rest.update(data={"v": 10})
    await sdk.expect("updated", "d", lambda a: a[0]["data"] == {"v": 10})


async def reconnect_after(backend: Backend, tokens: Any, body: Callable[[Sdk, Any], Awaitable[None]]) -> None:
    """Run ``body(sdk, gateway)`` with an SDK client "w" on a server process of its own, which the
    body stops and starts again (the SDK reconnects and re-establishes with its cursors)."""
    gw = backend.server_process().start()
    try:
        watcher = Sdk(gw.base_url)
        await watcher.start()
        try:
            await watcher.client("w", tokens("watcher"))
            await watcher.connected("w")
            await body(watcher, gw)
        finally:
            await watcher.close()
    finally:
        gw.stop()


async def test_sdk_reconnecting_with_a_cursor_ahead_gets_the_current_document(
    tokens: Any, twilio: Any, service: str, redis: Any, backend: Backend
) -> None:
    rest = twilio.sync.v1.services(service).documents
    doc = rest.create(unique_name="status", data={"v": 1})
    snap = await snapshot(redis, service, doc.sid)

    async def body(w: Sdk, gw: Any) -> None:
        await w.open("w", "document", "status", "d")
        await settle(w, "d")
        for v in (2, 3, 4):
            rest(doc.sid).update(data={"v": v})
        await w.expect("updated", "d", lambda a: a[0]["data"] == {"v": 4})
        gw.stop()
        await roll_back(redis, snap)  # back to {"v": 1}, event 0, under a client at event 3
        gw.start()
        await w.expect("updated", "d", lambda a: a[0]["data"] == {"v": 1}, wait_s=60)
        rest(doc.sid).update(data={"v": 5})
        await w.expect("updated", "d", lambda a: a[0]["data"] == {"v": 5})

    await reconnect_after(backend, tokens, body)


async def test_sdk_reconnecting_with_a_cursor_ahead_gets_the_current_map_items(
    tokens: Any, twilio: Any, service: str, redis: Any, backend: Backend
) -> None:
    """Every live item is restated above the cursor: an item the SDK saw change is put back. An
    item created in the lost history stays in the SDK's cache (the store no longer knows its key:
    nothing can name it), as the README says."""
    svc = twilio.sync.v1.services(service)
    m = svc.sync_maps.create(unique_name="feed")
    items = svc.sync_maps(m.sid).sync_map_items
    items.create(key="k1", data={"n": 1})
    snap = await snapshot(redis, service, m.sid)

    async def body(w: Sdk, gw: Any) -> None:
        await w.open("w", "map", "feed", "m")
        await settle(w, "m")
        items("k1").update(data={"n": 11})
        items.create(key="k2", data={"n": 2})
        await w.expect("itemAdded", "m", lambda a: a[0]["item"]["key"] == "k2")
        gw.stop()
        await roll_back(redis, snap)
        gw.start()
        (ev,) = await w.expect("itemUpdated", "m", lambda a: a[0]["item"]["data"] == {"n": 1}, wait_s=60)
        assert ev["item"]["key"] == "k1" and ev["isLocal"] is False
        items("k1").update(data={"n": 12})
        await w.expect("itemUpdated", "m", lambda a: a[0]["item"]["data"] == {"n": 12})
        items.create(key="k3", data={"n": 3})
        await w.expect("itemAdded", "m", lambda a: a[0]["item"]["key"] == "k3")

    await reconnect_after(backend, tokens, body)


async def test_sdk_reconnecting_with_a_cursor_ahead_gets_the_current_list_and_lost_pushes_removed(
    tokens: Any, twilio: Any, service: str, redis: Any, backend: Backend
) -> None:
    """List indexes pushed in the lost history are reported removed (the restored next index and
    the cursor bound them), and the next push, which takes such an index again, is added."""
    svc = twilio.sync.v1.services(service)
    lst = svc.sync_lists.create(unique_name="todo")
    items = svc.sync_lists(lst.sid).sync_list_items
    items.create(data={"t": "milk"})
    snap = await snapshot(redis, service, lst.sid)

    async def body(w: Sdk, gw: Any) -> None:
        await w.open("w", "list", "todo", "l")
        await settle(w, "l")
        items(0).update(data={"t": "oat milk"})
        items.create(data={"t": "eggs"})
        await w.expect("itemAdded", "l", lambda a: a[0]["item"]["index"] == 1)
        gw.stop()
        await roll_back(redis, snap)
        gw.start()
        (ev,) = await w.expect("itemUpdated", "l", lambda a: a[0]["item"]["data"] == {"t": "milk"}, wait_s=60)
        assert ev["item"]["index"] == 0
        (gone,) = await w.expect("itemRemoved", "l")
        assert gone["index"] == 1
        items.create(data={"t": "bread"})  # index 1 again
        (added,) = await w.expect("itemAdded", "l", lambda a: a[0]["item"]["data"] == {"t": "bread"})
        assert added["item"]["index"] == 1

    await reconnect_after(backend, tokens, body)


# -- the rebase script ----------------------------------------------------------------------------


async def test_rebase_is_idempotent_under_concurrent_calls_and_queues_no_webhook(
    http: Any, service: str, store: Any, redis: Any
) -> None:
    r = await http.post(
        f"/v1/Services/{service}",
        data={"WebhookUrl": "http://127.0.0.1:9/hook", "WebhooksFromRestEnabled": "true"},
    )
    assert r.status_code == 200, r.text
    doc = (await http.post(f"/v1/Services/{service}/Documents", data={"Data": '{"v": 0}'})).json()
    queued = await redis.xlen(keys.webhook_queue(service))
    results = await asyncio.gather(*(rebase.rebase(store, service, doc["sid"], 7) for _ in range(4)))
    assert sorted(n for _, n in results) == [0, 0, 0, 1]  # one of them restated the state, once
    assert {last for last, _ in results} == {8}
    log = await events.read_since(store, service, doc["sid"])
    assert [(ev.id, ev.type) for ev in log] == [(0, "document_created"), (8, "document_updated")]
    assert json.loads(log[-1].data or "") == {"v": 0} and log[-1].revision == "8"
    assert await redis.xlen(keys.webhook_queue(service)) == queued  # the restatement is no change
    fetched = (await http.get(f"/v1/Services/{service}/Documents/{doc['sid']}")).json()
    assert fetched["revision"] == "8" and fetched["data"] == {"v": 0}
    assert await rebase.rebase(store, service, doc["sid"], 3) == (8, 0)  # below the counter: nothing


async def test_a_counter_at_the_cursor_is_rebased_only_for_a_reused_id(http: Any, service: str, store: Any) -> None:
    """A caller that read the counter before the latest write (a subscriber whose object was read
    just before this process's feed read further) asks with a cursor equal to the counter: that is
    no rollback, and restating the state would record every value twice (what `sync-server check`
    caught in CI). Only a feed that found another event at the id it read asks with ``reused``."""
    doc = (await http.post(f"/v1/Services/{service}/Documents", data={"Data": '{"v": 0}'})).json()
    await http.post(f"/v1/Services/{service}/Documents/{doc['sid']}", data={"Data": '{"v": 1}'})
    assert await rebase.rebase(store, service, doc["sid"], 1) == (1, 0)
    assert [ev.id for ev in await events.read_since(store, service, doc["sid"])] == [0, 1]
    assert await rebase.rebase(store, service, doc["sid"], 1, reused=True) == (2, 1)


async def test_a_subscriber_whose_object_was_read_before_the_feed_read_further_is_not_rebased(
    http: Any, service: str, store: Any
) -> None:
    """The subscribe handler reads the object (counter 1), then awaits (the ACL check, joining the
    hub) while this process's feed reads event 2. Catching up with that stale ``latest`` must send
    event 2 as it is, not rebase: nothing was rolled back."""
    base = f"/v1/Services/{service}/Documents"
    doc = (await http.post(base, data={"Data": '{"v": 0}'})).json()
    sid = doc["sid"]
    await http.post(f"{base}/{sid}", data={"Data": '{"v": 1}'})
    hub = Hub(store)
    first = Reader(service, sid, cursor=1)
    await hub.join(first)
    assert hub.activate(first)
    await http.post(f"{base}/{sid}", data={"Data": '{"v": 2}'})
    hub.feeds[sid].kick()
    await asyncio.wait_for(first.got(2), 10)  # the feed has read event 2
    late = Reader(service, sid, cursor=0)
    await hub.join(late)
    assert await replay.catch_up(hub, late, Kind.DOCUMENT, latest=1)  # read before event 2 was
    assert late.active and late.offered == [2]
    assert [ev.id for ev in await events.read_since(store, service, sid)] == [0, 1, 2]
    assert hub.stats.state_replays == 0
    for reader in (first, late):
        await hub.leave(reader)


class Reader:
    """A subscriber of the hub (realtime/hub.Subscriber) that records the ids it is offered."""

    base = ""

    def __init__(self, service_sid: str, sid: str, cursor: int) -> None:
        self.service_sid, self.sid, self.cursor = service_sid, sid, cursor
        self.active = False
        self.offered: list[int] = []
        self._arrived = asyncio.Event()

    def offer(self, eid: int, frame: Any, origin: str | None, removal: bool, replay: bool = False) -> None:
        if eid > self.cursor:
            self.cursor = eid
            self.offered.append(eid)
            self._arrived.set()

    def offer_many(self, offers: list[Any]) -> None:
        for o in offers:
            self.offer(*o)

    async def recheck(self, identities: frozenset[str] | None) -> None:
        return None

    async def got(self, eid: int) -> None:
        while self.cursor < eid:
            self._arrived.clear()
            await self._arrived.wait()


async def test_rebase_of_a_collection_moves_item_revisions_and_of_a_stream_only_the_counter(
    http: Any, service: str, store: Any
) -> None:
    base = f"/v1/Services/{service}"
    m = (await http.post(f"{base}/Maps", data={"UniqueName": "m"})).json()
    for k in ("a", "b"):
        await http.post(f"{base}/Maps/m/Items", data={"Key": k, "Data": json.dumps({"k": k})})
    assert await rebase.rebase(store, service, m["sid"], 5) == (7, 2)
    got = {i["key"]: i["revision"] for i in (await http.get(f"{base}/Maps/m/Items")).json()["items"]}
    assert got == {"a": "6", "b": "7"}  # written in that order, restated in that order
    log = await events.read_since(store, service, m["sid"], 5)
    assert [(ev.id, ev.type, ev.key, ev.revision) for ev in log] == [
        (6, "map_item_updated", "a", "6"),
        (7, "map_item_updated", "b", "7"),
    ]
    s = (await http.post(f"{base}/Streams", data={})).json()
    assert await rebase.rebase(store, service, s["sid"], 4) == (5, 1)  # a marker only: no state
    assert [ev.type for ev in await events.read_since(store, service, s["sid"], 4)] == ["stream_updated"]
    await http.post(f"{base}/Streams/{s['sid']}/Messages", data={"Data": "{}"})
    assert (await events.read_since(store, service, s["sid"]))[-1].id == 6
