"""app/main.py ``settle_heap``: a crowd of long-lived objects (what thousands of WebSockets make
when they connect at once) runs no full collection, each of which would pause every subscriber."""

from __future__ import annotations

import gc
from typing import Any

from app.main import GC_THRESHOLDS, settle_heap


def test_a_connect_storm_worth_of_long_lived_objects_runs_no_full_collection() -> None:
    before = gc.get_threshold()
    full: list[int] = []

    def count(phase: str, info: dict[str, Any]) -> None:
        if phase == "start" and info["generation"] == 2:
            full.append(1)

    try:
        settle_heap()
        assert gc.get_threshold() == GC_THRESHOLDS
        gc.callbacks.append(count)
        kept = [[i] for i in range(200_000)]  # ~26 tracked objects per connection: 7,500 connections
        assert len(kept) == 200_000
        assert full == []
        assert gc.get_count()[0] < GC_THRESHOLDS[0] + 1  # the young generation still collected as usual
    finally:
        gc.callbacks.remove(count)
        gc.set_threshold(*before)
        gc.unfreeze()
