"""Every REST answer that is not a success: Twilio's JSON error body, never HTML, never a trace.

The errors themselves (codes, statuses, messages, and the table from storage errors to them) live
in storage/wire/errors.py, shared with the SDK's CDS API; this module only installs them as
Starlette exception handlers.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match

from storage.errors import StoreError
from storage.wire import errors
from storage.wire.errors import TwilioError

from .observe import request_id_header

log = logging.getLogger("sync.http")


def error_response(error: TwilioError, headers: Mapping[str, str] | None = None) -> Response:
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


def _resource_path(request: Request) -> str:
    path = request.url.path
    return path[3:] if path.startswith("/v1/") else path


async def store_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StoreError)  # an outage (StoreUnavailableError) is logged once, by Store.health
    return error_response(errors.from_store_error(exc, "rest", _resource_path(request)))


async def twilio_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, TwilioError)
    return error_response(exc)


def _allow(request: Request, exc: Exception) -> dict[str, str]:
    """The Allow header a 405 must carry (RFC 9110 15.5.6): the methods of every route on this path.
    Starlette's router names only the first route that matches the path, and the table has one route
    per method."""
    methods: set[str] = set()
    for route in getattr(request.scope.get("router"), "routes", ()):
        match, _ = route.matches(request.scope)
        if match is not Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    if methods:
        return {"Allow": ", ".join(sorted(methods))}
    return dict(getattr(exc, "headers", None) or {})


async def http_error_handler(request: Request, exc: Exception) -> Response:
    status = int(getattr(exc, "status_code", 500))
    path = _resource_path(request)
    if status == 404:
        return error_response(errors.NOT_FOUND(path=path))
    if status == 405:
        error = errors.METHOD_NOT_ALLOWED(method=request.method, path=path)
        return error_response(error, _allow(request, exc))
    return error_response(errors.http_error(status, str(getattr(exc, "detail", ""))))


async def server_error_handler(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    # sent from outside every middleware (Starlette's ServerErrorMiddleware): the request id here
    return error_response(errors.INTERNAL(), request_id_header())
