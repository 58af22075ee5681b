"""Valkey topologies with replicas for the durability and failover tests (tests/test_durability.py,
tests/test_failover.py, tests/bench/failover.py): a primary with one replica, and a Cluster of 3
masters + 3 replicas whose nodes fail over within about a second (``cluster-node-timeout`` 1000 ms)
so a test that kills a master stays bounded. AOF on (appendfsync everysec) as in production.

Kept apart from tests/helpers.py's ClusterProcess (no replicas, no persistence: the fast fixture of
the rest of the suite) so the two evolve independently."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time

from storage.embedded import free_port, server_binary
from tests.helpers import SCALE

NODE_TIMEOUT_MS = 1000


def cli(*args: str, check: bool = True) -> str:
    binary = os.path.join(os.path.dirname(server_binary()), "valkey-cli")
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=30 * SCALE, check=check).stdout


def wait_for(port: int, command: str, expect: str, within_s: float = 20.0) -> None:
    deadline = time.monotonic() + within_s * SCALE
    while time.monotonic() < deadline:
        try:
            if expect in cli("-p", str(port), *command.split()):
                return
        except subprocess.CalledProcessError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"Valkey {port}: no {expect!r} after {command!r}")


class Nodes:
    """Valkey processes on free ports, AOF on, each in its own directory; killed or stopped by port."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="sync-test-failover-")
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    def start(self, *args: str, port: int = 0) -> int:
        port = port or free_port()
        node_dir = os.path.join(self.dir, str(port))
        os.makedirs(node_dir, exist_ok=True)
        self.procs[port] = subprocess.Popen(
            [server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
             "--appendfsync", "everysec", "--dir", node_dir, *args],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for(port, "ping", "PONG")
        return port

    def kill(self, port: int) -> None:
        """kill -9: no shutdown, no last AOF write."""
        proc = self.procs[port]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            proc.wait(10)

    def __enter__(self) -> Nodes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ReplicatedPair(Nodes):
    """A standalone primary and one replica of it."""

    def __init__(self) -> None:
        super().__init__()
        try:
            self.primary = self.start()
            self.replica = self.start("--replicaof", "127.0.0.1", str(self.primary))
            wait_for(self.replica, "info replication", "master_link_status:up")
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.primary}/0"


class ReplicatedCluster(Nodes):
    """3 masters + 3 replicas, fast failover (``NODE_TIMEOUT_MS``)."""

    def __init__(self, masters: int = 3) -> None:
        super().__init__()
        try:
            ports = [
                self.start("--cluster-enabled", "yes", "--cluster-port", str(free_port()),
                           "--cluster-node-timeout", str(NODE_TIMEOUT_MS), "--cluster-config-file", "nodes.conf")
                for _ in range(2 * masters)
            ]  # fmt: skip
            nodes = [f"127.0.0.1:{p}" for p in ports]
            cli("--cluster", "create", *nodes, "--cluster-replicas", "1", "--cluster-yes")
            for p in ports:
                wait_for(p, "cluster info", "cluster_state:ok")
            self.ports = ports
            for p in self.replicas():
                wait_for(p, "info replication", "master_link_status:up")
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def _nodes(self, via: int) -> list[list[str]]:
        return [line.split() for line in cli("-p", str(via), "cluster", "nodes").splitlines() if line]

    def replicas(self) -> list[int]:
        return [int(n[1].split("@")[0].split(":")[1]) for n in self._nodes(self.ports[0]) if "slave" in n[2]]

    def owner(self, key: str, via: int | None = None) -> int:
        """The port of the master serving ``key``'s slot, as node ``via`` sees the Cluster."""
        via = via or next(p for p in self.ports if self.procs[p].poll() is None)
        slot = int(cli("-p", str(via), "cluster", "keyslot", key).strip())
        for n in self._nodes(via):
            if "master" not in n[2] or "fail" in n[2]:
                continue
            for r in n[8:]:
                lo, _, hi = r.partition("-")
                if r[0].isdigit() and int(lo) <= slot <= int(hi or lo):
                    return int(n[1].split("@")[0].split(":")[1])
        raise LookupError(f"no master serves slot {slot}")

    def wait_promoted(self, key: str, dead: int, within_s: float = 20.0) -> int:
        """Wait until a live master serves ``key``'s slot again after ``dead`` was killed; its port."""
        deadline = time.monotonic() + within_s * SCALE
        alive = [p for p in self.ports if p != dead]
        while time.monotonic() < deadline:
            try:
                owner = self.owner(key, alive[0])
                if owner != dead and "cluster_state:ok" in cli("-p", str(owner), "cluster", "info"):
                    return owner
            except (LookupError, subprocess.CalledProcessError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"no replica took over from {dead}")
