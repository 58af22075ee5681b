"""storage/wire/jsontext.py: orjson on the hot edges, read and written exactly as the standard library
would (fuzzed with hypothesis against ``json`` itself), including where orjson alone would differ."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, strategies as st

from storage.wire import jsontext


def _values(finite: bool) -> st.SearchStrategy[Any]:
    """Every JSON value: integers of any size (beyond 64 bits too), floats of every magnitude
    (with the infinities Python's json writes, unless ``finite``: ``dumps`` writes them as null)."""
    return st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.integers(min_value=-(10**40), max_value=10**40)
        # NaN is not equal to itself; it has its own tests below
        | st.floats(allow_nan=False, allow_infinity=not finite)
        | st.text(),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
        max_leaves=16,
    )


def _same(a: Any, b: Any) -> bool:
    """Equal, and of the same types all the way down (1 == 1.0 == True, but not for JSON)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b)


def _outcome(read: Any, data: bytes | str) -> tuple[str, Any]:
    try:
        return "value", read(data)
    except (ValueError, RecursionError) as exc:
        return "error", type(exc)


@given(_values(finite=False))
def test_loads_reads_what_json_writes_as_json_reads_it(value: Any) -> None:
    for text in (json.dumps(value), json.dumps(value, ensure_ascii=False), json.dumps(value, indent=1)):
        for data in (text, text.encode("utf-8", "surrogatepass")):
            assert _same(jsontext.loads(data), json.loads(data))


@given(st.binary(max_size=64) | st.text(max_size=64).map(str.encode))
def test_loads_reads_any_bytes_as_json_does(data: bytes) -> None:
    ours, theirs = _outcome(jsontext.loads, data), _outcome(json.loads, data)
    assert ours[0] == theirs[0]
    assert ours[0] == "error" or _same(ours[1], theirs[1])


@pytest.mark.parametrize(
    "text",
    [
        "123456789012345678901234567890",  # beyond 64 bits: orjson alone reads a float
        "-18446744073709551617",
        '{"exp":100000000000000000000}',
        "NaN",
        "[Infinity,-Infinity]",  # orjson alone refuses these; the standard library reads them
        '"\\ud800"',  # a lone surrogate
        "1e400",
        '{"a":1,"a":2}',  # the last duplicate wins in both
    ],
)
def test_loads_where_orjson_alone_differs(text: str) -> None:
    for data in (text, text.encode()):
        assert _same(jsontext.loads(data), json.loads(data))


def test_loads_refuses_what_json_refuses() -> None:
    for bad in (b"", b"{", b"[1,]", b"{'a':1}", b"\xff\xfe", b"1 2", "\ufeff[1]", "[1]\x00"):
        with pytest.raises(ValueError):
            jsontext.loads(bad)
    for depth in (1_000, 1_020, 100_000):  # orjson alone reads up to 1,024 levels
        for deep in ("[" * depth + "]" * depth, '{"a":' * depth + "1" + "}" * depth):
            with pytest.raises(RecursionError):
                jsontext.loads(deep)
            with pytest.raises(RecursionError):
                jsontext.loads(deep.encode())


def _floats(value: Any) -> bool:
    if isinstance(value, dict):
        return any(_floats(v) for v in value.values())
    if isinstance(value, list):
        return any(_floats(v) for v in value)
    return isinstance(value, float)


@given(_values(finite=True))
def test_dumps_is_compact_json_of_the_same_value(value: Any) -> None:
    data = jsontext.dumps(value)
    assert _same(json.loads(data), value)
    if not _floats(value):  # a float may be spelt differently (1e-7 for 1e-07): the same number
        assert data == json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass")


def test_dumps_what_orjson_alone_cannot_write() -> None:
    big = b'{"n":1000000000000000000000000000000,"1":[18446744073709551616]}'
    assert jsontext.dumps({"n": 10**30, 1: [2**64]}) == big
    assert jsontext.dumps({"a": "é\n\x01\u2028"}) == '{"a":"é\\n\\u0001\u2028"}'.encode()
    # the standard library's NaN and Infinity are not JSON
    assert jsontext.dumps([float("nan"), float("inf"), -float("inf")]) == b"[null,null,null]"
    with pytest.raises(TypeError):
        jsontext.dumps({"a": object()})
