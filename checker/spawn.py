"""``--spawn``: a sync-server of the checker's own, with its embedded Valkey in a temporary data dir,
and ``--faults``: kill -9 of that server (then a restart on the same port and data) or of its Valkey
(which the server restarts itself) at random moments during the run.

The server is started as a command (``python -c "from app.cli import main; main()"``), never
imported: the checker drives it from the outside like any client would.
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from .workload import Target, now

START = [sys.executable, "-c", "from app.cli import main; main()"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Spawned:
    def __init__(self, event_log_max: int = 1000, durability: str = "local") -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="sync-check-"))
        self.port = _free_port()
        self.account_sid = "AC" + secrets.token_hex(16)
        self.auth_token = secrets.token_hex(16)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNC_", "TWILIO_", "REDIS_"))}
        self.env.update(
            SYNC_DATA_DIR=str(self.dir),
            SYNC_PORT=str(self.port),
            SYNC_HOST="127.0.0.1",
            SYNC_LOG_LEVEL="warning",
            SYNC_DRAIN_S="0",
            SYNC_EVENT_LOG_MAX=str(event_log_max),
            SYNC_DURABILITY=durability,
            TWILIO_ACCOUNT_SID=self.account_sid,
            TWILIO_AUTH_TOKEN=self.auth_token,
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.dir / "server.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 60.0) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([*START, "serve"], env=self.env, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sync-server exited: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"sync-server not ready after {timeout_s} s: {self.log.read_text()[-2000:]}")

    def target(self) -> Target:
        """The server's account, and an API key made with ``sync-server keys create`` on its data dir."""
        out = subprocess.run(
            [*START, "keys", "create", "--name", "sync-server check"],
            env=self.env, capture_output=True, text=True, check=True, timeout=60,
        ).stdout  # fmt: skip
        fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        return Target(self.url, self.account_sid, self.auth_token, fields["sid"].strip(), fields["secret"].strip())

    def kill_server(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def kill_valkey(self) -> bool:
        try:
            pid = int((self.dir / "redis" / "valkey.pid").read_text().strip())
            os.kill(pid, signal.SIGKILL)
            return True
        except (OSError, ValueError):
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Faults:
    """Kill -9 the server or its Valkey every 1–4 s (random, seeded), until the deadline."""

    def __init__(self, spawned: Spawned, seed: int, faults: list[dict[str, Any]]) -> None:
        self.spawned = spawned
        self.rng = random.Random(f"{seed}-faults")
        self.faults = faults

    async def run(self, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.rng.uniform(1.0, 4.0))
            if now() >= deadline - 1.0:
                return
            if self.rng.random() < 0.5:
                self.spawned.kill_server()
                self.faults.append({"t": now(), "what": "kill -9 sync-server"})
                await asyncio.sleep(self.rng.uniform(0.1, 1.0))
                await loop.run_in_executor(None, self.spawned.start)
            elif self.spawned.kill_valkey():
                self.faults.append({"t": now(), "what": "kill -9 valkey"})
