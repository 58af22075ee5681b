"""Twilio's two date formats. REST resources carry whole seconds (``2023-11-07T11:57:43Z``, as
Twilio's REST API does); SDK payloads and webhooks carry milliseconds (``2023-11-07T11:57:43.715Z``)."""

from __future__ import annotations

import functools
import time


@functools.lru_cache(maxsize=4096)
def _second(s: int) -> str:
    """``YYYY-MM-DDTHH:MM:SS`` of one second since the epoch, formatted once: every answer carries
    dates, mostly of the last few seconds (``date_updated``) or of a few objects' creation, and
    ``strftime`` costs about a microsecond a time, a cache hit a tenth of that."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s))


def iso_seconds(ms: int | None) -> str | None:
    """A REST date from milliseconds since the epoch (None stays None)."""
    if ms is None:
        return None
    return _second(ms // 1000) + "Z"


def iso_millis(ms: int | None) -> str | None:
    """An SDK/webhook date from milliseconds since the epoch (None stays None)."""
    if ms is None:
        return None
    return f"{_second(ms // 1000)}.{ms % 1000:03d}Z"
