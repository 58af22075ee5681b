"""POST /Streams/{StreamSid}/Messages: publish; messages are delivered, not stored for REST."""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import Response

from storage import SYSTEM, Kind, limits, streams

from . import params, render
from .context import context, sid_param


async def publish(request: Request) -> Response:
    c = await context(request)
    f = await params.form(request)
    data = params.data(f, Kind.STREAM, required=True, limit=limits.MAX_MESSAGE)
    assert data is not None
    sid = await streams.publish(c.store, c.service, request.path_params[sid_param(Kind.STREAM)], data, SYSTEM)
    return render.json_response({"sid": sid, "data": json.loads(data)}, 201)
