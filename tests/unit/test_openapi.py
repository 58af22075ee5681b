"""app/openapi.py: the shipped Sync v1 document lists exactly the route table's operations."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from starlette.requests import Request

from app import openapi, routes

SHARED_SPEC = Path(__file__).resolve().parents[3] / "shared" / "spec" / "twilio_sync_v1.openapi.json"


def _ops(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(p, m) for p, item in doc["paths"].items() for m in item if m in openapi.METHODS}


def test_the_shipped_document_lists_exactly_the_implemented_operations() -> None:
    implemented = openapi.operations(routes.build()) - openapi.extension_operations()
    assert len(implemented) == 48
    assert _ops(openapi.shipped()) == implemented
    assert _ops(openapi.document()) == openapi.operations(routes.build())
    assert ("/v1/Services/{ServiceSid}/Maps/{MapSid}/Items/{Key}", "get") in implemented
    if SHARED_SPEC.exists():  # Twilio's own file next to the repository (development): the cut matches
        assert openapi.subset(json.loads(SHARED_SPEC.read_text()), implemented) == openapi.shipped()


def test_every_reference_resolves_and_no_twilio_server_is_left() -> None:
    doc = openapi.shipped()
    for ref in openapi._refs(doc):
        section, name = ref.removeprefix("#/components/").split("/")
        assert ref.startswith("#/components/") and name in doc["components"][section], ref
    assert "servers" not in doc
    assert all("servers" not in item for item in doc["paths"].values())
    assert "sync.twilio.com" not in json.dumps(doc["paths"])


def test_subset_drops_what_is_not_implemented_and_the_schemas_only_it_used() -> None:
    spec = {
        "openapi": "3.0.1",
        "info": {"title": "t", "version": "1"},
        "servers": [{"url": "https://sync.twilio.com"}],
        "paths": {
            "/v1/A": {
                "servers": [{"url": "https://sync.twilio.com"}],
                "get": {"responses": {"200": {"$ref": "#/components/schemas/a"}}},
                "post": {"responses": {"200": {"$ref": "#/components/schemas/b"}}},
            },
            "/v1/C": {"get": {"responses": {"200": {"$ref": "#/components/schemas/c"}}}},
        },
        "components": {"schemas": {"a": {"$ref": "#/components/schemas/d"}, "b": {}, "c": {}, "d": {}}},
    }
    out = openapi.subset(spec, {("/v1/A", "get")})
    assert list(out["paths"]) == ["/v1/A"] and set(out["paths"]["/v1/A"]) == {"get"}
    assert set(out["components"]["schemas"]) == {"a", "d"}
    assert "servers" not in out


@pytest.mark.parametrize(
    ("public_url", "expected"),
    [(None, "http://sync.local:8080"), ("https://sync.example.com/", "https://sync.example.com")],
)
async def test_servers_is_this_servers_base_url(public_url: str | None, expected: str) -> None:
    app = SimpleNamespace(state=SimpleNamespace(settings=SimpleNamespace(public_url=public_url)))
    scope = {
        "type": "http",
        "method": "GET",
        "scheme": "http",
        "path": "/openapi.json",
        "query_string": b"",
        "headers": [(b"host", b"sync.local:8080")],
        "server": ("sync.local", 8080),
        "app": app,
    }
    response = await openapi.openapi_json(Request(scope))
    assert json.loads(bytes(response.body))["servers"] == [{"url": expected}]


def test_every_post_and_delete_takes_the_idempotency_key_marked_as_an_extension() -> None:
    doc = openapi.shipped()
    assert doc["components"]["parameters"]["IdempotencyKey"]["x-sync-server-extension"] is True
    writes = [op for item in doc["paths"].values() for m, op in item.items() if m in ("post", "delete")]
    assert writes and all({"$ref": "#/components/parameters/IdempotencyKey"} in op["parameters"] for op in writes)


def test_the_served_document_marks_every_extension() -> None:
    """Revision history: 6 operations and the AsOf parameter, each marked, every reference resolving."""
    doc = openapi.document()
    extra = openapi.extension_operations()
    assert len(extra) == 6
    for path, method in extra:
        assert doc["paths"][path][method]["x-sync-server-extension"] is True
    items = doc["paths"]["/v1/Services/{ServiceSid}/Maps/{MapSid}/Items"]["get"]["parameters"]
    assert any(p["name"] == "AsOf" and p["x-sync-server-extension"] for p in items)
    for ref in openapi._refs(doc):
        section, name = ref.removeprefix("#/components/").split("/")
        assert ref.startswith("#/components/") and name in doc["components"][section], ref
    assert "AsOf" not in json.dumps(openapi.shipped())  # Twilio's cut stays Twilio's
