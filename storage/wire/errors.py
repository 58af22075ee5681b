"""Every Twilio error the server answers, defined once, and the one table from storage errors to them.

An answer that is not a success is always Twilio's JSON body ``{code, message, more_info, status}``,
on REST and in the SDK's tunnelled CDS API alike, so both raise one exception class,
``TwilioError``. Each error is an ``ErrorSpec`` below (HTTP status, Twilio code, message template);
calling it makes the exception: ``raise INVALID_ORDER()``, ``raise NOTHING_TO_UPDATE("Data or Ttl")``.
This module is the only place in the product where a Twilio error code is written.

Storage raises domain errors (storage/errors.py) that know nothing of HTTP; ``from_store_error``
maps each (error class, subject) to its answer on each edge. The edges differ only where Twilio's
do: a missing top-level object is the generic 404/20404 on REST but 54100/54150/54200/54250/54050
in the CDS API, which the SDK reads, and an unknown unique name 54300 there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from ..errors import (
    AlreadyExistsError,
    BeyondHistoryError,
    IdempotencyConflictError,
    InvalidInputError,
    NotFoundError,
    RevisionMismatchError,
    StoreError,
    StoreUnavailableError,
    TooLargeError,
)
from ..kinds import Kind
from ..limits import MAX_DEBOUNCING_WINDOW_MS, MAX_NAME, MAX_PAGE, MAX_TTL, MIN_DEBOUNCING_WINDOW_MS


class TwilioError(Exception):
    """An error answer: HTTP ``status`` and Twilio ``code``, rendered as Twilio's error body."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "message": self.message,
            "more_info": f"https://www.twilio.com/docs/errors/{self.code}",
            "status": self.status,
        }


@dataclass(frozen=True)
class ErrorSpec:
    """One Twilio error. ``template`` may use ``{detail}`` (the positional argument) and the keyword
    fields a caller passes (``{path}``, ``{method}``, ``{ident}``…)."""

    status: int
    code: int
    template: str

    def __call__(self, detail: str = "", *, status: int | None = None, **fields: Any) -> TwilioError:
        return TwilioError(status or self.status, self.code, self.template.format(detail=detail, **fields))


# -- generic (20xxx) --------------------------------------------------------------------------------
INVALID_PARAMETER = ErrorSpec(400, 20001, "{detail}")
UNAUTHENTICATED = ErrorSpec(401, 20003, "Authentication Error - {detail}")
METHOD_NOT_ALLOWED = ErrorSpec(405, 20004, "Method {method} not allowed on {path}")
INVALID_ACCESS_TOKEN = ErrorSpec(401, 20101, "Invalid Access Token{detail}")
ACCESS_TOKEN_EXPIRED = ErrorSpec(401, 20104, "Access Token expired or expiration date invalid")
NOT_FOUND = ErrorSpec(404, 20404, "The requested resource {path} was not found")
TOO_MANY_REQUESTS = ErrorSpec(429, 20429, "{detail}")
INTERNAL = ErrorSpec(500, 20500, "Internal server error")
UNAVAILABLE = ErrorSpec(503, 20503, "Service unavailable: the data store is not reachable or takes no writes now")
# Refused by the HTTP layer (app/http_protocol.py) before any route runs. Twilio publishes no code
# for these statuses; they are numbered 20000 + status like every other HTTP error (http_error).
REQUEST_TIMEOUT = ErrorSpec(408, 20408, "Request Timeout: no request body received for {seconds:g} seconds")
HEADERS_TOO_LARGE = ErrorSpec(
    431, 20431, "Request Header Fields Too Large: at most {max_bytes} bytes in at most {max_fields} header fields"
)
# Idempotency-Key (an extension, app/idempotency.py): numbered 20000 + status like the rest.
INVALID_IDEMPOTENCY_KEY = "Invalid Idempotency-Key: must be 1 to 255 printable ASCII characters"  # INVALID_PARAMETER
IDEMPOTENCY_KEY_IN_USE = ErrorSpec(
    409,
    20409,
    "Idempotency-Key in use: another request with this key is running, or took this one over (nothing was "
    "changed by this one); retry after Retry-After seconds to get its answer",
)
IDEMPOTENCY_KEY_REUSED = ErrorSpec(
    422, 20422, "Idempotency-Key reused: it was first used with another method, path or body"
)
_HTTP_BASE = 20000  # other HTTP errors: 20000 + status, as Twilio numbers them

# -- Sync (54xxx) and the grant (51xxx) ---------------------------------------------------------------
SERVICE_NOT_SPECIFIED = ErrorSpec(403, 51102, "Service instance SID not specified and couldn't be generated")
INVALID_IF_MATCH = ErrorSpec(400, 54003, "Invalid If-Match revision: {detail}")
TOO_LARGE = ErrorSpec(413, 54006, "Request entity too large: {detail}")
PERMISSION_DENIED = ErrorSpec(403, 54007, "Permission denied: {detail}")
INVALID_DATA = ErrorSpec(400, 54008, "Invalid data: {detail}")
NOTHING_TO_UPDATE = ErrorSpec(400, 54010, "No parameters to update: provide {detail}")
INVALID_TTL = ErrorSpec(400, 54011, "Invalid {ident}: must be an integer from 0 to " + str(MAX_TTL))
SERVICE_NOT_FOUND = ErrorSpec(404, 54050, "Service instance not found")
INVALID_WEBHOOK_URL = ErrorSpec(
    400, 54051, "Invalid WebhookUrl: must be an absolute http(s) URL of at most 512 characters"
)
INVALID_DEBOUNCING_WINDOW = ErrorSpec(
    400,
    54052,
    f"Invalid ReachabilityDebouncingWindow: must be {MIN_DEBOUNCING_WINDOW_MS} to {MAX_DEBOUNCING_WINDOW_MS}"
    " milliseconds",
)
INVALID_FRIENDLY_NAME = ErrorSpec(400, 54053, "Invalid FriendlyName: must be 1 to 255 characters")
DOCUMENT_NOT_FOUND = ErrorSpec(404, 54100, "Document not found")
DOCUMENT_DATA_MISSING = ErrorSpec(400, 54101, "Data is required")
DOCUMENT_REVISION_MISMATCH = ErrorSpec(412, 54103, "The revision of the Document does not match the expected revision")
LIST_NOT_FOUND = ErrorSpec(404, 54150, "List not found")
LIST_ITEM_NOT_FOUND = ErrorSpec(404, 54151, "List Item not found")
LIST_ITEM_REVISION_MISMATCH = ErrorSpec(
    412, 54155, "The revision of the List Item does not match the expected revision"
)
LIST_ITEM_DATA_MISSING = ErrorSpec(400, 54156, "List Item data is required")
MAP_NOT_FOUND = ErrorSpec(404, 54200, "Map not found")
MAP_ITEM_NOT_FOUND = ErrorSpec(404, 54201, "Map Item not found")
MAP_ITEM_REVISION_MISMATCH = ErrorSpec(412, 54205, "The revision of the Map Item does not match the expected revision")
MAP_ITEM_DATA_MISSING = ErrorSpec(400, 54206, "Map Item data is required")
MAP_ITEM_EXISTS = ErrorSpec(409, 54208, "Map Item with the specified key already exists")
INVALID_MAP_KEY = ErrorSpec(400, 54209, f"Invalid Map Item key: must be 1 to {MAX_NAME} characters")
STREAM_NOT_FOUND = ErrorSpec(404, 54250, "Stream not found")
STREAM_MESSAGE_DATA_MISSING = ErrorSpec(400, 54251, "Data is required")
UNIQUE_NAME_NOT_FOUND = ErrorSpec(404, 54300, "Unique name not found")
UNIQUE_NAME_EXISTS = ErrorSpec(409, 54301, "Unique name already exists: {ident}")
INVALID_UNIQUE_NAME = ErrorSpec(
    400, 54302, f"Invalid unique name: must be 1 to {MAX_NAME} characters and not look like a SID"
)
INVALID_IDENTITY = ErrorSpec(400, 54351, "Invalid identity: must be 1 to 256 characters")
PERMISSION_NOT_FOUND = ErrorSpec(404, 54354, "Permission not found")
TOO_MANY_SUBSCRIPTIONS = ErrorSpec(429, 54419, "Too many subscriptions: at most {detail} per connection")
INVALID_ORDER = ErrorSpec(400, 54451, "Invalid Order: must be asc or desc")
INVALID_BOUNDS = ErrorSpec(400, 54452, "Invalid Bounds: must be inclusive or exclusive")
INVALID_PAGE_TOKEN = ErrorSpec(400, 54453, "Invalid PageToken")
INVALID_PAGE_SIZE = ErrorSpec(400, 54454, f"Invalid PageSize: must be an integer from 1 to {MAX_PAGE}")
INVALID_LIST_INDEX = ErrorSpec(400, 54458, "Invalid List Item index: must be a non-negative integer")
# Revision history (an extension: Twilio has no such resource, so its errors are the generic
# INVALID_PARAMETER, 20001, with these messages)
INVALID_AS_OF = "Invalid AsOf: must be an event id or an ISO-8601 time, got {detail}"
AS_OF_NOT_COMBINABLE = "AsOf reads page in ascending order: From and Order are not accepted"
BEYOND_HISTORY = "AsOf {detail} is beyond the retained history: the oldest reachable point is {ident}"

# what a missing ``Data`` is called, per kind of write target
DATA_MISSING = {
    Kind.DOCUMENT: DOCUMENT_DATA_MISSING,
    Kind.LIST: LIST_ITEM_DATA_MISSING,
    Kind.MAP: MAP_ITEM_DATA_MISSING,
    Kind.STREAM: STREAM_MESSAGE_DATA_MISSING,
}


def http_error(status: int, detail: str) -> TwilioError:
    """Any other HTTP error (Starlette's), numbered as Twilio numbers them."""
    return TwilioError(status, _HTTP_BASE + status, detail or "Request failed")


Edge = Literal["rest", "cds"]

# (storage error class, subject) -> (REST answer, CDS answer); subject "*" matches any subject
_BOTH = tuple[ErrorSpec, ErrorSpec]
STORE_ERRORS: dict[tuple[type[StoreError], str], _BOTH] = {
    (NotFoundError, "document"): (NOT_FOUND, DOCUMENT_NOT_FOUND),
    (NotFoundError, "list"): (NOT_FOUND, LIST_NOT_FOUND),
    (NotFoundError, "map"): (NOT_FOUND, MAP_NOT_FOUND),
    (NotFoundError, "stream"): (NOT_FOUND, STREAM_NOT_FOUND),
    (NotFoundError, "service"): (NOT_FOUND, SERVICE_NOT_FOUND),
    (NotFoundError, "unique_name"): (NOT_FOUND, UNIQUE_NAME_NOT_FOUND),
    (NotFoundError, "list_item"): (LIST_ITEM_NOT_FOUND, LIST_ITEM_NOT_FOUND),
    (NotFoundError, "map_item"): (MAP_ITEM_NOT_FOUND, MAP_ITEM_NOT_FOUND),
    (NotFoundError, "permission"): (PERMISSION_NOT_FOUND, PERMISSION_NOT_FOUND),
    (NotFoundError, "*"): (NOT_FOUND, NOT_FOUND),
    (AlreadyExistsError, "map_item"): (MAP_ITEM_EXISTS, MAP_ITEM_EXISTS),
    (AlreadyExistsError, "*"): (UNIQUE_NAME_EXISTS, UNIQUE_NAME_EXISTS),
    (RevisionMismatchError, "document"): (DOCUMENT_REVISION_MISMATCH, DOCUMENT_REVISION_MISMATCH),
    (RevisionMismatchError, "list_item"): (LIST_ITEM_REVISION_MISMATCH, LIST_ITEM_REVISION_MISMATCH),
    (RevisionMismatchError, "map_item"): (MAP_ITEM_REVISION_MISMATCH, MAP_ITEM_REVISION_MISMATCH),
    (InvalidInputError, "page_token"): (INVALID_PAGE_TOKEN, INVALID_PAGE_TOKEN),
    (InvalidInputError, "list_item"): (LIST_ITEM_DATA_MISSING, LIST_ITEM_DATA_MISSING),
    (InvalidInputError, "map_item"): (MAP_ITEM_DATA_MISSING, MAP_ITEM_DATA_MISSING),
    (InvalidInputError, "data"): (INVALID_DATA, INVALID_DATA),
    (InvalidInputError, "ttl"): (INVALID_TTL, INVALID_TTL),
    (InvalidInputError, "unique_name"): (INVALID_UNIQUE_NAME, INVALID_UNIQUE_NAME),
    (InvalidInputError, "map_key"): (INVALID_MAP_KEY, INVALID_MAP_KEY),
    (InvalidInputError, "page_size"): (INVALID_PAGE_SIZE, INVALID_PAGE_SIZE),
    (InvalidInputError, "list_index"): (INVALID_LIST_INDEX, INVALID_LIST_INDEX),
    (InvalidInputError, "*"): (INVALID_PARAMETER, INVALID_PARAMETER),
    (TooLargeError, "*"): (TOO_LARGE, TOO_LARGE),
    (StoreUnavailableError, "*"): (UNAVAILABLE, UNAVAILABLE),
    (IdempotencyConflictError, "busy"): (IDEMPOTENCY_KEY_IN_USE, IDEMPOTENCY_KEY_IN_USE),
    (IdempotencyConflictError, "superseded"): (IDEMPOTENCY_KEY_IN_USE, IDEMPOTENCY_KEY_IN_USE),
    (IdempotencyConflictError, "mismatch"): (IDEMPOTENCY_KEY_REUSED, IDEMPOTENCY_KEY_REUSED),
}


def from_store_error(exc: StoreError, edge: Edge, path: str) -> TwilioError:
    """The answer to a storage error on one edge; ``path`` is the requested resource (for 20404)."""
    if isinstance(exc, BeyondHistoryError):
        return INVALID_PARAMETER(BEYOND_HISTORY.format(detail=str(exc), ident=exc.ident))
    specs = STORE_ERRORS.get((type(exc), exc.kind)) or STORE_ERRORS.get((type(exc), "*"))
    if specs is None:
        return INTERNAL()
    spec = specs[0] if edge == "rest" else specs[1]
    return spec(str(exc), path=path, ident=exc.ident)
