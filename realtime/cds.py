"""The client-side API the SDK tunnels through twilsock (/v3/Documents, /v3/Lists, /v3/Maps,
/v3/Streams and their Items/Messages) -> storage calls -> (HTTP status, JSON body).

The Service comes from the token, never from the path. Every write runs as
``Actor(identity, "sdk", endpoint)``, so ``created_by`` is the token's identity and events carry the
connection's endpoint id. Every failure is a TwilioError (storage/wire/errors.py, shared with
REST); storage errors are mapped through its one table. With ``acl_enabled`` the Service's
Permissions decide (read / write / manage); without it any valid token of the Service may do
everything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any
from urllib.parse import unquote

from storage import (
    Actor,
    InvalidInputError,
    Item,
    Kind,
    NotFoundError,
    Store,
    StoreError,
    SyncObject,
    items,
    limits,
    objects,
    paging,
    permissions,
    streams,
)
from storage.clock import now_ms
from storage.paging import Cursor
from storage.wire import errors
from storage.wire.dates import iso_millis
from storage.wire.errors import TwilioError
from storage.wire.fields import item_fields, object_fields

from .events import item_url, object_url


def store_error(exc: StoreError, path: str) -> TwilioError:
    """A storage error as the CDS API answers it (its own not-found codes, which the SDK reads)."""
    return errors.from_store_error(exc, "cds", path)


def denied(what: str) -> TwilioError:
    return errors.PERMISSION_DENIED(f"the identity may not {what} this object")


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


@dataclass(frozen=True, slots=True)
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


_ALL_RIGHTS: Mapping[str, bool] = MappingProxyType({"read": True, "write": True, "manage": True})
_NO_RIGHTS: Mapping[str, bool] = MappingProxyType({"read": False, "write": False, "manage": False})


async def rights(caller: Caller, kind: Kind, sid: str) -> Mapping[str, bool]:
    """ACL: what this identity may do to the object (``read``/``write``/``manage``), in one lookup.
    Everything without ACL; nothing without a Permission."""
    if not caller.acl or not kind.has_permissions:  # Streams have no Permissions resource
        return _ALL_RIGHTS
    try:
        perm = await permissions.get(caller.store, caller.service_sid, kind, sid, caller.identity)
    except NotFoundError:
        return _NO_RIGHTS
    return {"read": perm.read, "write": perm.write, "manage": perm.manage}


async def may(caller: Caller, kind: Kind, sid: str, right: str) -> bool:
    """ACL: may this identity ``read``/``write``/``manage`` the object? Always true without ACL."""
    return (await rights(caller, kind, sid))[right]


async def require(caller: Caller, kind: Kind, sid: str, right: str, what: str) -> bool:
    """Refuse unless the identity may ``right`` the object; returns whether it may also read it.
    A write's answer carries the data only then: a write-only identity must not read through it."""
    granted = await rights(caller, kind, sid)
    if not granted[right]:
        raise denied(what)
    return granted["read"]


def _readable(body: dict[str, Any], readable: bool) -> dict[str, Any]:
    """An answer as the identity may see it: without ``data`` when it may not read."""
    if not readable:
        body.pop("data", None)
    return body


async def handle(caller: Caller, req: Request) -> tuple[int, Any]:
    """Answer one tunnelled request: (HTTP status, JSON body). Never raises."""
    try:
        return await _route(caller, req)
    except TwilioError as exc:
        return exc.status, exc.body()
    except StoreError as exc:
        err = store_error(exc, req.path)
        return err.status, err.body()


async def _route(caller: Caller, req: Request) -> tuple[int, Any]:
    seg = [unquote(s) for s in req.path.split("?")[0].strip("/").split("/")]
    kind = Kind.from_collection(seg[1]) if len(seg) >= 2 and seg[0] == "v3" else None
    if kind is None:
        raise errors.NOT_FOUND(path=req.path)
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
    if len(seg) in (4, 5) and seg[3] == "Items" and kind.has_items:
        return await _items(caller, req, kind, seg)
    if len(seg) == 4 and seg[3] == "Messages" and kind is Kind.STREAM and m == "POST":
        return 201, await publish(caller, seg[2], _body(req))
    raise errors.METHOD_NOT_ALLOWED(status=405 if len(seg) <= 5 else 404, method=m, path=req.path)


async def _items(caller: Caller, req: Request, kind: Kind, seg: list[str]) -> tuple[int, Any]:
    m = req.method.upper()
    if len(seg) == 4:
        if m == "GET":
            return 200, await query_items(caller, kind, seg[2], req.params)
        if m == "POST" and kind.indexed:
            return 201, await write_item(caller, kind, seg[2], "append", "", _body(req), None)
    else:
        key = _item_key(kind, seg[4])
        if m == "PUT" and not kind.indexed:
            body = _body(req)
            item, added = await _write_item(caller, kind, seg[2], "upsert", key, body, req.if_match())
            return (201 if added else 200), item
        if m == "POST":
            return 200, await write_item(caller, kind, seg[2], "update", key, _body(req), req.if_match())
        if m == "DELETE":
            return 200, await remove_item(caller, kind, seg[2], key, req.if_match())
    raise errors.METHOD_NOT_ALLOWED(method=m, path=req.path)


# -- parameters ---------------------------------------------------------------------------------


def _body(req: Request) -> dict[str, Any]:
    body = req.body
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise errors.INVALID_PARAMETER("The request body must be a JSON object")
    return body


def _data(body: dict[str, Any], target: Kind, required: bool, limit: int = limits.MAX_DATA) -> str | None:
    """``data`` as compact JSON text (None when absent and optional)."""
    if "data" not in body or body["data"] is None:
        if required:
            raise errors.DATA_MISSING[target]()
        return None
    return limits.compact_data(body["data"], limit)


def _ttl(body: dict[str, Any], name: str = "ttl") -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError("ttl", name)
    return limits.check_ttl(value, name)


def _unique_name(body: dict[str, Any]) -> str | None:
    value = body.get("unique_name")
    if value is None:
        return None
    return limits.check_unique_name(value if isinstance(value, str) else "")


def _item_key(kind: Kind, raw: str) -> str:
    if kind.indexed:
        return limits.check_index(raw)
    return limits.check_key(raw)


# -- rendering ----------------------------------------------------------------------------------


def render_object(base: str, o: SyncObject) -> dict[str, Any]:
    """An object descriptor as the SDK reads it (``url`` and ``links`` are its request targets)."""
    url = object_url(base, o.kind, o.sid)
    body = object_fields(o, iso_millis)
    body.update(url=url, last_event_id=o.last_event_id)
    if o.kind is Kind.STREAM:
        body["links"] = {"messages": f"{url}/Messages"}
    elif o.kind.has_items:
        body["links"] = {"items": f"{url}/Items"}
    return body


def render_item(base: str, i: Item) -> dict[str, Any]:
    body = item_fields(i, iso_millis)
    body.update(url=item_url(base, i.kind, i.collection_sid, i.key), last_event_id=i.last_event_id)
    return body


# -- objects ------------------------------------------------------------------------------------


async def create(caller: Caller, kind: Kind, body: dict[str, Any]) -> dict[str, Any]:
    if caller.acl:
        raise errors.PERMISSION_DENIED("with ACL enabled, objects are created over REST")
    o = await objects.create(
        caller.store,
        caller.service_sid,
        kind,
        caller.actor,
        unique_name=_unique_name(body),
        data_json=_data(body, kind, required=False) if kind.has_data else None,
        ttl=_ttl(body),
    )
    return render_object(caller.base, o)


async def fetch(caller: Caller, kind: Kind, ident: str) -> dict[str, Any]:
    o = await objects.get(caller.store, caller.service_sid, kind, ident)
    await require(caller, kind, o.sid, "read", "read")
    return render_object(caller.base, o)


async def update(caller: Caller, kind: Kind, ident: str, body: dict[str, Any], if_match: str | None) -> dict[str, Any]:
    data = _data(body, kind, required=False) if kind.has_data else None
    ttl = _ttl(body)
    if data is None and ttl is None:
        raise errors.NOTHING_TO_UPDATE("data or ttl")
    o = await objects.get(caller.store, caller.service_sid, kind, ident)
    readable = await require(caller, kind, o.sid, "write", "write")
    o = await objects.update(
        caller.store,
        caller.service_sid,
        kind,
        o.sid,
        caller.actor,
        data_json=data,
        ttl=ttl,
        if_match=if_match if kind.has_data else None,
    )
    return _readable(render_object(caller.base, o), readable)


async def remove(caller: Caller, kind: Kind, ident: str) -> dict[str, Any]:
    o = await objects.get(caller.store, caller.service_sid, kind, ident)
    await require(caller, kind, o.sid, "manage", "remove")
    await objects.delete(caller.store, caller.service_sid, kind, o.sid, caller.actor)
    return {}


async def publish(caller: Caller, ident: str, body: dict[str, Any]) -> dict[str, Any]:
    data = _data(body, Kind.STREAM, required=True, limit=limits.MAX_MESSAGE)
    assert data is not None
    sid = await objects.resolve(caller.store, caller.service_sid, Kind.STREAM, ident)
    await require(caller, Kind.STREAM, sid, "write", "publish to")
    msid = await streams.publish(caller.store, caller.service_sid, sid, data, caller.actor)
    return {"sid": msid, "data": body["data"]}


# -- items --------------------------------------------------------------------------------------


async def _write_item(
    caller: Caller, kind: Kind, ident: str, mode: str, key: str, body: dict[str, Any], if_match: str | None
) -> tuple[dict[str, Any], bool]:
    data = _data(body, kind, required=mode in ("append", "upsert"))
    item_ttl = _ttl(body)
    if data is None and item_ttl is None:
        raise errors.NOTHING_TO_UPDATE("data or ttl")
    sid = await objects.resolve(caller.store, caller.service_sid, kind, ident)
    readable = await require(caller, kind, sid, "write", "write")
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
    return _readable(render_item(caller.base, item), readable), added


async def write_item(
    caller: Caller, kind: Kind, ident: str, mode: str, key: str, body: dict[str, Any], if_match: str | None
) -> dict[str, Any]:
    return (await _write_item(caller, kind, ident, mode, key, body, if_match))[0]


async def remove_item(caller: Caller, kind: Kind, ident: str, key: str, if_match: str | None) -> dict[str, Any]:
    sid = await objects.resolve(caller.store, caller.service_sid, kind, ident)
    await require(caller, kind, sid, "write", "remove items of")
    eid = await items.delete(caller.store, caller.service_sid, kind, sid, key, caller.actor, if_match)
    return {"last_event_id": eid, "date_updated": iso_millis(now_ms())}


async def query_items(caller: Caller, kind: Kind, ident: str, params: dict[str, str]) -> dict[str, Any]:
    """A page of items: ``Key``/``Index`` = one item (an empty page if absent), else ``From``
    (inclusive), ``Order``, ``PageSize`` or ``PageToken``. ``meta.previous_token`` is set exactly
    when items precede the page in its order, ``next_token`` when items follow it: the SDK uses them
    to mark its cache's collection bounds."""
    store, svc = caller.store, caller.service_sid
    sid = await objects.resolve(store, svc, kind, ident)
    await require(caller, kind, sid, "read", "read")
    single = params.get("Index" if kind.indexed else "Key")
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
        raise errors.INVALID_ORDER()
    raw_size = params.get("PageSize", "50")
    if not limits.is_count(raw_size):
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
