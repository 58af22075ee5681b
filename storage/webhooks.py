"""The durable webhook queue: config copy, queue, lease, dead letters. Delivery is realtime/webhooks/worker.py.

Design (keys in keys.py):

* **Config copy.** The Service record lives in the account slot, but every write script runs in the
  Service's slot, so ``sync_config`` keeps a copy of the webhook settings in ``sync:{IS}:wh``
  (url, rest = webhooks_from_rest_enabled, ac = account, re/db/dw = reachability flags and window,
  v = the record's version). Services create/update call it; the worker re-syncs every Service at
  start (``resync_all``), which repairs a crash between the two slots' writes.
* **Queue.** ``emit()`` in scripts/lib.lua XADDs each event that should become a webhook (with the
  URL of that moment) to ``sync:{IS}:whq`` in the same atomic step as the write: no acknowledged
  write exists without its queued webhook, and a URL change applies to later events only. It then
  wakes the worker (a wake-up only, never the truth): on Redis/Valkey 7+ it SPUBLISHes the Service
  SID on the Service's own shard channel ``sync:{IS}:whw``, which only the process holding the
  Service's bucket subscribes, on the shard owning the Service (a Cluster's bus does not carry it
  to every node); older servers PUBLISH it on the global ``sync:webhooks:wake`` (``wake`` here too).
* **Discovery** without a key scan: ``sync:{w<b>}:webhooks`` (16 buckets by Service SID) list the
  Services that have (had) a webhook URL; each process works the buckets it holds a lease for
  (storage/buckets.py): it is woken by the channels of those (on 7+ it follows a Service joining
  a bucket through the bucket's shard channel ``sync:{w<b>}:whnew``) and, to catch missed wake-ups and
  crashed workers, checks the queue lengths of its buckets' Services every few seconds.
* **Order.** One worker at a time delivers a Service (the lease ``sync:{IS}:whl``), reading with the
  consumer group ``wh``; a worker taking over claims (XAUTOCLAIM) the entries a crashed one had
  read. Entries are XACKed and XDELed only after a 2xx.
* **Dead letters.** Entries that exhausted their retries move to ``sync:{IS}:whdl`` (capped) and the
  Service joins ``sync:{w<b>}:failed``; ``replay`` queues them again (to the current URL).
* The queue is never trimmed (that would lose webhooks): a dead receiver's backlog drains to the
  dead letters instead (see realtime/webhooks/worker.py for retries).
* **Status.** While a Service's receiver fails, the config copy holds ``fs``: when it started failing
  (ms; the first failed attempt since the last success; kept across a Service update that keeps the
  URL). ``status`` reports per Service the pending entries, the age of the oldest, ``fs`` and the
  dead letters (`sync-server webhooks status`).
* Deleting a Service drops its copy, queue, lease and dead letters (``drop``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from redis.exceptions import ResponseError

from . import buckets, events, keys, lua
from .events import ChangeEvent
from .redis_client import text
from .store import Store

GROUP = "wh"
FAILING_SINCE = "fs"  # field of the config copy


@dataclass(frozen=True)
class Delivery:
    """One queued webhook: the change event plus the URL and account it goes out for."""

    id: str  # queue entry id
    service_sid: str
    account_sid: str
    url: str
    event: ChangeEvent

    @property
    def order_key(self) -> str:
        """Deliveries with the same key go out in queue order (per object; per identity for reachability)."""
        return self.event.sid or "identity:" + self.event.identity


@dataclass(frozen=True)
class DeadLetter:
    id: str  # dead-letter entry id
    service_sid: str
    account_sid: str
    url: str
    event: ChangeEvent
    error: str
    attempts: int


def _fields(raw: dict[bytes, bytes]) -> tuple[str, str, ChangeEvent]:
    return text(raw.get(b"u", b"")), text(raw.get(b"a", b"")), events.decode(raw[b"e"])


# --- config copy -------------------------------------------------------------------------------


async def sync_config(store: Store, account_sid: str, service_sid: str) -> None:
    """Copy the Service record's webhook settings into the Service slot (idempotent, versioned)."""
    raw = {text(k): text(v) for k, v in (await store.redis.hgetall(keys.service(account_sid, service_sid))).items()}
    if not raw:
        return
    url = raw.get("webhook_url", "\x00")
    copy = {
        "ac": account_sid,
        "rest": raw.get("webhooks_from_rest_enabled", "0"),
        "re": raw.get("reachability_webhooks_enabled", "0"),
        "db": raw.get("reachability_debouncing_enabled", "0"),
        "dw": raw.get("reachability_debouncing_window", "5000"),
    }
    copy = {k: ("0" if v == "\x00" else v) for k, v in copy.items()}
    if url not in ("\x00", ""):
        copy["url"] = url
        b = keys.bucket(service_sid)
        if await store.redis.sadd(keys.webhook_services(b), service_sid) and store.sharded:
            # the holder of the bucket subscribes the Service's wake-ups now (else at its next scan)
            await store.redis.spublish(keys.webhook_joined_channel(b), service_sid)
        old_url, since = await store.redis.hmget(keys.webhook_config(service_sid), ["url", FAILING_SINCE])
        if since is not None and old_url is not None and text(old_url) == url:
            copy[FAILING_SINCE] = text(since)  # same receiver: still failing since then
    where = [keys.webhook_config(service_sid), keys.tombstone(service_sid)]
    await store.call("webhook_config", where, version=raw.get("v", "0"), fields=lua.field_pairs(copy))


async def drop(store: Store, service_sid: str) -> None:
    """Forget a deleted Service's webhooks: config copy, queue, lease, reachability, dead letters."""
    identities = [text(i) for i in await store.redis.smembers(keys.reach_identities(service_sid))]
    async with store.redis.pipeline(transaction=True) as p:
        p.delete(
            *[keys.endpoints(service_sid, i) for i in identities],
            keys.reach_identities(service_sid),
            keys.webhook_config(service_sid),
            keys.webhook_queue(service_sid),
            keys.webhook_lease(service_sid),
            keys.webhook_dead(service_sid),
            keys.reach_pending(service_sid),
            keys.reach_endpoint(service_sid),
        )
        await p.execute()
    async with store.redis.pipeline(transaction=False) as p:
        b = keys.bucket(service_sid)
        p.srem(keys.webhook_services(b), service_sid)
        p.srem(keys.webhook_failed(b), service_sid)
        p.zrem(keys.reach_due(b), service_sid)
        await p.execute()


async def resync_all(store: Store) -> int:
    """Re-copy every Service's webhook config (at start: repairs a crash between the two writes)."""
    n = 0
    for account in await store.redis.smembers(keys.ACCOUNTS):
        ac = text(account)
        for sid in await store.redis.zrange(keys.services_index(ac), 0, -1):
            await sync_config(store, ac, text(sid))
            n += 1
    return n


# --- discovery and lease -----------------------------------------------------------------------


async def wake(store: Store, service_sid: str) -> None:
    """Wake the worker of the Service as queue_webhook() in scripts/lib.lua does."""
    if store.sharded:
        await store.redis.spublish(keys.webhook_wake_channel(service_sid), service_sid)
    else:
        await wake(store, service_sid)


async def services_in(store: Store, held: Iterable[int]) -> list[str]:
    """The Services that have (had) a webhook URL, in the buckets ``held`` (one pipeline of SMEMBERS)."""
    return await buckets.members_in(store, keys.webhook_services, held)


async def services_with_work(store: Store, held: Iterable[int] = range(keys.BUCKETS)) -> list[str]:
    """Services of the buckets ``held`` whose queue is not empty (one pipeline of SMEMBERS, one of XLEN)."""
    return await with_work(store, await services_in(store, held))


async def with_work(store: Store, sids: list[str]) -> list[str]:
    """Those of ``sids`` whose queue is not empty (one pipelined XLEN each)."""
    if not sids:
        return []
    async with store.redis.pipeline(transaction=False) as p:
        for sid in sids:
            p.xlen(keys.webhook_queue(sid))
        lengths = await p.execute()
    return [sid for sid, n in zip(sids, lengths, strict=True) if n]


async def _members(store: Store, bucket_key: Callable[[int], str]) -> set[str]:
    """Every Service SID in one work list, all buckets (the admin commands)."""
    return set(await buckets.members_in(store, bucket_key, range(keys.BUCKETS)))


async def take_lease(store: Store, service_sid: str, owner: str, ms: int) -> bool:
    """Acquire or renew the Service's delivery lease; False if another worker holds it."""
    got = await store.call("webhook_lease", [keys.webhook_lease(service_sid)], op="take", owner=owner, ms=ms)
    return bool(got)


async def release_lease(store: Store, service_sid: str, owner: str) -> None:
    await store.call("webhook_lease", [keys.webhook_lease(service_sid)], op="release", owner=owner)


# --- reading and acknowledging -----------------------------------------------------------------


async def claim(store: Store, service_sid: str, consumer: str) -> bool:
    """Create the consumer group if needed and take over every entry other consumers read but did not
    acknowledge (a crashed worker's). Call while holding the lease. False if there is no queue."""
    key = keys.webhook_queue(service_sid)
    try:
        await store.redis.xgroup_create(key, GROUP, id="0")
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            return False  # no such key: nothing was ever queued (or the Service is gone)
    start = "0-0"
    while True:
        # not justid: redis-py drops the cursor from a JUSTID reply
        reply = await store.redis.xautoclaim(key, GROUP, consumer, 0, start, count=500)
        start = text(reply[0])
        if start == "0-0":
            return True


async def read(store: Store, service_sid: str, consumer: str, count: int, after: str = ">") -> list[Delivery]:
    """Up to ``count`` entries: new ones (``after`` = ">"), or this consumer's unacknowledged ones
    with an id above ``after`` ("0" = from the start: what it claimed or read before a crash)."""
    key = keys.webhook_queue(service_sid)
    try:
        reply = await store.redis.xreadgroup(GROUP, consumer, {key: after}, count=count)
    except ResponseError:  # NOGROUP: the queue was dropped with its Service
        return []
    out: list[Delivery] = []
    gone: list[str] = []
    for _, rows in reply or []:
        for entry_id, raw in rows:
            if not raw:  # deleted while pending
                gone.append(text(entry_id))
                continue
            url, account, event = _fields(raw)
            out.append(Delivery(text(entry_id), service_sid, account, url, event))
    if gone:
        await ack(store, service_sid, gone)
    return out


async def ack(store: Store, service_sid: str, entry_ids: list[str]) -> None:
    """Done with these entries (delivered, or moved to the dead letters): forget them."""
    key = keys.webhook_queue(service_sid)
    async with store.redis.pipeline(transaction=True) as p:
        p.xack(key, GROUP, *entry_ids)
        p.xdel(key, *entry_ids)
        await p.execute()


# --- dead letters ------------------------------------------------------------------------------


async def dead_letter(store: Store, d: Delivery, error: str, attempts: int, cap: int) -> None:
    """Move one delivery that exhausted its retries to the Service's dead letters (capped)."""
    sid = d.service_sid
    fields: dict[str, lua.LuaArg] = {
        "e": events.encode(d.event),
        "u": d.url,
        "a": d.account_sid,
        "err": error[:500],
        "n": attempts,
    }
    where = [keys.webhook_queue(sid), keys.webhook_dead(sid), keys.tombstone(sid)]
    if await store.call("webhook_dead", where, id=d.id, cap=cap, fields=lua.field_pairs(fields)):
        await store.redis.sadd(keys.webhook_failed(keys.bucket(sid)), sid)


async def failed(store: Store, service_sid: str | None = None, count: int = 1000) -> list[DeadLetter]:
    """Dead letters, oldest first: of one Service, or of every Service that has some."""
    sids = [service_sid] if service_sid else sorted(await _members(store, keys.webhook_failed))
    out: list[DeadLetter] = []
    for sid in sids:
        for entry_id, raw in await store.redis.xrange(keys.webhook_dead(sid), count=count):
            url, account, event = _fields(raw)
            err, n = text(raw.get(b"err", b"")), int(raw.get(b"n", b"0"))
            out.append(DeadLetter(text(entry_id), sid, account, url, event, err, n))
    return out


async def replay(
    store: Store,
    service_sid: str,
    entry_ids: list[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Queue dead letters again (all of the Service's, or these), to the Service's current URL when it
    has one. Replayed entries join the end of the queue. Returns how many were queued; ``progress(done,
    total)`` is told after each (the CLI's counter line)."""
    dead = keys.webhook_dead(service_sid)
    url = await store.redis.hget(keys.webhook_config(service_sid), "url")
    rows = await store.redis.xrange(dead) if entry_ids is None else []
    for wanted in entry_ids or []:
        rows += await store.redis.xrange(dead, wanted, wanted)
    for done, (entry_id, raw) in enumerate(rows, 1):
        fields = {"e": raw[b"e"], "u": url if url is not None else raw[b"u"], "a": raw[b"a"]}
        async with store.redis.pipeline(transaction=True) as p:
            p.xadd(keys.webhook_queue(service_sid), fields)
            p.xdel(dead, entry_id)
            await p.execute()
        if progress is not None:
            progress(done, len(rows))
    if rows:
        await store.redis.sadd(keys.webhook_services(keys.bucket(service_sid)), service_sid)
        await wake(store, service_sid)
    if not await store.redis.xlen(dead):
        await store.redis.srem(keys.webhook_failed(keys.bucket(service_sid)), service_sid)
    return len(rows)


# --- status ------------------------------------------------------------------------------------


async def mark_failing(store: Store, service_sid: str, since_ms: int) -> None:
    """The Service's receiver is failing since ``since_ms`` unless an earlier time is recorded. Only
    on an existing config copy, checked in the same atomic step (scripts/webhook_failing.lua): a
    Service deleted between a check and the write would otherwise get its config key back."""
    await store.call("webhook_failing", [keys.webhook_config(service_sid)], field=FAILING_SINCE, since=since_ms)


async def clear_failing(store: Store, service_sid: str) -> None:
    """A delivery succeeded: the receiver is not failing."""
    await store.redis.hdel(keys.webhook_config(service_sid), FAILING_SINCE)


@dataclass(frozen=True)
class QueueStatus:
    """One Service's webhook queue, as `sync-server webhooks status` shows it."""

    service_sid: str
    url: str | None  # the current webhook URL (None: none)
    pending: int  # entries queued and not yet delivered or dead-lettered
    oldest_age_s: float | None  # age of the oldest pending entry (None: nothing pending)
    failing_since: float | None  # epoch seconds of the first failed attempt since the last success
    dead_letters: int


async def status(store: Store, service_sid: str | None = None) -> list[QueueStatus]:
    """The queue of one Service, or of every Service that has (had) a webhook URL or dead letters."""
    if service_sid:
        sids = [service_sid]
    else:
        found = await _members(store, keys.webhook_services) | await _members(store, keys.webhook_failed)
        sids = sorted(text(s) for s in found)
    now_ms = time.time() * 1000  # entry ids carry Redis's clock: the same host's, or a synchronised one
    out: list[QueueStatus] = []
    for sid in sids:
        async with store.redis.pipeline(transaction=False) as p:
            p.xlen(keys.webhook_queue(sid))
            p.hmget(keys.webhook_config(sid), ["url", FAILING_SINCE])
            p.xlen(keys.webhook_dead(sid))
            pending, (url, since), dead = await p.execute()
        first = await store.redis.xrange(keys.webhook_queue(sid), count=1) if pending else []
        oldest = None
        if pending and first:
            oldest = max(0.0, (now_ms - int(text(first[0][0]).split("-", 1)[0])) / 1000)
        failing = int(text(since)) / 1000 if since is not None else None
        out.append(QueueStatus(sid, text(url) if url is not None else None, pending, oldest, failing, dead))
    return out
