"""Starting before Redis answers: serve waits (SYNC_REDIS_STARTUP_WAIT_S), then serves or says why not.

Real processes: a server started before its Valkey, one whose Redis never comes, and one started on a
Cluster right after a master was killed, before its replica is promoted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from storage.embedded import free_port
from tests.helpers import ACCOUNT_SID, AUTH_TOKEN, ROOT, SCALE, ClusterProcess, RedisProcess, ServerProcess


def _log(server: ServerProcess) -> str:
    return Path(server.log_path).read_text()


def _writes_everywhere(server: ServerProcess, services: int = 6) -> None:
    """Services (spread over every master on a Cluster) each take a Document: every slot is served."""
    with httpx.Client(base_url=server.base_url, auth=(ACCOUNT_SID, AUTH_TOKEN), timeout=10 * SCALE) as http:
        for n in range(services):
            r = http.post("/v1/Services", data={"FriendlyName": f"startup {n}"})
            assert r.status_code == 201, r.text
            doc = http.post(f"/v1/Services/{r.json()['sid']}/Documents", data={"Data": '{"n": 1}'})
            assert doc.status_code == 201, doc.text


def test_a_server_started_before_its_redis_waits_and_then_serves() -> None:
    port = free_port()
    server = ServerProcess(redis_url=f"redis://127.0.0.1:{port}/0").start(wait=False)
    valkey = None
    try:
        deadline = time.monotonic() + 30 * SCALE
        while "is not reachable yet" not in _log(server) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # a few attempts
        assert server.proc is not None and server.proc.poll() is None, _log(server)
        valkey = RedisProcess(port)
        server.wait_ready()
        _writes_everywhere(server, 1)
        log = _log(server)
        assert log.count("is not reachable yet") == 1 and "Traceback" not in log, log
    finally:
        server.stop()
        if valkey is not None:
            valkey.stop()


def test_a_redis_that_never_comes_ends_the_server_with_one_line_without_its_password() -> None:
    port = free_port()  # nothing listens there
    server = ServerProcess(
        redis_url=f"redis://default:s3cret-pw@127.0.0.1:{port}/0", env={"SYNC_REDIS_STARTUP_WAIT_S": "1"}
    ).start(wait=False)
    assert server.proc is not None
    try:
        code = server.proc.wait(30 * SCALE)
    except subprocess.TimeoutExpired:
        server.stop(signal.SIGKILL)
        raise
    log = _log(server)
    assert code == 1, log
    assert "Traceback" not in log and "s3cret-pw" not in log, log
    last = log.strip().splitlines()[-1]
    assert last.startswith(f"sync-server: Redis at redis://default:***@127.0.0.1:{port}/0 is not reachable"), log
    assert "after waiting 1 s" in last and "Connect call failed" in last, last


def test_a_server_started_while_a_cluster_master_is_being_replaced_waits_for_the_promotion() -> None:
    with ClusterProcess() as cluster:
        victim = [m for m in cluster.masters() if m != cluster.ports[0]][-1]
        cluster.procs[victim].send_signal(signal.SIGKILL)
        cluster.procs[victim].wait()
        server = ServerProcess(redis_url=cluster.url, env={"REDIS_CLUSTER": "true"}).start(wait=False)
        try:
            server.wait_ready()  # once the replica is promoted (node timeout 2 s, then an election)
            assert victim not in cluster.masters()
            _writes_everywhere(server)
            log = _log(server)
            assert "is not reachable yet" in log and "Traceback" not in log and "Unclosed" not in log, log
        finally:
            server.stop()


def test_an_admin_command_on_an_unreachable_redis_fails_at_once_with_one_line() -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNC_", "TWILIO_", "REDIS_"))}
    env["REDIS_URL"] = f"redis://:s3cret-pw@127.0.0.1:{port}/0"
    cmd = [sys.executable, "-c", "from app.cli import main; main()", "keys", "list"]
    out = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60 * SCALE)
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr and "s3cret-pw" not in out.stderr, out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("sync-server: Redis is not reachable:") and "Connect call failed" in last, out.stderr
