"""Failover under load: kill -9 the master of a Service's slot on a 3+3 Valkey Cluster while REST
writers and a realtime subscriber run, let its replica be promoted, and count what was acknowledged
and lost. With SYNC_DURABILITY=replica nothing acknowledged is lost and the subscriber misses no
event; with ``local`` the loss is counted and printed (the README's figure comes from here and from
tests/bench/failover.py). Every answer during the switch is 201 or 503/20503, never a 500, and the
server recovers by itself (its Cluster client refreshes the slot map).

Bounded: the Cluster fails over within ~1-2 s (cluster-node-timeout 1000 ms), each run takes ~15 s.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cluster_failover import AFTER_OK, ReplicatedCluster, failover_under_load
from tests.helpers import ServerProcess


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
