"""Revision history of Documents and List/Map items, and point-in-time reads of a collection.

The write scripts record each revision in the same atomic step as the write (``history`` in
scripts/lib.lua, which documents the layout and the trimming); this module only reads. Revisions
page newest first by revision number (a keyset cursor, like every other listing). A point-in-time
read (``AsOf``) takes, for every item the collection has had, its newest revision at that point;
the collection's floor (``hf``/``ht`` in its hash) is the oldest point every item's state is still
known at, and a read older than it is refused rather than answered with a guess.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack

from . import items, keys, objects
from .clock import now_ms
from .errors import BeyondHistoryError, InvalidInputError, NotFoundError
from .kinds import Kind
from .paging import Cursor
from .records import Item, Page
from .redis_client import text
from .store import Store
from .wire import jsontext
from .wire.dates import iso_seconds


@dataclass(frozen=True)
class Revision:
    """One retained revision of a Document (``key`` None) or of a List/Map item. ``removed``: the
    item was deleted at this revision (``data`` None)."""

    kind: Kind
    object_sid: str
    service_sid: str
    key: str | None
    number: int
    data: dict[str, Any] | None
    date_updated: int
    updated_by: str
    removed: bool

    @property
    def revision(self) -> str:
        return format(self.number, "x")


@dataclass(frozen=True)
class Point:
    """A moment of a collection: an event id or a time (ms since the epoch), exactly one of them."""

    event_id: int | None = None
    ms: int | None = None


def _record(raw: bytes | None) -> dict[str, Any] | None:
    return None if raw is None else dict(msgpack.unpackb(raw))


def _revision(kind: Kind, service_sid: str, sid: str, key: str | None, rec: dict[str, Any]) -> Revision:
    removed = bool(rec.get("del"))
    return Revision(
        kind=kind,
        object_sid=sid,
        service_sid=service_sid,
        key=key,
        number=int(rec["r"]),
        data=None if removed or rec.get("d") is None else jsontext.loads(rec["d"]),
        date_updated=int(rec["u"]),
        updated_by=str(rec.get("b") or "system"),
        removed=removed,
    )


def _sort_key(kind: Kind) -> Any:
    """The order of ``io:``/``hk:`` members: numeric for List indexes, UTF-8 bytes for Map keys."""
    return int if kind.indexed else str.encode


def _cursor_number(cursor: Cursor) -> int:
    if not cursor.value.isdigit():
        raise InvalidInputError("page_token", cursor.value)
    return int(cursor.value)


async def _records(
    store: Store, service_sid: str, sid: str, key: str | None, numbers: list[int]
) -> list[dict[str, Any]]:
    """The records of these revisions (one trimmed meanwhile is left out)."""
    if not numbers:
        return []
    fields = [keys.history_field(key, n) for n in numbers]
    raws = await store.redis.hmget(keys.history_records(service_sid, sid), fields)
    return [rec for rec in map(_record, raws) if rec is not None]


async def page(
    store: Store, service_sid: str, kind: Kind, ident: str, key: str | None, size: int, cursor: Cursor | None
) -> Page[Revision]:
    """One page of a Document's (``key`` None) or an item's revisions, newest first. An item that
    has no history and does not exist is not found; one that exists with none (history off) has
    an empty page."""
    sid = await objects.resolve(store, service_sid, kind, ident)
    index = keys.history(service_sid, sid, key)
    r = store.redis
    if cursor is None or cursor.forward:
        high = f"({_cursor_number(cursor)}" if cursor else "+inf"
        rows = [int(x) for x in await r.zrevrangebyscore(index, high, "-inf", start=0, num=size + 1)]
        more = len(rows) > size
        rows = rows[:size]
        nxt = rows[-1] if more and rows else None
        prev = rows[0] if cursor and rows else None
    else:
        low = f"({_cursor_number(cursor)}"
        rows = [int(x) for x in await r.zrangebyscore(index, low, "+inf", start=0, num=size + 1)]
        more = len(rows) > size
        rows = list(reversed(rows[:size]))
        nxt = rows[-1] if rows else None
        prev = rows[0] if more and rows else None
    if not rows and cursor is None and key is not None:
        await items.get(store, service_sid, kind, sid, key)  # NotFoundError for an item never seen
    found = [_revision(kind, service_sid, sid, key, rec) for rec in await _records(store, service_sid, sid, key, rows)]
    return Page(found, None if nxt is None else str(nxt), None if prev is None else str(prev))


async def get(store: Store, service_sid: str, kind: Kind, ident: str, key: str | None, number: int) -> Revision:
    """One retained revision; NotFoundError("revision") when it is not (or no longer) retained."""
    sid = await objects.resolve(store, service_sid, kind, ident)
    raw = await store.redis.hget(keys.history_records(service_sid, sid), keys.history_field(key, number))
    rec = _record(raw)
    if rec is None:
        raise NotFoundError("revision", format(number, "x"))
    return _revision(kind, service_sid, sid, key, rec)


async def items_as_of(
    store: Store, service_sid: str, kind: Kind, collection: str, point: Point, size: int, cursor: Cursor | None
) -> Page[Item]:
    """One page (ascending, PageSize/PageToken) of the items of a List or Map as they were at
    ``point``; BeyondHistoryError naming the oldest reachable point when ``point`` is older."""
    sid = await objects.resolve(store, service_sid, kind, collection)
    hf, ht, e, u = await store.redis.hmget(keys.obj(service_sid, sid), ["hf", "ht", "e", "u"])
    # a collection written before history existed: reachable from its last write on
    floor_id = int(hf) if hf is not None else int(e or 0)
    floor_ms = int(ht) if ht is not None else int(u or 0)
    if (point.event_id is not None and point.event_id < floor_id) or (point.ms is not None and point.ms < floor_ms):
        oldest = f"event id {floor_id} ({iso_seconds(floor_ms)})"
        asked = str(point.event_id) if point.event_id is not None else str(iso_seconds(point.ms))
        raise BeyondHistoryError(kind, oldest, asked)
    after = cursor.value if cursor and cursor.forward else None
    chunk = max(size, 16)
    found: list[Item] = []
    while len(found) <= size:
        near: items.Bound = (after, False) if after is not None else (None, True)
        current = await items.range_keys(store, keys.item_order(service_sid, sid), kind, near, chunk)
        recorded = await items.range_keys(store, keys.history_keys(service_sid, sid), kind, near, chunk)
        merged = sorted(set(current) | set(recorded), key=_sort_key(kind))
        for full in (current, recorded):  # one side may continue past the other's last key
            if len(full) == chunk:
                merged = [k for k in merged if _sort_key(kind)(k) <= _sort_key(kind)(full[-1])]
        if not merged:
            break
        found += [i for i in await _states(store, service_sid, kind, sid, merged, point) if i is not None]
        after = merged[-1]
    more = len(found) > size
    found = found[:size]
    return Page(found, found[-1].key if more and found else None, None)


def _creator(rec: dict[str, Any], raw: bytes | None) -> str:
    """The item's creator if it is still the same item (same creation time), else the revision's author."""
    if raw is not None:
        now = msgpack.unpackb(raw)
        if now.get("c") == rec.get("c"):
            return text(now["b"])
    return str(rec.get("b") or "system")


async def _states(
    store: Store, service_sid: str, kind: Kind, sid: str, members: list[str], point: Point
) -> list[Item | None]:
    """Each item's state at ``point`` (None: absent then). An item without history has not been
    written since the floor, so its state then is its state now."""
    high = "+inf" if point.event_id is None else str(point.event_id)
    async with store.redis.pipeline(transaction=False) as p:
        for k in members:
            index = keys.history(service_sid, sid, k)
            # by event id the newest revision up to it; by time every retained one (times are in the records)
            if point.event_id is not None:
                p.zrevrangebyscore(index, high, "-inf", start=0, num=1)
            else:
                p.zrevrangebyscore(index, high, "-inf")
            p.zcard(index)
            p.hget(keys.items(service_sid, sid), k)
        replies = await p.execute()
    wanted = [keys.history_field(k, int(n)) for i, k in enumerate(members) for n in replies[3 * i]]
    raws = await store.redis.hmget(keys.history_records(service_sid, sid), wanted) if wanted else []
    records = {f: _record(raw) for f, raw in zip(wanted, raws, strict=True)}
    out: list[Item | None] = []
    now = now_ms()
    for i, k in enumerate(members):
        numbers, length, raw = replies[3 * i : 3 * i + 3]
        if not length:
            item = items.decode(kind, sid, service_sid, k, raw) if raw is not None else None
            out.append(item if item is not None and items.live(item, now) else None)
            continue
        recs = [rec for n in numbers if (rec := records.get(keys.history_field(k, int(n)))) is not None]
        if point.ms is not None:
            recs = [rec for rec in recs if int(rec["u"]) <= point.ms][:1]
        if not recs or recs[0].get("del"):
            out.append(None)
            continue
        rec = recs[0]
        value = {"d": rec["d"], "r": rec["r"], "b": _creator(rec, raw), "c": rec.get("c") or rec["u"], "u": rec["u"]}
        out.append(items.from_value(kind, sid, service_sid, k, value))
    return out
