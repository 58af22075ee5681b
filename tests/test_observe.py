"""Operating the server (issue 11): /healthz and /readyz, Twilio-Request-Id, one log format
(SYNC_LOG_FORMAT), and the graceful drain on SIGTERM (SYNC_DRAIN_S), on real server processes."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from realtime.client import SyncClient, SyncClientError
from storage import Store, accounts
from tests.helpers import ACCOUNT_SID, AUTH_TOKEN, SCALE, RedisProcess, ServerProcess
from tests.sdk import token

AUTH = (ACCOUNT_SID, AUTH_TOKEN)
RQ = re.compile(r"^RQ[0-9a-f]{32}$")


@pytest.mark.backends("standalone", "cluster")
async def test_probes_answer_without_credentials_and_readyz_loads_scripts_redis_lost(
    http: httpx.AsyncClient, redis: Any
) -> None:
    async with httpx.AsyncClient(base_url=str(http.base_url), timeout=10) as anonymous:
        health = await anonymous.get("/healthz")
        assert health.status_code == 200 and health.json() == {"status": "ok"}
        await redis.script_flush()  # what a Redis restart without persistence of scripts does
        ready = await anonymous.get("/readyz")
        assert ready.status_code == 200 and ready.json() == {"status": "ready"}, ready.text
    # the probe loaded them again: a write right after runs its script without a NOSCRIPT round trip
    flushed_then_loaded = await redis.script_exists(*_some_shas())
    assert all(flushed_then_loaded)


def _some_shas() -> list[str]:
    import hashlib

    from storage.lua import write_text

    return [hashlib.sha1(write_text("item_write").encode()).hexdigest()]


def test_readyz_is_503_while_redis_is_down_and_healthz_stays_200() -> None:
    valkey = RedisProcess()
    server = ServerProcess(redis_url=valkey.url, env={"SYNC_REDIS_TIMEOUT_S": "1"}).start()
    try:
        with httpx.Client(base_url=server.base_url, timeout=10 * SCALE) as c:
            assert c.get("/readyz").status_code == 200
            valkey.stop()
            ready = c.get("/readyz")
            assert ready.status_code == 503, ready.text
            assert ready.json()["status"] == "unavailable"
            assert c.get("/healthz").status_code == 200  # alive: an outage is no reason to restart it
    finally:
        server.stop()
        if valkey.proc.poll() is None:
            valkey.stop()


async def test_every_rest_answer_carries_a_twilio_request_id(http: httpx.AsyncClient, service: str) -> None:
    answers = [
        await http.get("/v1/Services"),  # 200
        await http.post(f"/v1/Services/{service}/Documents", data={"Data": "{}"}),  # 201
        await http.get(f"/v1/Services/{service}/Documents/ETnope"),  # 404
        await http.delete("/v1/Services"),  # 405
        await http.post(f"/v1/Services/{service}/Documents", data={"Data": "not json"}),  # 400
        await http.get("/v1/Services", auth=(ACCOUNT_SID, "wrong")),  # 401
        await http.get("/nowhere"),
    ]
    statuses = [r.status_code for r in answers]
    assert statuses == [200, 201, 404, 405, 400, 401, 404], statuses
    ids = [r.headers.get("Twilio-Request-Id", "") for r in answers]
    assert all(RQ.match(i) for i in ids), ids
    assert len(set(ids)) == len(ids)  # one per request


def _json_lines(path: str) -> list[dict[str, Any]]:
    out = []
    for line in Path(path).read_text().splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def _wait_for(check: Any, within: float = 10.0) -> Any:
    deadline = time.monotonic() + within * SCALE
    while True:
        found = check()
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_json_logs_carry_request_id_incoming_id_account_and_service(workers: str) -> None:
    env = {"SYNC_LOG_FORMAT": "json", "SYNC_LOG_LEVEL": "debug", "SYNC_WORKERS": workers}
    server = ServerProcess(env=env).start()
    try:
        with httpx.Client(base_url=server.base_url, auth=AUTH, timeout=10 * SCALE) as c:
            sid = c.post("/v1/Services", data={"FriendlyName": "logs"}).json()["sid"]
            r = c.get(f"/v1/Services/{sid}/Documents", headers={"X-Request-Id": "lb-7f3a"})
            assert r.status_code == 200
            rid = r.headers["Twilio-Request-Id"]

        def access_line() -> dict[str, Any] | None:
            return next((e for e in _json_lines(server.log_path) if e.get("request_id") == rid), None)

        entry = _wait_for(access_line)
        assert entry is not None, Path(server.log_path).read_text()[-3000:]
    finally:
        server.stop()
    assert entry["logger"] == "uvicorn.access"
    assert entry["level"] == "INFO"
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", entry["timestamp"])
    assert entry["x_request_id"] == "lb-7f3a"  # kept
    assert entry["account"] == ACCOUNT_SID
    assert entry["service"] == sid
    assert entry["method"] == "GET" and entry["status"] == 200 and entry["path"] == f"/v1/Services/{sid}/Documents"
    # one format for everything the processes log: uvicorn's error log (each worker's) is JSON too
    log = Path(server.log_path).read_text()
    started = [e for e in _json_lines(server.log_path) if e["message"].startswith("Started server process")]
    assert len(started) == int(workers), log[-3000:]
    for line in log.splitlines():  # the CLI's own "sync-server: …" lines to a person are not logs
        assert line.startswith(("{", "sync-server: ")), line


def test_text_logs_carry_the_request_id() -> None:
    server = ServerProcess(env={"SYNC_LOG_LEVEL": "debug"}).start()
    try:
        with httpx.Client(base_url=server.base_url, auth=AUTH, timeout=10 * SCALE) as c:
            rid = c.get("/v1/Services", headers={"X-Request-Id": "abc"}).headers["Twilio-Request-Id"]
        line = _wait_for(lambda: next((x for x in Path(server.log_path).read_text().splitlines() if rid in x), None))
    finally:
        server.stop()
    assert line is not None
    assert " INFO uvicorn.access: " in line and '"GET /v1/Services HTTP/1.1" 200' in line, line
    assert line.endswith(f"request_id={rid} x_request_id=abc account={ACCOUNT_SID}"), line


def test_sigterm_drains_readyz_503_first_while_a_slow_request_completes_then_exits_0() -> None:
    drain_s = 3.0
    server = ServerProcess(env={"SYNC_DRAIN_S": str(drain_s)}).start()
    try:
        assert server.proc is not None
        proc = server.proc
        signalled = threading.Event()
        result: dict[str, Any] = {}

        def slow_body() -> Iterator[bytes]:
            yield b"FriendlyName=slow"
            proc.send_signal(signal.SIGTERM)  # the request has begun when the signal comes
            signalled.set()
            time.sleep(drain_s + 1.0)  # longer than the drain window: uvicorn's shutdown waits for it
            yield b"-but-served"

        def slow_request() -> None:
            with httpx.Client(base_url=server.base_url, auth=AUTH, timeout=30 * SCALE) as c:
                result["r"] = c.post(
                    "/v1/Services",
                    content=slow_body(),
                    headers={"Content-Type": "application/x-www-form-urlencoded"},
                )

        thread = threading.Thread(target=slow_request)
        thread.start()
        assert signalled.wait(10 * SCALE)
        began = time.monotonic()
        with httpx.Client(base_url=server.base_url, timeout=5 * SCALE) as c:
            ready = _wait_for(lambda: c.get("/readyz").status_code == 503, within=drain_s)
            assert ready, "readyz did not go 503 after SIGTERM"
            # still serving REST during the window, readiness aside: a balancer's late request is answered
            assert c.get("/healthz").status_code == 200
            assert c.get("/v1/Services", auth=AUTH).status_code == 200
        assert time.monotonic() - began < drain_s
        thread.join(30 * SCALE)
        r = result["r"]
        assert r.status_code == 201, r.text
        assert r.json()["friendly_name"] == "slow-but-served"
        assert r.headers["Twilio-Request-Id"].startswith("RQ")
        assert proc.wait(30 * SCALE) == 0
        assert time.monotonic() - began >= drain_s - 0.5  # the window was kept
    finally:
        server.stop(signal.SIGKILL)
    log = Path(server.log_path).read_text()
    assert "Traceback" not in log, log


async def test_openapi_json_is_the_implemented_sync_v1_spec_with_this_server(
    http: httpx.AsyncClient, server: ServerProcess
) -> None:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as anonymous:
        r = await anonymous.get("/openapi.json")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    doc = r.json()
    assert doc["openapi"].startswith("3.") and doc["servers"] == [{"url": server.base_url}]
    ops = {(p, m) for p, item in doc["paths"].items() for m in item if m in ("get", "post", "delete")}
    extensions = {(p, m) for p, m in ops if doc["paths"][p][m].get("x-sync-server-extension")}
    assert len(ops - extensions) == 48 and len(extensions) == 6  # Twilio's Sync v1, and the revision history
    assert ("/v1/Services/{ServiceSid}/Streams/{StreamSid}/Messages", "post") in ops
    # every path it lists is served here: a GET of each collection answers (not 404 as unknown)
    service = (await http.post("/v1/Services", data={"FriendlyName": "spec"})).json()["sid"]
    for path in doc["paths"]:
        if path.endswith(("Services", "Documents", "Lists", "Maps", "Streams")):
            got = await http.get(path.replace("{ServiceSid}", service))
            assert got.status_code == 200, (path, got.text)


async def test_sigterm_refuses_new_websockets_and_tells_open_ones_to_reconnect_while_rest_is_served() -> None:
    server = ServerProcess(env={"SYNC_DRAIN_S": "4"}).start()
    try:
        assert server.data_dir is not None and server.proc is not None
        url_file = Path(server.data_dir, "redis", "url")
        store = await Store.connect((await asyncio.to_thread(url_file.read_text)).strip())
        try:
            key = await accounts.create_key(store, ACCOUNT_SID, "drain test")
        finally:
            await store.close()
        async with httpx.AsyncClient(base_url=server.base_url, auth=AUTH, timeout=10 * SCALE) as http:
            service = (await http.post("/v1/Services", data={"FriendlyName": "drain"})).json()["sid"]
            tok = token(key.sid, key.secret, service, "al")
            async with await SyncClient.connect(server.ws_url, tok) as client:
                began = time.monotonic()
                server.proc.send_signal(signal.SIGTERM)
                first = await asyncio.wait_for(client.control.get(), 10 * SCALE)
                assert first["method"] == "close" and first["status"]["code"] == 308, first
            with pytest.raises(SyncClientError) as refused:
                await SyncClient.connect(server.ws_url, tok)
            assert refused.value.status == 429
            assert (await http.get("/readyz")).status_code == 503
            assert (await http.get(f"/v1/Services/{service}")).status_code == 200
            assert time.monotonic() - began < 4  # all of it within the window
        assert await asyncio.to_thread(server.proc.wait, 30 * SCALE) == 0
    finally:
        server.stop(signal.SIGKILL)


async def test_answers_of_the_http_limits_carry_a_request_id_too(http: httpx.AsyncClient) -> None:
    r = await http.get("/v1/Services", headers={f"X-Pad-{i}": "x" for i in range(150)})  # > SYNC_HTTP_MAX_HEADERS
    assert r.status_code == 431, r.text
    assert RQ.match(r.headers["Twilio-Request-Id"]), r.headers
