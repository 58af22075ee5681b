"""Work-list buckets (storage/buckets.py): processes share the buckets, a dead process's buckets are
taken over within the lease time with its webhooks delivered in order, and an earlier version's
single-key work lists are moved into the buckets at start."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from storage import Store, buckets, keys
from tests.helpers import ACCOUNT_SID, AUTH_TOKEN, SCALE, RedisProcess, ServerProcess
from tests.webhook_receiver import Receiver

LEASE_S = 1.5  # SYNC_WEBHOOK_LEASE_MS of the test servers (tests/helpers.py WEBHOOK_TEST_ENV)


@pytest.fixture
async def own_store(own_redis: RedisProcess) -> AsyncIterator[Store]:
    s = await Store.connect(own_redis.url)
    yield s
    await s.close()


async def _holders(store: Store, role: str) -> dict[int, str]:
    """Bucket -> the process id holding its lease."""
    out = {}
    for b in range(keys.BUCKETS):
        owner = await store.redis.get(keys.bucket_lease(b, role))
        if owner is not None:
            out[b] = owner.decode()
    return out


async def _until(check: Any, within: float) -> None:
    deadline = time.monotonic() + within * SCALE
    while not await check():
        assert time.monotonic() < deadline, "not within the time"
        await asyncio.sleep(0.05)


async def test_a_dead_process_buckets_are_taken_over_and_its_webhooks_delivered_in_order(
    own_redis: RedisProcess, own_store: Store
) -> None:
    receiver = await Receiver().start()
    a = ServerProcess(redis_url=own_redis.url).start()
    b: ServerProcess | None = None
    try:

        async def a_holds_all() -> bool:
            return len(await _holders(own_store, "webhooks")) == keys.BUCKETS

        await _until(a_holds_all, 5)
        first = set((await _holders(own_store, "webhooks")).values())
        assert len(first) == 1
        owner_a = first.pop()
        b = ServerProcess(redis_url=own_redis.url).start()

        async def shared() -> bool:  # each holds its fair share: 8 of 16
            held = list((await _holders(own_store, "webhooks")).values())
            return len(held) == keys.BUCKETS and held.count(owner_a) == keys.BUCKETS // 2

        await _until(shared, 10)
        holders = await _holders(own_store, "webhooks")
        async with httpx.AsyncClient(base_url=b.base_url, auth=(ACCOUNT_SID, AUTH_TOKEN), timeout=10) as http:
            for _ in range(50):  # a Service in a bucket A works
                made = await http.post(
                    "/v1/Services",
                    data={"FriendlyName": "b", "WebhookUrl": receiver.url, "WebhooksFromRestEnabled": "true"},
                )
                service = made.json()["sid"]
                if holders[keys.bucket(service)] == owner_a:
                    break
            else:
                raise AssertionError("no Service landed in A's buckets")
            a.stop(signal.SIGKILL)
            killed = time.monotonic()
            doc = (await http.post(f"/v1/Services/{service}/Documents", data={"Data": '{"n": 0}'})).json()["sid"]
            for n in range(1, 6):
                r = await http.post(f"/v1/Services/{service}/Documents/{doc}", data={"Data": f'{{"n": {n}}}'})
                assert r.status_code == 200, r.text
            got = await receiver.wait_for(6, within=10)
            taken_over_s = time.monotonic() - killed
        assert [r.form["EventType"] for r in got] == ["document_created"] + ["document_updated"] * 5
        assert [r.form["DocumentData"] for r in got] == [f'{{"n":{n}}}' for n in range(6)]
        assert taken_over_s < LEASE_S + 2.0 * SCALE, taken_over_s  # the lease, one lease tick, one scan

        async def b_holds_all() -> bool:
            held = await _holders(own_store, "webhooks")
            return len(held) == keys.BUCKETS and owner_a not in held.values()

        await _until(b_holds_all, 5)
    finally:
        a.stop(signal.SIGKILL)
        if b is not None:
            b.stop()
        await receiver.stop()


async def test_an_earlier_versions_single_key_work_lists_move_into_the_buckets(own_store: Store) -> None:
    r = own_store.redis
    sids = [f"IS{n:032x}" for n in range(40)]
    await r.zadd(keys.LEGACY_DUE, {sid: 1000 + n for n, sid in enumerate(sids)})
    await r.zadd(keys.LEGACY_REACH_DUE, {sids[0]: 5})
    await r.sadd(keys.LEGACY_WEBHOOK_SERVICES, *sids[:10])
    await r.sadd(keys.LEGACY_WEBHOOK_FAILED, sids[3])
    await r.zadd(keys.due(keys.bucket(sids[1])), {sids[1]: 7})  # already bucketed, earlier: kept
    assert await buckets.migrate(own_store) == 40 + 1 + 10 + 1
    assert not await r.exists(
        keys.LEGACY_DUE, keys.LEGACY_REACH_DUE, keys.LEGACY_WEBHOOK_SERVICES, keys.LEGACY_WEBHOOK_FAILED
    )
    for n, sid in enumerate(sids):
        assert await r.zscore(keys.due(keys.bucket(sid)), sid) == (7 if n == 1 else 1000 + n)
    assert await r.zscore(keys.reach_due(keys.bucket(sids[0])), sids[0]) == 5
    assert all([await r.sismember(keys.webhook_services(keys.bucket(s)), s) for s in sids[:10]])
    assert await r.sismember(keys.webhook_failed(keys.bucket(sids[3])), sids[3])
    assert len({keys.bucket(s) for s in sids}) > 8  # the Services spread over the buckets
    assert await buckets.migrate(own_store) == 0  # a second process finds nothing left


async def test_the_work_lists_of_the_buckets_held_are_read_in_one_round_trip(own_store: Store) -> None:
    """``due_in`` / ``members_in``: what each bucket held has due (by score, at most ``batch``) and
    holds, bucket by bucket, in one pipeline; buckets not held are not read."""
    r = own_store.redis
    sids = [f"IS{n:032x}" for n in range(40)]
    now = int(time.time() * 1000)
    for n, sid in enumerate(sids):
        await r.zadd(keys.reach_due(keys.bucket(sid)), {sid: now - 1000 if n % 2 == 0 else now + 60_000})
        await r.sadd(keys.webhook_services(keys.bucket(sid)), sid)
    held = {keys.bucket(s) for s in sids[:6]}
    due = await buckets.due_in(own_store, keys.reach_due, held, 100)
    assert [b for b, _ in due] == sorted(held)
    for b, members in due:
        assert sorted(members) == sorted(s for n, s in enumerate(sids) if keys.bucket(s) == b and n % 2 == 0)
    one = sorted(held)[0]
    capped = await buckets.due_in(own_store, keys.reach_due, {one}, 1)
    assert len(capped) == 1 and len(capped[0][1]) == min(1, len(dict(due)[one]))
    members = await buckets.members_in(own_store, keys.webhook_services, held)
    assert sorted(members) == sorted(s for s in sids if keys.bucket(s) in held)
    assert await buckets.due_in(own_store, keys.reach_due, set(), 100) == []
    assert await buckets.members_in(own_store, keys.webhook_services, set()) == []


async def test_an_upgraded_store_keeps_its_expiries(own_redis: RedisProcess, own_store: Store) -> None:
    """A Document with a TTL whose Service is listed only in the old single ``sync:due`` (as an
    earlier version left it) still expires once a server of this version starts."""
    env = {"SYNC_WEBHOOKS": "false"}
    srv = ServerProcess(redis_url=own_redis.url, env=env).start()
    try:
        async with httpx.AsyncClient(base_url=srv.base_url, auth=(ACCOUNT_SID, AUTH_TOKEN), timeout=10) as http:
            service = (await http.post("/v1/Services", data={"FriendlyName": "old"})).json()["sid"]
            doc = (await http.post(f"/v1/Services/{service}/Documents", data={"Ttl": "3"})).json()["sid"]
    finally:
        srv.stop()
    bucketed = keys.due(keys.bucket(service))
    due = await own_store.redis.zscore(bucketed, service)
    assert due is not None and await own_store.redis.exists(keys.obj(service, doc))
    await own_store.redis.zrem(bucketed, service)  # as an earlier version wrote it
    await own_store.redis.zadd(keys.LEGACY_DUE, {service: due})
    srv = ServerProcess(redis_url=own_redis.url, env=env).start()
    try:

        async def swept() -> bool:  # the sweeper deleted it (not just hidden by its expiry)
            return not await own_store.redis.exists(keys.obj(service, doc))

        await _until(swept, 10)
        assert not await own_store.redis.exists(keys.LEGACY_DUE)
    finally:
        srv.stop()
