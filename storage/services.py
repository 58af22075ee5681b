"""Services live in their account's slot: record, listing index and purge queue change together.

Deleting a Service is two steps, each atomic in its own slot: the account's MULTI removes the record
and queues the purge, then the Service's tombstone makes every later write fail. The purger
(``purge_pending``) deletes the Service's objects one by one through the normal delete script, so
each removal is recorded as an event, and is safe to resume after a crash or run twice.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from . import ids, invalidation, keys, lua, objects, webhooks
from .clock import now_ms
from .errors import NotFoundError
from .kinds import Kind
from .paging import Cursor
from .records import SWEEPER, Page, Service
from .redis_client import text
from .store import Store

DEFAULTS: dict[str, Any] = {
    "friendly_name": None,
    "webhook_url": None,
    "acl_enabled": False,
    "reachability_webhooks_enabled": False,
    "reachability_debouncing_enabled": False,
    "reachability_debouncing_window": 5000,
    "webhooks_from_rest_enabled": False,
}
_BOOLS = {k for k, v in DEFAULTS.items() if isinstance(v, bool)}


def _encode(fields: dict[str, Any]) -> dict[str, str]:
    out = {}
    for k, v in fields.items():
        if v is None:
            out[k] = "\x00"  # null marker: Redis has no null
        elif isinstance(v, bool):
            out[k] = "1" if v else "0"
        else:
            out[k] = str(v)
    return out


def _decode(raw: dict[bytes, bytes]) -> Service:
    f = {text(k): text(v) for k, v in raw.items()}
    vals: dict[str, Any] = {}
    for k, default in DEFAULTS.items():
        v = f.get(k, "\x00")
        if v == "\x00":
            vals[k] = default if k in _BOOLS or k == "reachability_debouncing_window" else None
        elif k in _BOOLS:
            vals[k] = v == "1"
        elif k == "reachability_debouncing_window":
            vals[k] = int(v)
        else:
            vals[k] = v
    return Service(
        sid=f["sid"],
        account_sid=f["account_sid"],
        unique_name=None if f.get("unique_name", "\x00") == "\x00" else f["unique_name"],
        date_created=int(f["date_created"]),
        date_updated=int(f["date_updated"]),
        **vals,
    )


async def create(store: Store, account_sid: str, fields: dict[str, Any]) -> Service:
    sid = ids.new_sid(ids.SERVICE)
    now = now_ms()
    record = {**DEFAULTS, **fields, "sid": sid, "account_sid": account_sid, "unique_name": None}
    record.update(date_created=now, date_updated=now)
    seq = await store.redis.incr(keys.account_seq(account_sid))
    async with store.redis.pipeline(transaction=True) as p:
        p.hset(keys.service(account_sid, sid), mapping=_encode(record))
        p.zadd(keys.services_index(account_sid), {sid: seq})
        await p.execute()
    await webhooks.sync_config(store, account_sid, sid)
    return _decode({k.encode(): v.encode() for k, v in _encode(record).items()})


async def get(store: Store, account_sid: str, sid: str) -> Service:
    raw = await store.redis.hgetall(keys.service(account_sid, sid)) if ids.is_sid(sid, ids.SERVICE) else {}
    if not raw:
        raise NotFoundError("service", sid)
    return _decode(raw)


async def cached(store: Store, account_sid: str, sid: str) -> Service:
    """The Service, as read at most the store's cache time ago (every WebSocket connect reads it for
    the token's grant, every REST request under it for its existence). Updating or deleting a
    Service publishes an invalidation that every process applies within a round trip
    (storage/invalidation.py), and a read that overlaps one is not kept, so a change holds
    everywhere as soon as that message arrives; writes into a Service deleted meanwhile are refused
    by its tombstone inside the write scripts all the same."""
    if not store.health.up:  # Redis known to be down: no cached answer (``cached_now``), the read fails
        return await get(store, account_sid, sid)
    # the cached value, or one read for all who ask meanwhile (TtlCache.load)
    service: Service | None = await store.cache.load(("service", account_sid, sid), _lookup(store, account_sid, sid))
    if service is None:
        raise NotFoundError("service", sid)
    return service


def _lookup(store: Store, account_sid: str, sid: str) -> Callable[[], Awaitable[Service | None]]:
    """The cache's read of a Service: None when it is gone, so that a re-read in the background
    (storage/cache.py) forgets it as soon as it finds it deleted."""

    async def read() -> Service | None:
        try:
            return await get(store, account_sid, sid)
        except NotFoundError:
            return None

    return read


def cached_now(store: Store, account_sid: str, sid: str) -> Service | None:
    """The Service as ``cached`` has it, if it has it, without waiting for a read (past the cache's
    refresh point one starts in the background: storage/cache.py). Nothing while Redis is known to be
    unreachable: a connect then fails (503) as every other request does, instead of opening a
    session on which nothing works."""
    if not store.health.up:
        return None
    hit: Service | None = store.cache.fresh(("service", account_sid, sid), _lookup(store, account_sid, sid))
    return hit


async def check(store: Store, account_sid: str, sid: str) -> str:
    """The Service SID if it exists in this account (``cached``)."""
    return (await cached(store, account_sid, sid)).sid


async def update(store: Store, account_sid: str, sid: str, fields: dict[str, Any]) -> Service:
    key = keys.service(account_sid, sid)
    await get(store, account_sid, sid)
    fields = {**fields, "date_updated": now_ms()}
    # only if the record still exists, bumping the version of the webhook config copy (the script says why)
    updated = await store.call("service_update", [key], fields=lua.field_pairs(_encode(fields)))
    if not updated:
        raise NotFoundError("service", sid)
    await webhooks.sync_config(store, account_sid, sid)
    await store.invalidate(invalidation.SERVICE, account_sid, sid)  # every process's cached() copy
    if "acl_enabled" in fields:  # live subscriptions re-check their right (realtime/hub.py)
        await store.publish_wake(sid, f"* acl {1 if fields['acl_enabled'] else 0}")
    return await get(store, account_sid, sid)


async def delete(store: Store, account_sid: str, sid: str) -> None:
    await get(store, account_sid, sid)
    async with store.redis.pipeline(transaction=True) as p:
        p.delete(keys.service(account_sid, sid))
        p.zrem(keys.services_index(account_sid), sid)
        p.rpush(keys.account_purge(account_sid), sid)
        removed = await p.execute()
    await store.invalidate(invalidation.SERVICE, account_sid, sid)  # every process's check() too
    if not removed[0]:
        raise NotFoundError("service", sid)
    await store.redis.set(keys.tombstone(sid), "1", ex=store.config.event_log_keep_s)
    await webhooks.drop(store, sid)


async def page(store: Store, account_sid: str, size: int, cursor: Cursor | None) -> Page[Service]:
    sids, nxt, prev = await objects.keyset(store, keys.services_index(account_sid), size, cursor)
    async with store.redis.pipeline(transaction=False) as p:
        for sid in sids:
            p.hgetall(keys.service(account_sid, sid))
        rows = await p.execute()
    return Page([_decode(r) for r in rows if r], nxt, prev)


async def purge_pending(store: Store, batch: int = 100, progress: Callable[[int], None] | None = None) -> int:
    """Delete the objects of deleted Services (with their removal events). Returns objects removed;
    ``progress(removed so far)`` is told after each batch (the CLI's counter line)."""
    removed = 0
    for account in await store.redis.smembers(keys.ACCOUNTS):
        queue = keys.account_purge(text(account))
        for raw in await store.redis.lrange(queue, 0, -1):
            sid = text(raw)
            await store.redis.set(keys.tombstone(sid), "1", ex=store.config.event_log_keep_s)
            await webhooks.drop(store, sid)  # before the removals: they must not become webhooks
            for kind in Kind:
                while True:
                    members = await store.redis.zrange(keys.index(sid, kind), 0, batch - 1)
                    if not members:
                        break
                    for m in members:
                        removed += await objects.remove_for_purge(store, sid, text(m), SWEEPER)
                    if progress is not None:
                        progress(removed)
            await store.redis.delete(keys.expiry(sid), keys.seq(sid), *[keys.names(sid, k) for k in Kind])
            await store.redis.lrem(queue, 0, sid)
    return removed
