"""``sync-server check`` end to end: a short check of the session's server passes (on a standalone
Valkey and on a Cluster), checks with faults it injects itself pass (kill -9 of its server and its
Valkey; of its servers and of Cluster masters), and the checker does fail when the server loses
acknowledged writes (its Valkey rewound to an older snapshot mid-run) or when a recorded history is
tampered with."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from storage.embedded import free_port, server_binary
from tests.helpers import ACCOUNT_SID, AUTH_TOKEN, ON_EVERY_BACKEND, ROOT, SCALE, Backend, ServerProcess


def check(*args: str, env: dict[str, str] | None = None, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("SYNC_", "TWILIO_", "REDIS_"))}
    full.update(TWILIO_ACCOUNT_SID=ACCOUNT_SID, TWILIO_AUTH_TOKEN=AUTH_TOKEN, **(env or {}))
    cmd = [sys.executable, "-c", "from app.cli import main; main()", "check", *args]
    return subprocess.run(cmd, env=full, cwd=ROOT, capture_output=True, text=True, timeout=timeout * SCALE)


def figure(out: str, name: str) -> int:
    found = re.search(rf"^  {re.escape(name)}: (\d+)$", out, re.M)
    assert found, out
    return int(found.group(1))


@ON_EVERY_BACKEND
def test_a_short_check_of_a_running_server_passes(backend: Backend, tmp_path: Path) -> None:
    """The account from --account-sid/--auth-token (the environment here), the API key created in
    the server's store (reached through REDIS_URL) since none is given."""
    record = tmp_path / "run.json"
    env = {"REDIS_URL": backend.redis_url, **backend.env}
    out = check("--url", backend.server.base_url, "--duration", "2", "--record", str(record), env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.startswith("sync-server check: OK")
    assert figure(out.stdout, "operations") > 20 and figure(out.stdout, "anomalies") == 0
    assert (
        figure(out.stdout, "events delivered") > 0 and figure(out.stdout, "documents checked for linearizability") == 3
    )
    # the recording verifies again, offline, to the same verdict
    again = check("--verify", str(record))
    assert again.returncode == 0 and again.stdout.startswith("sync-server check: OK"), again.stdout


def _tamper(src: Path, dst: Path, how: str) -> None:
    rec: dict[str, Any] = json.loads(src.read_text())
    objs = rec["objects"]
    doc = next(o for o in objs.values() if o["kind"] == "document" and any(op["outcome"] == "ok" for op in o["ops"]))
    if how == "lost write":  # the log no longer holds an acknowledged write: the event is dropped
        acked = next(op for op in doc["ops"] if op["kind"] == "cas" and op["outcome"] == "ok")
        doc["log"] = [e for e in doc["log"] if e["id"] != acked["revision"]]
    elif how == "stale read":  # a read answers the initial value after writes were acknowledged
        last = max((op for op in doc["ops"] if op["kind"] == "read"), key=lambda op: op["invoke"])
        last.update(value="init", revision=0)
    elif how == "doubled delivery":  # a subscriber got one event twice
        events = next(evs for per in rec["deliveries"].values() for evs in per.values() if evs)
        events.insert(1, events[0])
    dst.write_text(json.dumps(rec))


def test_the_checker_rejects_tampered_recordings(server: ServerProcess, tmp_path: Path) -> None:
    record = tmp_path / "run.json"
    out = check("--url", server.base_url, "--duration", "2", "--record", str(record), "--seed", "3",
                env=_redis_env(server))  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    for how, expect in [
        ("lost write", "[acknowledged writes kept]"),
        ("stale read", "[linearizable] "),
        ("doubled delivery", "[delivered once, in order]"),
    ]:
        bad = tmp_path / f"{how}.json"
        _tamper(record, bad, how)
        got = check("--verify", str(bad))
        assert got.returncode == 1, (how, got.stdout)
        assert "FAILED" in got.stdout and expect in got.stdout, (how, got.stdout)


def _redis_env(server: ServerProcess) -> dict[str, str]:
    assert server.redis_url
    return {"REDIS_URL": server.redis_url}


def test_a_check_with_faults_on_a_spawned_server_passes() -> None:
    """kill -9 of the spawned server and of its Valkey during 8 s of load: still nothing lost, at the
    level that promises it across a crash of Valkey (SYNC_DURABILITY=fsync). At the default `local`,
    Valkey's `appendfsync everysec` may postpone its AOF write while an earlier fsync runs (a loaded
    disk) and reply meanwhile, so a kill -9 can take the last acknowledged writes with it: this check
    found exactly that in CI (README, Durability and failover)."""
    out = check("--spawn", "--faults", "--durability", "fsync", "--duration", "8", "--seed", "1", timeout=110)
    assert out.returncode == 0, out.stdout + out.stderr
    assert figure(out.stdout, "faults injected") >= 1 and figure(out.stdout, "anomalies") == 0


@pytest.mark.chaos
@pytest.mark.timeout(int(240 * SCALE))
def test_a_check_with_master_kills_on_a_spawned_cluster_passes() -> None:
    """``--spawn --cluster --faults``: a Valkey Cluster of 3 masters + 3 replicas and two servers on it;
    during 20 s of load, kill -9 of a server and of a Cluster master (its replica is promoted; the old
    master comes back as a replica). At ``--durability replica`` a write is acknowledged once a replica
    has it, so a master's kill loses nothing acknowledged: the verdict must be OK."""
    out = check("--spawn", "--cluster", "--faults", "--durability", "replica", "--duration", "20", "--seed", "1",
                timeout=200)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    kills = re.search(r"^  faults: .*kill -9 valkey cluster master=(\d+)", out.stdout, re.M)
    assert kills and int(kills.group(1)) >= 1, out.stdout
    assert figure(out.stdout, "anomalies") == 0 and figure(out.stdout, "events delivered") > 0


def test_faults_and_a_cluster_are_only_for_a_deployment_the_checker_spawns() -> None:
    for flags in (["--faults"], ["--cluster"]):
        out = check("--url", "http://127.0.0.1:9", *flags, timeout=30)
        assert out.returncode == 1 and "needs --spawn" in out.stderr, (flags, out.stderr)


class _Valkey:
    """A Valkey with a data dir of its own, which the test can snapshot and later rewind to."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="sync-check-rewind-")
        self.proc = self._start()

    def _start(self) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [server_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.dir],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10 * SCALE
        while self.cli("ping") != "PONG":
            assert time.monotonic() < deadline, "Valkey did not start"
            time.sleep(0.05)
        return proc

    def cli(self, *args: str) -> str:
        cli = os.path.join(os.path.dirname(server_binary()), "valkey-cli")
        done = subprocess.run([cli, "-p", str(self.port), *args], capture_output=True, text=True, timeout=30)
        return done.stdout.strip()

    def rewind(self) -> None:
        """Back to the last SAVE: kill -9, then start again on the same dir (it loads dump.rdb)."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.proc = self._start()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def test_the_checker_fails_when_the_store_is_rewound_mid_run(tmp_path: Path) -> None:
    """A server whose Valkey is restored to a snapshot taken 2 s earlier loses acknowledged writes
    and hands out their event ids again: the checker must say so, and exit 1. Its Documents take up to
    8,000 operations each (``--max-ops``), so that they are still read and written after the rewind
    whatever the machine's speed: with the default 600, a quiet machine had done them all before it,
    no read saw the rewound state, and the linearizability check had nothing to refuse; with 2,000,
    once REST writes got faster, a quiet CI run had too (~2,200 Document operations a second)."""
    valkey = _Valkey()
    try:
        with ServerProcess(redis_url=f"redis://127.0.0.1:{valkey.port}/0") as srv:
            out = _rewound_check(srv, valkey)
    finally:
        valkey.stop()
    assert out.returncode == 1, out.stdout + out.stderr
    assert "check acknowledged writes kept: FAILED" in out.stdout, out.stdout
    assert "check linearizable: FAILED" in out.stdout, out.stdout


def _rewound_check(srv: ServerProcess, valkey: _Valkey) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNC_", "TWILIO_", "REDIS_"))}
    env.update(TWILIO_ACCOUNT_SID=ACCOUNT_SID, TWILIO_AUTH_TOKEN=AUTH_TOKEN, REDIS_URL=srv.redis_url or "")
    cmd = [
        sys.executable,
        "-c",
        "from app.cli import main; main()",
        "check",
        "--url",
        srv.base_url,
        "--duration",
        "6",
        "--max-ops",
        "8000",
    ]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # the workload starts once the first line is printed
    assert proc.stderr is not None
    while "s on http" not in proc.stderr.readline():
        assert proc.poll() is None, proc.stderr.read()
    time.sleep(1.5)
    assert valkey.cli("save") == "OK"
    time.sleep(2.0)
    valkey.rewind()
    stdout, stderr = proc.communicate(timeout=90 * SCALE)
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)
