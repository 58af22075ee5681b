"""What each SYNC_DURABILITY level costs: REST writes/s and p50/p99 for local, fsync and replica.

Usage:  python tests/bench/durability.py [--connections 16] [--seconds 5]
                                         [--levels local,local-always,fsync,fsync-always,replica]

Starts a Valkey primary (AOF on, appendfsync everysec) with one replica
(tests/cluster_failover.py ReplicatedPair), then for each level one sync-server on that primary,
loaded with Document updates (--connections connections over as many Documents, in-repo Python load
generator in two processes, 1 s warm-up). Prints writes/s, p50 and p99 per level and their ratios to
``local``. A 503 (a wait that timed out) counts as an error and is shown. On a loaded 2-core machine
the absolute figures are floors; the ratios are what the README quotes. ``<level>-always`` is
``<level>`` with the primary switched to ``appendfsync always`` for its turn (CONFIG SET), as the
embedded Valkey and deploy/redis.conf run it: at ``fsync`` WAITAOF then answers at once instead of
waiting for Valkey's next background fsync.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import httpx
import redis

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.bench.rest_writes import DATA, measure  # noqa: E402
from tests.cluster_failover import ReplicatedPair  # noqa: E402
from tests.helpers import ACCOUNT_SID, AUTH_TOKEN, ServerProcess  # noqa: E402

AUTH = (ACCOUNT_SID, AUTH_TOKEN)


def prepare(url: str, clients: int) -> str:
    """A Service with the Documents ``bench-<part>-<n>`` that rest_writes' "document updates" writes."""
    with httpx.Client(base_url=url, auth=AUTH, timeout=30) as c:
        service = str(c.post("/v1/Services", data={"FriendlyName": "bench"}).json()["sid"])
        for part in range(2):
            for n in range(clients):
                c.post(f"/v1/Services/{service}/Documents", data={"UniqueName": f"bench-{part}-{n}", "Data": DATA})
    return service


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--levels", default="local,local-always,fsync,fsync-always,replica")
    args = parser.parse_args()
    rows: dict[str, dict] = {}
    with ReplicatedPair() as pair, redis.Redis.from_url(pair.url) as primary:
        for level in args.levels.split(","):
            durability, _, policy = level.partition("-")
            primary.config_set("appendfsync", policy or "everysec")
            with ServerProcess(redis_url=pair.url, env={"SYNC_DURABILITY": durability}) as server:
                service = prepare(server.base_url, args.connections)
                url, clients = server.base_url, args.connections
                measure(url, AUTH, clients, 1.0, "document updates", service)  # warm-up
                rows[level] = measure(url, AUTH, clients, args.seconds, "document updates", service)
            r = rows[level]
            print(f"{level:12} {r['rate']:8.0f} writes/s  p50 {r['p50']:6.1f} ms  p99 {r['p99']:6.1f} ms  "
                  f"errors {r['errors']} {r['statuses']}", flush=True)  # fmt: skip
    base = rows.get("local")
    print(f"\n{'level':12} {'writes/s':>9} {'vs local':>9} {'p99 ms':>8} {'vs local':>9}")
    for level, r in rows.items():
        rate_ratio = r["rate"] / base["rate"] if base else float("nan")
        p99_ratio = r["p99"] / base["p99"] if base else float("nan")
        print(f"{level:12} {r['rate']:9.0f} {rate_ratio:9.2f} {r['p99']:8.1f} {p99_ratio:9.2f}")


if __name__ == "__main__":
    main()
