"""SYNC_DURABILITY end to end on standalone Valkey: fsync and replica acknowledge only what they
promise, refuse a setup where they cannot work, and answer 503/20503 (never 500) when the wait
times out. The failover behaviour on a Cluster is tests/test_failover.py."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from redis import Redis

from storage.durability import EVERYSEC_WARNING
from storage.embedded import url_file
from tests.cluster_failover import ReplicatedPair
from tests.helpers import ACCOUNT_SID, AUTH_TOKEN, RedisProcess, ServerProcess


@pytest.fixture
def pair() -> Iterator[ReplicatedPair]:
    with ReplicatedPair() as p:
        yield p


def _client(server: ServerProcess) -> httpx.Client:
    return httpx.Client(base_url=server.base_url, auth=(ACCOUNT_SID, AUTH_TOKEN), timeout=10)


def _service(c: httpx.Client) -> str:
    r = c.post("/v1/Services", data={"FriendlyName": "durable"})
    assert r.status_code == 201, r.text
    return str(r.json()["sid"])


def _appendfsync(server: ServerProcess) -> str:
    """The appendfsync of the server's embedded Valkey (its URL is in the data dir)."""
    url = url_file(server.data_dir).read_text().strip()
    with Redis.from_url(url) as valkey:
        return str(valkey.config_get("appendfsync")["appendfsync"])


def test_fsync_acknowledges_writes_on_the_embedded_valkey() -> None:
    """The embedded Valkey has AOF on: WAITAOF 1 0 answers once the write is fsynced. It runs
    appendfsync always (nothing leaves Valkey before its fsync) unless told otherwise, so the server
    has nothing to warn about; told everysec, it warns."""
    with ServerProcess(env={"SYNC_DURABILITY": "fsync"}) as server, _client(server) as c:
        assert _appendfsync(server) == "always"
        service = _service(c)
        for i in range(5):
            r = c.post(f"/v1/Services/{service}/Documents", data={"UniqueName": f"d{i}", "Data": '{"n": 1}'})
            assert r.status_code == 201, r.text
    log = Path(server.log_path).read_text()
    assert EVERYSEC_WARNING.split("%s")[0] not in log and "appendfsync always)" in log  # the start line says it
    with ServerProcess(env={"SYNC_DURABILITY": "fsync", "SYNC_REDIS_APPENDFSYNC": "everysec"}) as server:
        assert _appendfsync(server) == "everysec"
    log = Path(server.log_path).read_text()
    assert EVERYSEC_WARNING % "everysec" in log and "appendfsync everysec)" in log


def test_fsync_refuses_to_start_without_aof(redis_server: RedisProcess) -> None:
    """The session's Valkey runs with appendonly no: fsync could never be confirmed, so say so at once."""
    server = ServerProcess(redis_url=redis_server.url, env={"SYNC_DURABILITY": "fsync"})
    with pytest.raises(RuntimeError):
        server.start()
    server.stop()
    log = Path(server.log_path).read_text()
    assert "Traceback" not in log, log  # one line, from serve itself, before any worker starts
    assert log.strip().splitlines()[-1].startswith("sync-server: SYNC_DURABILITY=fsync needs appendonly yes"), log


def test_replica_durability_with_a_replica_acknowledges(pair: ReplicatedPair) -> None:
    with ServerProcess(redis_url=pair.url, env={"SYNC_DURABILITY": "replica"}) as server, _client(server) as c:
        service = _service(c)
        r = c.post(f"/v1/Services/{service}/Documents", data={"UniqueName": "d", "Data": '{"n": 1}'})
        assert r.status_code == 201, r.text
        # acknowledged means the replica has it already: read it there, with no wait
        replica = Redis(port=pair.replica)
        assert any(k.endswith(r.json()["sid"].encode()) for k in replica.keys(f"sync:{{{service}}}:o:*"))
        replica.close()


def test_replica_durability_without_a_replica_answers_503_but_applies(redis_server: RedisProcess) -> None:
    """No replica can confirm: 503/20503 after the timeout, never 500; the primary did apply the write
    (the README says so: retry with an Idempotency-Key)."""
    env = {"SYNC_DURABILITY": "replica", "SYNC_DURABILITY_TIMEOUT_MS": "200"}
    with ServerProcess(redis_url=redis_server.url, env=env) as server, _client(server) as c:
        r = c.post("/v1/Services", data={"FriendlyName": "x"})  # Services are not written by a script
        service = r.json()["sid"]
        started = time.monotonic()
        r = c.post(f"/v1/Services/{service}/Documents", data={"UniqueName": "d", "Data": '{"n": 1}'})
        assert r.status_code == 503 and r.json()["code"] == 20503, r.text
        assert time.monotonic() - started >= 0.2
        got = c.get(f"/v1/Services/{service}/Documents/d")
        assert got.status_code == 200 and got.json()["data"] == {"n": 1}
