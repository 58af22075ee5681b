"""The typed seam between the product and redis-py: the Redis commands the product uses, with the
argument and reply types they have here.

redis-py's own annotations answer ``Awaitable[T] | T`` unions (or ``Any``) because one class serves
sync and async clients, so through them strict mypy checks no call. ``Store.connect`` casts its
client (asyncio ``Redis`` or ``RedisCluster``) to ``RedisClient`` once; from there every call in
storage/ and in the webhook worker is checked. Replies are ``bytes``: the client is always created
with ``decode_responses=False`` (values are msgpack and JSON, decoded where they are read).

A command the product starts to use is added here first, with the types redis-py answers for it
(tests/unit/test_redis_client.py checks that both clients and their pipelines have every member,
with the parameter names used here).

Unreachable Redis is one error, on every path: ``guard`` wraps the client ``Store`` uses so that
every command, pipeline ``execute`` and script call that fails because Redis cannot be reached
raises ``StoreUnavailableError`` (a StoreError, which storage/wire/errors.py answers 503/20503 on
REST and over the SDK tunnel). "Cannot be reached" is redis-py's ConnectionError (refused, reset,
"No connection available" from the blocking pool, LOADING), TimeoutError, an OSError from the
socket, and the Cluster client's ClusterDownError / RedisClusterException (no node or no slot
owner reachable). Other replies (WRONGTYPE, BUSYGROUP, NOGROUP, ...) pass through unchanged.

Why a wrapper around the client and not a redis-py ``Connection`` subclass: redis-py's retry and
reconnect logic (and the Cluster client's topology refresh) catch its own ConnectionError inside the
client; raising another type from a connection would bypass them, and "No connection available"
comes from the pool, not from a connection. Wrapping outside the client lets redis-py do all of
that first and works the same for ``Redis`` and ``RedisCluster`` (and their pipelines).
Pub/sub is not wrapped: its users (realtime/broker.py, the webhook wake-ups) own reconnect loops.

``Health`` is the shared outage state: the first failure logs "Redis unavailable: ..." once, the
next success logs "Redis reachable again"; code that runs during an outage (request handlers,
background loops) catches StoreUnavailableError without logging, so an outage is two log lines.
"""

from __future__ import annotations

import inspect
import logging
import os
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal, NoReturn, Protocol, Self, TypedDict, cast, overload

from redis.exceptions import (
    ClusterDownError,
    ClusterError,
    ConnectionError as RedisConnectionError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisClusterException,
    RedisError,
    ResponseError,
    TimeoutError as RedisTimeoutError,
    TryAgainError,
)

from .errors import StoreUnavailableError
from .stats import RedisStats

log = logging.getLogger("sync.store")

Members = set[bytes]  # SMEMBERS (named here: RedisClient.set shadows the builtin in the class body)

Value = str | bytes | int | float  # what a command accepts as a value (redis-py encodes it)
StreamEntry = tuple[bytes, dict[bytes, bytes]]  # (entry id, fields)
# A Lua script's reply as redis-py hands it over: Lua strings are bytes, numbers are truncated to
# int, tables are lists, nil and false are None.
LuaReply = bytes | int | None | list["LuaReply"]


def text(value: bytes | str | int) -> str:
    """Decode a Redis bytes reply (or pass a str or number through as a str)."""
    if isinstance(value, bytes):
        return value.decode()
    return str(value)


class PubSubMessage(TypedDict):
    """One message from ``RedisPubSub.listen``: ``data`` is the payload (bytes) for type "message",
    the subscription count (int) for "subscribe"."""

    type: str
    pattern: bytes | None
    channel: bytes
    data: bytes | int


class RedisScript(Protocol):
    """A registered script (redis-py's ``AsyncScript``): EVALSHA, loading it again after a
    SCRIPT FLUSH or on a Cluster node that has not seen it."""

    def __call__(self, keys: Sequence[str] = ..., args: Sequence[Value] = ...) -> Awaitable[LuaReply]: ...


class RedisPubSub(Protocol):
    async def subscribe(self, *channels: str) -> None: ...

    def listen(self) -> AsyncIterator[PubSubMessage]: ...

    async def aclose(self) -> None: ...


class RedisPipeline(Protocol):
    """Commands queued by a pipeline answer the pipeline itself (nothing is sent before ``execute``).

    ``execute`` answers one reply per queued command, each typed as the command's reply below; the
    list is heterogeneous, so call sites unpack it into the types of what they queued."""

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc_value: BaseException | None, traceback: TracebackType | None
    ) -> None: ...

    async def execute(self) -> list[Any]: ...

    def delete(self, *names: str) -> Self: ...

    def hget(self, name: str, key: str) -> Self: ...

    def hgetall(self, name: str) -> Self: ...

    def hmget(self, name: str, keys: str | Sequence[str], *args: str) -> Self: ...

    def hset(
        self, name: str, key: str | None = None, value: Value | None = None, mapping: Mapping[str, Value] | None = None
    ) -> Self: ...

    def rpush(self, name: str, *values: Value) -> Self: ...

    def srem(self, name: str, *values: Value) -> Self: ...

    def xack(self, name: str, groupname: str, *ids: str) -> Self: ...

    def xadd(self, name: str, fields: Mapping[str, Value]) -> Self: ...

    def xdel(self, name: str, *ids: str | bytes) -> Self: ...

    def xlen(self, name: str) -> Self: ...

    def zcard(self, name: str) -> Self: ...

    def zrange(self, name: str, start: int, end: int, withscores: bool = False) -> Self: ...

    def smembers(self, name: str) -> Self: ...

    def zrangebyscore(
        self,
        name: str,
        min: float | str,
        max: float | str,
        start: int | None = None,
        num: int | None = None,
        withscores: Literal[False] = False,
    ) -> Self: ...

    def zrevrangebyscore(
        self,
        name: str,
        max: float | str,
        min: float | str,
        start: int | None = None,
        num: int | None = None,
        withscores: Literal[False] = False,
    ) -> Self: ...

    def zadd(self, name: str, mapping: Mapping[str, float], lt: bool = False) -> Self: ...

    def zrem(self, name: str, *values: str) -> Self: ...

    def zremrangebyscore(self, name: str, min: float | str, max: float | str) -> Self: ...


class RedisClient(Protocol):
    """The product's view of a Redis client, standalone or Cluster (same commands, same replies)."""

    def register_script(self, script: str) -> RedisScript: ...

    def pipeline(self, transaction: bool = True) -> RedisPipeline: ...

    def pubsub(self) -> RedisPubSub: ...

    async def ping(self) -> bool: ...

    async def aclose(self) -> None: ...

    # scripts (a Cluster asks every primary: exists only where all have it, loaded on all)
    async def script_exists(self, *shas: str) -> list[bool]: ...

    async def script_load(self, script: str) -> str: ...

    # strings and keys
    async def get(self, name: str) -> bytes | None: ...

    async def set(self, name: str, value: Value, ex: int | None = None, nx: bool = False) -> bool | None: ...

    async def delete(self, *names: str) -> int: ...

    async def exists(self, *names: str) -> int: ...

    async def incr(self, name: str) -> int: ...

    async def publish(self, channel: str, message: Value) -> int: ...

    async def spublish(self, shard_channel: str, message: Value) -> int: ...

    # hashes
    async def hget(self, name: str, key: str) -> bytes | None: ...

    async def hgetall(self, name: str) -> dict[bytes, bytes]: ...

    async def hmget(self, name: str, keys: str | Sequence[str], *args: str) -> list[bytes | None]: ...

    async def hset(
        self, name: str, key: str | None = None, value: Value | None = None, mapping: Mapping[str, Value] | None = None
    ) -> int: ...

    async def hdel(self, name: str, *keys: str) -> int: ...

    # lists and sets
    async def lrange(self, name: str, start: int, end: int) -> list[bytes]: ...

    async def lrem(self, name: str, count: int, value: Value) -> int: ...

    async def sadd(self, name: str, *values: Value) -> int: ...

    async def srem(self, name: str, *values: Value) -> int: ...

    async def smembers(self, name: str) -> Members: ...

    # sorted sets
    async def zadd(self, name: str, mapping: Mapping[str, float], lt: bool = False) -> int: ...

    async def zrem(self, name: str, *values: str) -> int: ...

    async def zcard(self, name: str) -> int: ...

    @overload
    async def zrange(self, name: str, start: int, end: int, withscores: Literal[False] = False) -> list[bytes]: ...

    @overload
    async def zrange(
        self, name: str, start: int, end: int, *, withscores: Literal[True]
    ) -> list[tuple[bytes, float]]: ...

    @overload
    async def zrangebyscore(
        self,
        name: str,
        min: float | str,
        max: float | str,
        start: int | None = None,
        num: int | None = None,
        withscores: Literal[False] = False,
    ) -> list[bytes]: ...

    @overload
    async def zrangebyscore(
        self,
        name: str,
        min: float | str,
        max: float | str,
        start: int | None = None,
        num: int | None = None,
        *,
        withscores: Literal[True],
    ) -> list[tuple[bytes, float]]: ...

    @overload
    async def zrevrangebyscore(
        self,
        name: str,
        max: float | str,
        min: float | str,
        start: int | None = None,
        num: int | None = None,
        withscores: Literal[False] = False,
    ) -> list[bytes]: ...

    @overload
    async def zrevrangebyscore(
        self,
        name: str,
        max: float | str,
        min: float | str,
        start: int | None = None,
        num: int | None = None,
        *,
        withscores: Literal[True],
    ) -> list[tuple[bytes, float]]: ...

    async def zrangebylex(
        self, name: str, min: str, max: str, start: int | None = None, num: int | None = None
    ) -> list[bytes]: ...

    async def zrevrangebylex(
        self, name: str, max: str, min: str, start: int | None = None, num: int | None = None
    ) -> list[bytes]: ...

    # streams
    async def xadd(self, name: str, fields: Mapping[str, Value]) -> bytes: ...

    async def xlen(self, name: str) -> int: ...

    async def xrange(
        self, name: str, min: str = "-", max: str = "+", count: int | None = None
    ) -> list[StreamEntry]: ...

    async def xgroup_create(self, name: str, groupname: str, id: str = "$") -> bool: ...

    async def xautoclaim(
        self,
        name: str,
        groupname: str,
        consumername: str,
        min_idle_time: int,
        start_id: str = "0-0",
        count: int | None = None,
    ) -> tuple[bytes, list[StreamEntry], list[bytes]]:
        """(next cursor, claimed entries, ids of entries deleted meanwhile); a list at run time."""
        ...

    async def xreadgroup(
        self, groupname: str, consumername: str, streams: Mapping[str, str], count: int | None = None
    ) -> list[tuple[bytes, list[StreamEntry]]]:
        """One (stream name, entries) pair per stream (lists at run time); [] when nothing is new."""
        ...


# --- unreachable Redis as StoreUnavailableError (see the module docstring) -------------------------

UNREACHABLE: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    ClusterDownError,
    RedisClusterException,
    OSError,
)

# A Cluster slot being moved from one master to another: a multi-key call while its keys are half
# moved (TRYAGAIN; every write script, which declares keys.fence, while its Service's slot moves),
# and redirections that did not settle within redis-py's limit ("TTL exhausted").
MOVING: tuple[type[BaseException], ...] = (TryAgainError, ClusterError)
# A script that touched an undeclared key of a moving slot after the key left (the Cluster refuses
# the command inside the script): what keys.fence keeps write scripts from meeting.
_MOVED_AWAY = "non local key"


def refused(exc: BaseException) -> bool:
    """Whether Redis answered but would not write now: memory past ``maxmemory``, its disk writes
    failing (MISCONF), a replica answering for a primary (READONLY), too few replicas (NOREPLICAS).
    503 like an outage, but not one: Redis answers, and reads go on (so ``Health`` is not told)."""
    if isinstance(exc, OutOfMemoryError | ReadOnlyError):
        return True
    return isinstance(exc, ResponseError) and str(exc).startswith(("MISCONF", "NOREPLICAS"))


def moving(exc: BaseException) -> bool:
    """Whether the call met a Cluster slot being moved (``MOVING``): 503 until it has moved, not an
    outage (the rest of the Cluster answers)."""
    return isinstance(exc, MOVING) or (isinstance(exc, ResponseError) and _MOVED_AWAY in str(exc))


NOTE_EVERY_S = 60.0  # at most one log line this often while Redis refuses writes, or a slot moves


class Health:
    """Whether Redis answered the last call: one log line when an outage starts, one when it ends."""

    def __init__(self) -> None:
        self.down_since: float | None = None
        self.stats = RedisStats()  # every guarded call's latency and failures, by command (/metrics)
        # called once when an outage starts (Store.connect: drop the pool's idle connections)
        self.on_outage: Callable[[], None] | None = None
        self._noted: dict[str, float] = {}  # kind -> when it was last logged (``_note``)

    @property
    def up(self) -> bool:
        return self.down_since is None

    def failed(self, exc: BaseException) -> StoreUnavailableError:
        """Record a failure (logged only if it starts an outage); the error to raise for it."""
        if self.down_since is None:
            self.down_since = time.monotonic()
            log.warning("Redis unavailable: %s", exc or type(exc).__name__)
            if self.on_outage is not None:
                self.on_outage()
        return StoreUnavailableError("redis", message=f"Redis is not reachable: {exc}")

    def refusal(self, exc: BaseException) -> StoreUnavailableError:
        """Record a write Redis refused (``refused``): it lasts (memory stays full, a disk stays
        broken) and every write would repeat it, so it is logged at most once every NOTE_EVERY_S."""
        self._note("refused", f"Redis refuses writes: {exc or type(exc).__name__}")
        return StoreUnavailableError("refused", message=f"Redis refused the write: {exc}")

    def moved(self, exc: BaseException) -> StoreUnavailableError:
        """Record a call that met a slot being moved (``moving``); logged like a refusal."""
        self._note("moving", f"a Redis Cluster slot is moving: its writes wait until it has moved ({exc})")
        return StoreUnavailableError("moving", message=f"a Redis Cluster slot is moving: {exc}")

    def _note(self, kind: str, line: str) -> None:
        now = time.monotonic()
        if now - self._noted.get(kind, -NOTE_EVERY_S) >= NOTE_EVERY_S:
            self._noted[kind] = now
            log.warning("%s", line)

    def ok(self, started: float) -> None:
        """Record a success of a call begun at ``started`` (monotonic). Only a call begun after the
        outage was seen ends it: a reply to an older call (sent before the failure, answered late on a
        busy machine) says nothing about now, and would split one outage into several log lines."""
        if self.down_since is not None and started >= self.down_since:
            log.warning("Redis reachable again (after %.1f s)", time.monotonic() - self.down_since)
            self.down_since = None


def torn_down(exc: BaseException) -> bool:
    """Whether an error other than redis-py's own is a connection torn down under it: when a Cluster
    master dies, redis-py's asyncio Cluster client disconnects the node's connections while other
    tasks are writing on them, and those tasks fail inside its connection code with a RuntimeError
    (uvloop: "unable to perform operation on <TCPTransport closed=True …>; the handler is closed") or
    an AttributeError (its writer already None), not a ConnectionError. Raised anywhere else, they
    are bugs and stay ones."""
    if not isinstance(exc, RuntimeError | AttributeError):
        return False
    frames = traceback.extract_tb(exc.__traceback__)
    return any(frame.filename.endswith(_REDIS_CONNECTION_CODE) for frame in frames)


_REDIS_CONNECTION_CODE = os.path.join("redis", "asyncio", "connection.py")


def raise_unavailable(health: Health, name: str, exc: BaseException) -> NoReturn:
    """Raise the StoreUnavailableError (503/20503) that stands for ``exc`` from the call ``name``,
    recorded in ``health`` (an outage, a refusal or a moving slot, each logged as ``Health`` says), or
    ``exc`` itself when it is none of these (a bug, or a reply such as WRONGTYPE).

    The one place that sorts Redis errors: every guarded call and the durability path use it."""
    if isinstance(exc, UNREACHABLE) or torn_down(exc):
        error = health.failed(exc)
    elif refused(exc):
        error = health.refusal(exc)
    elif moving(exc):
        error = health.moved(exc)
    else:
        raise exc
    health.stats.failed(name)
    raise error from exc


# What ``raise_unavailable`` may translate: Redis's own errors, and those of a connection torn down
# under a call (``torn_down``).
SORTED: tuple[type[BaseException], ...] = (*UNREACHABLE, RuntimeError, AttributeError, RedisError)


async def _guarded(
    health: Health, name: str, call: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    started = time.monotonic()
    try:
        reply = await call(*args, **kwargs)
    except SORTED as exc:
        raise_unavailable(health, name, exc)
    health.stats.observe(name, time.monotonic() - started)
    health.ok(started)
    return reply


async def _reply(health: Health, name: str, pending: Awaitable[Any]) -> Any:
    return await _guarded(health, name, lambda: pending, (), {})


class _GuardedScript:
    def __init__(self, script: Any, health: Health) -> None:
        self._script = script
        self._health = health

    def __call__(self, keys: Sequence[str] = (), args: Sequence[Value] = ()) -> Awaitable[LuaReply]:
        return _guarded(self._health, "script", self._script, (), {"keys": keys, "args": args})


class _GuardedPipeline:
    """Queues on redis-py's pipeline (answering itself, as a pipeline does); ``execute`` is guarded."""

    def __init__(self, pipeline: Any, health: Health) -> None:
        self._pipeline = pipeline
        self._health = health

    async def __aenter__(self) -> Self:
        await self._pipeline.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        try:  # resets the pipeline (no reply from Redis: not a sign that it is back)
            await self._pipeline.__aexit__(*exc)
        except UNREACHABLE as error:
            self._health.stats.failed("pipeline")
            raise self._health.failed(error) from error

    async def execute(self) -> list[Any]:
        return cast(list[Any], await _guarded(self._health, "pipeline", self._pipeline.execute, (), {}))

    def __getattr__(self, name: str) -> Any:
        command = getattr(self._pipeline, name)

        def queue(*args: Any, **kwargs: Any) -> _GuardedPipeline:
            command(*args, **kwargs)
            return self

        return queue


class _GuardedClient:
    """Every command of the wrapped client, guarded; see ``guard``."""

    def __init__(self, client: Any, health: Health) -> None:
        self._client = client
        self.health = health

    def register_script(self, script: str) -> RedisScript:
        return _GuardedScript(self._client.register_script(script), self.health)

    def pipeline(self, *args: Any, **kwargs: Any) -> RedisPipeline:
        return cast(RedisPipeline, _GuardedPipeline(self._client.pipeline(*args, **kwargs), self.health))

    def pubsub(self) -> RedisPubSub:
        return cast(RedisPubSub, self._client.pubsub())

    async def aclose(self) -> None:
        await self._client.aclose()

    def __getattr__(self, name: str) -> Any:
        command = getattr(self._client, name)
        if not callable(command):
            return command
        health = self.health

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                result = command(*args, **kwargs)
            except UNREACHABLE as exc:
                health.stats.failed(name)
                raise health.failed(exc) from exc
            # a command answers an awaitable; a local helper (e.g. the Cluster's get_node_from_key) its value
            return _reply(health, name, result) if inspect.isawaitable(result) else result

        self.__dict__[name] = call  # found directly from now on
        return call


def guard(client: RedisClient, health: Health) -> RedisClient:
    """``client`` with every failure to reach Redis raised as StoreUnavailableError (recorded in
    ``health``). Guarding a guarded client answers it unchanged."""
    if isinstance(client, _GuardedClient):
        return client
    return cast(RedisClient, _GuardedClient(client, health))
