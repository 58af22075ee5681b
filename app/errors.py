"""Twilio's error body, and the one table that maps storage errors to (HTTP status, Twilio code).

    TwilioError        raised by the HTTP edge itself (bad parameter, bad credentials …)
    storage.StoreError mapped through STORE_ERRORS
Every response that is not a success goes through ``error_response``: never HTML, never a trace.
"""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from storage.errors import (
    AlreadyExistsError,
    InvalidInputError,
    NotFoundError,
    RevisionMismatchError,
    StoreError,
    StoreUnavailableError,
    TooLargeError,
)
from storage.limits import MAX_NAME, MAX_PAGE, MAX_TTL

log = logging.getLogger("sync.http")


class TwilioError(Exception):
    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def error_response(status: int, code: int, message: str) -> Response:
    body = {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    return JSONResponse(body, status_code=status)


# (error class, kind) -> (status, code); kind "*" matches any kind
STORE_ERRORS: dict[tuple[type[StoreError], str], tuple[int, int]] = {
    (NotFoundError, "list_item"): (404, 54151),
    (NotFoundError, "map_item"): (404, 54201),
    (NotFoundError, "permission"): (404, 54354),
    (NotFoundError, "*"): (404, 20404),
    (AlreadyExistsError, "map_item"): (409, 54208),
    (AlreadyExistsError, "*"): (409, 54301),
    (RevisionMismatchError, "document"): (412, 54103),
    (RevisionMismatchError, "list_item"): (412, 54155),
    (RevisionMismatchError, "map_item"): (412, 54205),
    (InvalidInputError, "page_token"): (400, 54453),
    (InvalidInputError, "list_item"): (400, 54156),
    (InvalidInputError, "map_item"): (400, 54206),
    (InvalidInputError, "data"): (400, 54008),
    (InvalidInputError, "ttl"): (400, 54011),
    (InvalidInputError, "unique_name"): (400, 54302),
    (InvalidInputError, "map_key"): (400, 54209),
    (InvalidInputError, "page_size"): (400, 54454),
    (TooLargeError, "*"): (413, 54006),
    (StoreUnavailableError, "*"): (503, 20503),
}

_MESSAGES = {
    54151: "List Item not found",
    54201: "Map Item not found",
    54354: "Permission not found",
    54208: "Map Item with the specified key already exists",
    54103: "The revision of the Document does not match the expected revision",
    54155: "The revision of the List Item does not match the expected revision",
    54205: "The revision of the Map Item does not match the expected revision",
    54453: "Invalid PageToken",
    54156: "List Item data is required",
    54206: "Map Item data is required",
    54302: f"Invalid unique name: must be 1 to {MAX_NAME} characters and not look like a SID",
    54209: f"Invalid Map Item key: must be 1 to {MAX_NAME} characters",
    54454: f"Invalid PageSize: must be an integer from 1 to {MAX_PAGE}",
    20503: "Service unavailable: the data store is not reachable",
}


def store_error_status(exc: StoreError) -> tuple[int, int]:
    return STORE_ERRORS.get((type(exc), exc.kind)) or STORE_ERRORS.get((type(exc), "*")) or (500, 20500)


def _resource_path(request: Request) -> str:
    path = request.url.path
    return path[3:] if path.startswith("/v1/") else path


async def store_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StoreError)
    status, code = store_error_status(exc)
    if code == 20404:
        message = f"The requested resource {_resource_path(request)} was not found"
    elif code == 54011:
        message = f"Invalid {exc.ident or 'Ttl'}: must be an integer from 0 to {MAX_TTL}"
    elif code in (54008, 54006):
        message = f"Invalid data: {exc}" if code == 54008 else f"Request entity too large: {exc}"
    elif code == 54301:
        message = f"Unique name already exists: {exc.ident}"
    else:
        message = _MESSAGES.get(code, str(exc))
    if code == 20503:
        log.error("store unavailable: %s", exc)
    return error_response(status, code, message)


async def twilio_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, TwilioError)
    return error_response(exc.status, exc.code, exc.message)


async def http_error_handler(request: Request, exc: Exception) -> Response:
    status = int(getattr(exc, "status_code", 500))
    if status == 404:
        return error_response(404, 20404, f"The requested resource {_resource_path(request)} was not found")
    if status == 405:
        return error_response(405, 20004, f"Method {request.method} not allowed on {_resource_path(request)}")
    return error_response(status, 20000 + status, str(getattr(exc, "detail", "")) or "Request failed")


async def server_error_handler(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, 20500, "Internal server error")
