"""Fixtures for the end-to-end tests: real Valkey (standalone or Cluster) and real server processes.

Every fixture that starts a process hangs off ``backend``, so a test that requests none of them
(everything in tests/unit/) starts nothing. None is autouse.

Backends: an end-to-end test runs on a standalone Valkey and one server; one marked
``@pytest.mark.backends("standalone", "cluster")`` (or a module with that ``pytestmark``) runs once on
each, with ``server``, ``http``, ``service``, ``twilio``, ``redis``, ``store``, ``api_key`` and ``sdk``
all following the backend. The cluster backend is 3 Valkey masters + 3 replicas and two sync-server
processes behind a round-robin TCP balancer (tests/balancer.py), which ``server`` stands for. The
Valkey, the Cluster and their servers each start once per session, the Cluster only if a selected
test needs it; pytest groups the tests by backend.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis import asyncio as aioredis

from tests.balancer import Balancer
from tests.helpers import ACCOUNT_SID, AUTH_TOKEN, Backend, ClusterProcess, Endpoint, RedisProcess, ServerProcess

for var in ("TWILIO_EDGE", "TWILIO_REGION"):  # they rewrite the helper library's host
    os.environ.pop(var, None)

BACKENDS = ("standalone", "cluster")
DEFAULT_BACKEND = "standalone"
# every fixture that starts a process is (or depends on) one of these
PROCESS_FIXTURES = {"backend", "redis_server", "redis_cluster", "standalone_backend", "cluster_backend"}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "backends(*names): run the test on each named Redis backend (standalone, cluster); unmarked: standalone",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """tests/unit/ stays pure: none of its tests may request a fixture that starts a process."""
    unit = Path(__file__).parent / "unit"
    for item in items:
        started = PROCESS_FIXTURES & set(getattr(item, "fixturenames", ()))
        if started and unit in item.path.parents:
            raise pytest.UsageError(f"{item.nodeid} is a unit test but requests {sorted(started)}")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize ``backend`` (session-scoped, so pytest groups the tests by it) for marked tests."""
    mark = metafunc.definition.get_closest_marker("backends")
    if mark is None or "backend" not in metafunc.fixturenames:
        return  # unmarked: the default backend, and test ids stay as they are
    unknown = set(mark.args) - set(BACKENDS)
    if unknown or not mark.args:
        raise pytest.UsageError(f"{metafunc.definition.nodeid}: backends must be among {BACKENDS}, not {mark.args}")
    metafunc.parametrize("backend", mark.args, indirect=True, scope="session")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisProcess]:
    """The session's standalone Valkey (tests that start a standalone-only process use it directly)."""
    r = RedisProcess()
    yield r
    r.stop()


@pytest.fixture
def own_redis() -> Iterator[RedisProcess]:
    """A standalone Valkey of the test's own: no other test's server reads it, takes part in its
    leases or is disturbed by what the test does to it (tests/test_webhooks.py has its own, which
    on the cluster backend is a Cluster)."""
    r = RedisProcess()
    yield r
    r.stop()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[ClusterProcess]:
    """The session's Valkey Cluster (3 masters + 3 replicas), started the first time a test runs on it."""
    with ClusterProcess() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def standalone_backend(redis_server: RedisProcess) -> Iterator[Backend]:
    with ServerProcess(redis_url=redis_server.url) as server:
        yield Backend("standalone", redis_server.url, cluster=False, server=server)


@pytest.fixture(scope="session")
def cluster_backend(redis_cluster: ClusterProcess) -> Iterator[Backend]:
    """Two ``sync-server`` processes with REDIS_CLUSTER=true (given one node's URL) behind the test
    balancer (tests/balancer.py): ``server`` is the balancer, so one test's connections spread over
    both; ``nodes`` are the two servers, for tests that aim at one of them."""
    nodes = [ServerProcess(redis_url=redis_cluster.url, env={"REDIS_CLUSTER": "true"}) for _ in range(2)]
    try:
        for node in nodes:
            node.start(wait=False)  # both start at once: the session's set-up waits for one start, not two
        for node in nodes:
            node.wait_ready()
        with Balancer([node.port for node in nodes]) as balancer:
            yield Backend("cluster", redis_cluster.url, cluster=True, server=balancer, nodes=tuple(nodes))
    finally:
        for node in nodes:
            node.stop()


@pytest.fixture(scope="session")
def backend(request: pytest.FixtureRequest) -> Backend:
    """The backend this test runs on: its parameter (see ``pytest_generate_tests``), else standalone.

    The processes belong to the per-backend fixtures above, so they live for the whole session
    whichever order the tests come in.
    """
    name = getattr(request, "param", DEFAULT_BACKEND)
    found: Backend = request.getfixturevalue(f"{name}_backend")
    return found


@pytest.fixture
def server(backend: Backend) -> Endpoint:
    """What tests aim at: the standalone server, or the cluster's balancer (same base_url/ws_url/port)."""
    return backend.server


@pytest.fixture
async def http(backend: Backend) -> AsyncIterator[httpx.AsyncClient]:
    """REST client of the backend; behind the cluster's balancer without keep-alive, so that its
    requests alternate between the nodes (a write on one, the next read on the other)."""
    limits = httpx.Limits(max_keepalive_connections=0) if backend.nodes else httpx.Limits()
    async with httpx.AsyncClient(
        base_url=backend.server.base_url, auth=(ACCOUNT_SID, AUTH_TOKEN), timeout=10, limits=limits
    ) as c:
        yield c


@pytest.fixture
async def redis(backend: Backend) -> AsyncIterator[Any]:
    """A plain redis-py client on the backend (a RedisCluster client on the Cluster)."""
    r: Any = (aioredis.RedisCluster if backend.cluster else aioredis.Redis).from_url(backend.redis_url)
    yield r
    await r.aclose()


@pytest.fixture
async def service(http: httpx.AsyncClient) -> str:
    """A fresh Service per test: tests never share data (and on the Cluster, Services spread over the masters)."""
    r = await http.post("/v1/Services", data={"FriendlyName": "test"})
    assert r.status_code == 201, r.text
    return str(r.json()["sid"])


@pytest.fixture
def twilio(server: Endpoint) -> Any:
    """Twilio's official Python helper library, unchanged, aimed at the test server."""
    from twilio.rest import Client

    client = Client(ACCOUNT_SID, AUTH_TOKEN)
    client.sync.base_url = server.base_url
    return client


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[Any]:
    """The storage layer on the backend's Redis, to inspect event logs the server wrote."""
    from storage import Store

    s = await Store.connect(backend.redis_url, cluster=backend.cluster)
    yield s
    await s.close()


@pytest.fixture
async def api_key(store: Any) -> Any:
    """A fresh API key (SK…) of the test account: signs access tokens for the realtime tests."""
    from storage import accounts

    return await accounts.create_key(store, ACCOUNT_SID, "realtime tests")


@pytest.fixture
async def sdk(server: Endpoint) -> AsyncIterator[Any]:
    """Twilio's twilio-sync SDK in a Node process (tests/sdk.py), aimed at the test server."""
    from tests.sdk import Sdk

    driver = await Sdk(server.base_url).start()
    yield driver
    await driver.close()
