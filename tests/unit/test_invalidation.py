"""storage/invalidation.py: messages reach every listener; one failing listener stops none."""

from __future__ import annotations

from storage.invalidation import EVERYTHING, Invalidations, store_cache_listener
from storage.store import TtlCache


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
