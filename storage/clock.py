"""The one clock every layer stamps times with: integer milliseconds since the epoch.

Write scripts get it from the caller (``now`` in their named arguments), so every process and the
scripts agree on one clock per call; reads compare expiries against it.
"""

from __future__ import annotations

import time


def now_ms() -> int:
    """Milliseconds since the epoch (wall clock: expiries and dates are absolute)."""
    return int(time.time() * 1000)
