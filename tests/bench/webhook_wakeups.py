"""Cluster-bus messages per queued webhook: the global PUBLISH wake-up (before) beside the Service's
shard channel (now).

Usage:  python tests/bench/webhook_wakeups.py [--writes 5000]

Starts a throwaway Valkey Cluster of 3 masters + 3 replicas (tests/helpers.py ClusterProcess, the
suite's topology) and counts the messages the cluster bus carried (CLUSTER INFO
``cluster_stats_messages_publish_sent`` + ``…_publishshard_sent``, all nodes) per queued webhook:

* ``before``: what a write that queues a webhook published until now, run as a script in the
  Service's slot: SPUBLISH of the object wake-up on ``sync:{IS}:wake`` + PUBLISH of the Service SID
  on the global ``sync:webhooks:wake`` (a plain PUBLISH crosses the bus to every other node);
* ``after``: the same with the webhook wake-up SPUBLISHed on ``sync:{IS}:whw`` (its shard only: the
  master's replica);
* ``writes``: real Document updates through the write scripts (storage/objects.py) on Services with a
  webhook URL, i.e. what the server does now, object wake-up and queued webhook included.

Each mode uses 1000 Services spread over the slots. Prints bus messages per queued webhook and the
ratios. (Besides the bus: before, every sync-server process heard every wake-up and dropped those
outside its buckets; now only the holder of the Service's bucket is subscribed.)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from redis import asyncio as aioredis

from storage import Actor, Kind, Store, keys, objects
from tests.bench.sharded_pubsub import _bus_sent  # the same counters
from tests.helpers import ClusterProcess

BEFORE = """
redis.call('SPUBLISH', KEYS[1], ARGV[2])
redis.call('PUBLISH', 'sync:webhooks:wake', ARGV[1])
"""
AFTER = """
redis.call('SPUBLISH', KEYS[1], ARGV[2])
redis.call('SPUBLISH', KEYS[2], ARGV[1])
"""
SIDS = [f"IS{i:032x}" for i in range(1000)]
ALICE = Actor(identity="alice", origin="sdk", endpoint="ep1")


async def _scripted(cluster: ClusterProcess, script: str, n: int) -> float:
    client = aioredis.RedisCluster.from_url(cluster.url)
    try:
        before = await _bus_sent(cluster.ports)
        for i in range(n):
            sid = SIDS[i % len(SIDS)]
            wake = [keys.wake_channel(sid), keys.webhook_wake_channel(sid)]
            await client.eval(script, 2, *wake, sid, f"DO{i:032x} {i}")
        await asyncio.sleep(0.5)  # the bus counters settle
        return (await _bus_sent(cluster.ports) - before) / n
    finally:
        await client.aclose()


async def _writes(cluster: ClusterProcess, n: int) -> float:
    store = await Store.connect(cluster.url, cluster=True)
    try:
        docs = {}
        for sid in SIDS:  # a webhook config copy, as webhooks.sync_config writes it
            await store.redis.hset(keys.webhook_config(sid), mapping={"url": "http://127.0.0.1:9/", "ac": "AC1"})
            docs[sid] = (await objects.create(store, sid, Kind.DOCUMENT, ALICE, data_json="{}")).sid
        queued = sum([await store.redis.xlen(keys.webhook_queue(sid)) for sid in SIDS])
        before = await _bus_sent(cluster.ports)
        for i in range(n):
            sid = SIDS[i % len(SIDS)]
            await objects.update(store, sid, Kind.DOCUMENT, docs[sid], ALICE, data_json=f'{{"n":{i}}}')
        await asyncio.sleep(0.5)
        sent = await _bus_sent(cluster.ports) - before
        queued = sum([await store.redis.xlen(keys.webhook_queue(sid)) for sid in SIDS]) - queued
        assert queued == n, (queued, n)  # every write queued one webhook
        return sent / n
    finally:
        await store.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--writes", type=int, default=5000)
    args = parser.parse_args()
    cluster = ClusterProcess()  # 3 masters + 3 replicas
    try:
        before = await _scripted(cluster, BEFORE, args.writes)
        after = await _scripted(cluster, AFTER, args.writes)
        writes = await _writes(cluster, args.writes)
    finally:
        cluster.stop()
    print(f"{'mode':<8} {'bus msgs / queued webhook':>26}   (3 masters + 3 replicas, {args.writes} each)")
    for name, value in (("before", before), ("after", after), ("writes", writes)):
        print(f"{name:<8} {value:>26.2f}")
    print(f"after / before: {after / before:.2f}x; real writes / before: {writes / before:.2f}x")


if __name__ == "__main__":
    asyncio.run(main())
