"""storage/multiplex.py against a real Valkey: replies reach their callers, errors are redis-py's,
nothing is sent twice, and a dropped connection heals by itself."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator

import pytest
import redis
import redis.asyncio as aioredis
from redis.exceptions import (
    AuthenticationError,
    ConnectionError as RedisConnectionError,
    ResponseError,
    TimeoutError as RedisTimeoutError,
)

from storage import SYSTEM, Kind, keys, objects, services
from storage.multiplex import Multiplexer
from storage.multiplex_cluster import ClusterMultiplexer
from storage.store import Store, StoreConfig
from tests.helpers import ACCOUNT_SID, ClusterProcess, RedisProcess

ECHO = "return {KEYS[1], ARGV[1]}"
BUSY = "for i = 1, 5000000 do end return 'slow'"  # a few tens of ms of Lua


def _mux(r: RedisProcess, timeout_s: float = 5.0) -> Multiplexer:
    mux = Multiplexer.for_url(r.url, timeout_s)
    assert mux is not None
    return mux


def _clients(r: RedisProcess) -> int:
    """Connections Valkey has, not counting the one asking."""
    with redis.Redis.from_url(r.url) as sync:
        return len(sync.client_list()) - 1


@pytest.fixture
async def mux(own_redis: RedisProcess) -> AsyncIterator[Multiplexer]:
    m = _mux(own_redis)
    yield m
    await m.aclose()


async def test_concurrent_calls_each_get_their_own_reply_over_one_connection(
    own_redis: RedisProcess, mux: Multiplexer
) -> None:
    echo = mux.register_script(ECHO)
    replies = await asyncio.gather(*(echo(keys=[f"k{i}"], args=[f"v{i}"]) for i in range(500)))
    assert replies == [[f"k{i}".encode(), f"v{i}".encode()] for i in range(500)]
    assert _clients(own_redis) == 1


async def test_error_replies_are_redis_pys_and_a_flushed_script_is_loaded_again(mux: Multiplexer) -> None:
    echo = mux.register_script(ECHO)
    await mux.execute_command("SET", "s", "x")
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await mux.execute_command("HSET", "s", "f", "v")
    assert await echo(keys=["a"], args=["b"]) == [b"a", b"b"]
    await mux.execute_command("SCRIPT", "FLUSH")
    assert await echo(keys=["a"], args=["c"]) == [b"a", b"c"]  # NOSCRIPT: loaded, sent once more
    assert await mux.execute_command("PING") == b"PONG"  # and the stream is still in step


async def test_a_caller_that_gives_up_leaves_the_replies_in_step(mux: Multiplexer) -> None:
    busy = mux.register_script(BUSY)
    slow = asyncio.ensure_future(busy(keys=["b"]))
    await asyncio.sleep(0.02)
    slow.cancel()
    assert await mux.execute_command("ECHO", "mine") == b"mine"


async def test_a_frozen_redis_times_out_once_and_the_command_is_not_sent_again(own_redis: RedisProcess) -> None:
    """A reply later than the timeout drops the connection (an unknown outcome for its callers), and
    the command is never sent again: applied once, when Redis comes back. The next call reconnects."""
    mux = _mux(own_redis, timeout_s=0.5)
    try:
        assert await mux.execute_command("PING") == b"PONG"
        os.kill(own_redis.proc.pid, signal.SIGSTOP)
        try:
            with pytest.raises(RedisTimeoutError):
                await mux.execute_command("INCR", "applied")
        finally:
            os.kill(own_redis.proc.pid, signal.SIGCONT)
        await asyncio.sleep(0.3)  # Valkey reads what the dropped connection had sent
        assert await mux.execute_command("GET", "applied") == b"1"
        assert _clients(own_redis) == 1
    finally:
        await mux.aclose()


async def test_a_restarted_redis_fails_the_calls_in_flight_then_serves_again() -> None:
    first = RedisProcess()
    mux = _mux(first)
    try:
        assert await mux.execute_command("PING") == b"PONG"
        first.stop()
        with pytest.raises(RedisConnectionError):
            await mux.execute_command("PING")
        again = RedisProcess(port=first.port)
        try:
            assert await mux.execute_command("PING") == b"PONG"
        finally:
            again.stop()
    finally:
        await mux.aclose()


async def test_password_and_database_from_the_url(own_redis: RedisProcess) -> None:
    with redis.Redis.from_url(own_redis.url) as sync:
        sync.config_set("requirepass", "s3cret")
    mux = Multiplexer.for_url(f"redis://:s3cret@127.0.0.1:{own_redis.port}/3", 5.0)
    wrong = Multiplexer.for_url(f"redis://:nope@127.0.0.1:{own_redis.port}/0", 5.0)
    assert mux is not None and wrong is not None
    try:
        await mux.execute_command("SET", "where", "db3")
        with redis.Redis(port=own_redis.port, password="s3cret", db=3) as sync:
            assert sync.get("where") == b"db3"
        with pytest.raises(AuthenticationError):
            await wrong.execute_command("PING")
    finally:
        await mux.aclose()
        await wrong.aclose()


def test_what_it_does_not_speak_keeps_redis_py() -> None:
    assert Multiplexer.for_url("rediss://127.0.0.1:6380/0", 5.0) is None
    assert Multiplexer.for_url("unix:///tmp/redis.sock", 5.0) is None
    assert Multiplexer.for_url("redis://127.0.0.1:6379/0", 5.0) is not None


async def test_the_store_sends_its_scripts_over_it_unless_told_not_to(own_redis: RedisProcess) -> None:
    """50 concurrent creates: with the multiplexer all their scripts go over one connection (the one
    not opened by redis-py, which names itself with CLIENT SETINFO); without it, none does."""
    for multiplex in (True, False):
        store = await Store.connect(own_redis.url, StoreConfig(multiplex=multiplex))
        try:
            service = (await services.create(store, ACCOUNT_SID, {})).sid
            await asyncio.gather(
                *(
                    objects.create(
                        store, service, Kind.DOCUMENT, SYSTEM, unique_name=f"d{multiplex}{i}", data_json="{}"
                    )
                    for i in range(50)
                )
            )
            with redis.Redis.from_url(own_redis.url) as sync:
                other = [c for c in sync.client_list() if not c.get("lib-name")]
            assert [int(c["tot-cmds"]) >= 50 for c in other] == ([True] if multiplex else [])
        finally:
            await store.close()


async def test_on_a_cluster_each_script_goes_over_its_masters_shared_connection(redis_cluster: ClusterProcess) -> None:
    """Writes into Services spread over the masters: one shared connection per master carried them
    all, and every write is there (read back through redis-py's own Cluster client)."""
    store = await Store.connect(redis_cluster.url, cluster=True)
    try:
        assert isinstance(store.multiplexer, ClusterMultiplexer)
        made = [(await services.create(store, ACCOUNT_SID, {})).sid for _ in range(30)]  # on every master
        await asyncio.gather(
            *(
                objects.create(store, sid, Kind.DOCUMENT, SYSTEM, unique_name=f"d{i}", data_json=f'{{"i": {i}}}')
                for sid in made
                for i in range(4)
            )
        )
        assert store.multiplexer.connects == len(redis_cluster.masters()) and store.multiplexer.in_flight == 0
        for sid in made:
            assert sorted(
                o.unique_name or "" for o in (await objects.page(store, sid, Kind.DOCUMENT, 50, None)).items
            ) == [f"d{i}" for i in range(4)]
    finally:
        await store.close()


async def test_on_a_cluster_reads_follow_a_slot_half_moved_then_moved(redis_cluster: ClusterProcess) -> None:
    """A subscription's read (batch.py) goes over its master's shared connection; while its slot is
    half moved and the key already on the importing node (ASK), redis-py's Cluster client reads it
    there; once the move is done (MOVED on the old map), the map is refreshed and the read goes to
    the new owner's shared connection."""
    store = await Store.connect(redis_cluster.url, cluster=True)
    nodes = {p: aioredis.Redis(host="127.0.0.1", port=p) for p in redis_cluster.masters()}
    try:
        svc = (await services.create(store, ACCOUNT_SID, {})).sid
        doc = (await objects.create(store, svc, Kind.DOCUMENT, SYSTEM, data_json="{}")).sid
        key = keys.obj(svc, doc)
        slot = int(await nodes[redis_cluster.masters()[0]].execute_command("CLUSTER", "KEYSLOT", key))
        owner = store.redis.get_node_from_key(key).port
        target = next(p for p in redis_cluster.masters() if p != owner)
        src, dst = nodes[owner], nodes[target]
        src_id, dst_id = await src.execute_command("CLUSTER", "MYID"), await dst.execute_command("CLUSTER", "MYID")

        def reads() -> int:
            h = store.health.stats.latency.get("hmget")
            return 0 if h is None else h.count

        assert await objects.last_event(store, svc, Kind.DOCUMENT, doc) == (doc, 0)
        await dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
        await src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
        await src.execute_command("MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", key)
        before = reads()
        assert await objects.last_event(store, svc, Kind.DOCUMENT, doc) == (doc, 0)  # ASK: followed
        assert reads() == before + 1
        while rest := await src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):  # the Service's others
            await src.execute_command("MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", *rest)
        for node in nodes.values():  # the move done: every master knows the new owner
            await node.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
        mux = store.multiplexer
        assert isinstance(mux, ClusterMultiplexer)
        connects = mux.connects
        assert await objects.last_event(store, svc, Kind.DOCUMENT, doc) == (doc, 0)  # MOVED: refreshed
        assert store.redis.get_node_from_key(key).port == target
        assert mux.connects == connects + 1 and mux.in_flight == 0  # read over the new owner's connection
    finally:
        for node in nodes.values():
            await node.aclose()
        await store.close()
