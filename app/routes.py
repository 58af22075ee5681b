"""The whole Sync v1 route table (48 operations), and the revision history extension's 6."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.routing import Route

from storage import Kind

from . import history, items, objects, permissions, services, streams
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


def _revisions(target: str, h: Mapping[str, Handler]) -> list[Route]:
    """The revision history extension (app/history.py) of a Document or a List/Map item."""
    return [
        Route(target + "/Revisions", h["read"], methods=["GET"]),
        Route(target + "/Revisions/{Revision}", h["fetch"], methods=["GET"]),
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
    routes += _revisions(f"{S}/{Kind.DOCUMENT.collection}/{{Sid}}", history.handlers(Kind.DOCUMENT))
    for kind in Kind:
        if kind.has_items:
            one = "{Index}" if kind.indexed else "{Key:path}"
            coll = f"{S}/{kind.collection}/{{{sid_param(kind)}}}/Items"
            # before the item routes: a Map's {Key:path} would take ".../Revisions" as part of a key
            routes += _revisions(f"{coll}/{one}", history.handlers(kind))
            routes += _crud(coll, f"{coll}/{one}", items.handlers(kind))
    for kind in Kind:
        if kind.has_permissions:
            routes += _permissions(f"{S}/{kind.collection}/{{{sid_param(kind)}}}", kind)
    stream = Kind.STREAM
    messages = f"{S}/{stream.collection}/{{{sid_param(stream)}}}/Messages"
    routes.append(Route(messages, streams.publish, methods=["POST"]))
    return routes
