"""The standalone broker's subscribers against a real Valkey (realtime/pubsub.py over TCP,
realtime/broker.py's redis-py one over a Unix socket): wake-ups delivered, channels (un)subscribed,
a killed connection replaced with every channel, AUTH. The silent (SIGSTOPped) Valkey is
tests/test_redis_outage.py; slot moves and failovers on a Cluster are tests/test_cluster*.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest
from redis import asyncio as aioredis
from redis.exceptions import RedisError

from realtime import broker, pubsub
from tests.helpers import SCALE, RedisProcess

Heard = list[tuple[str, bytes]]


async def until(check: Callable[[], bool], what: str, within_s: float = 10.0) -> None:
    deadline = time.monotonic() + within_s * SCALE
    while not check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.02)


@pytest.fixture(params=["tcp", "unix"])
def url(request: pytest.FixtureRequest, own_redis: RedisProcess) -> str:
    return own_redis.url if request.param == "tcp" else own_redis.unix_url


@pytest.fixture
async def publisher(own_redis: RedisProcess) -> AsyncIterator[aioredis.Redis]:
    r = aioredis.Redis.from_url(own_redis.url)
    yield r
    await r.aclose()


def test_plain_tcp_is_read_from_the_socket_and_the_rest_by_redis_py(own_redis: RedisProcess) -> None:
    def noop(channel: str, data: bytes) -> None:
        return None

    assert isinstance(broker.subscriber(own_redis.url, noop), pubsub.WireSubscriber)
    assert isinstance(broker.subscriber(own_redis.unix_url, noop), broker.RedisPySubscriber)


async def test_wake_ups_reach_their_handlers_and_unsubscribed_channels_go_quiet(
    url: str, publisher: aioredis.Redis
) -> None:
    heard: Heard = []
    fixed: Heard = []
    b = broker.RedisBroker(url, lambda c, d: heard.append((c, d)), fixed={"inval": lambda c, d: fixed.append((c, d))})
    await b.start()
    try:
        await b.subscribe("wake:a")
        await b.subscribe("wake:b")
        for n in range(3):
            await publisher.publish("wake:a", f"a{n}")
            await publisher.publish("wake:b", f"b{n}")
        await publisher.publish("inval", "x")
        await until(lambda: len(heard) == 6 and len(fixed) == 1, f"heard {heard}, {fixed}")
        assert [d for c, d in heard if c == "wake:a"] == [b"a0", b"a1", b"a2"]  # in order, once
        assert [d for c, d in heard if c == "wake:b"] == [b"b0", b"b1", b"b2"]
        assert fixed == [("inval", b"x")]  # the fixed channel's own handler, not the wake-up one

        await b.unsubscribe("wake:a")
        await asyncio.sleep(0.1)  # the UNSUBSCRIBE reaches Valkey before the next PUBLISH
        assert await publisher.publish("wake:a", "gone") == 0
        await publisher.publish("wake:b", "still")
        await until(lambda: heard[-1] == ("wake:b", b"still"), f"heard {heard}")
        assert ("wake:a", b"gone") not in heard
    finally:
        await b.close()


async def test_a_killed_connection_comes_back_with_every_channel_and_says_so(
    url: str, publisher: aioredis.Redis
) -> None:
    heard: Heard = []
    reconnects: list[float] = []
    b = broker.RedisBroker(url, lambda c, d: heard.append((c, d)), lambda: reconnects.append(time.monotonic()))
    await b.start()
    try:
        await b.subscribe("wake:a")
        assert await publisher.execute_command("CLIENT", "KILL", "TYPE", "pubsub") >= 1
        await until(lambda: bool(reconnects), "no reconnect reported")
        n = 0
        while not heard:  # the SUBSCRIBE of the reconnect may still be on its way
            assert n < 200 * SCALE, "the channel was not subscribed again"
            n += 1
            await publisher.publish("wake:a", "back")
            await asyncio.sleep(0.05)
        assert heard[0] == ("wake:a", b"back")
        assert len(reconnects) == 1
    finally:
        await b.close()


async def test_a_wake_up_is_handled_in_the_callback_that_reads_it(
    own_redis: RedisProcess, publisher: aioredis.Redis
) -> None:
    """No task hop between the socket and the hub: the fan-out of a write starts before the loop
    turns to anything else (its REST answer), as in the reference of issue 10."""
    tasks: list[asyncio.Task[object] | None] = []
    sub = pubsub.WireSubscriber(
        pubsub.Address("127.0.0.1", own_redis.port), lambda c, d: tasks.append(asyncio.current_task())
    )
    await sub.start("wake:a")
    try:
        await publisher.publish("wake:a", "x")
        await until(lambda: bool(tasks), "not heard")
        assert tasks == [None]  # called from the protocol's data_received, not from a reader task
    finally:
        await sub.close()


async def test_channels_subscribed_while_the_connection_is_down_are_subscribed_by_the_reconnect(
    own_redis: RedisProcess, publisher: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    heard: Heard = []
    reconnects: list[bool] = []
    sub = pubsub.WireSubscriber(
        pubsub.Address("127.0.0.1", own_redis.port), lambda c, d: heard.append((c, d)), lambda: reconnects.append(True)
    )
    await sub.start("wake:a", "wake:b")
    try:
        await publisher.execute_command("CONFIG", "SET", "maxclients", "1")  # room for the publisher alone
        await publisher.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        await until(lambda: sub.local_address is None, "the killed connection is still there")
        await sub.subscribe("wake:c")
        await sub.unsubscribe("wake:b")
        await asyncio.sleep(1.0)  # a reconnect or two refused
        assert not reconnects
        await publisher.execute_command("CONFIG", "SET", "maxclients", "10000")
        await until(lambda: bool(reconnects), "no reconnect")
        await until(lambda: sub.local_address is not None, "no connection")
        for channel in ("wake:a", "wake:b", "wake:c"):
            await publisher.publish(channel, channel)
        await until(lambda: len(heard) == 2, f"heard {heard}")
        assert sorted(heard) == [("wake:a", b"wake:a"), ("wake:c", b"wake:c")]
    finally:
        await sub.close()


async def test_a_password_is_sent_and_a_wrong_one_is_a_clear_connection_error(
    own_redis: RedisProcess, publisher: aioredis.Redis
) -> None:
    await publisher.execute_command("ACL", "SETUSER", "waker", "on", ">s3cret", "&*", "+@all")
    heard: Heard = []
    good = broker.RedisBroker(f"redis://waker:s3cret@127.0.0.1:{own_redis.port}/0", lambda c, d: heard.append((c, d)))
    await good.start()
    try:
        await good.subscribe("wake:a")
        await asyncio.sleep(0.1)
        await publisher.publish("wake:a", "x")
        await until(lambda: heard == [("wake:a", b"x")], f"heard {heard}")
    finally:
        await good.close()
    bad = broker.RedisBroker(f"redis://waker:wrong@127.0.0.1:{own_redis.port}/0", lambda c, d: None)
    with pytest.raises(RedisError, match="(?i)invalid username-password|WRONGPASS"):
        await bad.start()
    await bad.close()


async def test_a_failing_reconnect_callback_is_logged_and_the_next_loss_is_still_healed(
    url: str, publisher: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[float] = []

    def on_reconnect() -> None:
        calls.append(time.monotonic())
        raise RuntimeError("the hub failed")

    heard: Heard = []
    b = broker.RedisBroker(url, lambda c, d: heard.append((c, d)), on_reconnect)
    await b.start()
    try:
        await b.subscribe("wake:a")
        for n in (1, 2):  # the watch survives the first failing callback and heals the second loss
            await publisher.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
            await until(lambda n=n: len(calls) == n, f"reconnect {n} not reported")
        assert "the hub failed" in caplog.text
        while not heard:
            await publisher.publish("wake:a", "x")
            await asyncio.sleep(0.05)
    finally:
        await b.close()
