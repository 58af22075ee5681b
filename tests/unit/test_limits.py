"""storage/limits.py: Sync's limits, checked the same way for REST and the SDK's CDS API."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, strategies as st

from storage import limits
from storage.errors import InvalidInputError, TooLargeError

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(st.dictionaries(st.text(), JSON, max_size=6))
def test_any_small_object_compacts_to_json_that_reads_back_as_itself(value: dict[str, Any]) -> None:
    text = limits.compact_data(value, limit=1 << 20)
    assert json.loads(text) == value
    assert text == json.dumps(value, separators=(",", ":"), ensure_ascii=False)


@pytest.mark.parametrize("value", [[], "x", 1, None, [{"a": 1}]])
def test_data_that_is_not_an_object_is_invalid(value: Any) -> None:
    with pytest.raises(InvalidInputError) as err:
        limits.compact_data(value)
    assert err.value.kind == "data"


@pytest.mark.parametrize("number", [float("nan"), float("inf"), float("-inf")])
def test_nan_and_infinity_are_not_json(number: float) -> None:
    with pytest.raises(InvalidInputError):
        limits.compact_data({"a": number})


def test_data_size_is_counted_in_utf8_bytes_of_the_compact_form() -> None:
    overhead = len('{"k":""}')
    exact = {"k": "x" * (limits.MAX_DATA - overhead)}
    assert len(limits.compact_data(exact).encode()) == limits.MAX_DATA
    with pytest.raises(TooLargeError):
        limits.compact_data({"k": "x" * (limits.MAX_DATA - overhead + 1)})
    with pytest.raises(TooLargeError):  # "é" is two bytes
        limits.compact_data({"k": "é" * ((limits.MAX_DATA - overhead) // 2 + 1)})
    assert limits.compact_data({"k": "x" * 100}, limit=len('{"k":""}') + 100)
    with pytest.raises(TooLargeError):
        limits.compact_data({"k": "x" * 101}, limit=len('{"k":""}') + 100)


@pytest.mark.parametrize("value", [0, 1, limits.MAX_TTL])
def test_ttl_from_zero_to_a_year_is_accepted(value: int) -> None:
    assert limits.check_ttl(value) == value


@pytest.mark.parametrize("value", [-1, limits.MAX_TTL + 1])
def test_ttl_outside_zero_to_a_year_is_invalid(value: int) -> None:
    with pytest.raises(InvalidInputError) as err:
        limits.check_ttl(value)
    assert err.value.kind == "ttl"


@pytest.mark.parametrize("value", ["a", "x" * limits.MAX_NAME, "ET" + "a" * 31, "et" + "a" * 32, "Zoë ✓"])
def test_unique_names_of_1_to_320_characters_not_shaped_like_a_sid_are_accepted(value: str) -> None:
    assert limits.check_unique_name(value) == value


@pytest.mark.parametrize("value", ["", "x" * (limits.MAX_NAME + 1), "ET" + "a" * 32, "MP" + "0F" * 16])
def test_empty_long_or_sid_shaped_unique_names_are_invalid(value: str) -> None:
    with pytest.raises(InvalidInputError) as err:
        limits.check_unique_name(value)
    assert err.value.kind == "unique_name"


def test_map_keys_are_1_to_320_characters_of_anything() -> None:
    for ok in ("k", "ET" + "a" * 32, "/ ?#%", "x" * limits.MAX_NAME):
        assert limits.check_key(ok) == ok
    for bad in ("", "x" * (limits.MAX_NAME + 1)):
        with pytest.raises(InvalidInputError) as err:
            limits.check_key(bad)
        assert err.value.kind == "map_key"


def test_page_size_is_1_to_1000() -> None:
    assert limits.check_page_size(1) == 1 and limits.check_page_size(limits.MAX_PAGE) == limits.MAX_PAGE
    for bad in (0, -1, limits.MAX_PAGE + 1):
        with pytest.raises(InvalidInputError) as err:
            limits.check_page_size(bad)
        assert err.value.kind == "page_size"


def test_data_nests_at_most_max_depth_deep() -> None:
    assert limits.depth(1) == 0 and limits.depth({}) == 1 and limits.depth({"a": [1, {"b": []}]}) == 4
    ok: dict[str, Any] = {"a": [[]] * 3}
    for _ in range(limits.MAX_DEPTH - 3):
        ok = {"a": ok}
    assert limits.depth(ok) == limits.MAX_DEPTH and limits.compact_data(ok)
    with pytest.raises(InvalidInputError) as err:
        limits.compact_data({"a": ok})
    assert err.value.kind == "data"
    deep: Any = []
    for _ in range(100_000):
        deep = [deep]
    assert limits.depth(deep) == 100_001  # measured without recursing, however deep


def test_data_with_a_lone_surrogate_is_invalid() -> None:
    with pytest.raises(InvalidInputError) as err:
        limits.compact_data({"a": "\ud800"})
    assert err.value.kind == "data"


@pytest.mark.parametrize("raw", ["1" * 5000, str(limits.MAX_INDEX + 1), "", "-1", "²"])
def test_list_index_beyond_max_index_or_not_digits_is_invalid(raw: str) -> None:
    with pytest.raises(InvalidInputError) as err:
        limits.check_index(raw)
    assert err.value.kind == "list_index"
