"""The Cluster broker's pub/sub connection lost and regained (realtime/broker.py, cluster_broker.py):
the reader, not redis-py, reconnects, so the broker hears of it (on_reconnect: the hub re-reads its
feeds; a topology read: the node may be a replica now), and it subscribes the shard channels again
one SSUBSCRIBE each: redis-py's single SSUBSCRIBE of every channel is refused (CROSSSLOT) by a node
as soon as they span two slots, and such a connection never came back. The whole failover (kill -9
of a master, its replica promoted, the old master back as a replica) is tests/test_failover.py."""

from __future__ import annotations

import asyncio
import itertools
import time

import httpx
from redis import asyncio as aioredis

from realtime.client import SyncClient
from realtime.cluster_broker import ClusterBroker, slot_of
from storage import Store, accounts
from tests.cluster_failover import cli
from tests.helpers import ACCOUNT_SID, AUTH_TOKEN, SCALE, ClusterProcess, ServerProcess
from tests.sdk import token


async def test_a_lost_connection_comes_back_with_every_shard_channel_and_is_reported(
    redis_cluster: ClusterProcess,
) -> None:
    client = aioredis.RedisCluster.from_url(redis_cluster.url)
    await client.initialize()
    try:
        by_node: dict[int, list[str]] = {}
        for i in itertools.count():
            channel = f"sync:{{brokertest{i}}}:wake"
            node = client.get_node_from_key(channel).port
            by_node.setdefault(node, []).append(channel)
            if len(by_node[node]) == 2 and slot_of(by_node[node][0]) != slot_of(channel):
                port, channels = node, by_node[node]
                break
        heard: list[tuple[str, bytes]] = []
        reconnects: list[float] = []
        broker = ClusterBroker(redis_cluster.url, lambda c, d: heard.append((c, d)), lambda: reconnects.append(1))
        await broker.start()
        try:
            for channel in channels:
                await broker.subscribe(channel)
            sub = broker._subs[("127.0.0.1", port)]
            local = sub.local_address
            assert local is not None
            cli("-p", str(port), "client", "kill", "addr", f"127.0.0.1:{local[1]}")
            deadline = time.monotonic() + 15 * SCALE
            n = 0
            while not reconnects or {c for c, _ in heard} != set(channels):
                assert time.monotonic() < deadline, f"not back: reconnects={len(reconnects)} heard={heard[-4:]}"
                heard.clear()
                n += 1
                for channel in channels:
                    await client.execute_command("SPUBLISH", channel, f"x {n}")
                await asyncio.sleep(0.2)
        finally:
            await broker.close()
    finally:
        await client.aclose()


async def test_a_cluster_that_wants_a_password_gets_the_urls_on_every_node() -> None:
    """Credentials in REDIS_URL reach every node's subscriber and the topology reads, as they reach
    the write scripts' connections (storage/multiplex_cluster.py): without them a Cluster that
    requires a password took writes but never woke a subscriber. Then a whole server on it."""
    with ClusterProcess(masters=3, replicas=0) as cluster:
        for port in cluster.ports:
            cli("-p", str(port), "config", "set", "requirepass", "s3cret")
        url = f"redis://:s3cret@127.0.0.1:{cluster.ports[0]}/0"
        client = aioredis.RedisCluster.from_url(url)
        await client.initialize()
        try:
            by_node: dict[int, str] = {}
            for i in itertools.count():
                channel = f"sync:{{authtest{i}}}:wake"
                by_node.setdefault(client.get_node_from_key(channel).port, channel)
                if len(by_node) == 3:
                    break
            heard: list[tuple[str, bytes]] = []
            broker = ClusterBroker(url, lambda c, d: heard.append((c, d)))
            await broker.start()
            try:
                for channel in by_node.values():
                    await broker.subscribe(channel)
                deadline = time.monotonic() + 10 * SCALE
                while {c for c, _ in heard} != set(by_node.values()):
                    assert time.monotonic() < deadline, f"heard only {heard}"
                    for channel in by_node.values():
                        await client.execute_command("SPUBLISH", channel, "x")
                    await asyncio.sleep(0.2)
            finally:
                await broker.close()
            await _a_write_reaches_a_subscriber(url)
        finally:
            await client.aclose()


async def _a_write_reaches_a_subscriber(url: str) -> None:
    """The whole server on that Cluster: the REST write is delivered to an SDK subscriber."""
    store = await Store.connect(url, cluster=True)
    try:
        key = await accounts.create_key(store, ACCOUNT_SID, "signs tokens")
    finally:
        await store.close()
    server = await asyncio.to_thread(ServerProcess(redis_url=url, env={"REDIS_CLUSTER": "true"}).start)
    try:
        async with httpx.AsyncClient(base_url=server.base_url, auth=(ACCOUNT_SID, AUTH_TOKEN), timeout=10) as http:
            service = (await http.post("/v1/Services", data={"FriendlyName": "auth"})).json()["sid"]
            doc = (await http.post(f"/v1/Services/{service}/Documents", data={"Data": '{"n":0}'})).json()
            sdk_token = token(key.sid, key.secret, service, "alice")
            async with await SyncClient.connect(server.ws_url, sdk_token) as sdk:
                await sdk.subscribe(doc["sid"], "document", 0)
                r = await http.post(f"/v1/Services/{service}/Documents/{doc['sid']}", data={"Data": '{"n":1}'})
                assert r.status_code == 200, r.text
                ev = await sdk.next_event(15 * SCALE)
                assert ev["event"]["document_data"] == {"n": 1}, ev
    finally:
        await asyncio.to_thread(server.stop)
