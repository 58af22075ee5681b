"""List and Map items: one generic item model. Lists key items by a server-assigned index (ordered
by number); Maps by a user key (ordered by UTF-8 bytes). Writes go through scripts/item_*.lua."""

from __future__ import annotations

import json
from typing import Any

import msgpack

from . import keys, objects
from .errors import NotFoundError
from .paging import Cursor
from .records import Actor, Item, Page
from .store import Store, now_ms, text


def _decode(kind: str, collection_sid: str, service_sid: str, key: str, raw: bytes) -> Item:
    v = msgpack.unpackb(raw)
    return Item(
        kind=kind,
        collection_sid=collection_sid,
        service_sid=service_sid,
        key=key,
        data=json.loads(v["d"]),
        last_event_id=int(v["r"]),
        created_by=v["b"],
        date_created=int(v["c"]),
        date_updated=int(v["u"]),
        date_expires=int(v["x"]) if v.get("x") is not None else None,
    )


def _live(item: Item, now: int) -> bool:
    return item.date_expires is None or item.date_expires > now


def _ttl(ttl: int | None) -> str:
    return "" if ttl is None else str(ttl)


async def write(
    store: Store,
    service_sid: str,
    kind: str,
    collection: str,
    actor: Actor,
    mode: str,
    key: str = "",
    data_json: str | None = None,
    item_ttl: int | None = None,
    collection_ttl: int | None = None,
    if_match: str | None = None,
) -> tuple[Item, bool]:
    """Append (lists), create, update or upsert one item. Returns (item, added)."""
    sid = await objects.resolve(store, service_sid, kind, collection)
    reply = await store.run(
        "item_write",
        service_sid,
        keys.obj(service_sid, sid),
        actor,
        kind,
        sid,
        mode,
        key,
        data_json or "",
        _ttl(item_ttl),
        _ttl(collection_ttl),
        if_match or "",
    )
    added, ikey, packed, _rev, item_x, coll_x = reply[1], text(reply[2]), reply[3], reply[4], reply[5], reply[6]
    for x in (item_x, coll_x):
        await store.schedule_expiry(service_sid, x)
    return _decode(kind, sid, service_sid, ikey, packed), bool(added)


async def get(store: Store, service_sid: str, kind: str, collection: str, key: str) -> Item:
    sid = await objects.resolve(store, service_sid, kind, collection)
    raw = await store.redis.hget(keys.items(service_sid, sid), key)
    if raw is not None:
        item = _decode(kind, sid, service_sid, key, raw)
        if _live(item, now_ms()):
            return item
    raise NotFoundError(f"{kind}_item", key)


async def delete(
    store: Store, service_sid: str, kind: str, collection: str, key: str, actor: Actor, if_match: str | None = None
) -> None:
    sid = await objects.resolve(store, service_sid, kind, collection)
    await store.run("item_delete", service_sid, keys.obj(service_sid, sid), actor, kind, sid, key, if_match or "", "")


async def page(
    store: Store,
    service_sid: str,
    kind: str,
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
    if cursor is not None:
        bound: str | None = cursor.value
        incl = False
    else:
        bound, incl = start, inclusive
    members = await _range(store, keys.item_order(service_sid, sid), kind, ascending, bound, incl, size + 1)
    more = len(members) > size
    members = members[:size]
    if not forward:
        members.reverse()
    nxt = members[-1] if members and (more or not forward) else None
    prev = members[0] if members and (more if not forward else cursor is not None) else None
    raws: list[Any] = await store.redis.hmget(keys.items(service_sid, sid), members) if members else []
    now = now_ms()
    found = [_decode(kind, sid, service_sid, m, raw) for m, raw in zip(members, raws, strict=True) if raw is not None]
    return Page([i for i in found if _live(i, now)], nxt, prev)


async def _range(
    store: Store, zkey: str, kind: str, ascending: bool, bound: str | None, inclusive: bool, num: int
) -> list[str]:
    r = store.redis
    if kind == "list":
        edge = "-inf" if ascending else "+inf"
        b = edge if bound is None else (bound if inclusive else f"({bound}")
        if ascending:
            rows = await r.zrangebyscore(zkey, b, "+inf", start=0, num=num)
        else:
            rows = await r.zrevrangebyscore(zkey, b, "-inf", start=0, num=num)
    else:
        edge = "-" if ascending else "+"
        b = edge if bound is None else ("[" if inclusive else "(") + bound
        if ascending:
            rows = await r.zrangebylex(zkey, b, "+", start=0, num=num)
        else:
            rows = await r.zrevrangebylex(zkey, b, "-", start=0, num=num)
    return [text(m) for m in rows]
