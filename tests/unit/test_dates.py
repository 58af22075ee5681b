"""storage/wire/dates.py: Twilio's two date formats, formatted from a cache of whole seconds."""

from __future__ import annotations

import random
from datetime import UTC, datetime

from storage.wire.dates import iso_millis, iso_seconds


def test_dates_are_twilios_formats_in_utc() -> None:
    assert iso_seconds(1_699_358_263_715) == "2023-11-07T11:57:43Z"
    assert iso_millis(1_699_358_263_715) == "2023-11-07T11:57:43.715Z"
    assert iso_millis(5) == "1970-01-01T00:00:00.005Z"
    assert iso_seconds(None) is None and iso_millis(None) is None


def test_the_cache_of_seconds_answers_as_formatting_each_one_would() -> None:
    """More distinct seconds than the cache holds, each asked for twice (a hit and, later, a miss)."""
    rng = random.Random(7)
    stamps = [rng.randrange(0, 4_102_444_800_000) for _ in range(6000)]
    for ms in stamps + stamps:
        at = datetime.fromtimestamp(ms // 1000, UTC)
        assert iso_seconds(ms) == at.strftime("%Y-%m-%dT%H:%M:%SZ")
        assert iso_millis(ms) == at.strftime("%Y-%m-%dT%H:%M:%S") + f".{ms % 1000:03d}Z"
