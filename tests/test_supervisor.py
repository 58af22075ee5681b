"""The embedded Valkey under supervision (issue 9, items 3, 17 and 20): it is restarted when it dies,
the server exits non-zero when it cannot be, one data dir has one live server, and the auth token
never reaches a log."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from storage import Store, accounts
from storage.embedded import server_binary, url_file
from tests.helpers import ACCOUNT_SID, AUTH_TOKEN, ROOT, SCALE, ServerProcess
from tests.sdk import token
from tests.webhook_receiver import Receiver

AUTH = (ACCOUNT_SID, AUTH_TOKEN)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "from app.cli import main; main()", *args]


def _valkey_pid(data_dir: str) -> int:
    return int((Path(data_dir) / "redis" / "valkey.pid").read_text().strip())


def _kill_valkey(data_dir: str) -> int:
    pid = _valkey_pid(data_dir)
    os.kill(pid, signal.SIGKILL)
    return pid


def _code(r: httpx.Response) -> object:
    try:
        return r.json().get("code")
    except ValueError:
        return None


def _wait_2xx(base: str, within: float = 30.0) -> None:
    deadline = time.monotonic() + within * SCALE
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/v1/Services", auth=AUTH, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError("the server did not answer 2xx again")


# -- item 3: a killed Valkey is restarted ------------------------------------------------------------


def test_valkey_killed_under_rest_load_is_restarted_and_loses_no_acknowledged_write() -> None:
    """At the default SYNC_REDIS_APPENDFSYNC=always (at everysec, a kill -9 of Valkey may take its
    last acknowledged writes along: README, Durability and failover); meanwhile REST answers 503."""
    data_dir = tempfile.mkdtemp(prefix="sync-valkey-kill-")
    with ServerProcess(data_dir=data_dir) as server, httpx.Client(base_url=server.base_url, auth=AUTH) as c:
        sid = c.post("/v1/Services", data={"FriendlyName": "kill"}).json()["sid"]
        acked: dict[str, int] = {}  # unique name -> the value the server acknowledged
        answers: Counter[tuple[int, str]] = Counter()  # the statuses and codes of what was not a 201
        failures = 0
        killed_at = 0.0
        acked_after_kill = 0
        stop = threading.Event()
        lock = threading.Lock()

        def write(worker: int) -> None:
            nonlocal failures, acked_after_kill
            with httpx.Client(base_url=server.base_url, auth=AUTH, timeout=5) as w:
                n = 0
                while not stop.is_set():
                    name, n = f"w{worker}-{n}", n + 1
                    sent = time.monotonic()
                    try:
                        r = w.post(f"/v1/Services/{sid}/Documents", data={"UniqueName": name, "Data": f'{{"n": {n}}}'})
                    except httpx.HTTPError:
                        r = None
                    with lock:
                        if r is not None and r.status_code == 201:
                            acked[name] = n
                            if killed_at and sent > killed_at:
                                acked_after_kill += 1
                        else:
                            failures += 1
                            if r is not None:
                                answers[(r.status_code, str(_code(r)))] += 1

        threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        try:
            time.sleep(1.0)
            old = _kill_valkey(data_dir)
            killed_at = time.monotonic()
            deadline = killed_at + 30 * SCALE
            while time.monotonic() < deadline and acked_after_kill < 50:
                time.sleep(0.1)
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert acked_after_kill >= 50, f"2xx answers did not resume ({failures} failures)"
        assert set(answers) <= {(503, "20503")}, answers  # never a 500 while Valkey is away
        assert _valkey_pid(data_dir) != old
        assert server.proc is not None and server.proc.poll() is None
        docs: dict[str, int] = {}
        page = f"/v1/Services/{sid}/Documents?PageSize=1000"
        while page:
            body = c.get(page).json()
            docs.update({d["unique_name"]: d["data"]["n"] for d in body["documents"]})
            page = body["meta"]["next_page_url"]
        lost = {name for name, n in acked.items() if docs.get(name) != n}
        assert not lost, f"{len(lost)} acknowledged writes lost of {len(acked)}"


async def test_realtime_and_webhooks_resume_after_valkey_is_restarted() -> None:
    data_dir = tempfile.mkdtemp(prefix="sync-valkey-kill-rt-")
    receiver = await Receiver().start()
    server = ServerProcess(data_dir=data_dir).start()
    try:
        url = url_file(data_dir).read_text().strip()
        store = await Store.connect(url)
        try:
            key = await accounts.create_key(store, ACCOUNT_SID, "supervisor test")
        finally:
            await store.close()
        async with httpx.AsyncClient(base_url=server.base_url, auth=AUTH, timeout=5) as http:
            form = {"FriendlyName": "rt", "WebhookUrl": receiver.url, "WebhooksFromRestEnabled": "true"}
            service = (await http.post("/v1/Services", data=form)).json()["sid"]
            from realtime.client import SyncClient

            async with await SyncClient.connect(server.ws_url, token(key.sid, key.secret, service, "al")) as client:
                doc = await client.open("document", "live")
                await client.subscribe(doc["sid"], "document", doc["last_event_id"])
                path = f"/v1/Services/{service}/Documents/{doc['sid']}"
                assert (await http.post(path, data={"Data": '{"n": 1}'})).status_code == 200
                assert (await client.next_event())["event"]["document_data"] == {"n": 1}
                await _hook_with(receiver, '{"n":1}')

                _kill_valkey(data_dir)
                await asyncio.sleep(0.2)
                deadline = time.monotonic() + 30 * SCALE
                while True:  # the first write that is acknowledged after the restart
                    r = await http.post(path, data={"Data": '{"n": 2}'})
                    if r.status_code == 200:
                        break
                    assert time.monotonic() < deadline, r.text
                    await asyncio.sleep(0.2)
                ev = await client.next_event(wait_s=20 * SCALE)
                assert ev["event_type"] == "document_updated" and ev["event"]["document_data"] == {"n": 2}
                await _hook_with(receiver, '{"n":2}')
    finally:
        server.stop()
        await receiver.stop()


async def _hook_with(receiver: Receiver, data: str, within: float = 30.0) -> None:
    deadline = time.monotonic() + within * SCALE
    while not any(h.form.get("DocumentData") == data for h in receiver.delivered):
        assert time.monotonic() < deadline, [h.form for h in receiver.delivered]
        await asyncio.sleep(0.1)


def test_valkey_that_cannot_start_again_makes_the_server_exit_non_zero() -> None:
    data_dir = tempfile.mkdtemp(prefix="sync-valkey-dead-")
    server = ServerProcess(data_dir=data_dir).start()
    try:
        # a manifest Valkey cannot read: it refuses to start on this data dir from now on
        for manifest in (Path(data_dir) / "redis" / "appendonlydir").glob("*.manifest"):
            manifest.write_text("this is not a manifest\n")
        _kill_valkey(data_dir)
        assert server.proc is not None
        code = server.proc.wait(60 * SCALE)
        assert code == 1, code
        log = Path(server.log_path).read_text()
        assert "could not be restarted (5 failures in a row" in log
        assert log.count("restart") >= 5
    finally:
        server.stop(signal.SIGKILL)


# -- item 17: one data dir, one live server ------------------------------------------------------------


def test_second_server_on_the_same_data_dir_is_refused_and_the_first_keeps_working() -> None:
    data_dir = tempfile.mkdtemp(prefix="sync-two-")
    with ServerProcess(data_dir=data_dir) as first:
        valkey = _valkey_pid(data_dir)
        second = ServerProcess(data_dir=data_dir)
        with pytest.raises(RuntimeError, match="sync-server exited"):
            second.start()
        assert second.proc is not None and second.proc.returncode == 1
        log = Path(second.log_path).read_text()
        assert f"{Path(data_dir).resolve()} is in use by a running sync-server (pid {first.proc.pid})" in log  # type: ignore[union-attr]
        assert _valkey_pid(data_dir) == valkey and Path(f"/proc/{valkey}").exists()
        with httpx.Client(base_url=first.base_url, auth=AUTH, timeout=10) as c:
            assert c.post("/v1/Services", data={"FriendlyName": "still here"}).status_code == 201
        # an admin command uses the running server's Valkey (it needs no lock)
        env = {**os.environ, "SYNC_DATA_DIR": data_dir, "TWILIO_ACCOUNT_SID": ACCOUNT_SID}
        env["TWILIO_AUTH_TOKEN"] = AUTH_TOKEN
        out = subprocess.run(_cli("account"), env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and ACCOUNT_SID in out.stdout, out.stderr


def test_valkey_left_behind_by_a_dead_server_is_stopped() -> None:
    """A Valkey that outlived its server (the pid file names it, nobody holds the lock) is cleaned up."""
    data_dir = tempfile.mkdtemp(prefix="sync-orphan-")
    redis_dir = Path(data_dir) / "redis"
    redis_dir.mkdir()
    orphan = subprocess.Popen(
        [server_binary(), "--port", "0", "--dir", str(redis_dir), "--pidfile", str(redis_dir / "valkey.pid"),
         "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10 * SCALE
        while not (redis_dir / "valkey.pid").exists():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with ServerProcess(data_dir=data_dir) as server:
            assert orphan.wait(10) is not None
            assert _valkey_pid(data_dir) != orphan.pid
            _wait_2xx(server.base_url)
    finally:
        if orphan.poll() is None:
            orphan.kill()
            orphan.wait()


# -- item 20: the auth token never reaches a log -------------------------------------------------------


def _fresh_account_env(data_dir: str, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNC_", "TWILIO_", "REDIS_"))}
    return {**env, "SYNC_DATA_DIR": data_dir, "SYNC_PORT": str(port), "SYNC_LOG_LEVEL": "warning"}


def _wait_for(path_or_read: object, text: str, within: float = 30.0) -> str:
    deadline = time.monotonic() + within * SCALE
    seen = ""
    while time.monotonic() < deadline:
        seen = path_or_read() if callable(path_or_read) else Path(str(path_or_read)).read_text()
        if text in seen:
            return seen
        time.sleep(0.1)
    raise AssertionError(f"{text!r} never came: {seen[-2000:]}")


def test_auth_token_of_a_created_account_is_not_written_to_a_log() -> None:
    data_dir = tempfile.mkdtemp(prefix="sync-token-log-")
    env = _fresh_account_env(data_dir, _free())
    log_path = Path(data_dir) / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(_cli(), env=env, stdout=log, stderr=log, cwd=ROOT)
    try:
        text = _wait_for(log_path, "listening on")
        out = subprocess.run(_cli("account"), env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        auth_token = out.stdout.split("TWILIO_AUTH_TOKEN=")[1].strip()
        assert "created account AC" in text and "`sync-server account` prints its auth token" in text
        assert auth_token not in text
    finally:
        proc.terminate()
        proc.wait(20)
    assert auth_token not in log_path.read_text()


def test_auth_token_of_a_created_account_is_shown_on_a_terminal() -> None:
    import pty

    data_dir = tempfile.mkdtemp(prefix="sync-token-tty-")
    env = _fresh_account_env(data_dir, _free())
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(_cli(), env=env, stdout=subprocess.DEVNULL, stderr=secondary, cwd=ROOT)
    os.close(secondary)
    seen = b""

    def read() -> str:
        nonlocal seen
        import select

        while select.select([primary], [], [], 0.05)[0]:
            try:
                seen += os.read(primary, 4096)
            except OSError:
                break
        return seen.decode(errors="replace")

    try:
        text = _wait_for(read, "listening on")
        assert "with auth token " in text
    finally:
        proc.terminate()
        proc.wait(20)
        os.close(primary)


def _free() -> int:
    from storage.embedded import free_port

    return free_port()
