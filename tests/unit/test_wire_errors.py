"""The one table of Twilio errors (storage/wire/errors.py): codes defined once, both edges' answers."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from storage.errors import (
    AlreadyExistsError,
    InvalidInputError,
    NotFoundError,
    RevisionMismatchError,
    StoreError,
    StoreUnavailableError,
    TooLargeError,
)
from storage.kinds import Kind
from storage.wire import errors

ROOT = Path(__file__).resolve().parents[2]
HOME = ROOT / "storage" / "wire" / "errors.py"


def _specs() -> dict[str, errors.ErrorSpec]:
    return {name: v for name, v in vars(errors).items() if isinstance(v, errors.ErrorSpec)}


def test_every_code_is_defined_once() -> None:
    codes = [spec.code for spec in _specs().values()]
    assert len(codes) == len(set(codes)), "two ErrorSpecs share a code"


def test_no_twilio_error_code_literal_outside_its_home() -> None:
    """Each Twilio error code is written in exactly one module of the product: its home."""
    codes = {spec.code for spec in _specs().values()}
    found = []
    for package in ("app", "realtime", "storage"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path == HOME:
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Constant) and type(node.value) is int and node.value in codes:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value}")
    assert found == []


@pytest.mark.parametrize(
    ("exc", "rest", "cds"),
    [
        (NotFoundError(Kind.DOCUMENT, "d"), (404, 20404), (404, 54100)),
        (NotFoundError(Kind.LIST, "l"), (404, 20404), (404, 54150)),
        (NotFoundError(Kind.MAP, "m"), (404, 20404), (404, 54200)),
        (NotFoundError(Kind.STREAM, "s"), (404, 20404), (404, 54250)),
        (NotFoundError("service", "IS1"), (404, 20404), (404, 54050)),
        (NotFoundError("unique_name", "nosuch"), (404, 20404), (404, 54300)),
        (NotFoundError("list_item", "3"), (404, 54151), (404, 54151)),
        (NotFoundError("map_item", "k"), (404, 54201), (404, 54201)),
        (NotFoundError("permission", "alice"), (404, 54354), (404, 54354)),
        (NotFoundError("object", "x"), (404, 20404), (404, 20404)),
        (AlreadyExistsError("map_item", "k"), (409, 54208), (409, 54208)),
        (AlreadyExistsError(Kind.DOCUMENT, "name"), (409, 54301), (409, 54301)),
        (RevisionMismatchError(Kind.DOCUMENT, "d"), (412, 54103), (412, 54103)),
        (RevisionMismatchError("list_item", "1"), (412, 54155), (412, 54155)),
        (RevisionMismatchError("map_item", "k"), (412, 54205), (412, 54205)),
        (InvalidInputError("page_token", "x"), (400, 54453), (400, 54453)),
        (InvalidInputError("list_item"), (400, 54156), (400, 54156)),
        (InvalidInputError("map_item"), (400, 54206), (400, 54206)),
        (InvalidInputError("data", message="Data must be a JSON object"), (400, 54008), (400, 54008)),
        (InvalidInputError("ttl", "ItemTtl"), (400, 54011), (400, 54011)),
        (InvalidInputError("unique_name", "x"), (400, 54302), (400, 54302)),
        (InvalidInputError("map_key", ""), (400, 54209), (400, 54209)),
        (InvalidInputError("page_size", "0"), (400, 54454), (400, 54454)),
        (InvalidInputError("anything else"), (400, 20001), (400, 20001)),
        (TooLargeError("data", "16384", "Data exceeds 16 KiB"), (413, 54006), (413, 54006)),
        (StoreUnavailableError("redis"), (503, 20503), (503, 20503)),
    ],
)
def test_store_errors_map_to_each_edges_answer(exc: StoreError, rest: tuple[int, int], cds: tuple[int, int]) -> None:
    r = errors.from_store_error(exc, "rest", "/x")
    c = errors.from_store_error(exc, "cds", "/x")
    assert (r.status, r.code) == rest and (c.status, c.code) == cds
    if rest[1] == cds[1]:  # one code, one message: the edges never word one error twice
        assert r.message == c.message


def test_messages_carry_their_details() -> None:
    nf = errors.from_store_error(NotFoundError(Kind.MAP, "m"), "rest", "/Services/IS1/Maps/m")
    assert nf.message == "The requested resource /Services/IS1/Maps/m was not found"
    ttl = errors.from_store_error(InvalidInputError("ttl", "CollectionTtl"), "cds", "")
    assert ttl.message == "Invalid CollectionTtl: must be an integer from 0 to 31536000"
    exists = errors.from_store_error(AlreadyExistsError(Kind.LIST, "todo"), "rest", "")
    assert exists.message == "Unique name already exists: todo"
    big = errors.from_store_error(TooLargeError("data", "16384", "Data exceeds 16 KiB"), "cds", "")
    assert big.message == "Request entity too large: Data exceeds 16 KiB"


def test_an_unmapped_error_is_an_internal_error() -> None:
    class Strange(StoreError):
        pass

    e = errors.from_store_error(Strange("x"), "rest", "/")
    assert (e.status, e.code, e.message) == (500, 20500, "Internal server error")


def test_body_is_twilios_error_shape() -> None:
    e = errors.INVALID_ORDER()
    assert e.body() == {
        "code": 54451,
        "message": "Invalid Order: must be asc or desc",
        "more_info": "https://www.twilio.com/docs/errors/54451",
        "status": 400,
    }
    assert errors.METHOD_NOT_ALLOWED(method="PUT", path="/x").message == "Method PUT not allowed on /x"
    assert errors.INVALID_ACCESS_TOKEN(": no Sync grant", status=403).status == 403
    assert errors.http_error(418, "").code == 20418


def test_data_missing_names_each_target() -> None:
    assert {k: errors.DATA_MISSING[k].code for k in Kind} == {
        Kind.DOCUMENT: 54101,
        Kind.LIST: 54156,
        Kind.MAP: 54206,
        Kind.STREAM: 54251,
    }
