"""storage/store.py TtlCache.load without Redis: concurrent misses share one fetch, the value is kept
(unless None or an invalidation came meanwhile), a failure reaches every sharer, and a fetch started
before an invalidation is not handed to callers that come after it."""

from __future__ import annotations

import asyncio

import pytest

from storage.store import TtlCache


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
