"""The failover pause per SYNC_DURABILITY level: last acknowledged write before a master is killed
(kill -9) to the first acknowledged write sent after it, with what was acknowledged, lost and missed.

Usage:  python tests/bench/failover.py [--levels local,fsync,replica] [--runs 1]

For each level and run: a fresh 3 masters + 3 replicas Valkey Cluster (cluster-node-timeout 1000 ms,
AOF on; tests/cluster_failover.py), one sync-server with REDIS_CLUSTER, 4 REST writers adding Map
items and a realtime subscriber; after 1 s the master of the Service's slot is killed, its replica
promoted, and the killed node restarted (it rejoins as the new master's replica: with ``replica`` the
promoted master cannot acknowledge anything before it has a replica again, so its pause includes
that restart and resync; with two replicas per master it would not). The same load as
tests/test_failover.py, timed instead of asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.cluster_failover import ReplicatedCluster, failover_under_load  # noqa: E402
from tests.helpers import ServerProcess  # noqa: E402


def one(level: str) -> tuple[float, int, int, int, dict[int, int]]:
    with ReplicatedCluster() as cluster:
        env = {"REDIS_CLUSTER": "true", "SYNC_DURABILITY": level, "SYNC_REDIS_TIMEOUT_S": "2"}
        with ServerProcess(redis_url=cluster.url, env=env) as server:
            run, present, received = asyncio.run(failover_under_load(cluster, server))
    return run.pause_s, len(run.acked), len(run.acked - present), len(present - received), run.statuses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", default="local,fsync,replica")
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    print(f"{'level':8} {'pause s':>8} {'acked':>6} {'lost':>5} {'missed':>7}  answers")
    for level in args.levels.split(","):
        for _ in range(args.runs):
            pause, acked, lost, missed, statuses = one(level)
            print(f"{level:8} {pause:8.2f} {acked:6} {lost:5} {missed:7}  {statuses}", flush=True)


if __name__ == "__main__":
    main()
