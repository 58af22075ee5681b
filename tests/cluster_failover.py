"""Valkey topologies with replicas for the durability and failover tests (tests/test_durability.py,
tests/test_failover.py, tests/bench/failover.py): a primary with one replica, and a Cluster of 3
masters + 3 replicas whose nodes fail over within about a second (``cluster-node-timeout`` 1000 ms)
so a test that kills a master stays bounded. AOF on, at appendfsync everysec: what these tests are
about is the replica, not the disk (deploy/redis.conf says always).

The Cluster is checker/cluster.py's (as tests/helpers.py's ClusterProcess, the suite's fast fixture
without persistence), with AOF on and a shorter node timeout."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

import httpx

from checker.cluster import ValkeyCluster
from realtime.client import SyncClient
from storage import Store, accounts, keys
from storage.embedded import free_port, server_binary
from tests.helpers import ACCOUNT_SID, AUTH_TOKEN, SCALE, ServerProcess
from tests.sdk import token

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
        self.args: dict[int, tuple[str, ...]] = {}

    def start(self, *args: str, port: int = 0) -> int:
        port = port or free_port()
        self.args[port] = args
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

    def restart(self, port: int) -> None:
        """Start a killed node again on its port, data and arguments (a Cluster node rejoins as a
        replica of the master that took over from it)."""
        self.start(*self.args[port], port=port)

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


class ReplicatedCluster(ValkeyCluster):
    """checker/cluster.py's Cluster, 3 masters + 3 replicas, with AOF and fast failover
    (``NODE_TIMEOUT_MS``), and what the failover load needs: which master serves a key, a kill that
    does not wait, a wait for the promotion, and the killed node back as a replica."""

    def __init__(self, masters: int = 3) -> None:
        temp = tempfile.mkdtemp(prefix="sync-test-failover-")
        super().__init__(masters, 1, NODE_TIMEOUT_MS, aof=True, patience=SCALE, dir=temp)

    def owner(self, key: str) -> int:
        """The port of the live master serving ``key``'s slot, as a live node sees the Cluster now."""
        slot = int(self.cli("-p", str(self.alive()[0]), "cluster", "keyslot", key).strip())
        for n in self._nodes():
            if "master" not in n[2] or "fail" in n[2]:  # "fail?": suspected, not yet failed over
                continue
            for r in n[8:]:
                lo, _, hi = r.partition("-")
                if r[0].isdigit() and int(lo) <= slot <= int(hi or lo):
                    return int(n[1].split("@")[0].split(":")[1])
        raise LookupError(f"no master serves slot {slot}")

    def kill(self, port: int) -> None:
        """kill -9 (no shutdown, no last AOF write), without waiting for a replica to take over."""
        self.procs[port].kill()
        self.procs[port].wait(10)

    def wait_promoted(self, key: str, dead: int, within_s: float = 20.0) -> int:
        """Wait until a live master serves ``key``'s slot again after ``dead`` was killed; its port."""
        deadline = time.monotonic() + within_s * SCALE
        while time.monotonic() < deadline:
            try:
                owner = self.owner(key)
                if owner != dead and "cluster_state:ok" in self.cli("-p", str(owner), "cluster", "info"):
                    return owner
            except (LookupError, subprocess.CalledProcessError, subprocess.TimeoutExpired):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"no replica took over from {dead}")

    def restart(self, port: int) -> None:
        """The killed node back on its port and data, a replica of the master that took its place."""
        self.revive(port)


# --- the load: REST writers and a subscriber while a master is killed ---------------------------------

WRITERS = 4
BEFORE_S = 1.0  # writes before the kill
AFTER_OK = 20  # acknowledged writes after the kill that prove recovery


@dataclass
class Run:
    acked: set[str] = field(default_factory=set)
    statuses: dict[int, int] = field(default_factory=dict)
    killed_at: float = 0.0
    last_ack_before: float = 0.0
    first_ack_after: float = 0.0
    acked_after: int = 0
    failures: list[str] = field(default_factory=list)  # answers other than 201 and 503/20503

    @property
    def pause_s(self) -> float:
        return self.first_ack_after - self.last_ack_before


async def service_off_first_node(http: httpx.AsyncClient, cluster: ReplicatedCluster) -> str:
    """A Service whose slot is not on the node REDIS_URL names, so that killing its master also
    leaves the server's seed node up (the brokers follow the failover: realtime/cluster_broker.py)."""
    for _ in range(20):
        r = await http.post("/v1/Services", data={"FriendlyName": "failover"})
        assert r.status_code == 201, r.text
        sid = str(r.json()["sid"])
        if cluster.owner(keys.service_prefix(sid)) != cluster.ports[0]:
            return sid
    raise AssertionError("every Service landed on the first node")


async def failover_under_load(cluster: ReplicatedCluster, server: ServerProcess) -> tuple[Run, set[str], set[str]]:
    """(the run, keys present after the failover, keys the subscriber received)."""
    run = Run()
    async with httpx.AsyncClient(base_url=server.base_url, auth=(ACCOUNT_SID, AUTH_TOKEN), timeout=30) as http:
        service = await service_off_first_node(http, cluster)
        r = await http.post(f"/v1/Services/{service}/Maps", data={"UniqueName": "m"})
        assert r.status_code == 201, r.text
        map_sid = r.json()["sid"]
        store = await Store.connect(cluster.url, cluster=True)
        key = await accounts.create_key(store, ACCOUNT_SID, "failover")
        await store.close()
        received: set[str] = set()
        expected: set[str] | None = None  # what the store has, once the writers are done
        caught_up = asyncio.Event()
        sub = await SyncClient.connect(server.ws_url, token(key.sid, key.secret, service, "watcher"))
        await sub.subscribe(map_sid, "map")

        async def listen() -> None:
            while True:
                ev = await sub.next_event(3600)
                if ev["event_type"] == "map_item_added":
                    received.add(ev["event"]["item_key"])
                if expected is not None and expected <= received:
                    caught_up.set()

        listener = asyncio.create_task(listen())
        stop = asyncio.Event()

        async def writer(w: int) -> None:
            i = 0
            while not stop.is_set():
                k = f"w{w}-{i}"
                i += 1
                sent = time.monotonic()
                try:
                    resp = await http.post(f"/v1/Services/{service}/Maps/m/Items", data={"Key": k, "Data": '{"x": 1}'})
                except httpx.HTTPError as exc:  # counted: the test fails on any (never a dropped request)
                    run.failures.append(f"{k}: {exc!r}")
                    await asyncio.sleep(0.02)
                    continue
                run.statuses[resp.status_code] = run.statuses.get(resp.status_code, 0) + 1
                now = time.monotonic()
                if resp.status_code == 201:
                    run.acked.add(k)
                    if not run.killed_at:
                        run.last_ack_before = now
                    elif sent > run.killed_at:  # a request sent after the kill: the pause ends with the first of these
                        run.first_ack_after = run.first_ack_after or now
                        run.acked_after += 1
                        if run.acked_after >= AFTER_OK:
                            stop.set()
                else:
                    if resp.status_code != 503 or resp.json()["code"] != 20503:
                        run.failures.append(f"{k}: {resp.status_code} {resp.text}")
                    await asyncio.sleep(0.02)

        writers = [asyncio.create_task(writer(w)) for w in range(WRITERS)]
        await asyncio.sleep(BEFORE_S)
        victim = cluster.owner(keys.service_prefix(service))
        cluster.kill(victim)
        run.killed_at = time.monotonic()
        await asyncio.to_thread(cluster.wait_promoted, keys.service_prefix(service), victim)
        # the promoted master has no replica left: with ``replica`` its writes answer 503 until the
        # old master is back as its replica (the operator's restart, or a second replica per master)
        await asyncio.to_thread(cluster.restart, victim)
        try:
            await asyncio.wait_for(stop.wait(), 30 * SCALE)
        finally:
            stop.set()
            await asyncio.gather(*writers)
            assert run.acked_after >= AFTER_OK, f"no recovery: {run.statuses} {run.failures[-5:]}"

        present: set[str] = set()
        url: str | None = f"/v1/Services/{service}/Maps/m/Items?PageSize=1000"
        while url:
            page = await http.get(url)
            assert page.status_code == 200, page.text
            present |= {item["key"] for item in page.json()["items"]}
            url = page.json()["meta"]["next_page_url"]
        expected = present
        if not present <= received:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(caught_up.wait(), 10 * SCALE)
        listener.cancel()
        await sub.close()
    return run, present, received
