"""The served OpenAPI document's extensions: operations and parameters Twilio does not have.

Twilio's own file (app/sync_v1.openapi.json) stays an exact cut of Twilio's, so its test can keep
comparing it with Twilio's; what this server adds is written here and merged in when it is served
(``merge``), each operation and parameter marked ``x-sync-server-extension: true`` so a generator
or a reader can tell it apart. Today: the revision history (app/history.py).
"""

from __future__ import annotations

import copy
from typing import Any

MARK = "x-sync-server-extension"
S = "/v1/Services/{ServiceSid}"
# target path -> (what it is, the path parameters after ServiceSid)
TARGETS = {
    f"{S}/Documents/{{Sid}}": ("Document", ["Sid"]),
    f"{S}/Lists/{{ListSid}}/Items/{{Index}}": ("List Item", ["ListSid", "Index"]),
    f"{S}/Maps/{{MapSid}}/Items/{{Key}}": ("Map Item", ["MapSid", "Key"]),
}
COLLECTIONS = (f"{S}/Lists/{{ListSid}}/Items", f"{S}/Maps/{{MapSid}}/Items")

REVISION_SCHEMA: dict[str, Any] = {
    "type": "object",
    MARK: True,
    "properties": {
        "account_sid": {"type": "string"},
        "service_sid": {"type": "string"},
        "revision": {"type": "string", "description": "The revision (hexadecimal), as in ETag and If-Match."},
        "event_id": {"type": "integer", "description": "The event id of this revision (AsOf takes it)."},
        "data": {"nullable": True, "description": "The data of this revision (null for a removal)."},
        "date_updated": {"type": "string", "format": "date-time"},
        "updated_by": {"type": "string", "description": "The identity that wrote it, or `system`."},
        "removed": {"type": "boolean", "description": "Items only: the item was deleted at this revision."},
        "url": {"type": "string", "format": "uri"},
    },
}
_REF = {"$ref": "#/components/schemas/sync_server.revision"}


def _path_params(names: list[str]) -> list[dict[str, Any]]:
    return [{"in": "path", "name": n, "required": True, "schema": {"type": "string"}} for n in ["ServiceSid", *names]]


def _paging() -> list[dict[str, Any]]:
    return [
        {"in": "query", "name": "PageSize", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
        {"in": "query", "name": "Page", "schema": {"type": "integer", "minimum": 0}},
        {"in": "query", "name": "PageToken", "schema": {"type": "string"}},
    ]


def paths() -> dict[str, Any]:
    """The extension operations, by path."""
    out: dict[str, Any] = {}
    for target, (what, names) in TARGETS.items():
        op_name = what.replace(" ", "")
        listing = {
            "description": f"The retained revisions of a {what}, newest first (sync-server extension).",
            "operationId": f"ListSyncServer{op_name}Revision",
            "parameters": _path_params(names) + _paging(),
            "responses": {
                "200": {
                    "description": "OK",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "revisions": {"type": "array", "items": _REF},
                                    "meta": {"type": "object"},
                                },
                            }
                        }
                    },
                }
            },
            "security": [{"accountSid_authToken": []}],
            MARK: True,
        }
        one = {
            "description": f"One retained revision of a {what} (sync-server extension).",
            "operationId": f"FetchSyncServer{op_name}Revision",
            "parameters": [
                *_path_params(names),
                {"in": "path", "name": "Revision", "required": True, "schema": {"type": "string"}},
            ],
            "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": _REF}}}},
            "security": [{"accountSid_authToken": []}],
            MARK: True,
        }
        out[f"{target}/Revisions"] = {"get": listing, MARK: True}
        out[f"{target}/Revisions/{{Revision}}"] = {"get": one, MARK: True}
    return out


AS_OF = {
    "in": "query",
    "name": "AsOf",
    "description": "sync-server extension: the items as they were at this event id or ISO-8601 time, within the "
    "retained history (ascending, PageSize/PageToken only).",
    "schema": {"type": "string"},
    MARK: True,
}


def merge(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` (Twilio's cut) with the extensions added."""
    out = copy.deepcopy(doc)
    out["paths"].update(paths())
    for path in COLLECTIONS:
        get = out["paths"].get(path, {}).get("get")
        if get is not None:
            get.setdefault("parameters", []).append(AS_OF)
    out.setdefault("components", {}).setdefault("schemas", {})["sync_server.revision"] = REVISION_SCHEMA
    return out
