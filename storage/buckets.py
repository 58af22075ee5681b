"""Bucket leases: which process works which part of the global work lists.

The work lists (the sweeper's due Services, the webhook worker's Services, debounced reachability
webhooks; storage/keys.py) are split into ``keys.BUCKETS`` buckets by a hash of the Service SID,
each bucket in its own Cluster slot. Every process of a ``role`` (``sweep``, ``webhooks``) keeps
itself in ``sync:procs:<role>`` (a heartbeat, expiring) and holds leases on its fair share of the
buckets, ceil(BUCKETS / live processes): it renews them every ``ms / 3``, gives back any beyond its
share and takes free ones up to it. So N processes each tick only their own buckets (one slot per
bucket, instead of every process reading the same key every tick), and the buckets of a process
that died are taken over once their leases expire (within ``ms``), by the next tick of another.

A lease only says who looks at a bucket; delivering a Service's webhooks still needs the Service's
own lease (storage/webhooks.py), so a bucket that changes hands never has two deliverers at once,
and per-object order holds.

``migrate`` moves the single-key work lists of earlier versions into the buckets (at start).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from . import keys
from .clock import now_ms
from .errors import StoreUnavailableError
from .redis_client import RedisPipeline, text
from .store import Store

log = logging.getLogger("sync.storage.buckets")

ALL = range(keys.BUCKETS)


class BucketLeases:
    """This process's buckets for one role; ``held`` is what it works now."""

    def __init__(self, store: Store, role: str, ms: int, owner: str | None = None) -> None:
        self.store = store
        self.role = role
        self.ms = ms
        self.owner = owner or uuid.uuid4().hex
        self.held: set[int] = set()

    def holds(self, service_sid: str) -> bool:
        return keys.bucket(service_sid) in self.held

    async def _lease(self, b: int, op: str) -> bool:
        where = [keys.bucket_lease(b, self.role)]
        return bool(await self.store.call("webhook_lease", where, op=op, owner=self.owner, ms=self.ms))

    async def tick(self) -> None:
        """Heartbeat, renew, give back beyond the fair share, take free buckets up to it."""
        r, now = self.store.redis, now_ms()
        procs = keys.processes(self.role)
        async with r.pipeline(transaction=False) as p:
            p.zadd(procs, {self.owner: now + self.ms})
            p.zremrangebyscore(procs, "-inf", now)
            p.zcard(procs)
            live = (await p.execute())[2]
        share = -(-keys.BUCKETS // max(1, int(live)))
        for b in sorted(self.held):
            if not await self._lease(b, "take"):
                self.held.discard(b)
        for b in sorted(self.held, reverse=True)[: max(0, len(self.held) - share)]:
            await self._lease(b, "release")
            self.held.discard(b)
        start = random.randrange(keys.BUCKETS)
        for i in range(keys.BUCKETS):
            if len(self.held) >= share:
                break
            b = (start + i) % keys.BUCKETS
            if b not in self.held and await self._lease(b, "take"):
                self.held.add(b)

    async def release_all(self) -> None:
        """At shutdown: give every bucket back at once (others take them on their next tick)."""
        for b in sorted(self.held):
            await self._lease(b, "release")
        self.held.clear()
        await self.store.redis.zrem(keys.processes(self.role), self.owner)

    async def run(self, stop: asyncio.Event) -> None:
        """Tick every ``ms / 3`` until ``stop``; then release. An outage keeps the last ``held``
        (the leases expire by themselves if it lasts)."""
        while not stop.is_set():
            try:
                await self.tick()
            except StoreUnavailableError:  # Store.health logged it once
                pass
            except Exception:
                log.exception("bucket leases (%s) failed", self.role)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.ms / 3000)
        with contextlib.suppress(Exception):
            await self.release_all()


async def _per_bucket(
    store: Store, held: Iterable[int], command: Callable[[RedisPipeline, int], object]
) -> list[tuple[int, Any]]:
    """``command(pipeline, bucket)`` queued for each bucket of ``held`` (in order), all in one
    pipeline: (bucket, reply) pairs. Why one round trip: these lists are read several times a second
    per process whether or not anything is due, and a command costs a process far more than its
    bytes (a pipeline of 16 reads costs about what two commands do)."""
    order = sorted(held)
    if not order:
        return []
    async with store.redis.pipeline(transaction=False) as p:
        for b in order:
            command(p, b)
        replies = await p.execute()
    return list(zip(order, replies, strict=True))


async def due_in(
    store: Store, bucket_key: Callable[[int], str], held: Iterable[int], batch: int
) -> list[tuple[int, list[str]]]:
    """Per bucket of ``held`` (in order), up to ``batch`` members of its work list whose score
    (a time in ms) has come."""
    now = now_ms()
    due = await _per_bucket(store, held, lambda p, b: p.zrangebyscore(bucket_key(b), "-inf", now, start=0, num=batch))
    return [(b, [text(m) for m in members]) for b, members in due]


async def earliest_in(store: Store, bucket_key: Callable[[int], str], held: Iterable[int]) -> dict[int, int]:
    """Per bucket of ``held`` whose work list has any member, the earliest score (a time in ms): what
    a poller reads to know when to look again, one member per bucket whatever the lists hold
    (``due_in`` then reads the due ones of the buckets that have some)."""
    heads = await _per_bucket(store, held, lambda p, b: p.zrange(bucket_key(b), 0, 0, withscores=True))
    return {b: int(head[0][1]) for b, head in heads if head}


async def members_in(store: Store, bucket_key: Callable[[int], str], held: Iterable[int]) -> list[str]:
    """Every member of the work-list sets of ``held`` (bucket order)."""
    sets = await _per_bucket(store, held, lambda p, b: p.smembers(bucket_key(b)))
    return [text(m) for _, members in sets for m in sorted(members)]


async def migrate(store: Store) -> int:
    """Move what the single-key work lists of earlier versions hold into the buckets; how many
    entries. Each entry is added to its bucket before it is removed from the old key, so a crash or
    a second process doing the same meanwhile loses nothing."""
    r, moved = store.redis, 0
    for old, new in ((keys.LEGACY_DUE, keys.due), (keys.LEGACY_REACH_DUE, keys.reach_due)):
        for member, score in await r.zrange(old, 0, -1, withscores=True):
            sid = text(member)
            await r.zadd(new(keys.bucket(sid)), {sid: score}, lt=True)  # the earlier of the two
            await r.zrem(old, sid)
            moved += 1
    sets = ((keys.LEGACY_WEBHOOK_SERVICES, keys.webhook_services), (keys.LEGACY_WEBHOOK_FAILED, keys.webhook_failed))
    for old, new in sets:
        for member in await r.smembers(old):
            sid = text(member)
            await r.sadd(new(keys.bucket(sid)), sid)
            await r.srem(old, sid)
            moved += 1
    return moved
