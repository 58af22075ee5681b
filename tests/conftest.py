from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from redis import asyncio as aioredis

from tests.helpers import ACCOUNT_SID, AUTH_TOKEN, RedisProcess, ServerProcess

for var in ("TWILIO_EDGE", "TWILIO_REGION"):  # they rewrite the helper library's host
    os.environ.pop(var, None)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisProcess]:
    r = RedisProcess()
    yield r
    r.stop()


@pytest.fixture(scope="session")
def server(redis_server: RedisProcess) -> Iterator[ServerProcess]:
    s = ServerProcess(redis_url=redis_server.url).start()
    yield s
    s.stop()


@pytest.fixture
async def http(server: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.base_url, auth=(ACCOUNT_SID, AUTH_TOKEN), timeout=10) as c:
        yield c


@pytest.fixture
async def redis(redis_server: RedisProcess) -> AsyncIterator[aioredis.Redis]:
    r = aioredis.Redis.from_url(redis_server.url)
    yield r
    await r.aclose()


@pytest.fixture
async def service(http: httpx.AsyncClient) -> str:
    """A fresh Service per test: tests never share data."""
    r = await http.post("/v1/Services", data={"FriendlyName": "test"})
    assert r.status_code == 201, r.text
    return str(r.json()["sid"])


@pytest.fixture
def twilio(server: ServerProcess) -> Any:
    """Twilio's official Python helper library, unchanged, aimed at the test server."""
    from twilio.rest import Client

    client = Client(ACCOUNT_SID, AUTH_TOKEN)
    client.sync.base_url = server.base_url
    return client


@pytest.fixture
async def store(redis_server: RedisProcess) -> AsyncIterator[Any]:
    """The storage layer on the test Redis, to inspect event logs the server wrote."""
    from storage import Store

    s = await Store.connect(redis_server.url)
    yield s
    await s.close()


@pytest.fixture
async def api_key(store: Any) -> Any:
    """A fresh API key (SK…) of the test account: signs access tokens for the realtime tests."""
    from storage import accounts

    return await accounts.create_key(store, ACCOUNT_SID, "realtime tests")


@pytest.fixture
async def sdk(server: ServerProcess) -> AsyncIterator[Any]:
    """Twilio's twilio-sync SDK in a Node process (tests/sdk.py), aimed at the test server."""
    from tests.sdk import Sdk

    driver = await Sdk(server.base_url).start()
    yield driver
    await driver.close()
