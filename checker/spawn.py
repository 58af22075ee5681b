"""``--spawn``: a deployment of the checker's own, in a temporary directory, and ``--faults``: kill -9
of its processes at random moments during the run.

Standalone (the default): one sync-server with its embedded Valkey; a fault kills the server (then
starts it again on the same port and data) or its Valkey (which the server restarts itself).

``--cluster``: a Valkey Cluster of 3 masters + 3 replicas (checker.cluster, AOF on) and two
sync-servers on it (``REDIS_URL`` naming one node, ``REDIS_CLUSTER=true``); the workload's clients
are spread over both, so a subscriber on one sees the writes made through the other. A fault kills
a server (started again as above) or, in a loop of its own, a Cluster master: its replica is
promoted, and 0.5–2 s later the killed node is started again and rejoins as a replica. A server
(re)started meanwhile is given a node that is up as its ``REDIS_URL``, as an operator would.

The server is started as a command (``python -c "from app.cli import main; main()"``), never
imported: the checker drives it from the outside like any client would.
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from storage.embedded import free_port

from .cluster import ValkeyCluster
from .workload import Target, now

START = [sys.executable, "-c", "from app.cli import main; main()"]
CLUSTER_SERVERS = 2
MASTER_KILL = "kill -9 valkey cluster master"


class Server:
    """One sync-server process on a port and data dir of its own, started again after a kill."""

    def __init__(self, env: dict[str, str], data_dir: Path) -> None:
        self.port = free_port()
        data_dir.mkdir(parents=True, exist_ok=True)
        self.env = {**env, "SYNC_DATA_DIR": str(data_dir), "SYNC_PORT": str(self.port)}
        self.log = data_dir / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 60.0) -> int:
        """Start it and wait until it is ready; the number of processes that took. A server that
        exits on start (its Redis unreachable: a Cluster in the middle of a failover) is started
        again after 0.5 s, as systemd's ``Restart=`` would."""
        attempts = 0
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                if attempts:
                    time.sleep(0.5)
                attempts += 1
                with open(self.log, "ab") as log:
                    self.proc = subprocess.Popen([*START, "serve"], env=self.env, stdout=log, stderr=log)
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=1) as r:
                    if r.status == 200:
                        return attempts
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(
            f"sync-server not ready after {timeout_s} s ({attempts} starts): {self.log.read_text()[-2000:]}"
        )

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Spawned:
    """The checker's own deployment: its servers and, with ``cluster``, its Valkey Cluster (else each
    server's embedded Valkey), under one temporary directory that keeps their logs after the run."""

    def __init__(self, event_log_max: int = 1000, durability: str = "local", cluster: bool = False) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="sync-check-"))
        self.account_sid = "AC" + secrets.token_hex(16)
        self.auth_token = secrets.token_hex(16)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNC_", "TWILIO_", "REDIS_"))}
        env.update(
            SYNC_HOST="127.0.0.1",
            SYNC_LOG_LEVEL="warning",
            SYNC_DRAIN_S="0",
            SYNC_EVENT_LOG_MAX=str(event_log_max),
            SYNC_DURABILITY=durability,
            TWILIO_ACCOUNT_SID=self.account_sid,
            TWILIO_AUTH_TOKEN=self.auth_token,
        )
        self.with_cluster = cluster
        self.cluster: ValkeyCluster | None = None
        if cluster:
            env["REDIS_CLUSTER"] = "true"
            self.servers = [Server(env, self.dir / f"server-{n}") for n in range(CLUSTER_SERVERS)]
        else:
            self.servers = [Server(env, self.dir)]
        # Cluster nodes killed, or revived but not yet in sync: no server is given one as its REDIS_URL
        self.down: set[int] = set()
        # nodes named by the REDIS_URL of a server being started: not killed until it is up (its
        # Cluster client needs that node for its first CLUSTER SLOTS; once up it follows the Cluster)
        self.seeding: set[int] = set()
        self.lock = threading.Lock()

    def start(self) -> None:
        if self.with_cluster:
            # appendfsync always, as the embedded Valkey and deploy/redis.conf (storage/durability.py)
            self.cluster = ValkeyCluster(aof=True, appendfsync="always", dir=str(self.dir / "valkey"))
        for server in self.servers:
            self.start_server(server)

    def start_server(self, server: Server) -> int:
        """Start ``server`` (again); the number of processes that took (see Server.start)."""
        if self.cluster is None:
            return server.start()
        with self.lock:
            seed = next(p for p in self.cluster.alive() if p not in self.down)
            self.seeding.add(seed)
        server.env["REDIS_URL"] = f"redis://127.0.0.1:{seed}/0"
        try:
            return server.start()
        finally:
            with self.lock:
                self.seeding.discard(seed)

    def pick_master(self, rng: random.Random) -> int | None:
        """A master to kill (marked down), at random; None while every master names a starting server's seed."""
        assert self.cluster is not None
        masters = self.cluster.masters()
        with self.lock:
            free = [m for m in masters if m not in self.seeding]
            if not free:
                return None
            port = rng.choice(free)
            self.down.add(port)
            return port

    def target(self) -> Target:
        """The deployment's account, and an API key made with ``sync-server keys create`` on its store."""
        out = subprocess.run(
            [*START, "keys", "create", "--name", "sync-server check"],
            env=self.servers[0].env, capture_output=True, text=True, check=True, timeout=60,
        ).stdout  # fmt: skip
        fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        urls = [s.url for s in self.servers]
        key, secret = fields["sid"].strip(), fields["secret"].strip()
        return Target(urls[0], self.account_sid, self.auth_token, key, secret, tuple(urls[1:]))

    def kill_valkey(self) -> bool:
        """kill -9 of the standalone server's embedded Valkey (named by its pid file)."""
        try:
            pid = int((self.dir / "redis" / "valkey.pid").read_text().strip())
            os.kill(pid, signal.SIGKILL)
            return True
        except (OSError, ValueError):
            return False

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
        if self.cluster is not None:
            self.cluster.stop()


class Faults:
    """Every 1–4 s (random, seeded) until the deadline: kill -9 a server, or the standalone Valkey; on a
    Cluster, besides, in a loop of its own, kill -9 a master and later start it again."""

    def __init__(self, spawned: Spawned, seed: int, faults: list[dict[str, Any]], errors: list[str]) -> None:
        self.spawned = spawned
        self.rng = random.Random(f"{seed}-faults")
        self.masters_rng = random.Random(f"{seed}-masters")
        self.faults = faults
        self.errors = errors

    async def run(self, deadline: float) -> None:
        loops = [self._processes(deadline)]
        if self.spawned.cluster is not None:
            loops.append(self._masters(self.spawned.cluster, deadline))
        await asyncio.gather(*loops)

    async def _processes(self, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        servers = self.spawned.servers
        while True:
            await asyncio.sleep(self.rng.uniform(1.0, 4.0))
            if now() >= deadline - 1.0:
                return
            if self.spawned.cluster is None and self.rng.random() >= 0.5:
                if self.spawned.kill_valkey():
                    self.faults.append({"t": now(), "what": "kill -9 valkey"})
                continue
            server = servers[0] if len(servers) == 1 else self.rng.choice(servers)
            server.kill()
            fault: dict[str, Any] = {"t": now(), "what": "kill -9 sync-server", "url": server.url}
            self.faults.append(fault)
            await asyncio.sleep(self.rng.uniform(0.1, 1.0))
            fault["starts"] = await loop.run_in_executor(None, self.spawned.start_server, server)

    async def _masters(self, cluster: ValkeyCluster, deadline: float) -> None:
        """One master at a time, and only on a whole Cluster (every replica in sync), so that every
        kill has a replica to promote; the killed node is started again only once its replica took
        over (back sooner, it would still be the master)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.masters_rng.uniform(1.0, 4.0))
            if now() >= deadline - 1.0:
                return
            port = await loop.run_in_executor(None, self.spawned.pick_master, self.masters_rng)
            if port is None:
                continue
            fault: dict[str, Any] = {"t": now(), "what": MASTER_KILL, "port": port}
            self.faults.append(fault)
            try:
                fault["promoted"] = await loop.run_in_executor(None, cluster.kill_master, port)
                fault["failover_s"] = round(now() - fault["t"], 2)
                await asyncio.sleep(self.masters_rng.uniform(0.5, 2.0))
                await loop.run_in_executor(None, cluster.revive, port)
                fault["whole_again_s"] = round(now() - fault["t"], 2)
            except (RuntimeError, ValueError) as exc:  # the Cluster itself did not heal: the run proves nothing more
                self.errors.append(f"Valkey Cluster after the kill of master {port}: {exc}")
                return
            self.spawned.down.discard(port)
