"""The whole Sync v1 route table (48 operations)."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.routing import Route

from storage import Kind

from . import items, objects, permissions, services, streams
from .context import Handler, sid_param

S = "/v1/Services/{ServiceSid}"


def _crud(path: str, item_path: str, h: Mapping[str, Handler]) -> list[Route]:
    routes = [
        Route(path, h["read"], methods=["GET"]),
        Route(path, h["create"], methods=["POST"]),
        Route(item_path, h["fetch"], methods=["GET"]),
        Route(item_path, h["update"], methods=["POST"]),
        Route(item_path, h["delete"], methods=["DELETE"]),
    ]
    return routes


def _permissions(base: str, kind: Kind) -> list[Route]:
    h = permissions.handlers(kind)
    one = base + "/Permissions/{Identity}"
    return [
        Route(base + "/Permissions", h["read"], methods=["GET"]),
        Route(one, h["fetch"], methods=["GET"]),
        Route(one, h["update"], methods=["POST"]),
        Route(one, h["delete"], methods=["DELETE"]),
    ]


def build() -> list[Route]:
    svc = {
        "read": services.read,
        "create": services.create,
        "fetch": services.fetch,
        "update": services.update,
        "delete": services.delete,
    }
    routes = _crud("/v1/Services", "/v1/Services/{Sid}", svc)
    for kind in Kind:
        routes += _crud(f"{S}/{kind.collection}", f"{S}/{kind.collection}/{{Sid}}", objects.handlers(kind))
    for kind in Kind:
        if kind.has_items:
            one = "{Index}" if kind.indexed else "{Key:path}"
            coll = f"{S}/{kind.collection}/{{{sid_param(kind)}}}/Items"
            routes += _crud(coll, f"{coll}/{one}", items.handlers(kind))
    for kind in Kind:
        if kind.has_permissions:
            routes += _permissions(f"{S}/{kind.collection}/{{{sid_param(kind)}}}", kind)
    stream = Kind.STREAM
    messages = f"{S}/{stream.collection}/{{{sid_param(stream)}}}/Messages"
    routes.append(Route(messages, streams.publish, methods=["POST"]))
    return routes
