"""storage/batch.py: the reads of one loop turn reach Redis together (over the shared connections of
multiplex.py, or as one redis-py pipeline with SYNC_REDIS_MULTIPLEX off), each gets its own answer
(on a Cluster too, where the objects live on different masters), reads that arrive while a batch is
in flight go together once it is answered, the same read asked for by many in one turn is sent
once, and a failed batch is sent again read by read (each
read gets the outcome it would have had alone)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, cast

import httpx
import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from storage import Kind, NotFoundError, Store, StoreUnavailableError, keys, objects
from storage.embedded import free_port
from storage.multiplex import Multiplexer
from storage.redis_client import RedisClient
from storage.store import StoreConfig
from tests.conftest import Backend
from tests.helpers import ON_EVERY_BACKEND


def _calls(store: Store, command: str) -> int:
    h = store.health.stats.latency.get(command)
    return 0 if h is None else h.count


def _multiplexed(store: Store) -> bool:
    """Reads go over the shared connections (the default), not as redis-py pipelines."""
    return store.multiplexer is not None


@pytest.fixture(params=["multiplexed", "pipelined"])
async def reader(request: pytest.FixtureRequest, backend: Backend) -> AsyncIterator[Store]:
    """A Store on the standalone Redis whose reads go over the shared connection, or (the setting
    off) as redis-py pipelines."""
    config = StoreConfig(multiplex=request.param == "multiplexed")
    s = await Store.connect(backend.redis_url, config)
    assert _multiplexed(s) == config.multiplex
    yield s
    await s.close()


@ON_EVERY_BACKEND
async def test_the_subscriptions_reads_of_one_turn_go_together(store: Store, http: httpx.AsyncClient) -> None:
    docs: list[tuple[str, str, int]] = []
    for i in range(4):  # Services hash to different slots: on a Cluster, to different masters
        svc = (await http.post("/v1/Services", data={"FriendlyName": f"batch {i}"})).json()["sid"]
        doc = (await http.post(f"/v1/Services/{svc}/Documents", data={"Data": "{}"})).json()["sid"]
        for _ in range(i):
            assert (await http.post(f"/v1/Services/{svc}/Documents/{doc}", data={"Data": "{}"})).status_code == 200
        docs.append((svc, doc, i))
    pipelines, single = _calls(store, "pipeline"), _calls(store, "hmget")
    answers = await asyncio.gather(
        *(objects.last_event(store, svc, Kind.DOCUMENT, doc) for svc, doc, _ in docs),
        objects.last_event(store, docs[0][0], Kind.MAP, docs[0][1]),  # a Document is not a Map
        return_exceptions=True,
    )
    assert answers[:4] == [(doc, n) for _, doc, n in docs]  # each its own object's last event id
    assert isinstance(answers[4], NotFoundError)
    if _multiplexed(store):  # four HMGETs (the Map read is the first's) written at once (test_multiplex.py)
        assert _calls(store, "pipeline") == pipelines and _calls(store, "hmget") == single + 4
    else:
        assert _calls(store, "pipeline") == pipelines + 1 and _calls(store, "hmget") == single
    before = _calls(store, "hmget")
    svc, doc, n = docs[3]
    assert await objects.last_event(store, svc, Kind.DOCUMENT, doc) == (doc, n)  # alone: a plain HMGET
    assert _calls(store, "hmget") == before + 1


@ON_EVERY_BACKEND
async def test_a_crowd_reading_one_object_in_one_turn_sends_one_read(store: Store, http: httpx.AsyncClient) -> None:
    svc = (await http.post("/v1/Services", data={"FriendlyName": "crowd"})).json()["sid"]
    doc = (await http.post(f"/v1/Services/{svc}/Documents", data={"Data": "{}"})).json()["sid"]
    other = (await http.post(f"/v1/Services/{svc}/Documents", data={"Data": "{}"})).json()["sid"]
    assert (await http.post(f"/v1/Services/{svc}/Documents/{doc}", data={"Data": "{}"})).status_code == 200
    pipelines, single = _calls(store, "pipeline"), _calls(store, "hmget")
    crowd = [asyncio.ensure_future(objects.last_event(store, svc, Kind.DOCUMENT, doc)) for _ in range(50)]
    await asyncio.sleep(0)  # each has asked for its read: the batch goes on the next turn
    crowd[7].cancel()  # one caller gone: the others still get the answer
    answers = await asyncio.gather(*crowd, return_exceptions=True)
    assert isinstance(answers.pop(7), asyncio.CancelledError)
    assert answers == [(doc, 1)] * 49
    assert _calls(store, "hmget") == single + 1 and _calls(store, "pipeline") == pipelines  # one HMGET for all
    both = await asyncio.gather(
        *(objects.last_event(store, svc, Kind.DOCUMENT, sid) for sid in (doc, other, doc, other, doc))
    )
    assert both == [(doc, 1), (other, 0), (doc, 1), (other, 0), (doc, 1)]
    if _multiplexed(store):  # two reads
        assert _calls(store, "hmget") == single + 3 and _calls(store, "pipeline") == pipelines
    else:
        assert _calls(store, "hmget") == single + 1 and _calls(store, "pipeline") == pipelines + 1


@pytest.mark.parametrize("multiplexed", [False, True])
async def test_a_failed_batch_is_sent_read_by_read(multiplexed: bool) -> None:
    port = free_port()  # nothing listens there: every call fails to connect
    client = aioredis.Redis.from_url(f"redis://127.0.0.1:{port}/0", socket_connect_timeout=1)
    mux = Multiplexer("127.0.0.1", port, timeout_s=1) if multiplexed else None
    dead = Store(cast(RedisClient, client), multiplexer=mux)
    try:
        results = await asyncio.gather(
            *(objects.last_event(dead, "IS" + "0" * 32, Kind.DOCUMENT, f"ET{i:032d}") for i in range(3)),
            return_exceptions=True,
        )
        assert [type(r) for r in results] == [StoreUnavailableError] * 3, results
        # each read its own outcome: over the shared connection each is its own call; a pipeline
        # that failed is sent again read by read
        assert dead.health.stats.errors == ({"hmget": 3} if multiplexed else {"pipeline": 1, "hmget": 3})
    finally:
        await dead.close()


async def test_reads_that_arrive_while_a_batch_is_in_flight_go_together_next(
    reader: Store, http: httpx.AsyncClient, redis: Any
) -> None:
    store = reader
    svc = (await http.post("/v1/Services", data={"FriendlyName": "batch"})).json()["sid"]
    sids = [(await http.post(f"/v1/Services/{svc}/Documents", data={"Data": "{}"})).json()["sid"] for _ in range(4)]
    pipelines, single = _calls(store, "pipeline"), _calls(store, "hmget")
    await redis.client_pause(300)  # Redis holds every command for 0.3 s: the first read stays in flight
    reads = []
    for sid in sids:  # one read per loop turn
        reads.append(asyncio.ensure_future(objects.last_event(store, svc, Kind.DOCUMENT, sid)))
        for _ in range(3):
            await asyncio.sleep(0)
    assert await asyncio.gather(*reads) == [(sid, 0) for sid in sids]
    if _multiplexed(store):  # the first, then the three that waited for it, written at once
        assert _calls(store, "hmget") == single + 4 and _calls(store, "pipeline") == pipelines
    else:
        assert _calls(store, "hmget") == single + 1  # the first, alone
        assert _calls(store, "pipeline") == pipelines + 1  # the three that waited for it, together


async def test_one_failing_read_does_not_fail_the_others_of_its_batch(
    reader: Store, http: httpx.AsyncClient, redis: Any
) -> None:
    store = reader
    svc = (await http.post("/v1/Services", data={"FriendlyName": "batch"})).json()["sid"]
    good = (await http.post(f"/v1/Services/{svc}/Documents", data={"Data": "{}"})).json()["sid"]
    bad = "ET" + "f" * 32
    await redis.set(keys.obj(svc, bad), "not a hash")  # HMGET answers WRONGTYPE: the pipeline fails
    answers = await asyncio.gather(
        objects.last_event(store, svc, Kind.DOCUMENT, good),
        objects.last_event(store, svc, Kind.DOCUMENT, bad),
        objects.last_event(store, svc, Kind.DOCUMENT, good),
        return_exceptions=True,
    )
    assert answers[0] == answers[2] == (good, 0)
    assert isinstance(answers[1], ResponseError)
