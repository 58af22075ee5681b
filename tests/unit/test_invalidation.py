"""storage/invalidation.py: messages reach every listener; one failing listener stops none."""

from __future__ import annotations

from storage.cache import TtlCache
from storage.invalidation import EVERYTHING, Invalidations, store_cache_listener


def test_messages_reach_every_listener_even_after_one_fails() -> None:
    inv = Invalidations()
    heard: list[tuple[str, tuple[str, ...]]] = []

    def broken(kind: str, ids: tuple[str, ...]) -> None:
        raise RuntimeError("boom")

    inv.listen(broken)
    inv.listen(lambda kind, ids: heard.append((kind, ids)))
    inv.apply(b"service AC1 IS2")
    inv.reset()
    assert heard == [("service", ("AC1", "IS2")), (EVERYTHING, ())]


def test_the_store_cache_forgets_keys_and_services_and_everything_on_reset() -> None:
    cache = TtlCache(60)
    inv = Invalidations()
    inv.listen(store_cache_listener(cache))
    cache.put(("api-key", "SK1"), "k1")
    cache.put(("api-key", "SK2"), "k2")
    cache.put(("service", "AC1", "IS1"), True)
    inv.apply("key SK1")
    inv.apply("service AC1 IS1")
    assert cache.get(("api-key", "SK1")) is None and cache.get(("service", "AC1", "IS1")) is None
    assert cache.get(("api-key", "SK2")) == "k2"
    inv.apply("account AC9")  # not the store cache's
    assert cache.get(("api-key", "SK2")) == "k2"
    inv.reset()
    assert cache.get(("api-key", "SK2")) is None


def test_a_value_read_while_an_entry_was_forgotten_is_not_kept() -> None:
    """A read that began before an invalidation may have fetched what it invalidated."""
    cache = TtlCache(60)
    since = cache.generation
    cache.drop(("service", "AC1", "IS1"))  # the message arrives while the read is in flight
    cache.put(("service", "AC1", "IS1"), "stale", since)
    assert cache.get(("service", "AC1", "IS1")) is None
    since = cache.generation
    cache.put(("service", "AC1", "IS1"), "fresh", since)
    assert cache.get(("service", "AC1", "IS1")) == "fresh"
    since = cache.generation
    cache.clear()  # a reconnect's reset counts too
    cache.put(("api-key", "SK1"), "stale", since)
    assert cache.get(("api-key", "SK1")) is None
