"""A change event -> the form parameters of its Twilio Sync webhook (Twilio's names live here).

Documented by Twilio: the common ``AccountSid, ServiceSid, EventType, Identity, EndpointId`` (absent
for REST), ``Document{Sid,UniqueName,Revision,Data}`` (no data on removal), ``List{Sid,UniqueName,
Revision}``, and for list items ``EventId, ItemIndex, ItemData``. Assumed where Twilio's page is
silent: map events mirror lists (``MapSid, MapUniqueName, MapRevision, ItemKey, ItemData,
ItemRevision, EventId``); items carry ``ItemRevision`` and the collection revision; removed items
carry their last data; ``DateCreated`` is the time of the change (ISO 8601, milliseconds, UTC);
unique names are omitted when the object has none.
"""

from __future__ import annotations

from storage import ChangeEvent
from storage.wire.dates import iso_millis


def form_params(account_sid: str, service_sid: str, ev: ChangeEvent) -> dict[str, str]:
    """The webhook's parameters for one change event."""
    p = {
        "AccountSid": account_sid,
        "ServiceSid": service_sid,
        "EventType": ev.type,
        "Identity": ev.identity or "system",
        "DateCreated": iso_millis(ev.time) or "",
    }
    if ev.endpoint:
        p["EndpointId"] = ev.endpoint
    kind = ev.kind
    if kind is None:  # endpoint_connected / endpoint_disconnected: the common parameters only
        return p
    prefix = kind.label
    p[f"{prefix}Sid"] = ev.sid
    if ev.unique_name:
        p[f"{prefix}UniqueName"] = ev.unique_name
    if ev.is_item_event:
        p[f"{prefix}Revision"] = ev.collection_revision or ""
        p["ItemIndex" if kind.indexed else "ItemKey"] = str(ev.key)
        p["ItemRevision"] = ev.revision or ""
        p["EventId"] = str(ev.id)
        data = ev.data if ev.data is not None else ev.previous_data
        if data is not None:
            p["ItemData"] = data
        return p
    p[f"{prefix}Revision"] = ev.revision or ""
    if kind.has_data and not ev.is_removal and ev.data is not None:
        p["DocumentData"] = ev.data
    return p
