"""A Redis that answers but takes no writes (memory past maxmemory, a replica answering for its
primary): writes answer Twilio's 503/20503 and leave nothing half-written (the scripts' shebang has
the server refuse a whole script up front), reads go on, deletes still free memory, and writes
work again once Redis takes them.

On a Valkey of its own, whose settings the test changes."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import redis

from tests.cluster_failover import ReplicatedPair
from tests.helpers import ACCOUNT_SID, AUTH_TOKEN, SCALE, RedisProcess, ServerProcess

REFUSED = "Service unavailable: the data store is not reachable or takes no writes now"


@pytest.fixture
def server(own_redis: RedisProcess) -> Iterator[ServerProcess]:
    s = ServerProcess(redis_url=own_redis.url).start()
    yield s
    s.stop()


@pytest.fixture(params=["local", "replica"])
def primary(request: pytest.FixtureRequest) -> Iterator[tuple[str, ServerProcess]]:
    """(the primary's URL, a server on it) at SYNC_DURABILITY=local, and at ``replica`` on a primary
    with one replica (the write and its WAIT go in one pipeline: storage/durability.py)."""
    if request.param == "local":
        valkey = RedisProcess()
        server = ServerProcess(redis_url=valkey.url).start()
        yield valkey.url, server
        server.stop()
        valkey.stop()
        return
    with ReplicatedPair() as pair:
        server = ServerProcess(redis_url=pair.url, env={"SYNC_DURABILITY": "replica"}).start()
        yield pair.url, server
        server.stop()


def _refused(r: httpx.Response) -> bool:
    body = r.json()
    return r.status_code == 503 and body["code"] == 20503 and body["message"].startswith(REFUSED)


def _keys(direct: redis.Redis, service: str) -> dict[bytes, bytes]:
    """Every key of the Service with a digest of its value: what a refused write must not change."""
    return {k: direct.dump(k) or b"" for k in direct.scan_iter(match=f"sync:{{{service}}}:*")}


def test_writes_past_maxmemory_are_refused_whole_and_deletes_still_run(primary: tuple[str, ServerProcess]) -> None:
    url, server = primary
    direct = redis.Redis.from_url(url)
    with httpx.Client(base_url=server.base_url, auth=(ACCOUNT_SID, AUTH_TOKEN), timeout=10 * SCALE) as http:
        service = http.post("/v1/Services", data={"FriendlyName": "full"}).json()["sid"]
        base = f"/v1/Services/{service}"
        assert http.post(f"{base}/Documents", data={"UniqueName": "doc", "Data": '{"n": 1}'}).status_code == 201
        assert http.post(f"{base}/Maps", data={"UniqueName": "m"}).status_code == 201
        assert http.post(f"{base}/Maps/m/Items", data={"Key": "a", "Data": "{}"}).status_code == 201
        before = _keys(direct, service)

        direct.config_set("maxmemory-policy", "noeviction")
        direct.config_set("maxmemory", "1")  # every byte in use is past it
        try:
            for r in (
                http.post(f"{base}/Documents", data={"UniqueName": "new", "Data": "{}"}),
                http.post(f"{base}/Documents/doc", data={"Data": '{"n": 2}'}),
                http.post(f"{base}/Maps/m/Items", data={"Key": "b", "Data": "{}"}),
                http.post(f"{base}/Maps/m/Items/a", data={"Data": '{"x": 1}'}),
            ):
                assert _refused(r), r.text
            assert _keys(direct, service) == before  # not one key written, not even half a write
            doc = http.get(f"{base}/Documents/doc")
            assert doc.status_code == 200 and doc.json()["data"] == {"n": 1}  # reads go on
            # a delete frees memory: it runs (and records its event) past maxmemory
            assert http.delete(f"{base}/Maps/m/Items/a").status_code == 204
            assert http.get(f"{base}/Maps/m/Items/a").status_code == 404
        finally:
            direct.config_set("maxmemory", "0")
        r = http.post(f"{base}/Documents/doc", data={"Data": '{"n": 3}'})
        assert r.status_code == 200 and r.json()["revision"] == "1", r.text
    log = open(server.log_path).read()
    assert "Traceback" not in log and log.count("Redis refuses writes: command not allowed") == 1, log


def test_a_read_only_replica_refuses_writes_until_it_is_a_primary_again(
    own_redis: RedisProcess, server: ServerProcess
) -> None:
    direct = redis.Redis.from_url(own_redis.url)
    with httpx.Client(base_url=server.base_url, auth=(ACCOUNT_SID, AUTH_TOKEN), timeout=10 * SCALE) as http:
        service = http.post("/v1/Services", data={"FriendlyName": "replica"}).json()["sid"]
        base = f"/v1/Services/{service}"
        direct.execute_command("REPLICAOF", "127.0.0.1", "1")  # of nothing: it keeps its data, read-only
        try:
            assert _refused(http.post(f"{base}/Documents", data={"UniqueName": "d", "Data": "{}"}))
            assert http.get(f"{base}/Documents").status_code == 200
        finally:
            direct.execute_command("REPLICAOF", "NO", "ONE")
        assert http.post(f"{base}/Documents", data={"UniqueName": "d", "Data": "{}"}).status_code == 201
