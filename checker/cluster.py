"""A throwaway Valkey Cluster on free ports (``sync-server check --spawn --cluster``, and the test
suite's Cluster fixture): masters and replicas of the valkey-server binary the embedded store runs
(storage.embedded.server_binary), joined with ``valkey-cli --cluster create``.

Ready means every slot is served and every replica is in sync with its master. Roles change at each
failover, so they are read live from ``CLUSTER NODES``: ``masters()`` and ``replicas()`` (ports),
``replica_of(port)``. ``kill_master(port)`` is the fault: SIGKILL of a master, then a wait until its
replica is promoted and every slot is served again (returns the promoted port). ``revive(port)``
starts the killed node again on its port, configuration and data: it learns from the others that it
was failed over, rejoins as a replica of the node that took its place, and full-syncs from it; the
call returns once it is in sync, so the Cluster is whole again.

Each node has a directory of its own (its ``nodes.conf``, and its AOF when ``aof`` is on: as in
production, and so that ``SYNC_DURABILITY=fsync`` works on it). Failure detection takes
``node_timeout_ms`` (2 s: quick, yet not fooled by a loaded machine). Waits are multiplied by
``patience`` on slow machines.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time

from storage.embedded import free_port, server_binary

LAUNCH_ATTEMPTS = 5


class NodeExited(RuntimeError):
    """A node's process ended while it was waited for (e.g. its port was taken)."""


class ValkeyCluster:
    def __init__(
        self,
        masters: int = 3,
        replicas: int = 1,
        node_timeout_ms: int = 2000,
        aof: bool = False,
        appendfsync: str = "everysec",
        patience: float = 1.0,
        dir: str | None = None,
    ) -> None:
        self.dir = dir or tempfile.mkdtemp(prefix="sync-cluster-")
        self.node_timeout_ms = node_timeout_ms
        self.aof = aof
        self.appendfsync = appendfsync  # with aof
        self.patience = patience
        self.ports: list[int] = []
        self._bus: dict[int, int] = {}  # node port -> its cluster bus port
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        try:
            for _ in range(masters * (1 + replicas)):
                self.ports.append(self._launch())
            nodes = [f"127.0.0.1:{p}" for p in self.ports]
            self.cli("--cluster", "create", *nodes, "--cluster-replicas", str(replicas), "--cluster-yes")
            self.wait_healthy()
        except BaseException:
            self.stop()
            raise

    def _launch(self) -> int:
        """Start one node on free ports and wait for its PONG (its port). A free port can be taken
        by another process before the node binds it (several suites start servers at once); the node
        then exits at once, and is started again on new ports."""
        for _ in range(LAUNCH_ATTEMPTS):
            port = free_port()
            self._bus[port] = free_port()
            self.procs[port] = self._start(port)
            try:
                self._wait(port, "ping", "PONG")
                return port
            except NodeExited:
                del self.procs[port], self._bus[port]
        raise RuntimeError(f"Valkey Cluster: no node started on {LAUNCH_ATTEMPTS} pairs of free ports")

    def _start(self, port: int) -> subprocess.Popen[bytes]:
        node_dir = os.path.join(self.dir, str(port))
        os.makedirs(node_dir, exist_ok=True)
        persistence = ["--appendonly", "yes", "--appendfsync", self.appendfsync] if self.aof else ["--appendonly", "no"]
        # the bus port must be given: the default (port + 10000) overflows for high free ports
        return subprocess.Popen(
            [server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
             "--cluster-port", str(self._bus[port]), "--cluster-config-file", "nodes.conf",
             "--cluster-node-timeout", str(self.node_timeout_ms), "--repl-diskless-sync-delay", "0", "--save", "",
             *persistence, "--dir", node_dir],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip

    def cli(self, *args: str) -> str:
        """valkey-cli's output; CalledProcessError when it fails (a node that does not answer)."""
        cli = os.path.join(os.path.dirname(server_binary()), "valkey-cli")
        done = subprocess.run([cli, *args], capture_output=True, text=True, timeout=30 * self.patience, check=True)
        return done.stdout

    def _wait(self, port: int, command: str, expect: str) -> None:
        deadline = time.monotonic() + 20 * self.patience
        while time.monotonic() < deadline:
            proc = self.procs.get(port)
            if proc is not None and proc.poll() is not None:
                raise NodeExited(f"Valkey Cluster node {port} exited with status {proc.returncode}")
            try:
                if expect in self.cli("-p", str(port), *command.split()):
                    return
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"Valkey Cluster node {port}: no {expect!r}")

    def alive(self) -> list[int]:
        """Ports of the nodes whose process runs (killed ones excluded until revived)."""
        return [p for p, proc in self.procs.items() if proc.poll() is None]

    def _nodes(self) -> list[list[str]]:
        """``CLUSTER NODES`` as seen by a live node: one field list per node that is not failed."""
        lines = self.cli("-p", str(self.alive()[0]), "cluster", "nodes").splitlines()
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
        for p in self.alive():
            self._wait(p, "cluster info", "cluster_state:ok")
        deadline = time.monotonic() + 30 * self.patience
        while time.monotonic() < deadline:
            try:
                pending = [p for p in self.replicas() if not self._in_sync(p)]
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
                pending = [-1]
            if not pending:
                return
            time.sleep(0.1)
        raise RuntimeError(f"Valkey Cluster: replicas not in sync: {pending}")

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
        deadline = time.monotonic() + 30 * self.patience
        while time.monotonic() < deadline:
            try:
                if "role:master" in self.cli("-p", str(replica), "info", "replication"):
                    break
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
                pass
            time.sleep(0.05)
        else:
            raise RuntimeError(f"Valkey Cluster: replica {replica} of {port} not promoted")
        for p in self.alive():
            self._wait(p, "cluster info", "cluster_state:ok")
        return replica

    def revive(self, port: int) -> None:
        """Start a killed node again (same config, ports and data): it rejoins as a replica; wait until in sync."""
        self.procs[port] = self._start(port)
        self._wait(port, "ping", "PONG")
        deadline = time.monotonic() + 30 * self.patience
        while port not in self.replicas() and time.monotonic() < deadline:
            time.sleep(0.1)
        self.wait_healthy()

    @property
    def url(self) -> str:
        """The first node's URL (``kill_master`` never picks it by default)."""
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def __enter__(self) -> ValkeyCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            proc.wait(10)
