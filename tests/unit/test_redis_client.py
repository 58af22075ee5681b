"""storage/redis_client.py: the typed seam must describe what redis-py's clients really offer, and
turn every failure to reach Redis into StoreUnavailableError.

``Store.connect`` casts redis-py's asyncio ``Redis`` or ``RedisCluster`` to ``RedisClient``, so mypy
cannot check that the Protocol matches them: this does, by signature, with no server."""

from __future__ import annotations

import inspect
import logging
import os
import time
import typing
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, cast

import pytest
from redis.asyncio.client import Pipeline, PubSub, Redis
from redis.asyncio.cluster import ClusterPipeline, ClusterPubSub, RedisCluster
from redis.exceptions import (
    BusyLoadingError,
    ClusterDownError,
    ClusterError,
    ConnectionError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisClusterException,
    ResponseError,
    TimeoutError as RedisTimeoutError,
    TryAgainError,
)

from storage.errors import StoreUnavailableError
from storage.redis_client import Health, RedisClient, RedisPipeline, RedisPubSub, guard, text

SEAMS = [
    (RedisClient, Redis),
    (RedisClient, RedisCluster),
    (RedisPipeline, Pipeline),
    (RedisPipeline, ClusterPipeline),
    (RedisPubSub, PubSub),
    (RedisPubSub, ClusterPubSub),
]


def _members(protocol: type) -> dict[str, Any]:
    skip = {"__init__", "__subclasshook__", "__parameters__", "__protocol_attrs__", "__non_callable_proto_members__"}
    return {
        name: value
        for name, value in vars(protocol).items()
        if callable(value) and name not in skip and (not name.startswith("_") or name in ("__aenter__", "__aexit__"))
    }


def _variants(protocol: type, name: str) -> list[Callable[..., Any]]:
    """The member's overloads, else the member. A Protocol member declared only by ``@overload``s
    is typing's placeholder (``*args, **kwds``), so its overloads are looked up by its own name."""
    where = SimpleNamespace(__module__=protocol.__module__, __qualname__=f"{protocol.__qualname__}.{name}")
    return list(typing.get_overloads(cast(Callable[..., Any], where))) or [vars(protocol)[name]]


@pytest.mark.parametrize(("protocol", "real"), SEAMS, ids=lambda x: x.__name__)
def test_every_member_exists_and_takes_the_parameters_used(protocol: type, real: type) -> None:
    problems = []
    for name in _members(protocol):
        actual = getattr(real, name, None)
        if actual is None:
            problems.append(f"{real.__name__} has no {name}")
            continue
        accepted = inspect.signature(actual).parameters
        takes_any = any(p.kind is p.VAR_KEYWORD for p in accepted.values())
        for variant in _variants(protocol, name):
            for param in inspect.signature(variant).parameters.values():
                if param.name == "self" or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                    continue
                if param.name not in accepted and not takes_any:
                    problems.append(f"{real.__name__}.{name} takes no {param.name}")
    assert problems == []


def test_pipeline_commands_mirror_client_commands() -> None:
    """A command declared for both takes the same arguments queued on a pipeline as sent directly."""
    client, pipeline = _members(RedisClient), _members(RedisPipeline)
    for name in pipeline.keys() & client.keys():
        queued = inspect.signature(pipeline[name]).parameters
        direct = inspect.signature(_variants(RedisClient, name)[0]).parameters
        assert list(queued) == list(direct), name


def test_text_decodes_replies() -> None:
    assert text(b"IS\xc3\xa9") == "ISé"
    assert text("already") == "already"
    assert text(42) == "42"


# --- the guard: unreachable Redis is StoreUnavailableError, logged once per outage -----------------


class _Fake:
    """Stands in for redis-py's client, pipeline and script: each call answers or raises ``fail``."""

    def __init__(self) -> None:
        self.fail: BaseException | None = None
        self.queued: list[tuple[str, tuple[Any, ...]]] = []

    async def _answer(self, value: Any) -> Any:
        if self.fail is not None:
            raise self.fail
        return value

    def get(self, name: str) -> Any:
        return self._answer(b"v")

    def get_node_from_key(self, key: str) -> str:  # local, no round trip (the Cluster client's)
        return "node-1"

    def register_script(self, source: str) -> Any:
        return lambda keys=None, args=None: self._answer([b"OK"])

    def pipeline(self, transaction: bool = True) -> Any:
        return self

    async def __aenter__(self) -> Any:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        return None

    def hget(self, name: str, key: str) -> Any:
        self.queued.append(("hget", (name, key)))
        return self

    def execute(self) -> Any:
        return self._answer([b"x"])


UNREACHABLE_ERRORS = [
    ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused."),
    ConnectionError("No connection available."),  # the blocking pool, all connections taken
    BusyLoadingError("Redis is loading the dataset in memory"),
    RedisTimeoutError("Timeout reading from socket"),
    ConnectionRefusedError(111, "Connection refused"),
    ClusterDownError("CLUSTERDOWN The cluster is down"),
    RedisClusterException("Redis Cluster cannot be connected. Please provide at least one reachable node"),
    # a slot being moved: keys half moved, redirections that did not settle, a script refused mid-way
    TryAgainError("TRYAGAIN Multiple keys request during rehashing of slot"),
    ClusterError("TTL exhausted."),
    ResponseError("ERR Script attempted to access a non local key in a cluster node script: item_write"),
]


def _raised_in_redis_connection_code(error: Exception) -> Exception:
    """``error`` as redis-py's connection code raises it (a frame of redis/asyncio/connection.py)."""
    namespace: dict[str, Any] = {"error": error}
    where = os.path.join("redis", "asyncio", "connection.py")
    exec(compile("def send():\n    raise error\n", where, "exec"), namespace)
    try:
        namespace["send"]()
    except Exception as raised:
        return raised
    raise AssertionError("not raised")


UNREACHABLE_ERRORS += [  # a Cluster master's connections torn down by redis-py while tasks write on them
    _raised_in_redis_connection_code(
        RuntimeError("unable to perform operation on <TCPTransport closed=True>; the handler is closed")
    ),
    _raised_in_redis_connection_code(AttributeError("'NoneType' object has no attribute 'writelines'")),
]


@pytest.mark.parametrize("error", UNREACHABLE_ERRORS, ids=lambda e: type(e).__name__)
async def test_every_call_raises_store_unavailable_when_redis_cannot_be_reached(error: Exception) -> None:
    fake = _Fake()
    client = guard(cast(RedisClient, fake), Health())
    fake.fail = error
    with pytest.raises(StoreUnavailableError) as command:
        await client.get("k")
    assert command.value.__cause__ is error
    with pytest.raises(StoreUnavailableError):
        await client.register_script("return 1")(keys=["k"], args=[])
    with pytest.raises(StoreUnavailableError):
        async with client.pipeline(transaction=True) as p:
            p.hget("h", "f")
            await p.execute()
    assert fake.queued == [("hget", ("h", "f"))]


async def test_other_redis_errors_pass_through_and_replies_are_unchanged() -> None:
    fake = _Fake()
    client = guard(cast(RedisClient, fake), Health())
    assert await client.get("k") == b"v"
    assert cast(Any, client).get_node_from_key("k") == "node-1"  # a local helper answers its value, not a coroutine
    assert await client.register_script("return 1")(keys=["k"], args=[]) == [b"OK"]
    async with client.pipeline(transaction=False) as p:
        assert p.hget("h", "f") is p  # commands queue and answer the pipeline, as redis-py's do
        assert await p.execute() == [b"x"]
    fake.fail = ResponseError("BUSYGROUP Consumer Group name already exists")
    with pytest.raises(ResponseError):
        await client.get("k")
    for bug in (RuntimeError("a bug, not a lost connection"), AttributeError("nor this")):
        fake.fail = bug  # raised outside redis-py's connection code
        with pytest.raises(type(bug)):
            await client.get("k")


@pytest.mark.parametrize(
    ("error", "kind", "line"),
    [
        (OutOfMemoryError("command not allowed when used memory > 'maxmemory'."), "refused", "Redis refuses writes"),
        (ReadOnlyError("You can't write against a read only replica."), "refused", "Redis refuses writes"),
        (ResponseError("MISCONF Errors writing to the AOF file: No space left on device"), "refused", "Redis refuses"),
        (ResponseError("NOREPLICAS Not enough good replicas to write."), "refused", "Redis refuses writes"),
        (TryAgainError("Multiple keys request during rehashing of slot"), "moving", "a Redis Cluster slot is moving"),
        (ClusterError("TTL exhausted."), "moving", "a Redis Cluster slot is moving"),
        (ResponseError("Script attempted to access a non local key in a cluster node"), "moving", "a Redis Cluster"),
    ],
    ids=["OOM", "READONLY", "MISCONF", "NOREPLICAS", "TRYAGAIN", "TTL exhausted", "non local key"],
)
async def test_a_refused_write_or_a_moving_slot_is_unavailable_but_not_an_outage(
    error: Exception, kind: str, line: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis answers but takes no writes, or a Cluster slot is moving: 503 of its kind, while the
    rest goes on, so Health stays up (no outage logged, cached Services still served), and it is
    logged once however many writes meet it."""
    fake, health = _Fake(), Health()
    client = guard(cast(RedisClient, fake), health)
    fake.fail = error
    with caplog.at_level(logging.WARNING, logger="sync.store"):
        for _ in range(5):
            with pytest.raises(StoreUnavailableError) as unavailable:
                await client.register_script("return 1")(keys=["k"], args=[])
            assert unavailable.value.kind == kind and unavailable.value.__cause__ is error
    assert health.up
    assert [r.getMessage().startswith(line) for r in caplog.records] == [True]


async def test_an_outage_is_logged_once_when_it_starts_and_once_when_it_ends(caplog: pytest.LogCaptureFixture) -> None:
    fake = _Fake()
    health = Health()
    client = guard(cast(RedisClient, fake), health)
    assert guard(client, Health()) is client  # guarding twice changes nothing
    with caplog.at_level(logging.INFO, logger="sync.store"):
        await client.get("k")
        fake.fail = ConnectionError("Connection refused")
        for _ in range(5):
            with pytest.raises(StoreUnavailableError):
                await client.get("k")
        assert not health.up
        fake.fail = None
        for _ in range(3):
            await client.get("k")
    assert health.up
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and lines[0] == "Redis unavailable: Connection refused", lines
    assert lines[1].startswith("Redis reachable again"), lines


def test_a_late_reply_to_a_call_sent_before_the_outage_does_not_end_it(caplog: pytest.LogCaptureFixture) -> None:
    """On a busy machine a reply can arrive after another call has already failed: it was sent before
    the outage was seen, so it must not log a recovery (and then a second outage)."""
    health = Health()
    sent_before = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="sync.store"):
        health.failed(ConnectionError("refused"))
        health.ok(sent_before)
        assert not health.up
        health.failed(ConnectionError("refused"))
        health.ok(time.monotonic())
    assert health.up
    lines = [r.getMessage() for r in caplog.records]
    assert [line.split(":")[0].split(" (")[0] for line in lines] == ["Redis unavailable", "Redis reachable again"]
