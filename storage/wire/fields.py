"""The fields of an object or item that REST and the SDK's CDS API render alike.

Each edge adds its own around them: REST its ``account_sid``, ``service_sid``, ``url`` and ``links``
under ``/v1`` with second-precision dates; CDS its ``url`` under ``/v3``, ``last_event_id`` and
millisecond dates (``date`` is the edge's formatter from dates.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from ..records import Item, SyncObject

DateFormat = Callable[[int | None], str | None]


def object_fields(o: SyncObject, date: DateFormat) -> dict[str, Any]:
    body: dict[str, Any] = {"sid": o.sid, "unique_name": o.unique_name}
    if o.kind.has_revision:
        body["revision"] = o.revision
    if o.kind.has_data:
        body["data"] = o.data
    body.update(
        date_expires=date(o.date_expires),
        date_created=date(o.date_created),
        date_updated=date(o.date_updated),
        created_by=o.created_by,
    )
    return body


def item_fields(i: Item, date: DateFormat) -> dict[str, Any]:
    body: dict[str, Any] = {"index": i.index} if i.kind.indexed else {"key": i.key}
    body.update(
        revision=i.revision,
        data=i.data,
        date_expires=date(i.date_expires),
        date_created=date(i.date_created),
        date_updated=date(i.date_updated),
        created_by=i.created_by,
    )
    return body


def segment(value: str) -> str:
    """One percent-encoded URL path segment; "." and ".." too, as clients drop dot segments."""
    quoted = quote(value, safe="")
    return quoted.replace(".", "%2E") if quoted in (".", "..") else quoted
