"""A small per-process cache of what Redis says, with refresh-ahead: busy keys never make a caller wait.

Used only where a stale entry is caught by the write scripts (tombstones, existence checks) or
bounded by an invalidation (storage/invalidation.py) and the TTL, so it saves round trips, never
correctness: a Service's record, an API key, checked credentials, an object's SID by unique name,
the store id.

Refresh-ahead: an entry is trusted for ``ttl_s``; once it is older than ``REFRESH_AFTER`` of that,
the next ``load`` still answers from it at once and starts one fetch in the background, whose value
replaces it. A key in steady use is thus re-read about every ``ttl_s / 2`` and no request ever waits
for it, where a plain TTL makes one request in every ``ttl_s`` of each key pay a Redis round trip
(at 20 writes/s with a 2 s Service cache and 5 s credentials, 3 % of writes: their p99, README
"Benchmarks"). Staleness stays bounded by ``ttl_s`` as before; a key nobody asks for still expires.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

REFRESH_AFTER = 0.5  # of the TTL: an entry older than this is served and re-read in the background


class TtlCache:
    """Values by key for ``ttl_s`` seconds, at most ``max_entries`` of them (past that it starts over)."""

    def __init__(self, ttl_s: float, max_entries: int = 100_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self._clock = clock  # a test's hand-turned clock
        self.max_entries = max_entries
        self._data: dict[Any, tuple[Any, float, float]] = {}  # key -> (value, expires, refresh at)
        # bumped by every drop and clear (an invalidation): a value read from Redis before one may
        # predate the change it announces, so ``put(since=)`` does not keep it
        self.generation = 0
        self._loading: dict[Any, tuple[asyncio.Future[Any], int]] = {}  # ``load``: fetches in flight

    def get(self, key: Any) -> Any:
        hit = self._data.get(key)
        if hit is None or hit[1] < self._clock():
            return None
        return hit[0]

    def put(self, key: Any, value: Any, since: int | None = None) -> None:
        """Keep ``value``; ``since``: the ``generation`` read before fetching it (nothing is kept if
        an entry was forgotten meanwhile: the fetch may have raced the write that invalidated it)."""
        if since is not None and since != self.generation:
            return
        if len(self._data) >= self.max_entries:
            self._data.clear()
        now = self._clock()
        self._data[key] = (value, now + self.ttl_s, now + self.ttl_s * REFRESH_AFTER)

    def fresh(self, key: Any, fetch: Callable[[], Awaitable[Any]]) -> Any:
        """The value kept for ``key`` if still trusted, else None, without waiting: past the refresh
        point ``fetch()`` re-reads it in the background (module docstring). For callers that answer
        from the cache without a task (a crowd's WebSocket connects, realtime/tokens.py)."""
        hit = self._data.get(key)
        if hit is None:
            return None
        now = self._clock()
        if hit[1] < now:
            return None
        if hit[2] <= now:
            self._fetching(key, fetch)
        return hit[0]

    async def load(self, key: Any, fetch: Callable[[], Awaitable[Any]]) -> Any:
        """``fresh``, or else ``fetch()``'s value (kept unless None or an invalidation came
        meanwhile). Concurrent misses of one key share one fetch: a crowd of clients connecting at
        once (a restart) reads a key or a Service once, not once each, and so does not open a Redis
        connection each. A fetch started before an invalidation is not shared with callers that
        come after it; a failed fetch fails every caller that shared it."""
        hit = self.fresh(key, fetch)
        if hit is not None:
            return hit
        return await asyncio.shield(self._fetching(key, fetch))  # one caller cancelled does not cancel the others'

    def _fetching(self, key: Any, fetch: Callable[[], Awaitable[Any]]) -> asyncio.Future[Any]:
        """The fetch of ``key`` in flight since the last invalidation, or a new one. Its value is
        kept; a None (gone) forgets the entry a refresh was started from; a failure leaves it to
        its TTL (and is retrieved here, so a refresh nobody awaits logs no "never retrieved")."""
        loading = self._loading.get(key)
        if loading is not None and loading[1] == self.generation:
            return loading[0]
        since = self.generation
        task = asyncio.ensure_future(fetch())
        self._loading[key] = (task, since)

        def done(t: asyncio.Future[Any]) -> None:
            if self._loading.get(key, (None, 0))[0] is t:
                del self._loading[key]
            if t.cancelled() or t.exception() is not None:
                return
            if t.result() is not None:
                self.put(key, t.result(), since)
            elif since == self.generation:
                self._data.pop(key, None)

        task.add_done_callback(done)
        return task

    def drop(self, key: Any) -> None:
        self.generation += 1
        self._data.pop(key, None)

    def clear(self) -> None:
        self.generation += 1
        self._data.clear()
