"""storage/paging.py: keyset page tokens round-trip, and anything else is an InvalidInputError."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, strategies as st

from storage import paging
from storage.errors import InvalidInputError


@given(st.text(), st.booleans())
def test_any_cursor_round_trips(value: str, forward: bool) -> None:
    cursor = paging.Cursor(value, forward)
    token = paging.encode(cursor)
    assert paging.decode(token) == cursor
    assert "=" not in token and token.isascii()  # safe in a query string without quoting


@given(st.text())
def test_any_text_decodes_or_is_an_invalid_page_token(token: str) -> None:
    try:
        paging.decode(token)
    except InvalidInputError as exc:
        assert exc.kind == "page_token" and exc.ident == token


def _token(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "token",
    ["%%%", "not base64!", _token(["a", 2]), _token([1, 1]), _token(["a"]), _token({"a": 1}), _token("ab"), "", "AA"],
)
def test_malformed_tokens_are_invalid_page_tokens(token: str) -> None:
    with pytest.raises(InvalidInputError) as err:
        paging.decode(token)
    assert err.value.kind == "page_token"


def test_a_token_is_a_json_pair_of_value_and_direction() -> None:
    assert paging.decode(_token(["k", 0])) == paging.Cursor("k", forward=False)
    assert paging.decode(_token(["k", 1])) == paging.Cursor("k", forward=True)


def test_deeply_nested_token_is_an_invalid_page_token() -> None:
    with pytest.raises(InvalidInputError):
        paging.decode(base64.urlsafe_b64encode(b"[" * 100_000).decode())
