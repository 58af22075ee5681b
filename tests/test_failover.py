"""Failover under load: kill -9 the master of a Service's slot on a 3+3 Valkey Cluster while REST
writers and a realtime subscriber run, let its replica be promoted, and count what was acknowledged
and lost. With SYNC_DURABILITY=replica nothing acknowledged is lost and the subscriber misses no
event; with ``local`` the loss is counted and printed (the README's figure comes from here and from
tests/bench/failover.py). Every answer during the switch is 201 or 503/20503, never a 500, and the
server recovers by itself (its Cluster client refreshes the slot map).

Bounded: the Cluster fails over within ~1-2 s (cluster-node-timeout 1000 ms), each run takes ~15 s.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from realtime.client import SyncClient
from storage import keys
from tests.cluster_failover import AFTER_OK, ReplicatedCluster, failover_under_load
from tests.helpers import ServerProcess
from tests.sdk import token


@pytest.fixture
def cluster() -> Iterator[ReplicatedCluster]:
    with ReplicatedCluster() as c:
        yield c


@pytest.mark.parametrize("level", ["replica", "local"])
async def test_failover_under_concurrent_writes(cluster: ReplicatedCluster, level: str) -> None:
    env = {"REDIS_CLUSTER": "true", "SYNC_DURABILITY": level, "SYNC_REDIS_TIMEOUT_S": "2"}
    with ServerProcess(redis_url=cluster.url, env=env) as server:
        run, present, received = await failover_under_load(cluster, server)
    lost = run.acked - present
    missing = present - received
    print(
        f"\n{level}: acked={len(run.acked)} lost={len(lost)} events_missing={len(missing)} "
        f"statuses={run.statuses} pause={run.pause_s:.2f}s"
    )
    assert not run.failures, run.failures[:5]  # never a 500, never a dropped request
    assert run.acked_after >= AFTER_OK  # recovered by itself
    assert not missing  # whatever the store has, the subscriber got
    if level == "replica":
        assert not lost


async def test_a_subscriber_ahead_of_a_rolled_back_log_gets_the_current_state(
    server: ServerProcess, http: Any, service: str, redis: Any, api_key: Any
) -> None:
    """The store comes back older than what clients saw (a restored backup; a failover without
    ``replica``): the Document's hash and event log are put back as they were two events ago. A
    client arriving with its newer cursor gets the current (older) state, not silence; a client
    that stayed subscribed through the rollback, and the newcomer, both get the next change."""
    doc = (await http.post(f"/v1/Services/{service}/Documents", data={"Data": '{"v": 0}'})).json()
    sid, base = doc["sid"], f"/v1/Services/{service}/Documents/{doc['sid']}"
    await http.post(base, data={"Data": '{"v": 1}'})
    backup = {k: await redis.dump(k) for k in (keys.obj(service, sid), keys.events(service, sid))}
    for v in (2, 3):
        assert (await http.post(base, data={"Data": json.dumps({"v": v})})).status_code == 200
    tok = token(api_key.sid, api_key.secret, service, "alice")
    connect = SyncClient.connect
    async with await connect(server.ws_url, tok) as stayed, await connect(server.ws_url, tok) as back:
        await stayed.subscribe(sid, "document", 2)
        assert (await stayed.next_event())["event"]["id"] == 3
        for k, dumped in backup.items():  # the rollback: both keys as they were at event 1
            await redis.restore(k, 0, dumped, replace=True)
        established = await back.subscribe(sid, "document", 3)
        assert established["event_type"] == "subscription_established", established
        state = await back.next_event()
        assert state["event_type"] == "document_updated"
        assert state["event"]["id"] == 1 and state["event"]["document_data"] == {"v": 1}
        assert (await http.post(base, data={"Data": '{"v": 9}'})).status_code == 200
        for client in (stayed, back):
            ev = await client.next_event()
            assert ev["event"]["id"] == 2 and ev["event"]["document_data"] == {"v": 9}
