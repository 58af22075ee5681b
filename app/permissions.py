"""Handlers for Document, List and Map permissions: one implementation, parameterised by kind."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from storage import Kind, permissions
from storage.wire import errors

from . import params, render
from .context import Handler, context, sid_param


def handlers(kind: Kind) -> dict[str, Handler]:
    """fetch / update / delete / read for one object kind's permissions."""
    obj_param = sid_param(kind)

    def _ident(request: Request) -> tuple[str, str]:
        return request.path_params[obj_param], params.identity(request.path_params["Identity"])

    async def fetch(request: Request) -> Response:
        c = await context(request)
        obj, identity = _ident(request)
        p = await permissions.get(c.store, c.service, kind, obj, identity)
        return render.json_response(render.permission(c.base, c.account, p))

    async def update(request: Request) -> Response:
        c = await context(request)
        obj, identity = _ident(request)
        f = await params.form(request)
        flags = {name: params.boolean(f, name) for name in ("Read", "Write", "Manage")}
        missing = [name for name, v in flags.items() if v is None]
        if missing:
            raise errors.INVALID_PARAMETER(f"Missing required parameter {missing[0]} in the post body")
        p = await permissions.put(
            c.store, c.service, kind, obj, identity, bool(flags["Read"]), bool(flags["Write"]), bool(flags["Manage"])
        )
        return render.json_response(render.permission(c.base, c.account, p))

    async def delete(request: Request) -> Response:
        c = await context(request)
        obj, identity = _ident(request)
        await permissions.delete(c.store, c.service, kind, obj, identity)
        return Response(status_code=204)

    async def read(request: Request) -> Response:
        c = await context(request)
        pg = params.paging_params(request)
        result = await permissions.page(c.store, c.service, kind, request.path_params[obj_param], pg.size, pg.cursor)
        rows = [render.permission(c.base, c.account, p) for p in result.items]
        return render.page(request, "permissions", rows, result, pg)

    return {"fetch": fetch, "update": update, "delete": delete, "read": read}
