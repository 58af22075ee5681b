"""POST /Streams/{StreamSid}/Messages: publish; messages are delivered, not stored for REST."""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import Response

from storage import SYSTEM, limits, streams

from . import params, render
from .context import context


async def publish(request: Request) -> Response:
    c = await context(request)
    f = await params.form(request)
    data = params.data(f, required=True, limit=limits.MAX_MESSAGE, missing_code=54251)
    assert data is not None
    sid = await streams.publish(c.store, c.service, request.path_params["StreamSid"], data, SYSTEM)
    return render.json_response({"sid": sid, "data": json.loads(data)}, 201)
