"""List and Map items: one generic item model. Lists key items by a server-assigned index (ordered
by number); Maps by a user key (ordered by UTF-8 bytes). Writes go through scripts/item_*.lua."""

from __future__ import annotations

from typing import Any

import msgpack

from . import keys, objects
from .clock import now_ms
from .errors import NotFoundError
from .kinds import Kind
from .lua import ScriptReply
from .paging import Cursor
from .records import Actor, Item, Page
from .redis_client import text
from .store import Store
from .wire import jsontext


def decode(kind: Kind, collection_sid: str, service_sid: str, key: str, raw: bytes) -> Item:
    return from_value(kind, collection_sid, service_sid, key, msgpack.unpackb(raw))


def from_value(kind: Kind, collection_sid: str, service_sid: str, key: str, v: dict[str, Any]) -> Item:
    """An item from its stored value (fields in scripts/lib.lua's header; also a history record's)."""
    return Item(
        kind=kind,
        collection_sid=collection_sid,
        service_sid=service_sid,
        key=key,
        data=jsontext.loads(v["d"]),
        last_event_id=int(v["r"]),
        created_by=v["b"],
        date_created=int(v["c"]),
        date_updated=int(v["u"]),
        date_expires=int(v["x"]) if v.get("x") is not None else None,
    )


def live(item: Item, now: int) -> bool:
    return item.date_expires is None or item.date_expires > now


def _ttl(ttl: int | None) -> str:
    return "" if ttl is None else str(ttl)


async def write(
    store: Store,
    service_sid: str,
    kind: Kind,
    collection: str,
    actor: Actor,
    mode: str,
    key: str = "",
    data_json: str | None = None,
    item_ttl: int | None = None,
    collection_ttl: int | None = None,
    if_match: str | None = None,
) -> tuple[Item, bool]:
    """Append (lists), create, update or upsert one item. Returns (item, added).

    The script checks that the collection is live, so there is no pre-read (see objects.with_object)."""

    async def run(sid: str) -> tuple[str, ScriptReply]:
        return sid, await store.run(
            "item_write",
            service_sid,
            keys.obj(service_sid, sid),
            actor,
            kind=kind,
            sid=sid,
            mode=mode,
            key=key,
            data=data_json or "",
            item_ttl=_ttl(item_ttl),
            collection_ttl=_ttl(collection_ttl),
            if_match=if_match or "",
        )

    sid, reply = await objects.with_object(store, service_sid, kind, collection, run)
    added, ikey, packed, item_x, coll_x = reply.number(1), reply.text(2), reply.raw(3), reply.raw(5), reply.raw(6)
    await store.schedule_expiry(
        service_sid, item_x if item_ttl is not None else None, coll_x if collection_ttl is not None else None
    )
    return decode(kind, sid, service_sid, ikey, packed), bool(added)


async def get(store: Store, service_sid: str, kind: Kind, collection: str, key: str) -> Item:
    async def fetch(sid: str) -> Item:
        # the collection's type/expiry and the item in one round trip
        async with store.redis.pipeline(transaction=False) as p:
            p.hmget(keys.obj(service_sid, sid), "t", "x")
            p.hget(keys.items(service_sid, sid), key)
            (t, x), raw = await p.execute()
        now = now_ms()
        if not objects.is_live({b"t": t, b"x": x}, kind, now):
            raise NotFoundError(kind, collection)
        if raw is not None:
            item = decode(kind, sid, service_sid, key, raw)
            if live(item, now):
                return item
        raise NotFoundError(kind.item_subject, key)

    return await objects.with_object(store, service_sid, kind, collection, fetch)


async def delete(
    store: Store, service_sid: str, kind: Kind, collection: str, key: str, actor: Actor, if_match: str | None = None
) -> int:
    """Remove one item; returns the id of its removal event (the SDK keeps it as a tombstone)."""

    async def run(sid: str) -> ScriptReply:
        return await store.run(
            "item_delete",
            service_sid,
            keys.obj(service_sid, sid),
            actor,
            kind=kind,
            sid=sid,
            key=key,
            if_match=if_match or "",
            sweeping="",
        )

    reply = await objects.with_object(store, service_sid, kind, collection, run)
    return int(reply.text(1), 16)


async def page(
    store: Store,
    service_sid: str,
    kind: Kind,
    collection: str,
    size: int,
    order: str = "asc",
    start: str | None = None,
    inclusive: bool = True,
    cursor: Cursor | None = None,
) -> Page[Item]:
    """One page in ``order``, from ``start`` (an index or key) or continuing at ``cursor``."""
    sid = await objects.resolve(store, service_sid, kind, collection)
    forward = cursor is None or cursor.forward
    ascending = (order == "asc") == forward
    near: Bound = (start, inclusive)
    far: Bound = (None, True)
    if cursor is not None:
        near = (cursor.value, False)
        if not forward:  # a previous page walks back towards From, never past it
            far = (start, inclusive)
    members = await _range(store, keys.item_order(service_sid, sid), kind, ascending, near, far, size + 1)
    more = len(members) > size
    members = members[:size]
    if not forward:
        members.reverse()
    nxt = members[-1] if members and (more or not forward) else None
    prev = members[0] if members and (more if not forward else cursor is not None) else None
    raws = await store.redis.hmget(keys.items(service_sid, sid), members) if members else []
    now = now_ms()
    found = [decode(kind, sid, service_sid, m, raw) for m, raw in zip(members, raws, strict=True) if raw is not None]
    return Page([i for i in found if live(i, now)], nxt, prev)


Bound = tuple[str | None, bool]  # (index or key, inclusive); None = open end


async def range_keys(store: Store, zkey: str, kind: Kind, near: Bound, num: int) -> list[str]:
    """Up to ``num`` members of an item-ordered zset (``io:`` or ``hk:``) from ``near``, ascending."""
    return await _range(store, zkey, kind, True, near, (None, True), num)


def _edge(kind: Kind, bound: Bound, low: bool) -> str:
    """A ZRANGEBYSCORE (lists) or ZRANGEBYLEX (maps) argument for one end of a range."""
    value, inclusive = bound
    if kind.indexed:
        if value is None:
            return "-inf" if low else "+inf"
        return value if inclusive else f"({value}"
    if value is None:
        return "-" if low else "+"
    return ("[" if inclusive else "(") + value


async def _range(store: Store, zkey: str, kind: Kind, ascending: bool, near: Bound, far: Bound, num: int) -> list[str]:
    """Up to ``num`` members from ``near`` towards ``far``, ascending or descending."""
    r = store.redis
    if ascending:
        low, high = _edge(kind, near, True), _edge(kind, far, False)
        if kind.indexed:
            rows = await r.zrangebyscore(zkey, low, high, start=0, num=num)
        else:
            rows = await r.zrangebylex(zkey, low, high, start=0, num=num)
    else:
        high, low = _edge(kind, near, False), _edge(kind, far, True)
        if kind.indexed:
            rows = await r.zrevrangebyscore(zkey, high, low, start=0, num=num)
        else:
            rows = await r.zrevrangebylex(zkey, high, low, start=0, num=num)
    return [text(m) for m in rows]
