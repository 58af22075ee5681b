"""What only the cluster topology can show: 3 Valkey masters + 3 replicas, two sync-server nodes
behind the test balancer (tests/conftest.py ``cluster_backend``).

The REST, realtime, SDK and webhook contract itself runs on this topology through the ``backend``
fixture: the modules marked ``ON_EVERY_BACKEND`` run once on each backend. Here, explicitly: the
topology is what it claims, Services spread over the masters, a write through one node reaches
subscribers on the other, and a client that comes back on the other node resumes by replay.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from redis import asyncio as aioredis

from realtime.client import SyncClient
from realtime.cluster_broker import slot_of
from storage import Store, keys
from tests.balancer import Balancer
from tests.helpers import ACCOUNT_SID, AUTH_TOKEN, Backend, ClusterProcess, ServerProcess
from tests.sdk import Sdk, token

pytestmark = pytest.mark.backends("cluster")


def _ws_connections(node: ServerProcess) -> float:
    """The node's open WebSocket connections, from its /metrics."""
    text = httpx.get(f"{node.base_url}/metrics", timeout=10).text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith("sync_ws_connections"))


def test_topology_is_three_masters_each_with_a_replica_in_sync(backend: Backend, redis_cluster: ClusterProcess) -> None:
    masters, replicas = redis_cluster.masters(), redis_cluster.replicas()
    assert len(masters) == 3 and len(replicas) == 3
    assert all(len(redis_cluster.replica_of(m)) == 1 for m in masters)
    assert len(backend.nodes) == 2 and backend.nodes[0].port != backend.nodes[1].port


async def test_the_balancer_spreads_connections_over_both_nodes(backend: Backend, api_key: Any, service: str) -> None:
    """Two WebSockets opened one after the other through the balancer land one on each node."""
    before = [_ws_connections(n) for n in backend.nodes]
    tok = token(api_key.sid, api_key.secret, service, "spread")
    async with (
        await SyncClient.connect(backend.server.ws_url, tok),
        await SyncClient.connect(backend.server.ws_url, tok),
    ):
        after = [_ws_connections(n) for n in backend.nodes]
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1]


async def test_services_are_spread_over_the_masters(http: httpx.AsyncClient, redis_cluster: ClusterProcess) -> None:
    """Services land on different masters, and each one's keys stay together on its master."""
    holders: dict[str, int] = {}
    masters = redis_cluster.masters()
    for _ in range(30):  # each Service picks one of three masters: two differ long before 30
        sid = (await http.post("/v1/Services", data={"FriendlyName": "spread"})).json()["sid"]
        doc = await http.post(f"/v1/Services/{sid}/Documents", data={"UniqueName": "d", "Ttl": "3600"})
        assert doc.status_code == 201, doc.text
        for port in masters:
            node = aioredis.Redis(host="127.0.0.1", port=port)
            try:
                found = {k.decode() for k in await node.keys(f"{keys.service_prefix(sid)}*")}
            finally:
                await node.aclose()
            if found:
                assert sid not in holders, "one Service's keys on two masters"
                holders[sid] = port
                assert {keys.obj(sid, doc.json()["sid"]), keys.names(sid, "document"), keys.expiry(sid)} <= found
        assert sid in holders
        if len(set(holders.values())) >= 2:
            break
    assert len(set(holders.values())) >= 2, holders


async def test_realtime_wake_up_from_another_master(
    server: Any, http: httpx.AsyncClient, store: Store, api_key: Any, twilio: Any, redis_cluster: ClusterProcess
) -> None:
    """A Service on another master than the REDIS_URL node still wakes the gateway (its broker
    subscribes on the master that owns the Service's slot: realtime/cluster_broker.py)."""
    for _ in range(30):
        service = (await http.post("/v1/Services", data={"FriendlyName": "away"})).json()["sid"]
        if store.redis.get_node_from_key(keys.seq(service)).port != redis_cluster.ports[0]:
            break
    else:
        raise AssertionError("every Service landed on the first master")
    async with await SyncClient.connect(server.ws_url, token(api_key.sid, api_key.secret, service, "alice")) as client:
        doc = await client.open("document", "away")
        await client.subscribe(doc["sid"], "document", doc["last_event_id"])
        twilio.sync.v1.services(service).documents(doc["sid"]).update(data={"n": 1})
        ev = await client.next_event()
        assert ev["event_type"] == "document_updated"
        assert ev["event"]["document_sid"] == doc["sid"] and ev["event"]["document_data"] == {"n": 1}


async def _shard_subscribers(redis_cluster: ClusterProcess, channel: str) -> dict[int, int]:
    """PUBSUB SHARDNUMSUB of ``channel`` on every master: port -> subscribers there."""
    counts: dict[int, int] = {}
    for port in redis_cluster.ports:
        node = aioredis.Redis(host="127.0.0.1", port=port)
        try:
            reply = await node.execute_command("PUBSUB", "SHARDNUMSUB", channel)
        finally:
            await node.aclose()
        counts[port] = int(reply[1])
    return counts


async def _until(check: Any, timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "not within the time"
        await asyncio.sleep(0.1)


async def _move_slot(
    redis_cluster: ClusterProcess, slot: int, source: int, target: int, batch: int = 100, pause_s: float = 0.0
) -> int:
    """Migrate one slot with its keys from the master on port ``source`` to the one on ``target``, as
    ``valkey-cli --cluster reshard`` does: ``batch`` keys per MIGRATE (``pause_s`` between them, so
    writes can meet the slot half moved); a MIGRATE refused (BUSYKEY: a key re-created on the target)
    fails the test. Returns how many keys moved."""
    moved = 0
    src, dst = aioredis.Redis(host="127.0.0.1", port=source), aioredis.Redis(host="127.0.0.1", port=target)
    try:
        src_id, dst_id = (await src.execute_command("CLUSTER MYID")), (await dst.execute_command("CLUSTER MYID"))
        await dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
        await src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
        while names := await src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, batch):
            await src.execute_command("MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", *names)
            moved += len(names)
            await asyncio.sleep(pause_s)
        for port in redis_cluster.masters():  # every master learns the new owner at once
            node = aioredis.Redis(host="127.0.0.1", port=port)
            try:
                await node.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
            finally:
                await node.aclose()
    finally:
        await src.aclose()
        await dst.aclose()
    return moved


async def test_wake_ups_are_shard_channels_held_on_the_owner_only_and_follow_a_slot_move(
    server: ServerProcess, store: Store, api_key: Any, twilio: Any, redis_cluster: ClusterProcess
) -> None:
    """Sharded pub/sub (Valkey 7+): the gateway SSUBSCRIBEs a Service's wake channel on the master that
    owns its slot, and nowhere else (so the bus does not carry it to the other shards); when the slot
    migrates to another master, the subscription follows (the old owner ends it with SUNSUBSCRIBE)
    and wake-ups still arrive."""
    service = twilio.sync.v1.services.create(friendly_name="sharded").sid
    channel = keys.wake_channel(service)
    owner = store.redis.get_node_from_key(keys.seq(service)).port
    async with await SyncClient.connect(server.ws_url, token(api_key.sid, api_key.secret, service, "alice")) as client:
        doc = await client.open("document", "sharded")
        await client.subscribe(doc["sid"], "document", doc["last_event_id"])
        counts = await _shard_subscribers(redis_cluster, channel)
        assert counts == {p: int(p == owner) for p in redis_cluster.ports}, counts
        twilio.sync.v1.services(service).documents(doc["sid"]).update(data={"n": 1})
        assert (await client.next_event())["event"]["document_data"] == {"n": 1}

        target = next(p for p in redis_cluster.masters() if p != owner)
        await _move_slot(redis_cluster, slot_of(channel), owner, target)

        async def moved() -> bool:
            counts = await _shard_subscribers(redis_cluster, channel)
            return counts == {p: int(p == target) for p in redis_cluster.ports}

        await _until(moved)
        twilio.sync.v1.services(service).documents(doc["sid"]).update(data={"n": 2})
        ev = await asyncio.wait_for(client.next_event(), 10)
        assert ev["event"]["document_data"] == {"n": 2}


def test_the_store_never_sends_a_command_again_by_itself(store: Store) -> None:
    """redis-py's Cluster client sends a command again after a lost connection (10 times by
    default): a write script whose master died after running it would run again on the promoted
    replica (the checker's master kills once found a List append applied twice). The store's client
    never does; a lost reply is a 503 (tests/test_redis_outage.py, on standalone, loses one)."""
    assert store._raw.retry.get_retries() == 0


async def test_a_slot_moved_key_by_key_under_writes_loses_nothing(
    server: ServerProcess, store: Store, api_key: Any, redis_cluster: ClusterProcess
) -> None:
    """Resharding under load: a Service's slot moves to another master a few keys at a time while
    four REST writers add Map items through both nodes and a subscriber watches. Every write script
    declares the Service's fence key (keys.fence), so none runs while the slot is half moved: writes
    answer 201, or 503/20503 while it moves (nothing applied), the move itself never meets a key
    re-created on the target, every acknowledged item is there afterwards, and the subscriber gets
    each item's event once, in order."""
    async with httpx.AsyncClient(base_url=server.base_url, auth=(ACCOUNT_SID, AUTH_TOKEN), timeout=30) as http:
        service = (await http.post("/v1/Services", data={"FriendlyName": "reshard"})).json()["sid"]
        created = await http.post(f"/v1/Services/{service}/Maps", data={"UniqueName": "m"})
        assert created.status_code == 201, created.text
        owner = store.redis.get_node_from_key(keys.seq(service)).port
        target = next(p for p in redis_cluster.masters() if p != owner)
        sub = await SyncClient.connect(server.ws_url, token(api_key.sid, api_key.secret, service, "watcher"))
        await sub.subscribe(created.json()["sid"], "map")
        acked: set[str] = set()
        statuses: dict[int, int] = {}
        other: list[str] = []
        stop = asyncio.Event()

        async def writer(w: int) -> None:
            i = 0
            while not stop.is_set():
                key, i = f"w{w}-{i}", i + 1
                r = await http.post(f"/v1/Services/{service}/Maps/m/Items", data={"Key": key, "Data": "{}"})
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                if r.status_code == 201:
                    acked.add(key)
                elif r.status_code != 503 or r.json()["code"] != 20503:
                    other.append(f"{key}: {r.status_code} {r.text}")
                else:
                    await asyncio.sleep(0.02)

        writers = [asyncio.create_task(writer(w)) for w in range(4)]
        try:
            await asyncio.sleep(1.0)
            moved = await _move_slot(redis_cluster, slot_of(keys.seq(service)), owner, target, batch=3, pause_s=0.02)
            before = len(acked)
            await _until(lambda: _after(acked, before, 20), 20)  # writes work again, on the new master
        finally:
            stop.set()
            await asyncio.gather(*writers)
        present: set[str] = set()
        url: str | None = f"/v1/Services/{service}/Maps/m/Items?PageSize=1000"
        while url:
            page = (await http.get(url)).json()
            present |= {item["key"] for item in page["items"]}
            url = page["meta"]["next_page_url"]
        assert moved > 10 and await _keys_in_slot(target, slot_of(keys.seq(service))) >= moved
        assert not other and statuses.get(503, 0) > 0, (statuses, other[:5])  # the move was met, and waited
        assert present == acked, (sorted(acked - present)[:5], sorted(present - acked)[:5])
        seen: list[tuple[int, str]] = []
        while len(seen) < len(present):
            ev = await sub.next_event(10)
            if ev["event_type"] == "map_item_added":
                seen.append((ev["event"]["id"], ev["event"]["item_key"]))
        await sub.close()
    assert [k for _, k in seen] == [k for _, k in sorted(seen)] and {k for _, k in seen} == present


async def _after(acked: set[str], before: int, more: int) -> bool:
    return len(acked) >= before + more


async def _keys_in_slot(port: int, slot: int) -> int:
    node = aioredis.Redis(host="127.0.0.1", port=port)
    try:
        return int(await node.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot))
    finally:
        await node.aclose()


@pytest.mark.parametrize("writer", [0, 1])
async def test_a_write_through_one_node_reaches_subscribers_on_both(
    backend: Backend, api_key: Any, service: str, writer: int
) -> None:
    """REST on one node; the SDK and a realtime client on the other, and a realtime client on the writer's."""
    here, there = backend.nodes[writer], backend.nodes[1 - writer]
    tok = token(api_key.sid, api_key.secret, service, "watcher")
    sdk = await Sdk(there.base_url).start()
    try:
        await sdk.client("s", tok)
        await sdk.connected("s")
        async with (
            httpx.AsyncClient(base_url=here.base_url, auth=(ACCOUNT_SID, AUTH_TOKEN), timeout=10) as rest,
            await SyncClient.connect(there.ws_url, tok) as far,
            await SyncClient.connect(here.ws_url, tok) as near,
        ):
            created = await rest.post(f"/v1/Services/{service}/Documents", data={"UniqueName": "x"})
            assert created.status_code == 201, created.text
            sid = created.json()["sid"]
            await sdk.open("s", "document", "x", "d")
            await sdk.expect("_subscriptionStateChanged", "d", lambda a: a[0] == "established")
            for c in (far, near):
                await c.subscribe(sid, "document", 0)
            r = await rest.post(f"/v1/Services/{service}/Documents/{sid}", data={"Data": '{"from": "rest"}'})
            assert r.status_code == 200, r.text
            for c in (far, near):
                ev = await c.next_event()
                assert (ev["event_type"], ev["event"]["id"], ev["event"]["document_data"]) == (
                    "document_updated", 1, {"from": "rest"},
                )  # fmt: skip
            (ev,) = await sdk.expect("updated", "d")
            assert ev["data"] == {"from": "rest"} and ev["isLocal"] is False
    finally:
        await sdk.close()


async def test_a_client_back_on_the_other_node_resumes_by_replay_nothing_lost_or_doubled(
    backend: Backend, api_key: Any, service: str
) -> None:
    """Subscribed on node A; gone while writes go through node B; back on node B with its last event
    id: exactly the missed events, in order, then live ones, each once."""
    a, b = backend.nodes
    tok = token(api_key.sid, api_key.secret, service, "roamer")
    async with httpx.AsyncClient(base_url=b.base_url, auth=(ACCOUNT_SID, AUTH_TOKEN), timeout=10) as rest:
        items = f"/v1/Services/{service}/Maps/roam/Items"
        assert (await rest.post(f"/v1/Services/{service}/Maps", data={"UniqueName": "roam"})).status_code == 201
        async with await SyncClient.connect(a.ws_url, tok) as first:
            m = await first.open("map", "roam")
            await first.subscribe(m["sid"], "map", m["last_event_id"])
            assert (await rest.post(items, data={"Key": "k0", "Data": '{"n": 0}'})).status_code == 201
            seen = await first.next_event()
            assert seen["event"]["item_key"] == "k0"
        # away: writes through the other node
        for n in range(1, 6):
            assert (await rest.post(items, data={"Key": f"k{n}", "Data": f'{{"n": {n}}}'})).status_code == 201
        assert (await rest.post(f"{items}/k1", data={"Data": '{"n": 11}'})).status_code == 200
        assert (await rest.delete(f"{items}/k2")).status_code == 204
        async with await SyncClient.connect(b.ws_url, tok) as back:
            est = await back.subscribe(m["sid"], "map", seen["event"]["id"])
            assert est["replay_status"] == "completed"
            replayed = [back.events.get_nowait() for _ in range(back.events.qsize())]
            assert [(e["event_type"], e["event"]["item_key"]) for e in replayed] == [
                *(("map_item_added", f"k{n}") for n in range(1, 6)),
                ("map_item_updated", "k1"),
                ("map_item_removed", "k2"),
            ]
            ids = [e["event"]["id"] for e in replayed]
            assert (
                ids
                == list(range(seen["event"]["id"] + 1, seen["event"]["id"] + 8))
                == list(range(ids[0], est["last_event_id"] + 1))
            )
            assert (await rest.post(items, data={"Key": "live", "Data": "{}"})).status_code == 201
            live = await back.next_event()
            assert (live["event"]["item_key"], live["event"]["id"]) == ("live", ids[-1] + 1)
            with pytest.raises((asyncio.TimeoutError, TimeoutError)):
                await back.next_event(wait_s=0.5)  # nothing doubled behind it


async def test_sdk_reconnects_through_the_balancer_and_misses_nothing(
    backend: Backend, api_key: Any, service: str, http: httpx.AsyncClient
) -> None:
    """The balancer drops every connection (as a balancer restart does): the SDK reconnects through it
    while writes go on, and sees every item exactly once, in order."""
    assert isinstance(backend.server, Balancer)
    sdk = await Sdk(backend.server.base_url).start()
    try:
        await sdk.client("s", token(api_key.sid, api_key.secret, service, "dropped"))
        await sdk.connected("s")
        await sdk.open("s", "list", "feed", "l")
        await sdk.expect("_subscriptionStateChanged", "l", lambda a: a[0] == "established")
        items = f"/v1/Services/{service}/Lists/feed/Items"  # ``http`` keeps no connection alive
        assert (await http.post(items, data={"Data": '{"n": 0}'})).status_code == 201
        await sdk.expect("itemAdded", "l")
        backend.server.drop_connections()
        for n in range(1, 11):
            assert (await http.post(items, data={"Data": f'{{"n": {n}}}'})).status_code == 201
        await sdk.expect("itemAdded", "l", lambda a: a[0]["item"]["data"] == {"n": 10}, wait_s=30)
        got = [e["args"][0]["item"]["data"]["n"] for e in sdk.matching("itemAdded", "l")]
        assert got == list(range(11))
    finally:
        await sdk.close()
