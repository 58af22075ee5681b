"""The client-side API the SDK tunnels through twilsock (/v3/Documents, /v3/Lists, /v3/Maps,
/v3/Streams and their Items/Messages) -> storage calls -> (HTTP status, JSON body).

The Service comes from the token, never from the path. Every write runs as
``Actor(identity, "sdk", endpoint)``, so ``created_by`` is the token's identity and events carry the
connection's endpoint id. Every failure is a CdsError with Twilio's error body; storage errors are
mapped through one table. With ``acl_enabled`` the Service's Permissions decide (read / write /
manage); without it any valid token of the Service may do everything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from storage import (
    Actor,
    AlreadyExistsError,
    InvalidInputError,
    Item,
    NotFoundError,
    RevisionMismatchError,
    Store,
    StoreError,
    StoreUnavailableError,
    SyncObject,
    TooLargeError,
    items,
    limits,
    objects,
    paging,
    permissions,
    streams,
)
from storage.paging import Cursor
from storage.store import now_ms

from .events import COLLECTION, iso_ms, item_url, object_url

KINDS = {name: kind for kind, name in COLLECTION.items()}


class CdsError(Exception):
    """An error answer: HTTP ``status`` and Twilio ``code`` in Twilio's error body."""

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


# (error class, kind) -> (status, code, message); kind "*" matches any kind
_STORE_ERRORS: dict[tuple[type[StoreError], str], tuple[int, int, str]] = {
    (NotFoundError, "document"): (404, 54100, "Document not found"),
    (NotFoundError, "list"): (404, 54150, "List not found"),
    (NotFoundError, "map"): (404, 54200, "Map not found"),
    (NotFoundError, "stream"): (404, 54250, "Stream not found"),
    (NotFoundError, "list_item"): (404, 54151, "List Item not found"),
    (NotFoundError, "map_item"): (404, 54201, "Map Item not found"),
    (NotFoundError, "service"): (404, 54050, "Service instance not found"),
    (NotFoundError, "*"): (404, 20404, "Resource not found"),
    (AlreadyExistsError, "map_item"): (409, 54208, "Map Item with the specified key already exists"),
    (AlreadyExistsError, "*"): (409, 54301, "Unique name already exists"),
    (RevisionMismatchError, "document"): (412, 54103, "The revision of the Document does not match"),
    (RevisionMismatchError, "list_item"): (412, 54155, "The revision of the List Item does not match"),
    (RevisionMismatchError, "map_item"): (412, 54205, "The revision of the Map Item does not match"),
    (InvalidInputError, "page_token"): (400, 54453, "Invalid PageToken"),
    (InvalidInputError, "list_item"): (400, 54156, "List Item data is required"),
    (InvalidInputError, "map_item"): (400, 54206, "Map Item data is required"),
    (InvalidInputError, "*"): (400, 20001, "Invalid input"),
    (StoreUnavailableError, "*"): (503, 20503, "Service unavailable: the data store is not reachable"),
    (InvalidInputError, "data"): (400, 54008, "Invalid data: must be a JSON object"),
    (InvalidInputError, "ttl"): (400, 54011, "Invalid ttl: must be an integer from 0 to 31536000"),
    (InvalidInputError, "unique_name"): (400, 54302, "Invalid unique name: 1 to 320 characters, not a SID"),
    (InvalidInputError, "map_key"): (400, 54209, "Invalid Map Item key: must be 1 to 320 characters"),
    (InvalidInputError, "page_size"): (400, 54454, "Invalid PageSize: must be an integer from 1 to 1000"),
    (TooLargeError, "*"): (413, 54006, "Request entity too large: data exceeds its size limit"),
}


def store_error(exc: StoreError) -> CdsError:
    found = _STORE_ERRORS.get((type(exc), exc.kind)) or _STORE_ERRORS.get((type(exc), "*"))
    status, code, message = found or (500, 20500, "Internal server error")
    return CdsError(status, code, message)


def denied(what: str) -> CdsError:
    return CdsError(403, 54007, f"Permission denied: the identity may not {what} this object")


@dataclass(frozen=True)
class Request:
    """One tunnelled HTTP request: ``path`` still percent-encoded, ``params`` decoded."""

    method: str
    path: str
    params: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None

    def if_match(self) -> str | None:
        for name, value in self.headers.items():
            if name.lower() == "if-match" and value not in (None, ""):
                return str(value).strip().strip('"')
        return None


@dataclass(frozen=True)
class Caller:
    """Who is asking: the token's Service and identity, this connection's endpoint and URL base."""

    store: Store
    service_sid: str
    identity: str
    endpoint: str
    base: str
    acl: bool = False

    @property
    def actor(self) -> Actor:
        return Actor(identity=self.identity, origin="sdk", endpoint=self.endpoint)


async def may(caller: Caller, kind: str, sid: str, right: str) -> bool:
    """ACL: may this identity ``read``/``write``/``manage`` the object? Always true without ACL."""
    if not caller.acl or kind == "stream":  # Streams have no Permissions resource
        return True
    try:
        perm = await permissions.get(caller.store, caller.service_sid, kind, sid, caller.identity)
    except NotFoundError:
        return False
    return bool(getattr(perm, right))


async def require(caller: Caller, kind: str, sid: str, right: str, what: str) -> None:
    if not await may(caller, kind, sid, right):
        raise denied(what)


async def handle(caller: Caller, req: Request) -> tuple[int, Any]:
    """Answer one tunnelled request: (HTTP status, JSON body). Never raises."""
    try:
        return await _route(caller, req)
    except CdsError as exc:
        return exc.status, exc.body()
    except StoreError as exc:
        err = store_error(exc)
        return err.status, err.body()


async def _route(caller: Caller, req: Request) -> tuple[int, Any]:
    seg = [unquote(s) for s in req.path.split("?")[0].strip("/").split("/")]
    if len(seg) < 2 or seg[0] != "v3" or seg[1] not in KINDS:
        raise CdsError(404, 20404, f"The requested resource {req.path} was not found")
    kind = KINDS[seg[1]]
    m = req.method.upper()
    if len(seg) == 2 and m == "POST":
        return 201, await create(caller, kind, _body(req))
    if len(seg) == 3:
        if m == "GET":
            return 200, await fetch(caller, kind, seg[2])
        if m == "POST":
            return 200, await update(caller, kind, seg[2], _body(req), req.if_match())
        if m == "DELETE":
            return 200, await remove(caller, kind, seg[2])
    if len(seg) in (4, 5) and seg[3] == "Items" and kind in ("list", "map"):
        return await _items(caller, req, kind, seg)
    if len(seg) == 4 and seg[3] == "Messages" and kind == "stream" and m == "POST":
        return 201, await publish(caller, seg[2], _body(req))
    raise CdsError(405 if len(seg) <= 5 else 404, 20004, f"Method {m} not allowed on {req.path}")


async def _items(caller: Caller, req: Request, kind: str, seg: list[str]) -> tuple[int, Any]:
    m = req.method.upper()
    if len(seg) == 4:
        if m == "GET":
            return 200, await query_items(caller, kind, seg[2], req.params)
        if m == "POST" and kind == "list":
            return 201, await write_item(caller, kind, seg[2], "append", "", _body(req), None)
    else:
        key = _item_key(kind, seg[4])
        if m == "PUT" and kind == "map":
            body = _body(req)
            item, added = await _write_item(caller, kind, seg[2], "upsert", key, body, req.if_match())
            return (201 if added else 200), item
        if m == "POST":
            return 200, await write_item(caller, kind, seg[2], "update", key, _body(req), req.if_match())
        if m == "DELETE":
            return 200, await remove_item(caller, kind, seg[2], key, req.if_match())
    raise CdsError(405, 20004, f"Method {m} not allowed on {req.path}")


# -- parameters ---------------------------------------------------------------------------------


def _body(req: Request) -> dict[str, Any]:
    body = req.body
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise CdsError(400, 20001, "The request body must be a JSON object")
    return body


def _data(body: dict[str, Any], required: bool, missing_code: int = 54101, limit: int = limits.MAX_DATA) -> str | None:
    """``data`` as compact JSON text (None when absent and optional)."""
    if "data" not in body or body["data"] is None:
        if required:
            raise CdsError(400, missing_code, "Data is required")
        return None
    return limits.compact_data(body["data"], limit)


def _ttl(body: dict[str, Any], name: str = "ttl") -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError("ttl", name)
    return limits.check_ttl(value)


def _unique_name(body: dict[str, Any]) -> str | None:
    value = body.get("unique_name")
    if value is None:
        return None
    return limits.check_unique_name(value if isinstance(value, str) else "")


def _item_key(kind: str, raw: str) -> str:
    if kind == "list":
        if not raw.isdigit():
            raise CdsError(400, 54458, "Invalid List Item index: must be a non-negative integer")
        return str(int(raw))
    return limits.check_key(raw)


# -- rendering ----------------------------------------------------------------------------------


def render_object(base: str, o: SyncObject) -> dict[str, Any]:
    """An object descriptor as the SDK reads it (``url`` and ``links`` are its request targets)."""
    url = object_url(base, o.kind, o.sid)
    body: dict[str, Any] = {
        "sid": o.sid,
        "unique_name": o.unique_name,
        "url": url,
        "last_event_id": o.last_event_id,
        "date_created": iso_ms(o.date_created),
        "date_updated": iso_ms(o.date_updated),
        "date_expires": iso_ms(o.date_expires),
        "created_by": o.created_by,
    }
    if o.kind != "stream":
        body["revision"] = o.revision
    if o.kind == "document":
        body["data"] = o.data
    elif o.kind == "stream":
        body["links"] = {"messages": f"{url}/Messages"}
    else:
        body["links"] = {"items": f"{url}/Items"}
    return body


def render_item(base: str, i: Item) -> dict[str, Any]:
    body: dict[str, Any] = {"key": i.key} if i.kind == "map" else {"index": i.index}
    body.update(
        url=item_url(base, i.kind, i.collection_sid, i.key),
        revision=i.revision,
        last_event_id=i.last_event_id,
        data=i.data,
        date_created=iso_ms(i.date_created),
        date_updated=iso_ms(i.date_updated),
        date_expires=iso_ms(i.date_expires),
        created_by=i.created_by,
    )
    return body


# -- objects ------------------------------------------------------------------------------------


async def create(caller: Caller, kind: str, body: dict[str, Any]) -> dict[str, Any]:
    if caller.acl:
        raise CdsError(403, 54007, "Permission denied: with ACL enabled, objects are created over REST")
    o = await objects.create(
        caller.store,
        caller.service_sid,
        kind,
        caller.actor,
        unique_name=_unique_name(body),
        data_json=_data(body, required=False) if kind == "document" else None,
        ttl=_ttl(body),
    )
    return render_object(caller.base, o)


async def fetch(caller: Caller, kind: str, ident: str) -> dict[str, Any]:
    o = await objects.get(caller.store, caller.service_sid, kind, ident)
    await require(caller, kind, o.sid, "read", "read")
    return render_object(caller.base, o)


async def update(caller: Caller, kind: str, ident: str, body: dict[str, Any], if_match: str | None) -> dict[str, Any]:
    data = _data(body, required=False) if kind == "document" else None
    ttl = _ttl(body)
    if data is None and ttl is None:
        raise CdsError(400, 54010, "No parameters to update: provide data or ttl")
    o = await objects.get(caller.store, caller.service_sid, kind, ident)
    await require(caller, kind, o.sid, "write", "write")
    o = await objects.update(
        caller.store,
        caller.service_sid,
        kind,
        o.sid,
        caller.actor,
        data_json=data,
        ttl=ttl,
        if_match=if_match if kind == "document" else None,
    )
    return render_object(caller.base, o)


async def remove(caller: Caller, kind: str, ident: str) -> dict[str, Any]:
    o = await objects.get(caller.store, caller.service_sid, kind, ident)
    await require(caller, kind, o.sid, "manage", "remove")
    await objects.delete(caller.store, caller.service_sid, kind, o.sid, caller.actor)
    return {}


async def publish(caller: Caller, ident: str, body: dict[str, Any]) -> dict[str, Any]:
    data = _data(body, required=True, missing_code=54251, limit=limits.MAX_MESSAGE)
    assert data is not None
    sid = await objects.resolve(caller.store, caller.service_sid, "stream", ident)
    await require(caller, "stream", sid, "write", "publish to")
    msid = await streams.publish(caller.store, caller.service_sid, sid, data, caller.actor)
    return {"sid": msid, "data": body["data"]}


# -- items --------------------------------------------------------------------------------------


async def _write_item(
    caller: Caller, kind: str, ident: str, mode: str, key: str, body: dict[str, Any], if_match: str | None
) -> tuple[dict[str, Any], bool]:
    missing = 54156 if kind == "list" else 54206
    data = _data(body, required=mode in ("append", "upsert"), missing_code=missing)
    item_ttl = _ttl(body)
    if data is None and item_ttl is None:
        raise CdsError(400, 54010, "No parameters to update: provide data or ttl")
    sid = await objects.resolve(caller.store, caller.service_sid, kind, ident)
    await require(caller, kind, sid, "write", "write")
    item, added = await items.write(
        caller.store,
        caller.service_sid,
        kind,
        sid,
        caller.actor,
        mode,
        key=key,
        data_json=data,
        item_ttl=item_ttl,
        if_match=if_match,
    )
    return render_item(caller.base, item), added


async def write_item(
    caller: Caller, kind: str, ident: str, mode: str, key: str, body: dict[str, Any], if_match: str | None
) -> dict[str, Any]:
    return (await _write_item(caller, kind, ident, mode, key, body, if_match))[0]


async def remove_item(caller: Caller, kind: str, ident: str, key: str, if_match: str | None) -> dict[str, Any]:
    sid = await objects.resolve(caller.store, caller.service_sid, kind, ident)
    await require(caller, kind, sid, "write", "remove items of")
    eid = await items.delete(caller.store, caller.service_sid, kind, sid, key, caller.actor, if_match)
    return {"last_event_id": eid, "date_updated": iso_ms(now_ms())}


async def query_items(caller: Caller, kind: str, ident: str, params: dict[str, str]) -> dict[str, Any]:
    """A page of items: ``Key``/``Index`` = one item (an empty page if absent), else ``From``
    (inclusive), ``Order``, ``PageSize`` or ``PageToken``. ``meta.previous_token`` is set exactly
    when items precede the page in its order, ``next_token`` when items follow it: the SDK uses them
    to mark its cache's collection bounds."""
    store, svc = caller.store, caller.service_sid
    sid = await objects.resolve(store, svc, kind, ident)
    await require(caller, kind, sid, "read", "read")
    single = params.get("Key" if kind == "map" else "Index")
    if single is not None:
        try:
            found = [await items.get(store, svc, kind, sid, _item_key(kind, single))]
        except NotFoundError:
            found = []
        return {
            "items": [render_item(caller.base, i) for i in found],
            "meta": {"previous_token": None, "next_token": None},
        }
    order = params.get("Order", "asc")
    if order not in ("asc", "desc"):
        raise CdsError(400, 54451, "Invalid Order: must be asc or desc")
    raw_size = params.get("PageSize", "50")
    if not raw_size.isascii() or not raw_size.isdigit():
        raise InvalidInputError("page_size", raw_size)
    size = limits.check_page_size(int(raw_size))
    token = params.get("PageToken")
    cursor = paging.decode(token) if token else None
    start = params.get("From")
    if start is not None:
        start = _item_key(kind, start)
    page = await items.page(store, svc, kind, sid, size, order=order, start=start, cursor=cursor)
    rows = page.items
    nxt = paging.encode(Cursor(page.next, True)) if page.next is not None else None
    prev = None
    if rows and (cursor is not None or start is not None):
        back = "desc" if order == "asc" else "asc"
        before = await items.page(store, svc, kind, sid, 1, order=back, start=rows[0].key, inclusive=False)
        if before.items:
            prev = paging.encode(Cursor(rows[0].key, False))
    return {"items": [render_item(caller.base, i) for i in rows], "meta": {"previous_token": prev, "next_token": nxt}}
