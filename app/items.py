"""Handlers for List items and Map items: one implementation, parameterised by kind."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from storage import SYSTEM, Kind, items
from storage.wire import errors

from . import history, params, render
from .context import Handler, context, sid_param


def _item_key(kind: Kind, request: Request) -> str:
    if kind.indexed:
        return params.index(request.path_params["Index"])
    return params.key(request.path_params["Key"])


def handlers(kind: Kind) -> dict[str, Handler]:
    """create / fetch / update / delete / read for List or Map items."""
    collection = sid_param(kind)

    async def create(request: Request) -> Response:
        c = await context(request)
        f = await params.form(request)
        key = "" if kind.indexed else params.key(f.get("Key"))
        item, _ = await items.write(
            c.store,
            c.service,
            kind,
            request.path_params[collection],
            SYSTEM,
            "append" if kind.indexed else "create",
            key=key,
            data_json=params.data(f, kind, required=True),
            item_ttl=params.ttl(f, "ItemTtl", "Ttl"),
            collection_ttl=params.ttl(f, "CollectionTtl"),
        )
        return render.json_response(render.item(c.base, c.account, item), 201, item.revision)

    async def fetch(request: Request) -> Response:
        c = await context(request)
        item = await items.get(c.store, c.service, kind, request.path_params[collection], _item_key(kind, request))
        return render.json_response(render.item(c.base, c.account, item), 200, item.revision)

    async def update(request: Request) -> Response:
        c = await context(request)
        f = await params.form(request)
        data = params.data(f, kind, required=False)
        item_ttl = params.ttl(f, "ItemTtl", "Ttl")
        collection_ttl = params.ttl(f, "CollectionTtl")
        if data is None and item_ttl is None:
            raise errors.NOTHING_TO_UPDATE("Data or ItemTtl")
        item, _ = await items.write(
            c.store,
            c.service,
            kind,
            request.path_params[collection],
            SYSTEM,
            "update",
            key=_item_key(kind, request),
            data_json=data,
            item_ttl=item_ttl,
            collection_ttl=collection_ttl,
            if_match=params.if_match(request),
        )
        return render.json_response(render.item(c.base, c.account, item), 200, item.revision)

    async def delete(request: Request) -> Response:
        c = await context(request)
        key = _item_key(kind, request)
        await items.delete(
            c.store, c.service, kind, request.path_params[collection], key, SYSTEM, params.if_match(request)
        )
        return Response(status_code=204)

    async def read(request: Request) -> Response:
        as_of = request.query_params.get("AsOf")
        if as_of is not None:  # the revision history extension (app/history.py)
            return await history.read_as_of(request, kind, request.path_params[collection], as_of)
        c = await context(request)
        pg = params.paging_params(request)
        order, bounds = params.order(request), params.bounds(request)
        start = request.query_params.get("From")
        if start is not None and kind.indexed:
            start = params.index(start)
        result = await items.page(
            c.store,
            c.service,
            kind,
            request.path_params[collection],
            pg.size,
            order=order,
            start=start,
            inclusive=bounds == "inclusive",
            cursor=pg.cursor,
        )
        filters = {"Order": order, "Bounds": bounds}
        if start is not None:
            filters["From"] = start
        rows = [render.item(c.base, c.account, i) for i in result.items]
        return render.page(request, "items", rows, result, pg, filters)

    return {"create": create, "fetch": fetch, "update": update, "delete": delete, "read": read}
