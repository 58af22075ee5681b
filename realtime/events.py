"""Stored change events (storage/events.py fields) -> the payloads twilio-sync expects.

A stored event is ``{t, id, sid, ot, un, rev, crev, d, pd, k, m, x, ms, b, o, ep}`` (``d``/``pd`` are
JSON text). The SDK event names and field names are Twilio's (realtime-sdk-protocol.md and
sync-semantics.md §8). Events the SDK has no use for (``*_created``, TTL-only ``list_updated`` …)
map to None: the session still advances its cursor past them.
"""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import quote

from storage import Item, SyncObject

COLLECTION = {"document": "Documents", "list": "Lists", "map": "Maps", "stream": "Streams"}
_ITEM_EVENTS = ("_item_added", "_item_updated", "_item_removed")


def iso_ms(ms: int | None) -> str | None:
    """Event dates carry milliseconds, as Twilio's do: ``2023-11-07T11:57:43.715Z``."""
    if ms is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


def object_url(base: str, kind: str, sid: str) -> str:
    return f"{base}/v3/{COLLECTION[kind]}/{sid}"


def item_url(base: str, kind: str, sid: str, key: str) -> str:
    return f"{object_url(base, kind, sid)}/Items/{quote(key, safe='')}"


def _json(text: Any) -> Any:
    if text is None or text == "":
        return None
    return json.loads(text)


def to_sdk(ev: dict[str, Any], base: str) -> dict[str, Any] | None:
    """One stored event as a ``twilio.sync.event`` payload, or None if the SDK does not need it."""
    t: str = ev["t"]
    kind: str = ev["ot"]
    sid: str = ev["sid"]
    out: dict[str, Any] = {"id": ev["id"], f"{kind}_sid": sid, "date_created": iso_ms(ev.get("ms"))}
    if t == f"{kind}_removed":
        pass
    elif t == "document_updated":
        out.update(document_revision=ev.get("rev"), document_data=_json(ev.get("d")))
        if ev.get("un"):
            out["document_unique_name"] = ev["un"]
        if ev.get("x"):
            out["date_expires"] = iso_ms(ev["x"])
    elif kind in ("list", "map") and t.endswith(_ITEM_EVENTS):
        key = str(ev["k"])
        out.update(
            item_key=key,
            item_url=item_url(base, kind, sid, key),
            item_revision=ev.get("rev"),
            item_data=_json(ev.get("pd") if t.endswith("_item_removed") else ev.get("d")),
        )
        out[f"{kind}_revision"] = ev.get("crev")
        if kind == "list":
            out["item_index"] = int(key)
            del out["item_key"]
        if ev.get("x"):
            out["date_expires"] = iso_ms(ev["x"])
    elif t == "stream_message_published":
        out.update(message_sid=ev.get("m"), message_data=_json(ev.get("d")))
    else:
        return None
    return {"event_type": t, "event": out}


def document_state(o: SyncObject) -> dict[str, Any]:
    """The current state of a document as a ``document_updated``: what a client behind the log gets."""
    return (
        to_sdk(
            {
                "t": "document_updated",
                "ot": "document",
                "sid": o.sid,
                "id": o.last_event_id,
                "rev": o.revision,
                "d": json.dumps(o.data),
                "un": o.unique_name,
                "x": o.date_expires,
                "ms": o.date_updated,
            },
            "",
        )
        or {}
    )


def item_state(item: Item, base: str, collection_revision: str) -> dict[str, Any]:
    """One current item as an ``*_item_updated`` event (a client behind the log converges to it)."""
    return (
        to_sdk(
            {
                "t": f"{item.kind}_item_updated",
                "ot": item.kind,
                "sid": item.collection_sid,
                "id": item.last_event_id,
                "rev": item.revision,
                "crev": collection_revision,
                "d": json.dumps(item.data),
                "k": item.key,
                "x": item.date_expires,
                "ms": item.date_updated,
            },
            base,
        )
        or {}
    )
