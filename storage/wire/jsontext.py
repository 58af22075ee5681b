"""Compact JSON text (no spaces, UTF-8 as is), the one way the server reads and writes JSON on the hot
edges: REST answers, twilsock frames (every WebSocket connect decodes five and encodes six), access
tokens, and the Sync data it stores.

``dumps`` and ``loads`` go through orjson, a tenth of the standard library's cost on a twilsock
header (0.3 against 4.8 µs to encode one here, 0.9 against 3.1 µs to decode an ``init``), and fall
back to the standard library wherever the two would differ: orjson reads an integer beyond 64 bits as
a float, refuses ``NaN``, lone surrogates and encodings other than UTF-8, and writes neither integers
beyond 64 bits nor keys that are not strings. So every value reads and writes as it did, except that
a float may be spelt differently (``1e-7``, not ``1e-07``: the same number) and a ``NaN`` or an
infinity handed to ``dumps`` becomes ``null`` (the standard library's ``NaN`` is not JSON; Sync data
never holds one, see ``strict_text``).
What is stored as Sync data keeps the standard library's spelling (``strict_text``)."""

from __future__ import annotations

import json
from typing import Any

import orjson

_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_STRICT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
# 19 digits in a row: possibly an integer orjson would read as a float (beyond 64 bits), found by
# mapping every digit to "9" and looking for 19 of them (a regular expression took 8 µs on a 600-byte
# header, twice orjson's read; this takes well under one); in a string or a float's digits it only
# costs the standard library's slower read
_DIGITS_AS_NINES = bytes.maketrans(b"0123456789", b"9999999999")
_LONG_DIGITS = b"9" * 19
# Fewer brackets than this (in strings too): nested less deep than json.loads reads from any stack
# this server has. Deeper text goes to json.loads, whose RecursionError callers rely on (orjson reads
# 1,024 levels, json.loads about 1,000 less the caller's stack: a value the rest of the code, written
# for what json.loads lets through, could not walk)
_FEW_BRACKETS = 500


def dumps(value: Any) -> bytes:
    """``value`` as compact JSON bytes."""
    try:
        return orjson.dumps(value)
    except TypeError:  # orjson.JSONEncodeError: a big integer, a non-string key, an unknown type
        return _COMPACT.encode(value).encode()


def loads(data: bytes | str) -> Any:
    """JSON text or UTF-8 bytes as a value, exactly as ``json.loads`` reads them (and raising what
    it raises: ValueError, or RecursionError for nesting too deep)."""
    raw = data if isinstance(data, bytes) else data.encode("utf-8", "surrogatepass")
    if raw.count(b"[") + raw.count(b"{") < _FEW_BRACKETS and raw.translate(_DIGITS_AS_NINES).find(_LONG_DIGITS) < 0:
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass  # not JSON, or what only the standard library reads (NaN, a lone surrogate …)
    return json.loads(data)


def strict_text(value: Any) -> str:
    """``value`` as compact JSON text, refusing what is not JSON (NaN, Infinity: ValueError)."""
    return _STRICT.encode(value)
