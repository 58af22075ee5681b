"""An ordered shutdown (issue 9, item 18): stop accepting, tell WebSocket clients to reconnect, finish
in-flight requests, then stop the embedded Valkey; Ctrl-C and SIGTERM both end with exit status 0,
no traceback, and no stale ``<data dir>/redis/url``."""

from __future__ import annotations

import asyncio
import os
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from realtime.client import SyncClient
from storage import Store, accounts, embedded
from tests.helpers import ACCOUNT_SID, AUTH_TOKEN, SCALE, ServerProcess
from tests.sdk import token
from tests.webhook_receiver import Receiver

AUTH = (ACCOUNT_SID, AUTH_TOKEN)


def _exit_code(server: ServerProcess, within: float = 30.0) -> int:
    assert server.proc is not None
    return server.proc.wait(within * SCALE)


def test_ctrl_c_to_the_process_group_stops_the_server_cleanly_and_valkey_last() -> None:
    data_dir = tempfile.mkdtemp(prefix="sync-ctrl-c-")
    url_file = embedded.url_file(data_dir)
    server = ServerProcess(data_dir=data_dir, new_session=True).start()
    try:
        with httpx.Client(base_url=server.base_url, auth=AUTH, timeout=10) as c:
            sid = c.post("/v1/Services", data={"FriendlyName": "ctrl-c"}).json()["sid"]
            r = c.post(f"/v1/Services/{sid}/Documents", data={"UniqueName": "kept", "Data": '{"n": 1}'})
            assert r.status_code == 201, r.text
        assert url_file.exists()
        assert server.proc is not None
        os.killpg(server.proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        assert _exit_code(server) == 0
    finally:
        server.stop(signal.SIGKILL)
    log = Path(server.log_path).read_text()
    assert "Traceback" not in log, log
    assert "exited with" not in log and "Connection refused" not in log, log  # Valkey outlived the server
    assert not url_file.exists()
    with ServerProcess(data_dir=data_dir) as again, httpx.Client(base_url=again.base_url, auth=AUTH) as c:
        doc = c.get(f"/v1/Services/{sid}/Documents/kept")
        assert doc.status_code == 200 and doc.json()["data"] == {"n": 1}, doc.text


@pytest.mark.parametrize("after_s", [0.0, 0.4, 1.0])
def test_ctrl_c_while_the_workers_are_still_starting_exits_cleanly(after_s: float) -> None:
    """Ctrl-C reaches every process of the group: a worker still importing the app must not die with a
    KeyboardInterrupt traceback (it holds the signal until uvicorn's handlers are in place)."""
    data_dir = tempfile.mkdtemp(prefix="sync-ctrl-c-start-")
    server = ServerProcess(data_dir=data_dir, new_session=True, env={"SYNC_WORKERS": "2"}).start(wait=False)
    try:
        deadline = time.monotonic() + 30 * SCALE
        while "listening on" not in Path(server.log_path).read_text():  # the workers are being spawned
            assert server.proc is not None and server.proc.poll() is None, Path(server.log_path).read_text()
            assert time.monotonic() < deadline, Path(server.log_path).read_text()
            time.sleep(0.01)
        time.sleep(after_s)
        assert server.proc is not None
        os.killpg(server.proc.pid, signal.SIGINT)
        assert _exit_code(server) == 0
    finally:
        server.stop(signal.SIGKILL)
    log = Path(server.log_path).read_text()
    assert "Traceback" not in log and "KeyboardInterrupt" not in log, log


@pytest.mark.parametrize(
    ("sig", "workers"), [(signal.SIGTERM, "1"), (signal.SIGINT, "2")], ids=["sigterm", "ctrl-c-2-workers"]
)
async def test_shutdown_tells_realtime_clients_to_reconnect_before_the_socket_closes(sig: int, workers: str) -> None:
    data_dir = tempfile.mkdtemp(prefix="sync-sigterm-ws-")
    url_file = embedded.url_file(data_dir)
    server = ServerProcess(data_dir=data_dir, new_session=True, env={"SYNC_WORKERS": workers}).start()
    try:
        store = await Store.connect(url_file.read_text().strip())
        try:
            key = await accounts.create_key(store, ACCOUNT_SID, "shutdown test")
        finally:
            await store.close()
        async with httpx.AsyncClient(base_url=server.base_url, auth=AUTH, timeout=10) as http:
            service = (await http.post("/v1/Services", data={"FriendlyName": "ws"})).json()["sid"]
        async with await SyncClient.connect(server.ws_url, token(key.sid, key.secret, service, "al")) as client:
            doc = await client.open("document", "live")
            await client.subscribe(doc["sid"], "document", doc["last_event_id"])
            assert server.proc is not None
            if sig == signal.SIGINT:
                os.killpg(server.proc.pid, sig)  # a terminal's Ctrl-C: the workers get it too
            else:
                server.proc.send_signal(sig)
            first = await asyncio.wait_for(client.control.get(), 20 * SCALE)
            assert first["method"] == "close", first
            assert first["status"]["code"] == 308, first
            second = await asyncio.wait_for(client.control.get(), 20 * SCALE)
            assert second == {"method": "disconnected"}
            assert client.ws.close_code == 1000, client.ws.close_code  # closed by the gateway, not uvicorn's 1012
        assert await asyncio.to_thread(_exit_code, server) == 0
    finally:
        server.stop(signal.SIGKILL)
    log = await asyncio.to_thread(Path(server.log_path).read_text)
    assert "Traceback" not in log, log
    assert not await asyncio.to_thread(url_file.exists)


def test_rest_request_in_flight_when_sigterm_arrives_still_gets_its_answer() -> None:
    data_dir = tempfile.mkdtemp(prefix="sync-sigterm-rest-")
    server = ServerProcess(data_dir=data_dir).start()
    try:
        assert server.proc is not None
        proc = server.proc
        sent = threading.Event()

        def slow_body() -> Iterator[bytes]:
            yield b"FriendlyName=in"
            proc.send_signal(signal.SIGTERM)  # the request has started: its headers and part of its body are out
            sent.set()
            time.sleep(1.0)
            yield b"-flight"

        with httpx.Client(base_url=server.base_url, auth=AUTH, timeout=20 * SCALE) as c:
            r = c.post(
                "/v1/Services",
                content=slow_body(),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
        assert sent.is_set()
        assert r.status_code == 201, r.text
        assert r.json()["friendly_name"] == "in-flight"
        assert _exit_code(server) == 0
    finally:
        server.stop(signal.SIGKILL)
    assert "Traceback" not in Path(server.log_path).read_text()
    assert not embedded.url_file(data_dir).exists()


async def test_a_webhook_attempt_in_flight_at_sigterm_is_finished_and_recorded() -> None:
    """SIGTERM while the receiver is still answering (~1 s): the attempt finishes, its outcome is
    recorded (acknowledged), so the server started again does not send it a second time."""
    data_dir = tempfile.mkdtemp(prefix="sync-sigterm-hook-")
    receiver, server = await _held_delivery(data_dir)
    try:
        server.proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(1.0)  # the receiver takes its time to answer
        receiver.hold.set()
        assert await asyncio.to_thread(_exit_code, server) == 0
        assert [r.status for r in receiver.requests] == [200]
        again = await asyncio.to_thread(ServerProcess(data_dir=data_dir).start)
        try:
            await asyncio.sleep(2.0 * SCALE)  # several scans (SYNC_WEBHOOK_SCAN_INTERVAL_S=0.3 in tests)
        finally:
            await asyncio.to_thread(again.stop)
        tokens = [r.headers["i-twilio-idempotency-token"] for r in receiver.requests]
        assert len(tokens) == 1, f"delivered again after the restart: {tokens}"
    finally:
        server.stop(signal.SIGKILL)
        await receiver.stop()
    assert "Traceback" not in await asyncio.to_thread(Path(server.log_path).read_text)


async def test_a_webhook_attempt_that_outlasts_the_grace_is_cancelled_and_stays_queued() -> None:
    """A receiver that never answers does not hold the shutdown beyond the grace (5 s): the attempt
    is cancelled, its entry stays queued, and the next start delivers it."""
    data_dir = tempfile.mkdtemp(prefix="sync-sigterm-hook-")
    receiver, server = await _held_delivery(data_dir)
    try:
        started = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(_exit_code, server) == 0
        assert time.monotonic() - started < 5.0 + 6.0 * SCALE  # the grace, then acks, leases, Valkey
        receiver.hold.set()
        again = await asyncio.to_thread(ServerProcess(data_dir=data_dir).start)
        try:
            got = await receiver.wait_for(2)  # the one answered too late (after its cancel) and the retry
        finally:
            await asyncio.to_thread(again.stop)
        assert got[0].headers["i-twilio-idempotency-token"] == got[1].headers["i-twilio-idempotency-token"]
    finally:
        server.stop(signal.SIGKILL)
        await receiver.stop()


async def _held_delivery(data_dir: str) -> tuple[Receiver, ServerProcess]:
    """A server on ``data_dir`` whose one webhook request is being held by the receiver."""
    receiver = await Receiver().start()
    receiver.hold = asyncio.Event()
    server = await asyncio.to_thread(ServerProcess(data_dir=data_dir).start)
    async with httpx.AsyncClient(base_url=server.base_url, auth=AUTH, timeout=10) as http:
        data = {"FriendlyName": "hooks", "WebhookUrl": receiver.url, "WebhooksFromRestEnabled": "true"}
        service = (await http.post("/v1/Services", data=data)).json()["sid"]
        r = await http.post(f"/v1/Services/{service}/Documents", data={"UniqueName": "d", "Data": "{}"})
        assert r.status_code == 201, r.text
    await receiver.wait_held(1)
    assert server.proc is not None
    return receiver, server
