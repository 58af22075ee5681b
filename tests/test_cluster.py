"""What only a real 3-master Valkey Cluster (REDIS_CLUSTER=true) can show.

The REST, realtime and webhook contract itself runs on the Cluster through the ``backend`` fixture
(tests/conftest.py): the modules marked ``backends("standalone", "cluster")`` run once on each. Here:
how Services spread over the masters, and wake-ups crossing them.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from redis import asyncio as aioredis

from realtime.client import SyncClient
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
    """The gateway subscribes on the REDIS_URL node; a Service on another master still wakes it (PUBLISH
    is broadcast over the Cluster bus)."""
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
