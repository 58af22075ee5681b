"""Starlette's router, with the routes a request can match looked up by its number of segments.

Starlette tries every route in order, one regular expression each, until one matches: with the 54
routes of the Sync API, the probes and the console, a Document update was the twelfth try, and
routing cost about a tenth of a REST request's CPU. A route without a ``path`` parameter matches
only paths with as many ``/`` as its template (every other parameter excludes ``/``), so those are
indexed by that count; routes that can span segments (``{Key:path}``, mounts) are tried for every
request. Candidates keep the table's order, and each is still matched by Starlette's own
``matches``, so the first full match, the 405 of a partial one and everything else are exactly
Starlette's; a request that matches nothing is left to Starlette's router as before (the 404).
"""

from __future__ import annotations

from starlette.routing import BaseRoute, Match, Route, Router
from starlette.types import Receive, Scope, Send


def _slashes(route: BaseRoute) -> int | None:
    """How many ``/`` a path this route matches has, or None if that can vary."""
    if isinstance(route, Route) and ":path}" not in route.path:
        return route.path.count("/")
    return None


class IndexedRouter(Router):
    """A ``Router`` whose HTTP dispatch tries only the routes a path's segment count allows."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._by_slashes: dict[int, list[BaseRoute]] = {}

    def candidates(self, path: str) -> list[BaseRoute]:
        n = path.count("/")
        found = self._by_slashes.get(n)
        if found is None:
            found = [r for r in self.routes if _slashes(r) in (n, None)]
            if len(self._by_slashes) < 64:  # bounded: an odd path costs a scan, never memory
                self._by_slashes[n] = found
        return found

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().app(scope, receive, send)
            return
        if "router" not in scope:
            scope["router"] = self
        partial: tuple[BaseRoute, Scope] | None = None
        for route in self.candidates(scope["path"]):
            match, child_scope = route.matches(scope)
            if match is Match.FULL:
                scope["route"] = route
                scope.update(child_scope)
                await route.handle(scope, receive, send)
                return
            if match is Match.PARTIAL and partial is None:
                partial = (route, child_scope)
        if partial is not None:
            scope["route"] = partial[0]
            scope.update(partial[1])
            await partial[0].handle(scope, receive, send)
            return
        await super().app(scope, receive, send)  # no route: Starlette's own answer (404)
