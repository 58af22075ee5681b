"""The expiry sweeper: deletes what has expired, recording each removal as an event.

Work list: ``sync:due`` holds each Service with something scheduled to expire, scored by its
earliest expiry, so a tick with nothing due costs one ZRANGEBYSCORE and no scan. Each deletion is
the normal delete script with "only if expired" set: several sweepers (processes) may run at once;
the loser of a race finds nothing to do, so no event is recorded twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable

from . import buckets, keys
from .clock import now_ms
from .errors import NotFoundError, StoreUnavailableError
from .records import SWEEPER
from .redis_client import text
from .stats import SweepStats
from .store import Store

log = logging.getLogger("sync.expiry")


async def sweep_service(store: Store, service_sid: str, batch: int = 500) -> int:
    """Delete up to ``batch`` expired objects/items of one Service; reschedule the rest."""
    r = store.redis
    now = now_ms()
    removed = 0
    for raw in await r.zrangebyscore(keys.expiry(service_sid), "-inf", now, start=0, num=batch):
        member = text(raw)
        sid, _, item = member.partition("\x00")
        okey = keys.obj(service_sid, sid)
        try:
            if _:
                kind = await r.hget(okey, "t")
                if kind is None:
                    await r.zrem(keys.expiry(service_sid), member)
                    continue
                await store.run(
                    "item_delete",
                    service_sid,
                    okey,
                    SWEEPER,
                    kind=text(kind),
                    sid=sid,
                    key=item,
                    if_match="",
                    sweeping="1",
                )
            else:
                keep = store.config.event_log_keep_s
                await store.run("object_delete", service_sid, okey, SWEEPER, sid=sid, sweeping="1", keep_log=keep)
            removed += 1
        except NotFoundError as exc:
            if str(exc) != "not expired":  # gone already: forget the schedule entry
                await r.zrem(keys.expiry(service_sid), member)
    await reschedule(store, service_sid, keys.expiry(service_sid), keys.due(keys.bucket(service_sid)))
    return removed


async def reschedule(store: Store, service_sid: str, schedule: str, due: str) -> None:
    """Set the Service's due time in the global ``due`` zset to the earliest entry of its own
    ``schedule`` zset, race-free against writers (also used for debounced reachability webhooks).

    Writers add to the Service's schedule first and lower ``due`` second (ZADD LT); reading the
    schedule again after our own update means no writer's entry can be overwritten unseen.
    """
    r = store.redis
    first = await r.zrange(schedule, 0, 0, withscores=True)
    if first:
        await r.zadd(due, {service_sid: int(first[0][1])})
    else:
        await r.zrem(due, service_sid)
    again = await r.zrange(schedule, 0, 0, withscores=True)
    if again:
        await r.zadd(due, {service_sid: int(again[0][1])}, lt=True)


async def sweep_due(store: Store, held: Iterable[int] = range(keys.BUCKETS), batch: int = 50) -> int:
    """One sweeper tick over every Service that has something due now, in the buckets ``held`` (this
    process's share: storage/buckets.py)."""
    removed = 0
    for _, due in await buckets.due_in(store, keys.due, held, batch):
        for service_sid in due:
            removed += await sweep_service(store, service_sid)
    return removed


async def run_sweeper(
    store: Store, interval_s: float, stop: asyncio.Event, stats: SweepStats | None = None, lease_ms: int = 10_000
) -> None:
    """Sweep every ``interval_s`` until ``stop`` is set; errors are logged (an outage once, by
    Store.health), never fatal. ``stats`` counts the ticks and what expired (/metrics). Sweeps only
    the buckets this process holds (storage/buckets.py; a dead sweeper's are taken over within
    ``lease_ms``), after moving an earlier version's single ``sync:due`` into the buckets."""
    stats = stats or SweepStats()
    leases = buckets.BucketLeases(store, "sweep", lease_ms)
    with contextlib.suppress(StoreUnavailableError):  # an outage: the next start moves them
        await buckets.migrate(store)
    holding = asyncio.create_task(leases.run(stop))
    try:
        await _sweep_until(store, interval_s, stop, stats, leases)
    finally:
        await holding


async def _sweep_until(
    store: Store, interval_s: float, stop: asyncio.Event, stats: SweepStats, leases: buckets.BucketLeases
) -> None:
    while not stop.is_set():
        try:
            n = await sweep_due(store, set(leases.held))
            stats.sweeps += 1
            stats.expired += n
            if n:
                log.info("expired %d objects/items", n)
        except StoreUnavailableError:  # an outage: Store.health logged it once
            pass
        except Exception:  # keep sweeping after any other error
            log.exception("expiry sweep failed")
        try:
            await asyncio.wait_for(stop.wait(), timeout=interval_s)
        except TimeoutError:
            pass
