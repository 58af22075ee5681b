"""Wake-ups on a 3-master Valkey Cluster: plain PUBLISH (before issue 12) beside SPUBLISH (now).

Usage:  python tests/bench/sharded_pubsub.py [--messages 20000]

Starts a throwaway 3-master Cluster (tests/helpers.py ClusterProcess), then publishes --messages
wake-ups of the shape the write scripts send (``"<SID> <event id>"`` on ``sync:{IS}:wake``, one
random Service each) from one client, first with PUBLISH, then with SPUBLISH (routed to the slot's
master). Prints, per mode, the messages the cluster bus carried per publish (CLUSTER INFO
``cluster_stats_messages_publish_sent`` + ``…_publishshard_sent`` over all nodes), the client's µs
per publish (redis-py's routing included; the server's scripts publish from Lua) and the nodes' own
µs in the command (INFO commandstats; not the receiving nodes' work on bus messages), and
SPUBLISH's ratios to PUBLISH. With N masters, PUBLISH crosses the bus to N - 1 other nodes, whatever
they subscribe; SPUBLISH stays in the shard (its replicas only: none here).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from redis import asyncio as aioredis

from storage import keys
from tests.helpers import ClusterProcess


async def _bus_sent(ports: list[int]) -> int:
    total = 0
    for port in ports:
        node = aioredis.Redis(host="127.0.0.1", port=port)
        try:
            info = await node.execute_command("CLUSTER INFO")  # redis-py parses it into a dict
        finally:
            await node.aclose()
        for name in ("cluster_stats_messages_publish_sent", "cluster_stats_messages_publishshard_sent"):
            total += int(info.get(name, 0))
    return total


async def _server_usec(ports: list[int], command: str) -> int:
    """Microseconds every node spent in ``command`` so far (INFO commandstats)."""
    total = 0
    for port in ports:
        node = aioredis.Redis(host="127.0.0.1", port=port)
        try:
            stats = await node.info("commandstats")
        finally:
            await node.aclose()
        total += int(stats.get(f"cmdstat_{command.lower()}", {}).get("usec", 0))
    return total


async def _run(cluster: ClusterProcess, command: str, n: int) -> tuple[float, float, float]:
    client = aioredis.RedisCluster.from_url(cluster.url)
    sids = [f"IS{i:032x}" for i in range(1000)]
    try:
        before = await _bus_sent(cluster.ports)
        usec = await _server_usec(cluster.ports, command)
        start = time.perf_counter()
        for i in range(n):
            sid = sids[i % len(sids)]
            if command == "PUBLISH":
                await client.publish(keys.wake_channel(sid), f"DO{i:032x} {i}")
            else:
                await client.spublish(keys.wake_channel(sid), f"DO{i:032x} {i}")
        spent = time.perf_counter() - start
        await asyncio.sleep(0.5)  # the bus counters settle
        after = await _bus_sent(cluster.ports)
        usec = await _server_usec(cluster.ports, command) - usec
    finally:
        await client.aclose()
    return (after - before) / n, spent / n * 1e6, usec / n


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20000)
    args = parser.parse_args()
    cluster = ClusterProcess()
    try:
        plain = await _run(cluster, "PUBLISH", args.messages)
        sharded = await _run(cluster, "SPUBLISH", args.messages)
    finally:
        cluster.stop()
    print(f"{'mode':<10} {'bus msgs/publish':>17} {'client µs/publish':>18} {'server µs/publish':>18}")
    for name, r in (("PUBLISH", plain), ("SPUBLISH", sharded)):
        print(f"{name:<10} {r[0]:>17.2f} {r[1]:>18.1f} {r[2]:>18.2f}")
    ratio = sharded[0] / plain[0] if plain[0] else float("nan")
    print(
        f"SPUBLISH / PUBLISH: bus messages {ratio:.2f}x, client µs {sharded[1] / plain[1]:.2f}x, "
        f"server µs {sharded[2] / plain[2]:.2f}x"
    )


if __name__ == "__main__":
    asyncio.run(main())
