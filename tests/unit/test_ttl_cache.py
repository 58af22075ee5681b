"""storage/cache.py TtlCache.load without Redis: concurrent misses share one fetch, the value is kept
(unless None or an invalidation came meanwhile), a failure reaches every sharer, a fetch started
before an invalidation is not handed to callers that come after it, and a hit past the refresh point
answers at once while one fetch re-reads the key in the background."""

from __future__ import annotations

import asyncio

import pytest

from storage.cache import TtlCache


async def test_concurrent_misses_share_one_fetch_and_the_value_is_kept() -> None:
    cache, calls = TtlCache(60), []

    async def fetch() -> str:
        calls.append(1)
        await asyncio.sleep(0.01)
        return "v"

    got = await asyncio.gather(*(cache.load("k", fetch) for _ in range(50)))
    assert got == ["v"] * 50 and len(calls) == 1
    assert cache.get("k") == "v" and await cache.load("k", fetch) == "v" and len(calls) == 1


async def test_a_failed_fetch_fails_every_sharer_and_the_next_miss_fetches_again() -> None:
    cache, calls = TtlCache(60), []

    async def broken() -> str:
        calls.append(1)
        await asyncio.sleep(0.01)
        raise ConnectionError("redis down")

    results = await asyncio.gather(*(cache.load("k", broken) for _ in range(5)), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results) and len(calls) == 1
    assert cache.get("k") is None

    async def fine() -> str:
        return "v"

    assert await cache.load("k", fine) == "v"


async def test_none_is_not_kept_and_one_caller_cancelled_does_not_cancel_the_others() -> None:
    cache = TtlCache(60)

    async def nothing() -> None:
        return None

    assert await cache.load("k", nothing) is None and cache.get("k") is None
    gate = asyncio.Event()

    async def slow() -> str:
        await gate.wait()
        return "v"

    first = asyncio.ensure_future(cache.load("k", slow))
    second = asyncio.ensure_future(cache.load("k", slow))
    await asyncio.sleep(0)
    first.cancel()
    gate.set()
    assert await second == "v"
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_a_fetch_started_before_an_invalidation_is_neither_shared_after_it_nor_kept() -> None:
    cache, answers = TtlCache(60), iter(["old", "new"])
    gates = [asyncio.Event(), asyncio.Event()]

    async def fetch() -> str:
        value = next(answers)
        await gates[0 if value == "old" else 1].wait()
        return value

    early = asyncio.ensure_future(cache.load("k", fetch))
    await asyncio.sleep(0)
    cache.drop("k")  # an invalidation: what "early" reads may predate the change
    late = asyncio.ensure_future(cache.load("k", fetch))
    await asyncio.sleep(0)
    gates[0].set()
    assert await early == "old"
    assert cache.get("k") is None  # not kept
    gates[1].set()
    assert await late == "new" and cache.get("k") == "new"


async def settle() -> None:
    """Let a background fetch run and its done callback fire (a few loop turns)."""
    for _ in range(3):
        await asyncio.sleep(0)


class Clock:
    """A hand-turned clock for the cache (the event loop keeps its own)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_hit_past_the_refresh_point_answers_at_once_and_one_fetch_replaces_it() -> None:
    clock, calls, gate = Clock(), [], asyncio.Event()
    cache = TtlCache(10, clock=clock)
    answers = iter(["v1", "v2"])

    async def fetch() -> str:
        calls.append(1)
        if len(calls) > 1:
            await gate.wait()
        return next(answers)

    assert await cache.load("k", fetch) == "v1" and len(calls) == 1
    clock.now += 4.9  # before the refresh point (half the TTL): no fetch
    assert await cache.load("k", fetch) == "v1" and len(calls) == 1
    clock.now += 0.2  # past it: the cached value at once, one re-read started for any number of hits
    got = await asyncio.wait_for(asyncio.gather(*(cache.load("k", fetch) for _ in range(20))), 1)
    await asyncio.sleep(0)
    assert got == ["v1"] * 20 and len(calls) == 2
    gate.set()
    await settle()
    assert cache.get("k") == "v2" and await cache.load("k", fetch) == "v2" and len(calls) == 2
    clock.now += 4.9  # the re-read's value is trusted for a whole TTL from when it came
    assert await cache.load("k", fetch) == "v2" and len(calls) == 2


async def test_a_refresh_that_finds_nothing_forgets_the_entry_and_a_failing_one_leaves_it_to_its_ttl() -> None:
    clock = Clock()
    cache = TtlCache(10, clock=clock)

    async def value() -> str:
        return "v"

    async def gone() -> None:
        return None

    async def broken() -> str:
        raise ConnectionError("redis down")

    await cache.load("k", value)
    clock.now += 6
    assert await cache.load("k", broken) == "v"  # the failure reaches nobody: the entry still answers
    await settle()
    assert cache.get("k") == "v"
    clock.now += 3.9
    assert await cache.load("k", gone) == "v"  # served once more, then the re-read says it is gone
    await settle()
    assert cache.get("k") is None and await cache.load("k", gone) is None
    await cache.load("k", value)
    clock.now += 10.1  # past the TTL: a caller waits for the fetch, as on a miss
    assert await cache.load("k", gone) is None and cache.get("k") is None


async def test_a_refresh_that_an_invalidation_overtakes_keeps_nothing() -> None:
    clock, gate = Clock(), asyncio.Event()
    cache = TtlCache(10, clock=clock)
    answers = iter(["old", "stale read", "new"])

    async def fetch() -> str:
        value = next(answers)
        if value == "stale read":
            await gate.wait()
        return value

    await cache.load("k", fetch)
    clock.now += 6
    assert await cache.load("k", fetch) == "old"  # starts the re-read ("stale read")
    await asyncio.sleep(0)
    cache.drop("k")  # an invalidation while it is in flight
    assert await cache.load("k", fetch) == "new"
    gate.set()
    await settle()
    assert cache.get("k") == "new"


async def test_fresh_answers_only_from_the_cache_and_starts_the_re_read_past_the_refresh_point() -> None:
    clock, calls = Clock(), []
    cache = TtlCache(10, clock=clock)

    async def fetch() -> str:
        calls.append(1)
        return f"v{len(calls)}"

    assert cache.fresh("k", fetch) is None and calls == []  # a miss reads nothing here (load does)
    await cache.load("k", fetch)
    clock.now += 4
    assert cache.fresh("k", fetch) == "v1" and len(calls) == 1
    clock.now += 2
    assert cache.fresh("k", fetch) == "v1" and cache.fresh("k", fetch) == "v1"
    await settle()
    assert len(calls) == 2 and cache.fresh("k", fetch) == "v2"
    clock.now += 10.1
    assert cache.fresh("k", fetch) is None and len(calls) == 2  # expired: nothing without a wait
