"""Keyset cursors: a page continues strictly after (or before) the last key it showed, so paging
through a collection while it is written returns every item that existed throughout, once."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

from .errors import InvalidInputError


@dataclass(frozen=True)
class Cursor:
    """Continue after ``value`` (``forward``) or before it (a previous page)."""

    value: str
    forward: bool = True


def encode(cursor: Cursor) -> str:
    raw = json.dumps([cursor.value, 1 if cursor.forward else 0], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(token: str) -> Cursor:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        value, forward = json.loads(raw)
        if not isinstance(value, str) or forward not in (0, 1):
            raise ValueError(token)
    except (ValueError, binascii.Error, TypeError, RecursionError) as exc:  # RecursionError: nested deep
        raise InvalidInputError("page_token", token) from exc
    return Cursor(value, bool(forward))
