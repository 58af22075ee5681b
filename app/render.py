"""Records -> Twilio's JSON (url, links, dates, revision) and the paging envelope."""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import Response

from storage import Item, Page, Permission, Service, SyncObject, paging
from storage.paging import Cursor

from .params import Paging

COLLECTION = {"document": "Documents", "list": "Lists", "map": "Maps", "stream": "Streams"}


def base_url(request: Request) -> str:
    public: str | None = request.app.state.settings.public_url
    if public:
        return public.rstrip("/") + "/v1"
    return f"{request.url.scheme}://{request.url.netloc}/v1"


def date(ms: int | None) -> str | None:
    if ms is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms // 1000))


def json_response(body: Any, status: int = 200, etag: str | None = None) -> Response:
    headers = {"ETag": etag} if etag is not None else None
    content = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    return Response(content, status_code=status, media_type="application/json", headers=headers)


def service(base: str, s: Service) -> dict[str, Any]:
    url = f"{base}/Services/{s.sid}"
    return {
        "sid": s.sid,
        "account_sid": s.account_sid,
        "friendly_name": s.friendly_name,
        "unique_name": s.unique_name,
        "date_created": date(s.date_created),
        "date_updated": date(s.date_updated),
        "url": url,
        "webhook_url": s.webhook_url,
        "webhooks_from_rest_enabled": s.webhooks_from_rest_enabled,
        "reachability_webhooks_enabled": s.reachability_webhooks_enabled,
        "acl_enabled": s.acl_enabled,
        "reachability_debouncing_enabled": s.reachability_debouncing_enabled,
        "reachability_debouncing_window": s.reachability_debouncing_window,
        "links": {name.lower(): f"{url}/{name}" for name in COLLECTION.values()},
    }


def object_url(base: str, o: SyncObject) -> str:
    return f"{base}/Services/{o.service_sid}/{COLLECTION[o.kind]}/{o.sid}"


def sync_object(base: str, account_sid: str, o: SyncObject) -> dict[str, Any]:
    url = object_url(base, o)
    body: dict[str, Any] = {
        "sid": o.sid,
        "unique_name": o.unique_name,
        "account_sid": account_sid,
        "service_sid": o.service_sid,
        "url": url,
    }
    if o.kind == "document":
        body["links"] = {"permissions": f"{url}/Permissions"}
    elif o.kind == "stream":
        body["links"] = {"messages": f"{url}/Messages"}
    else:
        body["links"] = {"items": f"{url}/Items", "permissions": f"{url}/Permissions"}
    if o.kind != "stream":
        body["revision"] = o.revision
    if o.kind == "document":
        body["data"] = o.data
    body.update(
        date_expires=date(o.date_expires),
        date_created=date(o.date_created),
        date_updated=date(o.date_updated),
        created_by=o.created_by,
    )
    return body


def segment(value: str) -> str:
    """One percent-encoded URL path segment; "." and ".." too, as clients drop dot segments."""
    quoted = quote(value, safe="")
    return quoted.replace(".", "%2E") if quoted in (".", "..") else quoted


def item(base: str, account_sid: str, i: Item) -> dict[str, Any]:
    coll = f"{base}/Services/{i.service_sid}/{COLLECTION[i.kind]}/{i.collection_sid}"
    body: dict[str, Any] = {"key": i.key} if i.kind == "map" else {"index": i.index}
    body.update(
        account_sid=account_sid,
        service_sid=i.service_sid,
        **{f"{i.kind}_sid": i.collection_sid},
        url=f"{coll}/Items/{segment(i.key)}",
        revision=i.revision,
        data=i.data,
        date_expires=date(i.date_expires),
        date_created=date(i.date_created),
        date_updated=date(i.date_updated),
        created_by=i.created_by,
    )
    return body


def permission(base: str, account_sid: str, p: Permission) -> dict[str, Any]:
    url = f"{base}/Services/{p.service_sid}/{COLLECTION[p.kind]}/{p.object_sid}/Permissions/{segment(p.identity)}"
    return {
        "account_sid": account_sid,
        "service_sid": p.service_sid,
        f"{p.kind}_sid": p.object_sid,
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
