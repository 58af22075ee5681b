"""Change events (storage.ChangeEvent) -> the payloads twilio-sync expects.

The SDK event names and field names are Twilio's (realtime-sdk-protocol.md and sync-semantics.md
§8). Events the SDK has no use for (``*_created``, TTL-only ``list_updated`` …) map to None: the
session still advances its cursor past them. A client whose cursor the log no longer reaches gets
the current state instead, rendered as the ``*_updated`` events it would have seen
(``document_state``, ``item_state``).
"""

from __future__ import annotations

import json
from typing import Any

from storage import ChangeEvent, Item, Kind, SyncObject
from storage.wire import jsontext
from storage.wire.dates import iso_millis
from storage.wire.fields import segment


def object_url(base: str, kind: Kind, sid: str) -> str:
    return f"{base}/v3/{kind.collection}/{sid}"


def item_url(base: str, kind: Kind, sid: str, key: str) -> str:
    return f"{object_url(base, kind, sid)}/Items/{segment(key)}"


def _json(text: str | None) -> Any:
    if text is None or text == "":
        return None
    return jsontext.loads(text)


def to_sdk(ev: ChangeEvent, base: str) -> dict[str, Any] | None:
    """One change as a ``twilio.sync.event`` payload, or None if the SDK does not need it."""
    kind = ev.kind
    if kind is None:  # reachability: webhooks only
        return None
    out: dict[str, Any] = {"id": ev.id, kind.sid_field: ev.sid, "date_created": iso_millis(ev.time)}
    if ev.is_removal:
        pass
    elif ev.type == "document_updated":
        out.update(document_revision=ev.revision, document_data=_json(ev.data))
        if ev.unique_name:
            out["document_unique_name"] = ev.unique_name
        if ev.expires:
            out["date_expires"] = iso_millis(ev.expires)
    elif ev.is_item_event:
        key = str(ev.key)
        removed = ev.type.endswith("_item_removed")
        out.update(
            item_url=item_url(base, kind, ev.sid, key),
            item_revision=ev.revision,
            item_data=_json(ev.previous_data if removed else ev.data),
        )
        out[f"{kind}_revision"] = ev.collection_revision
        if kind.indexed:
            out["item_index"] = int(key)
        else:
            out["item_key"] = key
        if ev.expires:
            out["date_expires"] = iso_millis(ev.expires)
    elif ev.type == "stream_message_published":
        out.update(message_sid=ev.message_sid, message_data=_json(ev.data))
    else:
        return None
    return {"event_type": ev.type, "event": out}


def document_state(o: SyncObject) -> dict[str, Any]:
    """The current state of a document as a ``document_updated``: what a client behind the log gets."""
    ev = ChangeEvent(
        type="document_updated",
        id=o.last_event_id,
        sid=o.sid,
        kind=o.kind,
        unique_name=o.unique_name,
        revision=o.revision,
        data=json.dumps(o.data),
        expires=o.date_expires,
        time=o.date_updated,
    )
    return to_sdk(ev, "") or {}


def item_state(item: Item, base: str, collection_revision: str) -> dict[str, Any]:
    """One current item as an ``*_item_updated`` event (a client behind the log converges to it)."""
    ev = ChangeEvent(
        type=f"{item.kind}_item_updated",
        id=item.last_event_id,
        sid=item.collection_sid,
        kind=item.kind,
        revision=item.revision,
        collection_revision=collection_revision,
        data=json.dumps(item.data),
        key=item.key,
        expires=item.date_expires,
        time=item.date_updated,
    )
    return to_sdk(ev, base) or {}
