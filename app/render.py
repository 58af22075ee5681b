"""Records -> Twilio's JSON (url, links, dates, revision) and the paging envelope."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import Response

from storage import Item, Kind, Page, Permission, Service, SyncObject, paging
from storage.history import Revision
from storage.paging import Cursor
from storage.wire import jsontext
from storage.wire.dates import iso_seconds
from storage.wire.fields import item_fields, object_fields, segment

from .params import Paging


def base_url(request: Request) -> str:
    """SYNC_PUBLIC_URL, or the request's own scheme and Host (what ``request.url`` would give, without
    building a URL object on every answer)."""
    public: str | None = request.app.state.settings.public_url
    if public:
        return public.rstrip("/") + "/v1"
    scope = request.scope
    scheme: str = scope.get("scheme", "http")
    host = request.headers.get("host")
    if not host:
        server = scope.get("server")
        if not server:
            return f"{request.url.scheme}://{request.url.netloc}/v1"
        name, port = server
        host = name if port == {"http": 80, "https": 443}.get(scheme) else f"{name}:{port}"
    return f"{scheme}://{host}/v1"


def json_response(body: Any, status: int = 200, etag: str | None = None) -> Response:
    headers = {"ETag": etag} if etag is not None else None
    content = jsontext.dumps(body)
    return Response(content, status_code=status, media_type="application/json", headers=headers)


def service(base: str, s: Service) -> dict[str, Any]:
    url = f"{base}/Services/{s.sid}"
    return {
        "sid": s.sid,
        "account_sid": s.account_sid,
        "friendly_name": s.friendly_name,
        "unique_name": s.unique_name,
        "date_created": iso_seconds(s.date_created),
        "date_updated": iso_seconds(s.date_updated),
        "url": url,
        "webhook_url": s.webhook_url,
        "webhooks_from_rest_enabled": s.webhooks_from_rest_enabled,
        "reachability_webhooks_enabled": s.reachability_webhooks_enabled,
        "acl_enabled": s.acl_enabled,
        "reachability_debouncing_enabled": s.reachability_debouncing_enabled,
        "reachability_debouncing_window": s.reachability_debouncing_window,
        "links": {kind.listing_key: f"{url}/{kind.collection}" for kind in Kind},
    }


def object_url(base: str, service_sid: str, kind: Kind, sid: str) -> str:
    return f"{base}/Services/{service_sid}/{kind.collection}/{sid}"


def sync_object(base: str, account_sid: str, o: SyncObject) -> dict[str, Any]:
    url = object_url(base, o.service_sid, o.kind, o.sid)
    body = object_fields(o, iso_seconds)
    body.update(account_sid=account_sid, service_sid=o.service_sid, url=url)
    if o.kind is Kind.STREAM:
        body["links"] = {"messages": f"{url}/Messages"}
    elif o.kind.has_items:
        body["links"] = {"items": f"{url}/Items", "permissions": f"{url}/Permissions"}
    else:
        body["links"] = {"permissions": f"{url}/Permissions"}
    return body


def item(base: str, account_sid: str, i: Item) -> dict[str, Any]:
    coll = object_url(base, i.service_sid, i.kind, i.collection_sid)
    body = item_fields(i, iso_seconds)
    body.update(
        account_sid=account_sid,
        service_sid=i.service_sid,
        url=f"{coll}/Items/{segment(i.key)}",
        **{i.kind.sid_field: i.collection_sid},
    )
    return body


def revision(base: str, account_sid: str, r: Revision) -> dict[str, Any]:
    """One retained revision (an extension: Twilio exposes no history)."""
    target = object_url(base, r.service_sid, r.kind, r.object_sid)
    body: dict[str, Any] = {"account_sid": account_sid, "service_sid": r.service_sid, r.kind.sid_field: r.object_sid}
    if r.key is not None:
        target += f"/Items/{segment(r.key)}"
        body.update({"index": int(r.key)} if r.kind.indexed else {"key": r.key})
        body["removed"] = r.removed
    body.update(
        revision=r.revision,
        event_id=r.number,
        data=r.data,
        date_updated=iso_seconds(r.date_updated),
        updated_by=r.updated_by,
        url=f"{target}/Revisions/{r.revision}",
    )
    return body


def permission(base: str, account_sid: str, p: Permission) -> dict[str, Any]:
    url = f"{object_url(base, p.service_sid, p.kind, p.object_sid)}/Permissions/{segment(p.identity)}"
    return {
        "account_sid": account_sid,
        "service_sid": p.service_sid,
        p.kind.sid_field: p.object_sid,
        "identity": p.identity,
        "read": p.read,
        "write": p.write,
        "manage": p.manage,
        "url": url,
    }


def page(
    request: Request,
    key: str,
    rows: list[dict[str, Any]],
    result: Page[Any],
    pg: Paging,
    filters: dict[str, str] | None = None,
) -> Response:
    """The list envelope; every URL carries the filters so clients can follow it verbatim."""
    base = base_url(request)
    raw: str = request.scope["path"]  # percent-decoded: encode it again (a unique name may hold any character)
    path = base + quote(raw[len("/v1") :] if raw.startswith("/v1") else raw, safe="/")
    filters = filters or {}

    def link(page_no: int, token: str | None) -> str:
        q = {**filters, "PageSize": str(pg.size), "Page": str(page_no)}
        if token:
            q["PageToken"] = token
        return f"{path}?{urlencode(q)}"

    nxt = link(pg.page + 1, paging.encode(Cursor(result.next, True))) if result.next is not None else None
    prev = None
    if result.prev is not None and pg.page > 0:
        prev = link(pg.page - 1, paging.encode(Cursor(result.prev, False)))
    meta = {
        "page": pg.page,
        "page_size": pg.size,
        "first_page_url": link(0, None),
        "previous_page_url": prev,
        "url": link(pg.page, pg.token),
        "next_page_url": nxt,
        "key": key,
    }
    return json_response({key: rows, "meta": meta})
