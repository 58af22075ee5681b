"""A stored change event -> the form parameters of its Twilio Sync webhook (Twilio's names live here).

Documented by Twilio: the common ``AccountSid, ServiceSid, EventType, Identity, EndpointId`` (absent
for REST), ``Document{Sid,UniqueName,Revision,Data}`` (no data on removal), ``List{Sid,UniqueName,
Revision}``, and for list items ``EventId, ItemIndex, ItemData``. Assumed where Twilio's page is
silent: map events mirror lists (``MapSid, MapUniqueName, MapRevision, ItemKey, ItemData,
ItemRevision, EventId``); items carry ``ItemRevision`` and the collection revision; removed items
carry their last data; ``DateCreated`` is the time of the change (ISO 8601, milliseconds, UTC);
unique names are omitted when the object has none.
"""

from __future__ import annotations

import time
from typing import Any

_PREFIX = {"document": "Document", "list": "List", "map": "Map"}


def _date(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


def form_params(account_sid: str, service_sid: str, ev: dict[str, Any]) -> dict[str, str]:
    """The webhook's parameters for one stored event (see storage/events.py for its fields)."""
    event_type = str(ev["t"])
    p = {
        "AccountSid": account_sid,
        "ServiceSid": service_sid,
        "EventType": event_type,
        "Identity": str(ev.get("b") or "system"),
        "DateCreated": _date(int(ev.get("ms", 0))),
    }
    if ev.get("ep"):
        p["EndpointId"] = str(ev["ep"])
    kind = _PREFIX.get(str(ev.get("ot", "")))
    if kind is None:  # endpoint_connected / endpoint_disconnected: the common parameters only
        return p
    p[f"{kind}Sid"] = str(ev["sid"])
    if ev.get("un"):
        p[f"{kind}UniqueName"] = str(ev["un"])
    if "_item_" in event_type:
        p[f"{kind}Revision"] = str(ev.get("crev", ""))
        p["ItemIndex" if kind == "List" else "ItemKey"] = str(ev["k"])
        p["ItemRevision"] = str(ev.get("rev", ""))
        p["EventId"] = str(ev["id"])
        data = ev.get("d", ev.get("pd"))
        if data is not None:
            p["ItemData"] = str(data)
        return p
    p[f"{kind}Revision"] = str(ev.get("rev", ""))
    if kind == "Document" and event_type != "document_removed" and ev.get("d") is not None:
        p["DocumentData"] = str(ev["d"])
    return p
