"""Caches across processes: a revoked API key, a changed auth token and a deleted Service take effect
on every server process within a second, although each process trusts what it checked for much
longer (SYNC_AUTH_CACHE_S=30 here): the write publishes an invalidation (storage/invalidation.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from storage import accounts, services
from tests.helpers import ACCOUNT_SID, AUTH_TOKEN, ON_EVERY_BACKEND, Backend, ServerProcess

LONG_CACHE = {"SYNC_AUTH_CACHE_S": "30"}
WITHIN_S = 1.0
pytestmark = ON_EVERY_BACKEND


@pytest.fixture
def pair(backend: Backend) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Two server processes (A and B) on the test's Redis, both caching credentials for 30 s."""
    a = backend.server_process(**LONG_CACHE).start()
    b = backend.server_process(**LONG_CACHE).start()
    yield a, b
    a.stop()
    b.stop()


async def _status(srv: ServerProcess, auth: tuple[str, str], path: str = "/v1/Services") -> int:
    async with httpx.AsyncClient(base_url=srv.base_url, auth=auth, timeout=5) as c:
        return (await c.get(path)).status_code


async def _refused_within(srv: ServerProcess, auth: tuple[str, str], path: str = "/v1/Services") -> float:
    """Seconds until ``srv`` answers 401/404 to ``auth`` on ``path`` (fails after 3 s)."""
    start = time.monotonic()
    while (status := await _status(srv, auth, path)) == 200:
        assert time.monotonic() - start < 3.0, "still accepted after 3 s"
    assert status in (401, 404), status
    return time.monotonic() - start


async def test_a_revoked_api_key_is_refused_on_every_process_within_a_second(pair: Any, store: Any) -> None:
    a, b = pair
    key = await accounts.create_key(store, ACCOUNT_SID, "revoke me")
    auth = (key.sid, key.secret)
    assert await _status(a, auth) == 200 and await _status(b, auth) == 200  # both cache it now
    await accounts.delete_key(store, key.sid)  # as `sync-server keys delete` does, from a third process
    assert await _refused_within(b, auth) < WITHIN_S
    assert await _refused_within(a, auth) < WITHIN_S


async def test_a_changed_auth_token_is_refused_on_every_process_within_a_second(pair: Any, store: Any) -> None:
    a, b = pair
    other = "AC" + "c" * 32
    await accounts.ensure_account(store, other, "first-token")
    assert await _status(a, (other, "first-token")) == 200 and await _status(b, (other, "first-token")) == 200
    await accounts.ensure_account(store, other, "second-token")
    assert await _refused_within(b, (other, "first-token")) < WITHIN_S
    assert await _refused_within(a, (other, "first-token")) < WITHIN_S
    assert await _status(b, (other, "second-token")) == 200


async def test_a_service_deleted_on_one_process_is_gone_on_the_other_within_a_second(pair: Any) -> None:
    a, b = pair
    auth = (ACCOUNT_SID, AUTH_TOKEN)
    async with httpx.AsyncClient(base_url=a.base_url, auth=auth, timeout=5) as c:
        sid = (await c.post("/v1/Services", data={"FriendlyName": "short-lived"})).json()["sid"]
        path = f"/v1/Services/{sid}/Documents"
        assert await _status(b, auth, path) == 200  # B trusts the Service exists for its cache time (2 s)
        assert (await c.delete(f"/v1/Services/{sid}")).status_code == 204
    assert await _refused_within(b, auth, path) < WITHIN_S


async def test_the_writing_process_forgets_at_once(store: Any, service: str) -> None:
    """The publisher's own caches are dropped before the message goes out (no round trip)."""
    await services.check(store, ACCOUNT_SID, service)
    assert store.cache.get(("service", ACCOUNT_SID, service)) is True
    await services.delete(store, ACCOUNT_SID, service)
    assert store.cache.get(("service", ACCOUNT_SID, service)) is None
