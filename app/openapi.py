"""``GET /openapi.json``: the Sync v1 OpenAPI document of what this server implements.

The package ships ``app/sync_v1.openapi.json`` (package data): Twilio's own OpenAPI file of Sync v1
(twilio-oai ``twilio_sync_v1.json``, 3.0.1) cut to the operations of the route table (app/routes.py)
by ``subset``, with Twilio's per-path ``servers`` dropped so the document's one ``servers`` entry,
this server's base URL (SYNC_PUBLIC_URL, else the request's scheme and Host), applies to every
path. After a change to the route table or a newer Twilio file, regenerate it with

    python -m app.openapi path/to/twilio_sync_v1.openapi.json

(tests/unit/test_openapi.py fails while the shipped file and the route table disagree). The bytes
of the answer are built once per base URL.
"""

from __future__ import annotations

import copy
import functools
import json
import sys
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from . import openapi_extensions

FILE = "sync_v1.openapi.json"
METHODS = ("get", "post", "delete")


def operations(routes: Iterable[Any]) -> set[tuple[str, str]]:
    """(path template as OpenAPI writes it, lowercase method) of every route in ``routes``."""
    out = set()
    for route in routes:
        if isinstance(route, Route) and route.path.startswith("/v1/"):
            path = route.path.replace(":path}", "}")  # {Key:path} is {Key}
            out |= {(path, m.lower()) for m in route.methods or () if m.lower() in METHODS}
    return out


def extension_operations() -> set[tuple[str, str]]:
    """The operations this server adds to Twilio's (not in Twilio's file)."""
    return {(p, m) for p, item in openapi_extensions.paths().items() for m in item if m in METHODS}


def subset(spec: dict[str, Any], implemented: set[tuple[str, str]]) -> dict[str, Any]:
    """``spec`` with only the ``implemented`` operations (and the schemas they still refer to)."""
    out = copy.deepcopy(spec)
    out.pop("servers", None)
    paths: dict[str, Any] = {}
    for path, item in spec["paths"].items():
        kept = {k: copy.deepcopy(v) for k, v in item.items() if k not in METHODS or (path, k) in implemented}
        kept.pop("servers", None)
        if any(k in METHODS for k in kept):
            paths[path] = kept
    out["paths"] = paths
    schemas = out.get("components", {}).get("schemas", {})
    used = _schemas_used(paths, schemas)
    if schemas:
        out["components"]["schemas"] = {name: s for name, s in schemas.items() if name in used}
    out["info"] = {
        **spec["info"],
        "description": "The Twilio Sync v1 REST API as this sync-server implements it.",
    }
    add_idempotency_key(out)
    return out


IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "sync-server extension (app/idempotency.py): a client-chosen key (1 to 255 printable ASCII "
    "characters). The first request with it is executed and its answer kept for SYNC_IDEMPOTENCY_TTL_S; a retry "
    "with the same key and parameters gets that answer again with `Idempotent-Replayed: true` and changes "
    "nothing; the same key with other parameters is answered 422 (20422); while the first is still running, "
    "409 (20409) with Retry-After.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
    "x-sync-server-extension": True,
}


def add_idempotency_key(spec: dict[str, Any]) -> None:
    """Every POST and DELETE takes the ``Idempotency-Key`` header, marked as this server's extension."""
    spec.setdefault("components", {}).setdefault("parameters", {})["IdempotencyKey"] = IDEMPOTENCY_KEY
    for item in spec["paths"].values():
        for method in ("post", "delete"):
            if method in item:
                item[method].setdefault("parameters", []).append({"$ref": "#/components/parameters/IdempotencyKey"})


def _refs(node: Any) -> Iterable[str]:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            yield ref
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _schemas_used(paths: dict[str, Any], schemas: dict[str, Any]) -> set[str]:
    prefix = "#/components/schemas/"
    todo = [r[len(prefix) :] for r in _refs(paths) if r.startswith(prefix)]
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen or name not in schemas:
            continue
        seen.add(name)
        todo += [r[len(prefix) :] for r in _refs(schemas[name]) if r.startswith(prefix)]
    return seen


@functools.cache
def shipped() -> dict[str, Any]:
    """The packaged document (without ``servers``)."""
    loaded: dict[str, Any] = json.loads(resources.files(__package__).joinpath(FILE).read_text("utf-8"))
    return loaded


@functools.cache
def document() -> dict[str, Any]:
    """What is served: the packaged document and this server's extensions (app/openapi_extensions.py)."""
    return openapi_extensions.merge(shipped())


@functools.lru_cache(maxsize=16)
def _body(server_url: str) -> bytes:
    return json.dumps({**document(), "servers": [{"url": server_url}]}, separators=(",", ":")).encode()


async def openapi_json(request: Request) -> Response:
    """The document, its ``servers`` this server's base URL; unauthenticated, as Twilio's is public."""
    public: str | None = request.app.state.settings.public_url
    server_url = public.rstrip("/") if public else f"{request.url.scheme}://{request.url.netloc}"
    return Response(_body(server_url), media_type="application/json")


def main(argv: list[str]) -> None:  # pragma: no cover - a maintainer's tool, see the docstring
    from .routes import build

    spec = json.loads(Path(argv[0]).read_text())
    out = Path(__file__).with_name(FILE)
    implemented = operations(build()) - extension_operations()
    out.write_text(json.dumps(subset(spec, implemented), indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
