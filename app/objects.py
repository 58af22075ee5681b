"""Handlers for Documents, Lists, Maps and Streams: one implementation, parameterised by kind."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from storage import SYSTEM, Kind, SyncObject, objects
from storage.wire import errors

from . import params, render
from .context import Handler, context


def _ttl(kind: Kind, f: Mapping[str, Any]) -> int | None:
    if kind.has_items:
        return params.ttl(f, "CollectionTtl", "Ttl")
    return params.ttl(f, "Ttl")


def handlers(kind: Kind) -> dict[str, Handler]:
    """create / fetch / update / delete / read for one object kind."""

    async def create(request: Request) -> Response:
        c = await context(request)
        f = await params.form(request)
        o = await objects.create(
            c.store,
            c.service,
            kind,
            SYSTEM,
            unique_name=params.unique_name(f),
            data_json=params.data(f, kind, required=False) if kind.has_data else None,
            ttl=_ttl(kind, f),
        )
        return render.json_response(render.sync_object(c.base, c.account, o), 201, _etag(o))

    async def fetch(request: Request) -> Response:
        c = await context(request)
        o = await objects.get(c.store, c.service, kind, request.path_params["Sid"])
        return render.json_response(render.sync_object(c.base, c.account, o), 200, _etag(o))

    async def update(request: Request) -> Response:
        c = await context(request)
        f = await params.form(request)
        data = params.data(f, kind, required=False) if kind.has_data else None
        ttl = _ttl(kind, f)
        if data is None and ttl is None:
            raise errors.NOTHING_TO_UPDATE("Data or Ttl" if kind.has_data else "a TTL")
        o = await objects.update(
            c.store,
            c.service,
            kind,
            request.path_params["Sid"],
            SYSTEM,
            data_json=data,
            ttl=ttl,
            if_match=params.if_match(request) if kind.has_data else None,
        )
        return render.json_response(render.sync_object(c.base, c.account, o), 200, _etag(o))

    async def delete(request: Request) -> Response:
        c = await context(request)
        await objects.delete(c.store, c.service, kind, request.path_params["Sid"], SYSTEM)
        return Response(status_code=204)

    async def read(request: Request) -> Response:
        c = await context(request)
        pg = params.paging_params(request)
        result = await objects.page(c.store, c.service, kind, pg.size, pg.cursor)
        rows = [render.sync_object(c.base, c.account, o) for o in result.items]
        return render.page(request, kind.listing_key, rows, result, pg)

    return {"create": create, "fetch": fetch, "update": update, "delete": delete, "read": read}


def _etag(o: SyncObject) -> str | None:
    return o.revision if o.kind.has_revision else None
