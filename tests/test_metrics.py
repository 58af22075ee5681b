"""/metrics and `sync-server status` against real sync-server processes and real Valkey."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from realtime.client import SyncClient
from tests.helpers import ACCOUNT_SID, AUTH_TOKEN, ROOT, ServerProcess
from tests.sdk import token

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
DOC_ROUTE = "/v1/Services/{ServiceSid}/Documents/{Sid}"


def parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return sum(
        v for (n, lb), v in samples.items() if n == name and all(dict(lb).get(k) == w for k, w in labels.items())
    )


async def scrape(base_url: str, **headers: str) -> Samples:
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as c:
        r = await c.get("/metrics", headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return parse(r.text)


async def in_flight_settles(base_url: str, within_s: float = 5.0) -> bool:
    """Whether a scrape finds no call on the shared connections unanswered before `within_s` ends."""
    deadline = time.monotonic() + within_s
    while value(await scrape(base_url), "sync_redis_multiplex_in_flight") != 0:
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def test_rest_redis_websocket_and_fanout_are_counted(
    server: ServerProcess, http: httpx.AsyncClient, service: str, api_key: Any
) -> None:
    before = await scrape(server.base_url)
    r = await http.post(f"/v1/Services/{service}/Documents", data={"UniqueName": "m", "Data": '{"n": 0}'})
    sid = r.json()["sid"]
    await http.post(f"/v1/Services/{service}/Documents/{sid}", data={"Data": '{"n": 1}'})  # event 1
    async with await SyncClient.connect(server.ws_url, token(api_key.sid, api_key.secret, service, "alice")) as c:
        await c.subscribe(sid, "document", 0)  # missed event 1: a replay
        for n in range(2, 5):
            await http.post(f"/v1/Services/{service}/Documents/{sid}", data={"Data": f'{{"n": {n}}}'})
            ev = await c.next_event()
            while ev["event"]["id"] < n:  # the replayed one first
                ev = await c.next_event()
        during = await scrape(server.base_url)
    await http.get(f"/v1/Services/{service}/Documents/{sid}/Nope")  # no route: one bounded label
    after = await scrape(server.base_url)

    updates = value(after, "sync_http_request_duration_seconds_count", route=DOC_ROUTE, method="POST", status="200")
    ok = {"route": DOC_ROUTE, "method": "POST", "status": "200"}
    assert updates - value(before, "sync_http_request_duration_seconds_count", **ok) >= 4
    assert value(after, "sync_http_request_duration_seconds_count", route="unmatched", status="404") >= 1
    # bounded labels: no series names an object, and no route is a path
    for name, labels in after:
        for _, v in labels:
            assert sid not in v and service not in v, (name, labels)
    assert value(after, "sync_redis_command_duration_seconds_count", command="script") > value(
        before, "sync_redis_command_duration_seconds_count", command="script"
    )
    assert value(after, "sync_redis_up") == 1
    assert value(after, "sync_redis_multiplex_connects_total") >= 1  # the scripts went over the shared connection
    # the sweeper and the bucket leases also call Redis now and then: a scrape may catch one in
    # flight, but nothing may stay unanswered
    assert await in_flight_settles(server.base_url)
    assert value(during, "sync_ws_connections") >= 1 and value(during, "sync_ws_subscriptions") >= 1
    for name, least in (
        ("sync_fanout_delivery_seconds_count", 3),
        ("sync_ws_replays_total", 1),
        ("sync_ws_replayed_events_total", 1),
        ("sync_ws_frames_sent_total", 5),
    ):
        assert value(after, name) - value(before, name) >= least, name
    assert value(after, "sync_ws_sent_bytes_total") > value(before, "sync_ws_sent_bytes_total")
    # a delivery on this machine: well under the 10 s bucket
    assert value(after, "sync_fanout_delivery_seconds_bucket", le="10.0") == value(
        after, "sync_fanout_delivery_seconds_count"
    )
    assert value(after, "sync_sweeper_runs_total") >= 1


async def test_webhook_attempts_and_queue_per_service(server: ServerProcess, http: httpx.AsyncClient) -> None:
    from storage.embedded import free_port

    dead = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens: every attempt fails
    r = await http.post("/v1/Services", data={"WebhookUrl": dead, "WebhooksFromRestEnabled": "true"})
    sid = r.json()["sid"]
    before = await scrape(server.base_url)
    await http.post(f"/v1/Services/{sid}/Documents", data={"Data": "{}"})
    deadline = time.monotonic() + 30
    while True:
        now = await scrape(server.base_url)
        if value(now, "sync_webhook_attempts_total", outcome="dead_lettered") > value(
            before, "sync_webhook_attempts_total", outcome="dead_lettered"
        ) and value(now, "sync_webhook_dead_letters", service=sid):
            break
        assert time.monotonic() < deadline, "the webhook was not dead-lettered"
        await asyncio.sleep(0.3)
    assert value(now, "sync_webhook_attempts_total", outcome="retried") > value(
        before, "sync_webhook_attempts_total", outcome="retried"
    )
    assert value(now, "sync_webhook_failing", service=sid) == 1
    assert ("sync_webhook_queue_pending", (("service", sid),)) in now


async def test_token_required_when_set_in_twilios_error_shape() -> None:
    with ServerProcess(env={"SYNC_METRICS_TOKEN": "s3cret"}) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as c:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic czNjcmV0"}):
                r = await c.get("/metrics", headers=headers)
                assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
                body = r.json()
                assert body["code"] == 20003 and body["status"] == 401 and "message" in body
        got = await scrape(server.base_url, Authorization="Bearer s3cret")
        assert value(got, "sync_redis_up") == 1


def test_non_loopback_bind_without_token_is_refused_and_metrics_can_be_off() -> None:
    with ServerProcess(env={"SYNC_HOST": "0.0.0.0"}) as server:
        r = httpx.get(f"{server.base_url}/metrics", timeout=10)
        assert r.status_code == 401 and r.json()["code"] == 20003
    with ServerProcess(env={"SYNC_METRICS": "false"}) as server:
        r = httpx.get(f"{server.base_url}/metrics", timeout=10)
        assert r.status_code == 404 and r.json()["code"] == 20404
        assert httpx.get(f"{server.base_url}/v1/Services", auth=(ACCOUNT_SID, AUTH_TOKEN)).status_code == 200


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(p) for p in (task / "children").read_text().split()]
    return out


def _run_dir_of(pid: int) -> str:
    for child in _children(pid):
        env = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
        for entry in env:
            if entry.startswith(b"SYNC_RUN_DIR="):
                return entry.split(b"=", 1)[1].decode()
    raise AssertionError("no worker with SYNC_RUN_DIR")


def test_two_workers_add_up_and_status_reads_the_running_server() -> None:
    """SYNC_WORKERS=2 with the embedded Valkey: every worker's requests are in the one scrape, the
    embedded Valkey's restart is counted, status finds the server from the data dir, the run dir goes."""
    with ServerProcess(env={"SYNC_WORKERS": "2"}) as server:
        assert server.proc is not None
        n = 40
        for _ in range(n):  # a new connection each: uvicorn's workers share the listening socket
            r = httpx.get(f"{server.base_url}/v1/Services/ISnope", auth=(ACCOUNT_SID, AUTH_TOKEN), timeout=10)
            assert r.status_code == 404
        run_dir = _run_dir_of(server.proc.pid)
        assert os.path.isdir(run_dir)
        # Valkey killed: the supervisor restarts it, /metrics counts it
        valkey = [p for p in _children(server.proc.pid) if b"valkey" in Path(f"/proc/{p}/cmdline").read_bytes()]
        assert len(valkey) == 1
        os.kill(valkey[0], 9)
        deadline = time.monotonic() + 30
        while True:
            time.sleep(0.5)
            try:
                got = parse(httpx.get(f"{server.base_url}/metrics", timeout=10).text)
            except httpx.HTTPError:
                continue
            route = "/v1/Services/{Sid}"
            if (
                value(got, "sync_worker_processes") == 2
                and value(got, "sync_http_request_duration_seconds_count", route=route, status="404") == n
                and value(got, "sync_valkey_restarts_total") == 1
                and value(got, "sync_redis_up") == 1
            ):
                break
            assert time.monotonic() < deadline, got
        assert value(got, "sync_valkey_embedded") == 1
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNC_", "TWILIO_", "REDIS_"))}
        out = subprocess.run(
            [sys.executable, "-c", "from app.cli import main; main()", "status", "--data-dir", str(server.data_dir)],
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert "workers        2 processes" in out.stdout
        assert "valkey         embedded, up, 1 restart" in out.stdout
        assert "connections    0" in out.stdout
    assert not os.path.exists(run_dir)
    assert not (Path(str(server.data_dir)) / "redis" / "server-url").exists()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNC_", "TWILIO_", "REDIS_"))}
    out = subprocess.run(
        [sys.executable, "-c", "from app.cli import main; main()", "status", "--port", str(server.port)],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode != 0 and "no server answers" in out.stderr
