"""storage/batch.py: the reads of one loop turn reach Redis as one pipeline, each gets its own answer
(on a Cluster too, where the objects live on different masters), reads that arrive while a batch is
in flight go together once it is answered, and a failed batch is sent again read by read (each
read gets the outcome it would have had alone)."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import httpx
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from storage import Kind, NotFoundError, Store, StoreUnavailableError, keys, objects
from storage.embedded import free_port
from storage.redis_client import RedisClient
from tests.helpers import ON_EVERY_BACKEND


def _calls(store: Store, command: str) -> int:
    h = store.health.stats.latency.get(command)
    return 0 if h is None else h.count


@ON_EVERY_BACKEND
async def test_the_subscriptions_reads_of_one_turn_go_as_one_pipeline(store: Store, http: httpx.AsyncClient) -> None:
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
    assert _calls(store, "pipeline") == pipelines + 1 and _calls(store, "hmget") == single
    svc, doc, n = docs[3]
    assert await objects.last_event(store, svc, Kind.DOCUMENT, doc) == (doc, n)  # alone: a plain HMGET
    assert _calls(store, "hmget") == single + 1


async def test_a_failed_batch_is_sent_read_by_read() -> None:
    client = aioredis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1)
    dead = Store(cast(RedisClient, client))  # nothing listens there: every call fails to connect
    try:
        results = await asyncio.gather(
            *(objects.last_event(dead, "IS" + "0" * 32, Kind.DOCUMENT, f"ET{i:032d}") for i in range(3)),
            return_exceptions=True,
        )
        assert [type(r) for r in results] == [StoreUnavailableError] * 3, results
        assert dead.health.stats.errors == {"pipeline": 1, "hmget": 3}  # then each alone: its own outcome
    finally:
        await dead.close()


async def test_reads_that_arrive_while_a_batch_is_in_flight_go_together_next(
    store: Store, http: httpx.AsyncClient, redis: Any
) -> None:
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
    assert _calls(store, "hmget") == single + 1  # the first, alone
    assert _calls(store, "pipeline") == pipelines + 1  # the three that waited for it, together


async def test_one_failing_read_does_not_fail_the_others_of_its_batch(
    store: Store, http: httpx.AsyncClient, redis: Any
) -> None:
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
