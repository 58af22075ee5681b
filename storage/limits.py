"""Sync's limits and the checks that enforce them, shared by every edge (REST and the SDK's CDS API).

Each check raises a domain error whose ``kind`` names the rule; storage/wire/errors.py maps
(error, kind) to each edge's status, Twilio code and message.
"""

from __future__ import annotations

from typing import Any

from . import ids
from .errors import InvalidInputError, TooLargeError
from .wire import jsontext

MAX_DATA = 16 * 1024  # Document, List item, Map item data (compact UTF-8 JSON)
MAX_MESSAGE = 4 * 1024  # Stream message data
MAX_NAME = 320  # unique names and Map item keys
MAX_TTL = 31_536_000  # one year, in seconds; 0 = never expires
MAX_PAGE = 1000  # page size
MAX_DEPTH = 100  # nesting of objects and arrays in data: far below Python's recursion limit
MAX_INDEX = 2**63 - 1  # a List item index is a Valkey integer
MIN_DEBOUNCING_WINDOW_MS = 1_000  # a Service's ReachabilityDebouncingWindow (Twilio's range)
MAX_DEBOUNCING_WINDOW_MS = 30_000


def compact_data(value: Any, limit: int = MAX_DATA) -> str:
    """Sync data is a JSON object of at most ``limit`` bytes: returns its compact JSON text."""
    if not isinstance(value, dict):
        raise InvalidInputError("data", message="Data must be a JSON object")
    if depth(value) > MAX_DEPTH:  # deeper data would fail to parse or render at some stack depth
        raise InvalidInputError("data", message=f"Data is nested more than {MAX_DEPTH} deep")
    try:
        text = jsontext.strict_text(value)
        size = len(text.encode())
    except ValueError:  # NaN or Infinity, or a lone surrogate (UnicodeEncodeError): not JSON text
        raise InvalidInputError("data", message="Data must be valid JSON") from None
    if size > limit:
        raise TooLargeError("data", str(limit), f"Data exceeds {limit // 1024} KiB")
    return text


def depth(value: Any) -> int:
    """How deep objects and arrays nest in ``value`` (0 for a scalar), without recursing."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, level = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is None:
            continue
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in children)
    return deepest


def is_count(raw: object) -> bool:
    """Text that int() reads as a non-negative count of sane size: ASCII digits only (str.isdigit()
    also accepts "²", which int() refuses) and at most 18 of them (int() refuses more than 4,300
    digits with a ValueError, and no count Sync knows is near 10^18)."""
    text = str(raw)
    return text.isascii() and text.isdigit() and len(text) <= 18


def check_index(raw: str) -> str:
    """A List item index: ASCII digits naming at most MAX_INDEX, as its canonical decimal text
    (checked before int(), which refuses more than 4,300 digits)."""
    text = raw.lstrip("0") or "0"
    if not (raw.isascii() and raw.isdigit()) or len(text) > len(str(MAX_INDEX)) or int(text) > MAX_INDEX:
        raise InvalidInputError("list_index", raw)
    return text


def check_ttl(value: int, name: str = "Ttl") -> int:
    """0 (never expires) to one year; ``name`` is the parameter, for the error message."""
    if not 0 <= value <= MAX_TTL:
        raise InvalidInputError("ttl", name)
    return value


def check_unique_name(value: str) -> str:
    """1 to 320 characters, and never SID-shaped (a SID in a path must mean the SID)."""
    if not value or len(value) > MAX_NAME or ids.is_sid(value):
        raise InvalidInputError("unique_name", value)
    return value


def check_key(value: str) -> str:
    if not value or len(value) > MAX_NAME:
        raise InvalidInputError("map_key", value)
    return value


def check_page_size(value: int) -> int:
    if not 1 <= value <= MAX_PAGE:
        raise InvalidInputError("page_size", str(value))
    return value
