"""Caches across processes: a revoked API key, a changed auth token and a deleted Service take effect
on every server process within a second, although each process trusts what it checked for much
longer (SYNC_AUTH_CACHE_S=30 here): the write publishes an invalidation (storage/invalidation.py).
So do a WebSocket connect's cached API key and Service record (2 s, the store's cache time): a
Service's changed ``acl_enabled`` and a deleted Service hold for new connections within a second."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from realtime.client import SyncClient, SyncClientError
from storage import accounts, keys, services
from tests.helpers import ACCOUNT_SID, AUTH_TOKEN, ON_EVERY_BACKEND, Backend, ServerProcess
from tests.sdk import token

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
    assert store.cache.get(("service", ACCOUNT_SID, service)).sid == service
    await services.update(store, ACCOUNT_SID, service, {"acl_enabled": True})
    assert store.cache.get(("service", ACCOUNT_SID, service)) is None
    assert (await services.cached(store, ACCOUNT_SID, service)).acl_enabled
    await services.delete(store, ACCOUNT_SID, service)
    assert store.cache.get(("service", ACCOUNT_SID, service)) is None


async def _subscribe(srv: ServerProcess, tok: str, sid: str) -> tuple[int, int | None]:
    """Connect to ``srv`` with ``tok`` and subscribe to Document ``sid``: (status, code) of the
    refusal, of init or of the subscription; (200, None) if it was established."""
    try:
        client = await SyncClient.connect(srv.ws_url, tok)
    except SyncClientError as exc:
        return exc.status, exc.code
    async with client:
        ev = await client.subscribe(sid, "document")
    if ev.get("event_type") == "subscription_established":
        return 200, None
    return ev["error"]["status"], ev["error"]["code"]


async def _refused_at_connect_within(srv: ServerProcess, tok: str, sid: str) -> tuple[float, tuple[int, int | None]]:
    """Seconds until a new connection to ``srv`` is refused, and how (fails after 3 s)."""
    start = time.monotonic()
    while (answer := await _subscribe(srv, tok, sid)) == (200, None):
        assert time.monotonic() - start < 3.0, "still accepted after 3 s"
    return time.monotonic() - start, answer


async def test_a_connect_follows_a_service_change_made_on_another_process_within_a_second(
    pair: Any, api_key: Any
) -> None:
    """Each connect reads the Service's ``acl_enabled`` from a copy its process keeps for 2 s: a
    change through another process reaches new connections within a round trip, not 2 s."""
    a, b = pair
    async with httpx.AsyncClient(base_url=a.base_url, auth=(ACCOUNT_SID, AUTH_TOKEN), timeout=5) as c:
        sid = (await c.post("/v1/Services", data={"FriendlyName": "acl later"})).json()["sid"]
        doc = (await c.post(f"/v1/Services/{sid}/Documents", data={"UniqueName": "d"})).json()["sid"]
        tok = token(api_key.sid, api_key.secret, sid, "alice")
        assert await _subscribe(b, tok, doc) == (200, None)  # B keeps the Service (ACL off) now
        assert (await c.post(f"/v1/Services/{sid}", data={"AclEnabled": "true"})).status_code == 200
        took, answer = await _refused_at_connect_within(b, tok, doc)
        assert answer == (403, 54007) and took < WITHIN_S
        assert (await c.post(f"/v1/Services/{sid}", data={"AclEnabled": "false"})).status_code == 200
        start = time.monotonic()
        while await _subscribe(b, tok, doc) != (200, None):  # and back: readable again at once
            assert time.monotonic() - start < WITHIN_S
        assert (await c.delete(f"/v1/Services/{sid}")).status_code == 204
    took, answer = await _refused_at_connect_within(b, tok, doc)
    assert answer[0] == 403 and took < WITHIN_S  # the grant's Service is gone: init refused (20101)


async def test_a_connect_signed_by_a_revoked_key_is_refused_on_every_process_within_a_second(
    pair: Any, store: Any, service: str
) -> None:
    a, b = pair
    key = await accounts.create_key(store, ACCOUNT_SID, "revoke me")
    tok = token(key.sid, key.secret, service, "alice")
    async with httpx.AsyncClient(base_url=a.base_url, auth=(ACCOUNT_SID, AUTH_TOKEN), timeout=5) as c:
        doc = (await c.post(f"/v1/Services/{service}/Documents", data={"UniqueName": "d"})).json()["sid"]
    assert await _subscribe(a, tok, doc) == (200, None) and await _subscribe(b, tok, doc) == (200, None)
    await accounts.delete_key(store, key.sid)
    for srv in (b, a):
        took, answer = await _refused_at_connect_within(srv, tok, doc)
        assert answer == (401, 20101) and took < WITHIN_S


async def test_credentials_in_steady_use_are_rechecked_in_the_background_before_their_cache_time(
    backend: Backend, store: Any
) -> None:
    """A token changed while its invalidation is lost (written straight to Redis here) is refused
    after about half the cache time, not the whole of it: a request past that point is answered from
    the cache and re-checks the credentials behind it (storage/cache.py, refresh-ahead)."""
    other = "AC" + "d" * 32
    await accounts.ensure_account(store, other, "first-token")
    srv = backend.server_process(SYNC_AUTH_CACHE_S="4").start()
    try:
        start = time.monotonic()
        assert await _status(srv, (other, "first-token")) == 200  # checked and cached now
        await store.redis.hset(keys.account(other), "auth_token", "second-token")  # no invalidation
        await asyncio.sleep(2.3)  # past half of the 4 s
        assert await _status(srv, (other, "first-token")) == 200  # from the cache, without waiting
        await _refused_within(srv, (other, "first-token"))
        assert time.monotonic() - start < 3.6, "refused only once the cache time ran out"
        assert await _status(srv, (other, "second-token")) == 200
    finally:
        srv.stop()


async def test_a_unique_name_in_steady_use_is_re_read_in_the_background_before_its_cache_time(store: Any) -> None:
    """A name → SID entry (REST paths that name an object by its unique name) past half its cache
    time answers at once and is re-read behind the request: a name pointed elsewhere in Redis with
    no invalidation is followed, and a name gone is refused, before the cache time runs out."""
    from storage import Kind, objects
    from storage.cache import TtlCache
    from storage.errors import NotFoundError

    class Clock:
        now = 1000.0

        def __call__(self) -> float:
            return self.now

    clock = Clock()
    store.cache = TtlCache(2.0, clock=clock)  # the store's cache time, on a hand-turned clock
    service, first, second = "IS" + "1" * 32, "ET" + "a" * 32, "ET" + "b" * 32
    names = keys.names(service, Kind.DOCUMENT)
    await store.redis.hset(names, "greeting", first)

    async def sid() -> str:
        return await objects._sid(store, service, Kind.DOCUMENT, "greeting")

    async def until(expected: str) -> None:
        for _ in range(200):
            if await sid() == expected:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"still not {expected}")

    assert await sid() == first
    await store.redis.hset(names, "greeting", second)  # no invalidation
    clock.now += 0.9
    assert await sid() == first  # before the refresh point: from the cache, nothing re-read
    await asyncio.sleep(0.1)
    assert await sid() == first
    clock.now += 0.2  # past it: answered from the cache while the name is re-read
    assert await sid() == first
    await until(second)  # the clock stands still: within the cache time
    await store.redis.hdel(names, "greeting")
    clock.now += 1.1
    assert await sid() == second
    with pytest.raises(NotFoundError):
        for _ in range(200):
            await sid()
            await asyncio.sleep(0.01)
