"""Reading an object's change-event log (written atomically by every write script).

Each entry is ``{"e": msgpack(event)}`` with entry id ``0-(event id + 1)``. Event fields:
``id`` (per-object, strictly increasing), ``t`` (type: document_updated, list_item_added, …),
``sid``, ``ot`` (object type), ``un``, ``rev``, ``crev`` (collection revision, items),
``d`` (data JSON), ``pd`` (previous item data), ``k`` (item key or list index), ``m`` (message SID),
``x`` (expiry ms), ``ms`` (time), ``b`` (identity), ``o`` (origin: rest|sdk|system), ``ep``.
"""

from __future__ import annotations

from typing import Any

import msgpack

from . import keys
from .store import Store


async def read_since(
    store: Store, service_sid: str, sid: str, after: int = -1, count: int = 1000
) -> list[dict[str, Any]]:
    """Events of one object with id > ``after``, oldest first."""
    rows = await store.redis.xrange(keys.events(service_sid, sid), min=f"(0-{after + 1}", max="+", count=count)
    return [msgpack.unpackb(fields[b"e"]) for _, fields in rows]


async def first_id(store: Store, service_sid: str, sid: str) -> int | None:
    """The oldest event id still in the log (None if empty): older ones were trimmed."""
    rows = await store.redis.xrange(keys.events(service_sid, sid), count=1)
    if not rows:
        return None
    return int(msgpack.unpackb(rows[0][1][b"e"])["id"])
