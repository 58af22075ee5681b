"""Webhook wake-ups on shard channels (realtime/webhooks/wakeups.py): a queued webhook wakes only
the process holding its Service's bucket, on the shard owning the Service, and promptly.

The prompt-delivery tests run their own Redis and server with a 30 s safety-net scan (the session's
servers scan every 0.3 s, which would deliver without any wake-up): a webhook delivered within a
second or two can only have been woken.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import httpx
import pytest
from redis import asyncio as aioredis

from realtime.cluster_broker import owners, slot_of
from storage import keys
from tests.helpers import ACCOUNT_SID, AUTH_TOKEN, SCALE, ClusterProcess, RedisProcess, ServerProcess
from tests.webhook_receiver import Receiver

SLOW_SCAN = {"SYNC_WEBHOOK_SCAN_INTERVAL_S": "30"}
PROMPT_S = 2.0  # a woken delivery; the scan would take up to 30 s


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.stop()


async def _hooked(http: httpx.AsyncClient, url: str) -> str:
    flags = {"FriendlyName": "wake", "WebhookUrl": url, "WebhooksFromRestEnabled": "true"}
    r = await http.post("/v1/Services", data=flags)
    assert r.status_code == 201, r.text
    return str(r.json()["sid"])


async def _each_node(ports: list[int], *command: str) -> dict[int, object]:
    out = {}
    for port in ports:
        node = aioredis.Redis(host="127.0.0.1", port=port)
        try:
            out[port] = await node.execute_command(*command)
        finally:
            await node.aclose()
    return out


async def _until(check: Callable[[], Awaitable[bool]], within: float) -> None:
    deadline = time.monotonic() + within * SCALE
    while not await check():
        assert time.monotonic() < deadline, "not within the time"
        await asyncio.sleep(0.05)


async def _writes_are_delivered_promptly(server: ServerProcess, receiver: Receiver) -> None:
    async with httpx.AsyncClient(base_url=server.base_url, auth=(ACCOUNT_SID, AUTH_TOKEN), timeout=10) as http:
        service = await _hooked(http, receiver.url)
        # at once: the Service joined its bucket a moment ago (the holder subscribes it, then drains)
        started = time.monotonic()
        made = await http.post(f"/v1/Services/{service}/Documents", data={"UniqueName": "d", "Data": '{"n":0}'})
        assert made.status_code == 201, made.text
        await receiver.wait_for(1, within=PROMPT_S)
        lags = [time.monotonic() - started]
        for n in range(1, 6):
            started = time.monotonic()
            r = await http.post(f"/v1/Services/{service}/Documents/d", data={"Data": f'{{"n":{n}}}'})
            assert r.status_code == 200, r.text
            await receiver.wait_for(n + 1, within=PROMPT_S)
            lags.append(time.monotonic() - started)
    assert [r.form["EventType"] for r in receiver.delivered] == ["document_created"] + ["document_updated"] * 5
    assert max(lags) < PROMPT_S * SCALE, lags


async def test_a_webhook_is_woken_promptly_on_a_standalone_valkey(receiver: Receiver) -> None:
    redis = RedisProcess()
    try:
        with ServerProcess(redis_url=redis.url, env=SLOW_SCAN) as server:
            await _writes_are_delivered_promptly(server, receiver)
            # sharded (Valkey 7+): the Service's shard channel, nobody on the global one
            plain, shard = await _each_node([redis.port], "PUBSUB", "NUMSUB", keys.WEBHOOK_WAKE), None
            assert plain[redis.port] == [keys.WEBHOOK_WAKE.encode(), 0]
            shard = await _each_node([redis.port], "PUBSUB", "SHARDCHANNELS", "sync:{IS*}:whw")
            assert len(shard[redis.port]) == 1  # type: ignore[arg-type]
    finally:
        redis.stop()


@pytest.fixture
def own_cluster() -> Iterator[ClusterProcess]:
    """3 masters, no replicas (quick to start), for this module's servers only."""
    with ClusterProcess(replicas=0) as cluster:
        yield cluster


async def test_a_webhook_is_woken_promptly_on_a_cluster(own_cluster: ClusterProcess, receiver: Receiver) -> None:
    with ServerProcess(redis_url=own_cluster.url, env={"REDIS_CLUSTER": "true", **SLOW_SCAN}) as server:
        await _writes_are_delivered_promptly(server, receiver)


@pytest.mark.backends("cluster")
async def test_the_wake_up_channel_is_held_on_the_owning_shard_by_one_process(
    redis_cluster: ClusterProcess, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    service = await _hooked(http, receiver.url)
    made = await http.post(f"/v1/Services/{service}/Documents", data={"Data": "{}"})
    assert made.status_code == 201, made.text
    await receiver.wait_for(1)
    channel = keys.webhook_wake_channel(service)
    masters = redis_cluster.masters()

    async def held_on_owner_only() -> bool:
        found = await _each_node(masters, "PUBSUB", "SHARDCHANNELS", channel)
        return sum(1 for chans in found.values() if chans) == 1

    await _until(held_on_owner_only, 5)
    found = await _each_node(masters, "PUBSUB", "SHARDCHANNELS", channel)
    owner = next(port for port, chans in found.items() if chans)
    table = owners((await _each_node(masters[:1], "CLUSTER", "SLOTS"))[masters[0]])  # type: ignore[arg-type]
    assert table[slot_of(channel)] == ("127.0.0.1", owner)  # the master owning the Service's slot
    # one subscriber: the one process (of the two) holding the Service's bucket
    counted = await _each_node([owner], "PUBSUB", "SHARDNUMSUB", channel)
    assert counted[owner] == [channel.encode(), 1]
    # nobody listens on the global channel any more: a plain PUBLISH there would cross the whole bus
    for reply in (await _each_node(masters, "PUBSUB", "NUMSUB", keys.WEBHOOK_WAKE)).values():
        assert reply == [keys.WEBHOOK_WAKE.encode(), 0]


async def _owner(ports: list[int], channel: str) -> int:
    """The master whose slots hold ``channel``, from CLUSTER SLOTS."""
    table = owners((await _each_node(ports[:1], "CLUSTER", "SLOTS"))[ports[0]])  # type: ignore[arg-type]
    node = table[slot_of(channel)]
    assert node is not None
    return node[1]


async def test_the_wake_ups_follow_a_failover(receiver: Receiver) -> None:
    """kill -9 the master owning the Service: the worker's subscription moves to the promoted replica
    (realtime/cluster_broker.py), and later writes are still woken, not left to the 30 s scan."""
    env = {"REDIS_CLUSTER": "true", **SLOW_SCAN}
    with ClusterProcess() as cluster, ServerProcess(redis_url=cluster.url, env=env) as server:
        async with httpx.AsyncClient(base_url=server.base_url, auth=(ACCOUNT_SID, AUTH_TOKEN), timeout=10) as http:
            while True:  # a Service on a master other than the URL's node (kill_master spares that one)
                service = await _hooked(http, receiver.url)
                channel = keys.webhook_wake_channel(service)
                owner = await _owner(cluster.masters(), channel)
                if owner != cluster.ports[0]:
                    break
            made = await http.post(f"/v1/Services/{service}/Documents", data={"UniqueName": "d", "Data": "{}"})
            assert made.status_code == 201, made.text
            await receiver.wait_for(1, within=PROMPT_S)
            promoted = await asyncio.to_thread(cluster.kill_master, owner)

            async def subscribed_on_the_promoted() -> bool:
                return bool((await _each_node([promoted], "PUBSUB", "SHARDCHANNELS", channel))[promoted])

            await _until(subscribed_on_the_promoted, 20)  # a loaded CI box took over 10 s once; the scan: 30 s
            for n in range(1, 4):
                started = time.monotonic()
                deadline = started + 10 * SCALE
                while True:  # the server's own client may still answer 503 for a moment
                    r = await http.post(f"/v1/Services/{service}/Documents/d", data={"Data": f'{{"n":{n}}}'})
                    if r.status_code == 200 or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.2)
                assert r.status_code == 200, r.text
                await receiver.wait_for(1 + n, within=PROMPT_S)
