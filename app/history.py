"""Handlers of the revision history extension: ``…/Revisions`` of Documents and List/Map items, and
the ``AsOf`` point-in-time read of a collection's items (storage/history.py says how it is kept).

Restoring needs no route of its own: fetch the revision, then update the Document or item with its
``data`` and ``If-Match`` set to the current revision; the restore is an ordinary write and event.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import Response

from storage import Kind, history
from storage.wire import errors

from . import params, render
from .context import Handler, context, sid_param

_HEX = re.compile(r"[0-9a-f]{1,15}")


def _item_key(kind: Kind, request: Request) -> str | None:
    if not kind.has_items:
        return None
    if kind.indexed:
        return params.index(request.path_params["Index"])
    return params.key(request.path_params["Key"])


def handlers(kind: Kind) -> dict[str, Handler]:
    """read (newest first) / fetch of the revisions of a Document, or of a List or Map item."""
    ident = "Sid" if kind is Kind.DOCUMENT else sid_param(kind)

    async def read(request: Request) -> Response:
        c = await context(request)
        pg = params.paging_params(request)
        key = _item_key(kind, request)
        result = await history.page(c.store, c.service, kind, request.path_params[ident], key, pg.size, pg.cursor)
        rows = [render.revision(c.base, c.account, r) for r in result.items]
        return render.page(request, "revisions", rows, result, pg)

    async def fetch(request: Request) -> Response:
        c = await context(request)
        raw = request.path_params["Revision"]
        if not _HEX.fullmatch(raw):
            raise errors.NOT_FOUND(path=request.url.path.removeprefix("/v1"))
        key = _item_key(kind, request)
        r = await history.get(c.store, c.service, kind, request.path_params[ident], key, int(raw, 16))
        return render.json_response(render.revision(c.base, c.account, r))

    return {"read": read, "fetch": fetch}


def as_of_point(raw: str) -> history.Point:
    """``AsOf``: an event id (decimal) or an ISO-8601 time (``2026-01-05T10:00:00Z``, with an offset
    or ``Z``; a time without one is UTC)."""
    if raw.isdigit() and len(raw) <= 15:
        return history.Point(event_id=int(raw))
    try:
        when = datetime.fromisoformat(raw.replace(" ", "+"))  # a "+" left unencoded in a query is a space
    except ValueError:
        raise errors.INVALID_PARAMETER(errors.INVALID_AS_OF.format(detail=raw)) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return history.Point(ms=int(when.timestamp() * 1000))


async def read_as_of(request: Request, kind: Kind, collection: str, raw: str) -> Response:
    """The items of a List or Map as they were at ``AsOf`` (ascending, PageSize/PageToken)."""
    c = await context(request)
    q = request.query_params
    if "From" in q or q.get("Order", "asc") != "asc":
        raise errors.INVALID_PARAMETER(errors.AS_OF_NOT_COMBINABLE)
    point = as_of_point(raw)
    pg = params.paging_params(request)
    result = await history.items_as_of(c.store, c.service, kind, collection, point, pg.size, pg.cursor)
    rows = [render.item(c.base, c.account, i) for i in result.items]
    return render.page(request, "items", rows, result, pg, {"AsOf": raw})
