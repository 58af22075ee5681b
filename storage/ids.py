"""SID minting and recognition. A SID is a two-letter prefix plus 32 lowercase hex digits."""

from __future__ import annotations

import re
import secrets

ACCOUNT = "AC"
API_KEY = "SK"
SERVICE = "IS"
DOCUMENT = "ET"
LIST = "ES"
MAP = "MP"
STREAM = "TO"
STREAM_MESSAGE = "TZ"

_SID_SHAPE = re.compile(r"^[A-Z]{2}[0-9a-fA-F]{32}$")


def new_sid(prefix: str) -> str:
    """A fresh random SID with the given prefix."""
    return prefix + secrets.token_hex(16)


def is_sid(value: str, prefix: str | None = None) -> bool:
    """True when ``value`` has the shape of a SID (of ``prefix``, if given)."""
    if not _SID_SHAPE.match(value):
        return False
    return prefix is None or value.startswith(prefix)
