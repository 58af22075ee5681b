"""app/router.py: for every route of the real table (the API, the probes, the console), a path made
from its template, a longer and a shorter one, and every method, the indexed router picks the same
route Starlette's full scan picks (the first full match, else the first partial one: a 405), or none."""

from __future__ import annotations

import re

from starlette.routing import BaseRoute, Match, Route

from app import console, routes
from app.router import IndexedRouter


async def _endpoint(request: object) -> None:
    return None


def _table() -> list[BaseRoute]:
    probes: list[BaseRoute] = [Route(p, _endpoint, methods=["GET"]) for p in ("/healthz", "/readyz", "/openapi.json")]
    return probes + list(routes.build()) + list(console.routes())


def _pick(candidates: list[BaseRoute], path: str, method: str) -> BaseRoute | None:
    scope = {"type": "http", "path": path, "method": method, "root_path": "", "headers": []}
    partial = None
    for route in candidates:
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return route
        if match is Match.PARTIAL and partial is None:
            partial = route
    return partial


def test_the_indexed_router_picks_what_starlette_picks() -> None:
    table = _table()
    router = IndexedRouter(routes=table)
    paths = {"/", "/v1", "/v1/Services/", "/console/static/app.js", "/v1/Services/IS1/Maps/MP1/Items/a/b/c"}
    for route in table:
        template = getattr(route, "path", "")
        sample = re.sub(r"\{[^}:]+(:path)?\}", lambda m: "a/b" if m.group(1) else "X1", template)
        paths |= {sample, sample + "/more", sample.rsplit("/", 1)[0], sample + "/"}
    for path in sorted(paths):
        for method in ("GET", "POST", "DELETE", "PUT"):
            assert _pick(router.candidates(path), path, method) is _pick(table, path, method), (method, path)
    assert len(router.candidates("/v1/Services/IS1/Documents/ET1")) < len(table) / 2
