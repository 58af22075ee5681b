"""What only a real 3-master Valkey Cluster (REDIS_CLUSTER=true) can show.

The REST, realtime and webhook contract itself runs on the Cluster through the ``backend`` fixture
(tests/conftest.py): the modules marked ``backends("standalone", "cluster")`` run once on each. Here:
how Services spread over the masters, and wake-ups crossing them.
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
from tests.helpers import ClusterProcess, ServerProcess
from tests.sdk import token

pytestmark = pytest.mark.backends("cluster")


async def test_services_are_spread_over_the_masters(http: httpx.AsyncClient, redis_cluster: ClusterProcess) -> None:
    """Services land on different masters, and each one's keys stay together on its master."""
    holders: dict[str, int] = {}
    for _ in range(30):  # each Service picks one of three masters: two differ long before 30
        sid = (await http.post("/v1/Services", data={"FriendlyName": "spread"})).json()["sid"]
        doc = await http.post(f"/v1/Services/{sid}/Documents", data={"UniqueName": "d", "Ttl": "3600"})
        assert doc.status_code == 201, doc.text
        for port in redis_cluster.ports:
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
    server: ServerProcess,
    http: httpx.AsyncClient,
    store: Store,
    api_key: Any,
    twilio: Any,
    redis_cluster: ClusterProcess,
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


async def _move_slot(redis_cluster: ClusterProcess, slot: int, source: int, target: int) -> None:
    """Migrate one slot with its keys from the master on port ``source`` to the one on ``target``."""
    src, dst = aioredis.Redis(host="127.0.0.1", port=source), aioredis.Redis(host="127.0.0.1", port=target)
    try:
        src_id, dst_id = (await src.execute_command("CLUSTER MYID")), (await dst.execute_command("CLUSTER MYID"))
        await dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
        await src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
        while names := await src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
            await src.execute_command("MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", *names)
        for port in redis_cluster.ports:  # every master learns the new owner at once
            node = aioredis.Redis(host="127.0.0.1", port=port)
            try:
                await node.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
            finally:
                await node.aclose()
    finally:
        await src.aclose()
        await dst.aclose()


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

        target = next(p for p in redis_cluster.ports if p != owner)
        await _move_slot(redis_cluster, slot_of(channel), owner, target)

        async def moved() -> bool:
            counts = await _shard_subscribers(redis_cluster, channel)
            return counts == {p: int(p == target) for p in redis_cluster.ports}

        await _until(moved)
        twilio.sync.v1.services(service).documents(doc["sid"]).update(data={"n": 2})
        ev = await asyncio.wait_for(client.next_event(), 10)
        assert ev["event"]["document_data"] == {"n": 2}
