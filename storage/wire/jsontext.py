"""Compact JSON text (no spaces, UTF-8 as is), the one way the server writes JSON on every edge: REST
answers, twilsock frames, and the Sync data it stores. Each encoder is made once here: ``json.dumps``
with options builds a new one on every call, a measurable cost on a path taken once per request
and once per frame."""

from __future__ import annotations

import json
from typing import Any

_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_STRICT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def dumps(value: Any) -> bytes:
    """``value`` as compact JSON bytes."""
    return _COMPACT.encode(value).encode()


def strict_text(value: Any) -> str:
    """``value`` as compact JSON text, refusing what is not JSON (NaN, Infinity: ValueError)."""
    return _STRICT.encode(value)
