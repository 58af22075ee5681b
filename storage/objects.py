"""Documents, Lists, Maps and Streams: one generic object model, addressed by SID or unique name.

Each write is one script (see scripts/object_*.lua) that changes the object hash, the unique-name
and listing indexes, the expiry schedule and the object's event log together.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

from . import ids, keys
from .clock import now_ms
from .errors import NotFoundError
from .kinds import Kind
from .lua import ScriptReply
from .paging import Cursor
from .records import Actor, Page, SyncObject
from .redis_client import text
from .store import Store
from .wire import jsontext

T = TypeVar("T")


def _ttl(ttl: int | None) -> str:
    return "" if ttl is None else str(ttl)


def decode(service_sid: str, raw: dict[bytes, bytes] | list[bytes]) -> SyncObject:
    if isinstance(raw, list):
        f = {text(raw[i]): text(raw[i + 1]) for i in range(0, len(raw), 2)}
    else:
        f = {text(k): text(v) for k, v in raw.items()}
    kind = Kind(f["t"])
    return SyncObject(
        kind=kind,
        sid=f["sid"],
        service_sid=service_sid,
        unique_name=f["un"] or None,
        created_by=f["b"],
        date_created=int(f["c"]),
        date_updated=int(f["u"]),
        date_expires=int(f["x"]) if f["x"] else None,
        last_event_id=int(f["e"]),
        data=jsontext.loads(f["d"]) if kind.has_data else None,
    )


def is_live(raw: Mapping[bytes, bytes | None], kind: Kind, now: int) -> bool:
    """A stored object hash (or its t/x fields) is a live object of ``kind``."""
    t = raw.get(b"t")
    if t is None or text(t) != kind:
        return False
    x = raw.get(b"x", b"")
    return not x or int(x) > now


async def _sid(store: Store, service_sid: str, kind: Kind, ident: str, fresh: bool = False) -> str:
    """SID for a SID or unique name, unverified: the caller's script or read checks existence.
    An unknown name raises NotFoundError("unique_name"), which the SDK's API answers apart from a
    missing object (Twilio's 54300, not the kind's not-found code)."""
    if ids.is_sid(ident, kind.sid_prefix):
        return ident
    if ids.is_sid(ident):  # another kind's SID can never be a name: the object is simply not there
        raise NotFoundError(kind, ident)
    key = ("name", service_sid, kind, ident)

    async def named() -> str | None:
        found = await store.redis.hget(keys.names(service_sid, kind), ident)
        return None if found is None else text(found)

    if fresh:  # the caller found the cached SID stale
        store.cache.drop(key)
    sid: str | None = await store.cache.load(key, named)  # a name in steady use: re-read in the background
    if sid is None:
        raise NotFoundError("unique_name", ident)
    return sid


async def with_object(store: Store, service_sid: str, kind: Kind, ident: str, op: Callable[[str], Awaitable[T]]) -> T:
    """Run ``op(sid)`` on the object addressed by SID or unique name, in one round trip when the
    name is cached. ``op`` raises NotFoundError(kind) when ``sid`` is not a live object of ``kind``;
    a cached name may be stale (deleted and re-created), so it is looked up afresh and retried once."""
    sid = await _sid(store, service_sid, kind, ident)
    try:
        return await op(sid)
    except NotFoundError as exc:
        if exc.kind not in (kind, "object") or ids.is_sid(ident, kind.sid_prefix):
            raise
        fresh = await _sid(store, service_sid, kind, ident, fresh=True)
        if fresh == sid:  # the name still points at an object that is no longer live
            raise NotFoundError("unique_name", ident) from None
        return await op(fresh)


async def resolve(store: Store, service_sid: str, kind: Kind, ident: str) -> str:
    """The SID of a live object of ``kind`` addressed by SID or unique name."""
    return (await get(store, service_sid, kind, ident)).sid


async def get(store: Store, service_sid: str, kind: Kind, ident: str) -> SyncObject:
    async def fetch(sid: str) -> SyncObject:
        raw = await store.redis.hgetall(keys.obj(service_sid, sid))
        if not is_live(raw, kind, now_ms()):
            raise NotFoundError(kind, ident)
        return decode(service_sid, raw)

    return await with_object(store, service_sid, kind, ident, fetch)


async def last_event(store: Store, service_sid: str, kind: Kind, ident: str) -> tuple[str, int]:
    """(SID, last event id) of a live object of ``kind``, or NotFoundError as ``get``: what a new
    subscription needs, read without its data (a Document's may be 16 KiB of JSON to decode), with
    the other subscriptions' reads of this loop turn (a crowd reconnecting at once: batch.py)."""

    async def fetch(sid: str) -> tuple[str, int]:
        t, x, e = await store.reads.hmget(keys.obj(service_sid, sid), ("t", "x", "e"))
        if e is None or not is_live({b"t": t, b"x": x}, kind, now_ms()):
            raise NotFoundError(kind, ident)
        return sid, int(e)

    return await with_object(store, service_sid, kind, ident, fetch)


async def create(
    store: Store,
    service_sid: str,
    kind: Kind,
    actor: Actor,
    unique_name: str | None = None,
    data_json: str | None = None,
    ttl: int | None = None,
) -> SyncObject:
    sid = ids.new_sid(kind.sid_prefix)
    if kind.has_data and data_json is None:
        data_json = "{}"
    reply = await store.run(
        "object_create",
        service_sid,
        keys.obj(service_sid, sid),
        actor,
        kind=kind,
        sid=sid,
        unique_name=unique_name or "",
        data=data_json or "",
        ttl=_ttl(ttl),
    )
    await store.schedule_expiry(service_sid, reply.raw(2))
    return decode(service_sid, reply.strings(1))


async def update(
    store: Store,
    service_sid: str,
    kind: Kind,
    ident: str,
    actor: Actor,
    data_json: str | None = None,
    ttl: int | None = None,
    if_match: str | None = None,
) -> SyncObject:

    async def write(sid: str) -> ScriptReply:
        return await store.run(
            "object_update",
            service_sid,
            keys.obj(service_sid, sid),
            actor,
            kind=kind,
            sid=sid,
            data=data_json or "",
            ttl=_ttl(ttl),
            if_match=if_match or "",
        )

    reply = await with_object(store, service_sid, kind, ident, write)
    if ttl is not None:
        await store.schedule_expiry(service_sid, reply.raw(2))
    return decode(service_sid, reply.strings(1))


async def delete(store: Store, service_sid: str, kind: Kind, ident: str, actor: Actor) -> None:

    async def remove(sid: str) -> ScriptReply:
        keep = store.config.event_log_keep_s
        return await store.run(
            "object_delete", service_sid, keys.obj(service_sid, sid), actor, sid=sid, sweeping="", keep_log=keep
        )

    await with_object(store, service_sid, kind, ident, remove)


async def remove_for_purge(store: Store, service_sid: str, sid: str, actor: Actor) -> int:
    """Delete one object of a deleted Service, whatever its state. 1 if it was removed here."""
    okey, keep = keys.obj(service_sid, sid), store.config.event_log_keep_s
    try:
        await store.run("object_delete", service_sid, okey, actor, sid=sid, sweeping="", keep_log=keep)
        return 1
    except NotFoundError:
        pass
    try:  # expired but not swept yet
        await store.run("object_delete", service_sid, okey, actor, sid=sid, sweeping="1", keep_log=keep)
        return 1
    except NotFoundError:
        # gone already (or a dangling index entry): make sure the index forgets it
        for kind in Kind:
            await store.redis.zrem(keys.index(service_sid, kind), sid)
        return 0


async def keyset(store: Store, zkey: str, size: int, cursor: Cursor | None) -> tuple[list[str], str | None, str | None]:
    """One page of a score-ordered index: (members, next cursor value, previous cursor value)."""
    r = store.redis
    if cursor is None or cursor.forward:
        low = f"({cursor.value}" if cursor else "-inf"
        rows = await r.zrangebyscore(zkey, low, "+inf", start=0, num=size + 1, withscores=True)
        more = len(rows) > size
        rows = rows[:size]
        nxt = _score(rows[-1][1]) if more and rows else None
        prev = _score(rows[0][1]) if cursor and rows else None
    else:
        rows = await r.zrevrangebyscore(zkey, f"({cursor.value}", "-inf", start=0, num=size + 1, withscores=True)
        more = len(rows) > size
        rows = list(reversed(rows[:size]))
        nxt = _score(rows[-1][1]) if rows else None
        prev = _score(rows[0][1]) if more and rows else None
    return [text(m) for m, _ in rows], nxt, prev


def _score(value: float) -> str:
    return str(int(value))


async def page(store: Store, service_sid: str, kind: Kind, size: int, cursor: Cursor | None) -> Page[SyncObject]:
    sids, nxt, prev = await keyset(store, keys.index(service_sid, kind), size, cursor)
    async with store.redis.pipeline(transaction=False) as p:
        for sid in sids:
            p.hgetall(keys.obj(service_sid, sid))
        rows: list[dict[bytes, bytes]] = await p.execute()
    now = now_ms()
    return Page([decode(service_sid, raw) for raw in rows if is_live(raw, kind, now)], nxt, prev)
