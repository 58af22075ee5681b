"""The whole Sync v1 route table (48 operations)."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.routing import Route

from . import items, objects, permissions, services, streams

S = "/v1/Services/{ServiceSid}"


def _crud(path: str, item_path: str, h: Mapping[str, objects.Handler]) -> list[Route]:
    routes = [
        Route(path, h["read"], methods=["GET"]),
        Route(path, h["create"], methods=["POST"]),
        Route(item_path, h["fetch"], methods=["GET"]),
        Route(item_path, h["update"], methods=["POST"]),
        Route(item_path, h["delete"], methods=["DELETE"]),
    ]
    return routes


def _permissions(base: str, kind: str) -> list[Route]:
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
    routes += _crud(f"{S}/Documents", f"{S}/Documents/{{Sid}}", objects.handlers("document"))
    routes += _crud(f"{S}/Lists", f"{S}/Lists/{{Sid}}", objects.handlers("list"))
    routes += _crud(f"{S}/Maps", f"{S}/Maps/{{Sid}}", objects.handlers("map"))
    routes += _crud(f"{S}/Streams", f"{S}/Streams/{{Sid}}", objects.handlers("stream"))
    routes += _crud(f"{S}/Lists/{{ListSid}}/Items", f"{S}/Lists/{{ListSid}}/Items/{{Index}}", items.handlers("list"))
    routes += _crud(f"{S}/Maps/{{MapSid}}/Items", f"{S}/Maps/{{MapSid}}/Items/{{Key:path}}", items.handlers("map"))
    routes += _permissions(f"{S}/Documents/{{DocumentSid}}", "document")
    routes += _permissions(f"{S}/Lists/{{ListSid}}", "list")
    routes += _permissions(f"{S}/Maps/{{MapSid}}", "map")
    routes.append(Route(f"{S}/Streams/{{StreamSid}}/Messages", streams.publish, methods=["POST"]))
    return routes
