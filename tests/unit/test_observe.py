"""app/observe.py without a server: request ids, the middleware, the two log formats."""

from __future__ import annotations

import json
import logging
import re
import sys

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from app import errors, observe

RQ = re.compile(r"^RQ[0-9a-f]{32}$")


def _client(app: Starlette) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


def test_request_ids_are_twilio_shaped_and_unique() -> None:
    ids = {observe.new_request_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(RQ.match(i) for i in ids)


def _app(seen: dict[str, str]) -> Starlette:
    async def ok(request: Request) -> Response:
        seen.update(rid=observe.REQUEST_ID.get(), incoming=observe.INCOMING_ID.get())
        return PlainTextResponse("ok")

    async def own(request: Request) -> Response:
        return PlainTextResponse("own", headers={"Twilio-Request-Id": "RQmine"})

    async def boom(request: Request) -> Response:
        raise RuntimeError("boom")

    return Starlette(
        routes=[Route("/ok", ok), Route("/own", own), Route("/boom", boom)],
        middleware=[Middleware(observe.RequestIds)],
        exception_handlers={Exception: errors.server_error_handler},
    )


async def test_middleware_sets_the_header_and_the_contextvars() -> None:
    seen: dict[str, str] = {}
    async with _client(_app(seen)) as c:
        r = await c.get("/ok", headers={"X-Request-Id": "x" * 500 + "\x7f"})
    assert r.headers["Twilio-Request-Id"] == seen["rid"] and RQ.match(seen["rid"])
    assert seen["incoming"] == "x" * observe.INCOMING_MAX  # cut: a log line stays a line


def test_middleware_replaces_control_characters_of_the_incoming_id() -> None:
    assert observe._printable(b"a\x00b\xffc") == "a?b?c"


async def test_a_response_with_its_own_id_keeps_it_alone() -> None:
    async with _client(_app({})) as c:
        r = await c.get("/own")
    assert r.headers.get_list("Twilio-Request-Id") == ["RQmine"]


async def test_an_unhandled_error_answers_500_with_the_request_id(caplog: pytest.LogCaptureFixture) -> None:
    async with _client(_app({})) as c:
        with caplog.at_level(logging.ERROR):
            r = await c.get("/boom")
    assert r.status_code == 500 and r.json()["code"] == 20500
    assert RQ.match(r.headers["Twilio-Request-Id"]), r.headers


def _record(name: str = "sync.app", msg: str = "hello %s", args: tuple[object, ...] = ("world",)) -> logging.LogRecord:
    return logging.LogRecord(name, logging.WARNING, __file__, 1, msg, args, None)


def test_text_format_adds_the_known_context_only() -> None:
    fmt = observe.TextFormatter()
    assert fmt.format(_record()).endswith(" WARNING sync.app: hello world")
    token = observe.REQUEST_ID.set("RQ" + "0" * 32)
    service = observe.SERVICE.set("IS1")
    try:
        line = fmt.format(_record())
    finally:
        observe.REQUEST_ID.reset(token)
        observe.SERVICE.reset(service)
    assert line.endswith(f"hello world request_id=RQ{'0' * 32} service=IS1"), line


def test_json_format_one_object_a_line_with_context_access_fields_and_traceback() -> None:
    fmt = observe.JsonFormatter()
    token = observe.ACCOUNT.set("AC1")
    try:
        access = _record("uvicorn.access", '%s - "%s %s HTTP/%s" %d', ("1.2.3.4:5", "GET", "/v1/Services", "1.1", 200))
        entry = json.loads(fmt.format(access))
    finally:
        observe.ACCOUNT.reset(token)
    assert entry["message"] == '1.2.3.4:5 - "GET /v1/Services HTTP/1.1" 200'
    assert entry["level"] == "WARNING" and entry["logger"] == "uvicorn.access" and entry["account"] == "AC1"
    fields = (entry["method"], entry["path"], entry["status"], entry["client"])
    assert fields == ("GET", "/v1/Services", 200, "1.2.3.4:5")
    assert "request_id" not in entry  # unknown: absent, not empty
    try:
        raise ValueError("bad\nline")
    except ValueError:
        record = logging.LogRecord("sync.app", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    line = fmt.format(record)
    assert "\n" not in line
    assert "ValueError: bad" in json.loads(line)["exc_info"]


@pytest.mark.parametrize(("fmt", "cls"), [("text", observe.TextFormatter), ("json", observe.JsonFormatter)])
def test_log_config_routes_uvicorns_logs_through_the_one_handler(fmt: str, cls: type) -> None:
    config = observe.log_config(fmt, "info")
    assert config["formatters"]["sync"]["()"].endswith(cls.__name__)
    assert config["root"] == {"handlers": ["sync"], "level": "INFO"}
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        assert config["loggers"][name] == {"handlers": [], "level": "INFO", "propagate": True}
