"""/v1/Services handlers."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from storage import services

from . import params, render
from .context import context


async def _fields(request: Request) -> dict[str, Any]:
    f = await params.form(request)
    fields = {
        "friendly_name": params.friendly_name(f),
        "webhook_url": params.webhook_url(f),
        "acl_enabled": params.boolean(f, "AclEnabled"),
        "reachability_webhooks_enabled": params.boolean(f, "ReachabilityWebhooksEnabled"),
        "reachability_debouncing_enabled": params.boolean(f, "ReachabilityDebouncingEnabled"),
        "reachability_debouncing_window": params.debouncing_window(f),
        "webhooks_from_rest_enabled": params.boolean(f, "WebhooksFromRestEnabled"),
    }
    values: dict[str, Any] = {k: v for k, v in fields.items() if v is not None}
    if f.get("WebhookUrl") == "":  # an empty WebhookUrl clears it
        values["webhook_url"] = None
    return values


async def create(request: Request) -> Response:
    c = await context(request, service=False)
    s = await services.create(c.store, c.account, await _fields(request))
    return render.json_response(render.service(c.base, s), 201)


async def fetch(request: Request) -> Response:
    c = await context(request, service=False)
    s = await services.get(c.store, c.account, request.path_params["Sid"])
    return render.json_response(render.service(c.base, s))


async def update(request: Request) -> Response:
    c = await context(request, service=False)
    s = await services.update(c.store, c.account, request.path_params["Sid"], await _fields(request))
    return render.json_response(render.service(c.base, s))


async def delete(request: Request) -> Response:
    c = await context(request, service=False)
    await services.delete(c.store, c.account, request.path_params["Sid"])
    request.app.state.purge_now()
    return Response(status_code=204)


async def read(request: Request) -> Response:
    c = await context(request, service=False)
    pg = params.paging_params(request)
    result = await services.page(c.store, c.account, pg.size, pg.cursor)
    return render.page(request, "services", [render.service(c.base, s) for s in result.items], result, pg)
