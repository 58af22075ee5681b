"""The seam between the product and redis-py: helpers for the replies it gives.

The client is always created with ``decode_responses=False`` (values are msgpack and JSON, decoded
where they are read), so replies are bytes.
"""

from __future__ import annotations


def text(value: bytes | str | int) -> str:
    """Decode a Redis bytes reply (or pass a str or number through as a str)."""
    if isinstance(value, bytes):
        return value.decode()
    return str(value)
