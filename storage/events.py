"""The change event: one typed model, its codec, and reading an object's event log.

Every write script appends its change to the object's log (``emit()`` in scripts/lib.lua) in the
same atomic step as the write, as a msgpack map with short keys (the log is kept for every object,
so bytes count). ``LEGEND`` is the one place that says what each short key means; ``decode`` and
``encode`` are the only code that reads or writes them, so the realtime gateway, webhooks and the
CLI all work on ``ChangeEvent`` attributes. (Lua cannot import this: lib.lua points here.)

The log is a Redis stream per object with entry id ``0-(event id + 1)``, so event ids (strictly
increasing from 0 per object) map onto stream ids and a reader resumes with an exclusive range.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack

from . import keys
from .kinds import Kind
from .store import Store

# short key in the packed event -> ChangeEvent attribute
LEGEND: dict[str, str] = {
    "t": "type",  # document_updated, list_item_added, stream_message_published, endpoint_connected …
    "id": "id",  # per-object event id (0 for reachability events, which belong to no object)
    "sid": "sid",  # the object's SID ("" for reachability events)
    "ot": "kind",  # the object's Kind (absent for reachability events)
    "un": "unique_name",  # the object's unique name, "" when it has none
    "rev": "revision",  # hex: the object's revision, or the item's for item events
    "crev": "collection_revision",  # hex: the List's or Map's revision after an item event
    "d": "data",  # data JSON text after the change
    "pd": "previous_data",  # item data JSON text before an item update or removal
    "k": "key",  # item key (Maps) or decimal index (Lists)
    "m": "message_sid",  # TZ… of a stream message
    "x": "expires",  # expiry, ms since the epoch, when the object or item has one
    "ms": "time",  # when the change happened, ms since the epoch
    "b": "identity",  # who made it: the SDK identity, or "system"
    "o": "origin",  # rest | sdk | system (the expiry sweeper, a Service purge)
    "ep": "endpoint",  # the SDK connection's endpoint id (SDK writes and reachability events)
}


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    """One recorded change. ``data``/``previous_data`` stay JSON text: most readers forward them."""

    type: str
    id: int = 0
    sid: str = ""
    kind: Kind | None = None
    unique_name: str | None = None
    revision: str | None = None
    collection_revision: str | None = None
    data: str | None = None
    previous_data: str | None = None
    key: str | None = None
    message_sid: str | None = None
    expires: int | None = None
    time: int = 0
    identity: str = "system"
    origin: str = "rest"
    endpoint: str | None = None

    @property
    def is_removal(self) -> bool:
        """The object itself was removed: its last event (an item removal is not one)."""
        return self.kind is not None and self.type == f"{self.kind}_removed"

    @property
    def is_item_event(self) -> bool:
        return self.kind is not None and self.kind.has_items and "_item_" in self.type


_ATTRIBUTE_KEY = {attr: short for short, attr in LEGEND.items()}


def decode(packed: bytes) -> ChangeEvent:
    """A packed event from a log or a webhook queue entry."""
    raw: dict[str, Any] = msgpack.unpackb(packed)
    values: dict[str, Any] = {LEGEND[k]: v for k, v in raw.items() if k in LEGEND and v is not None}
    if "kind" in values:
        values["kind"] = Kind(values["kind"])
    if not values.get("unique_name"):
        values.pop("unique_name", None)
    for name in ("key", "revision", "collection_revision"):
        if name in values:
            values[name] = str(values[name])
    for name in ("id", "expires", "time"):
        if name in values:
            values[name] = int(values[name])
    return ChangeEvent(**values)


def encode(event: ChangeEvent) -> bytes:
    """The packed form ``decode`` reads (what the scripts write); absent fields are left out."""
    raw = {
        short: str(getattr(event, attr)) if attr == "kind" else getattr(event, attr)
        for short, attr in LEGEND.items()
        if getattr(event, attr) is not None
    }
    return bytes(msgpack.packb(raw))


async def read_since(store: Store, service_sid: str, sid: str, after: int = -1, count: int = 1000) -> list[ChangeEvent]:
    """Events of one object with id > ``after``, oldest first."""
    rows = await store.redis.xrange(keys.events(service_sid, sid), min=f"(0-{after + 1}", max="+", count=count)
    return [decode(fields[b"e"]) for _, fields in rows]


async def first_id(store: Store, service_sid: str, sid: str) -> int | None:
    """The oldest event id still in the log (None if empty): older ones were trimmed."""
    rows = await store.redis.xrange(keys.events(service_sid, sid), count=1)
    if not rows:
        return None
    return decode(rows[0][1][b"e"]).id
