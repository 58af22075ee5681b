"""Twilio's two date formats. REST resources carry whole seconds (``2023-11-07T11:57:43Z``, as
Twilio's REST API does); SDK payloads and webhooks carry milliseconds (``2023-11-07T11:57:43.715Z``)."""

from __future__ import annotations

import time


def iso_seconds(ms: int | None) -> str | None:
    """A REST date from milliseconds since the epoch (None stays None)."""
    if ms is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms // 1000))


def iso_millis(ms: int | None) -> str | None:
    """An SDK/webhook date from milliseconds since the epoch (None stays None)."""
    if ms is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"
