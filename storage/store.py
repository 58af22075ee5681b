"""The Store: one Redis connection (standalone or Cluster) plus the Lua scripts that write.

Every call to Redis goes through the guarded client (storage/redis_client.py ``guard``): when Redis
cannot be reached, any read, write or script raises StoreUnavailableError (503/20503 on both edges),
and ``Store.health`` logs one line when an outage starts and one when it ends.

Every mutation goes through ``Store.run``: one script, one slot, one atomic step that writes the
data and appends the change event. Script answers ``{"E", reason, what, detail}`` become domain
errors here, so callers never see Redis replies. Scripts and their calling convention (arguments
by name): storage/lua.py.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from redis import asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ResponseError

from . import claims, keys, lua
from .batch import ReadBatch
from .cache import TtlCache
from .clock import now_ms
from .durability import Durability, check_durability, run_script
from .errors import (
    AlreadyExistsError,
    IdempotencyConflictError,
    InvalidInputError,
    NotFoundError,
    RevisionMismatchError,
    StoreError,
)
from .invalidation import Invalidations, store_cache_listener
from .multiplex import Multiplexer
from .multiplex_cluster import ClusterMultiplexer
from .records import Actor
from .redis_client import Health, LuaReply, RedisClient, guard


@dataclass(frozen=True)
class StoreConfig:
    event_log_max: int = 1000
    event_log_keep_s: int = 86400
    cache_s: float = 2.0  # how long this process trusts a Service's existence / a unique name's SID
    durability: Durability = Durability()  # SYNC_DURABILITY (storage/durability.py)
    history_keep: int = 100  # revisions kept per Document / item (0: history off), storage/history.py
    history_max_age_s: int = 0  # a revision superseded longer ago than this is dropped (0: no limit)
    multiplex: bool = True  # scripts on shared pipelined connections (redis://), multiplex.py and multiplex_cluster.py


POOL_SIZE = 200  # Redis connections per process
POOL_WAIT_S = 10.0  # how long a request waits for one before failing (StoreUnavailableError)
# How long one Redis call may wait for its reply (and a connection to be made) before it fails with
# StoreUnavailableError: a Redis that is alive but does not answer (stopped, swapping, partitioned)
# is an outage, not a hang. SYNC_REDIS_TIMEOUT_S sets it for the server. Blocking pub/sub reads
# (``listen``) are not bounded by it: redis-py reads them without a timeout.
REDIS_TIMEOUT_S = 5.0


_ERRORS: dict[str, type[StoreError]] = {
    "notfound": NotFoundError,
    "exists": AlreadyExistsError,
    "mismatch": RevisionMismatchError,
    "nodata": InvalidInputError,
    "superseded": IdempotencyConflictError,
}


class Store:
    """Owns the Redis client and the registered scripts. Create with ``await Store.connect(url)``."""

    def __init__(
        self,
        redis: RedisClient,
        config: StoreConfig | None = None,
        multiplexer: Multiplexer | ClusterMultiplexer | None = None,
    ) -> None:
        self.health = Health()
        self._raw = redis  # unguarded: storage/durability.py pipelines a script with its wait
        self.redis = guard(redis, self.health)
        self.multiplexer = multiplexer  # the scripts' shared connection, if any (/metrics reads it)
        self.config = config or StoreConfig()
        self.cache = TtlCache(self.config.cache_s)
        self.invalidations = Invalidations()  # other processes' writes reach it over pub/sub (invalidation.py)
        self.invalidations.listen(store_cache_listener(self.cache))
        self.cluster = False  # connected to a Redis Cluster
        self.sharded = False  # the server has sharded pub/sub (7+): wake-ups are SPUBLISHed (see detect_sharded)
        # scripts go over the multiplexer when there is one (storage/multiplex.py), guarded the same way
        calls = guard(cast(RedisClient, multiplexer), self.health) if multiplexer is not None else self.redis
        self.scripts = lua.Scripts(self.redis, calls)
        # reads of one loop turn together (batch.py), over the shared connections when there are some
        self.reads = ReadBatch(self.redis, calls if multiplexer is not None else None)

    @classmethod
    async def connect(
        cls, url: str, config: StoreConfig | None = None, cluster: bool = False, timeout_s: float = REDIS_TIMEOUT_S
    ) -> Store:
        """``timeout_s``: the longest wait for one reply or connection (REDIS_TIMEOUT_S)."""
        client: aioredis.Redis | aioredis.RedisCluster
        # Never sent twice: redis-py would send a command again after a lost connection or a timeout,
        # and a write script whose reply was lost (a master killed after it ran, a Valkey frozen with
        # the command read) would then be applied twice. A lost reply is an unknown outcome, answered
        # 503/20503 (the caller may retry: the SDK with its request id, REST with an Idempotency-Key).
        timeouts: dict[str, Any] = {
            "socket_timeout": timeout_s,
            "socket_connect_timeout": timeout_s,
            "retry": Retry(NoBackoff(), 0),
        }
        if cluster:
            client = aioredis.RedisCluster.from_url(url, decode_responses=False, **timeouts)
        else:
            # a burst of concurrent requests waits for a free connection instead of failing
            pool = aioredis.BlockingConnectionPool.from_url(
                url,
                max_connections=POOL_SIZE,
                timeout=POOL_WAIT_S,
                decode_responses=False,
                health_check_interval=30,
                **timeouts,
            )
            client = aioredis.Redis.from_pool(pool)  # closing the client closes the pool
        # The one cast at the seam: redis-py annotates each command for sync and async clients at
        # once (``Awaitable[T] | T``, often ``Any``), so its types check nothing. Both clients answer
        # the commands of RedisClient as declared there (bytes: decode_responses=False).
        config = config or StoreConfig()
        multiplexer: Multiplexer | ClusterMultiplexer | None = None
        if config.multiplex:
            multiplexer = (
                ClusterMultiplexer.for_url(client, url, timeout_s)
                if isinstance(client, aioredis.RedisCluster)
                else Multiplexer.for_url(url, timeout_s)
            )
        store = cls(cast(RedisClient, client), config, multiplexer)
        if not cluster:
            store.health.on_outage = _drop_idle_connections(pool)
        try:
            await store.ping()
            await lua.check_shebang(store.redis)
            await check_durability(client, store.config.durability)
            store.cluster = cluster
            store.sharded = await store.detect_sharded()
        except BaseException:
            with contextlib.suppress(Exception):  # its connections, if any: a caller may try again
                await store.close()
            raise
        return store

    async def detect_sharded(self) -> bool:
        """Whether the server has SPUBLISH (Redis/Valkey 7+), asked once at connect. Then every wake-up
        is SPUBLISHed, standalone too: one code path under test everywhere, and the same cost as
        PUBLISH on one server. Older servers keep PUBLISH (they have no shard channels)."""
        try:
            await self.redis.spublish(keys.SHARD_PROBE, b"")
        except ResponseError:  # unknown command
            return False
        return True

    async def invalidate(self, kind: str, *ids: str) -> None:
        """Tell every process (this one at once) to forget what it cached about ``kind`` ``ids``
        (storage/invalidation.py)."""
        message = " ".join((kind, *ids))
        self.invalidations.apply(message)
        await self.redis.publish(keys.INVALIDATE, message)

    async def publish_wake(self, service_sid: str, message: str) -> None:
        """Publish on the Service's wake channel as the write scripts do (``A.pub``)."""
        channel = keys.wake_channel(service_sid)
        await (self.redis.spublish if self.sharded else self.redis.publish)(channel, message)

    async def ping(self) -> None:
        """Raise StoreUnavailableError unless Redis answers."""
        await self.redis.ping()

    async def ensure_scripts(self) -> int:
        """Raise StoreUnavailableError unless Redis answers; load the scripts it lacks (how many)."""
        return await self.scripts.ensure_loaded()

    async def close(self) -> None:
        if self.multiplexer is not None:
            await self.multiplexer.aclose()
        await self.redis.aclose()
        # RedisCluster.aclose does nothing while the client means to rediscover the topology (after a
        # connection error: a master down): its nodes' connections would stay open until the
        # collector finds them ("Unclosed ClusterNode object"). Closing them twice is harmless.
        nodes = getattr(self.redis, "nodes_manager", None)
        if nodes is not None:
            await nodes.aclose()
            await nodes.aclose("startup_nodes")

    async def run(
        self, script: lua.WriteScript, service_sid: str, key: str, actor: Actor, /, **args: lua.LuaArg
    ) -> lua.ScriptReply:
        """Run one write script in the Service's slot (``key`` routes it); raise the domain error it
        answers. ``args`` are the script's own named arguments (see its header); the common context
        the prelude reads (lib.lua) is added here."""
        context: dict[str, lua.LuaArg] = {
            "prefix": keys.service_prefix(service_sid),
            "now": now_ms(),
            "actor": actor.identity,
            "origin": actor.origin,
            "endpoint": actor.endpoint,
            "log_cap": self.config.event_log_max,
            "pub": "SPUBLISH" if self.sharded else "PUBLISH",
            "hist_keep": self.config.history_keep,
            "hist_age_ms": self.config.history_max_age_s * 1000,
        }
        if not context.keys().isdisjoint(args):
            raise ValueError(f"{script}: argument names {sorted(context.keys() & args.keys())} are the prelude's")
        claim = claims.bind(service_sid)  # an Idempotency-Key: recorded by the script (storage/idempotency.py)
        if claim is not None and claim.reply is not None:
            claim.bound = True
            return lua.ScriptReply(claims.recorded_reply(claim))  # applied already: its reply, no write
        if claim is not None:
            context |= {"ik": claim.key, "itok": claim.token}
        packed = lua.pack({**context, **args})
        declared = [key, keys.fence(service_sid)]  # no write while the Service's slot moves (keys.fence)
        if self.config.durability.level == "local":
            reply = await self.scripts.write(script)(keys=declared, args=[packed])
        else:
            sha, text = self.scripts.write_source(script)
            reply = await run_script(self._raw, self.health, self.config.durability, sha, text, declared, packed)
        if not isinstance(reply, list):
            raise TypeError(f"{script} answered {reply!r}, not an array")
        answer = lua.ScriptReply(reply)
        if reply[0] == b"E":
            reason, what, detail = answer.text(1), answer.text(2), answer.text(3)
            if reason == "live":  # only the sweeper asks for this; it is not an error for it
                raise NotFoundError(what, detail, "not expired")
            raise _ERRORS[reason](what, detail)
        if claim is not None:
            claim.bound = True
        return answer

    async def call(self, script: lua.PlainScript, key_names: Sequence[str], /, **args: lua.LuaArg) -> LuaReply:
        """Run one plain script (no prelude) on ``key_names`` (one slot) with its named arguments."""
        return await self.scripts.plain(script)(keys=key_names, args=[lua.pack(args)])

    async def schedule_expiry(self, service_sid: str, *expires_ms: str | bytes | int | None) -> None:
        """Tell the sweeper this Service has something expiring (lower its due time to the earliest).

        Call it only for expiries the write just set: an unchanged one is scheduled already, and
        this is a round trip to another slot."""
        due = [int(x) for x in expires_ms if x not in (None, "", b"")]
        if due:
            await self.redis.zadd(keys.due(keys.bucket(service_sid)), {service_sid: min(due)}, lt=True)


def _drop_idle_connections(pool: aioredis.BlockingConnectionPool) -> Callable[[], None]:
    """What an outage's start does to the pool: close its idle connections. Redis went away, so they
    are dead; left in the pool, the first requests after Redis is back would each take one, fail on
    it ("Connection closed by server") and answer 503 once more. Those in use fail and are closed by
    redis-py itself. (The Cluster client re-initialises its nodes on connection errors.)"""
    closing: set[asyncio.Task[None]] = set()

    async def close_idle() -> None:
        with contextlib.suppress(Exception):  # closing a dead connection may fail: it is closed all the same
            await pool.disconnect(inuse_connections=False)

    def drop() -> None:
        task = asyncio.get_running_loop().create_task(close_idle())
        closing.add(task)
        task.add_done_callback(closing.discard)

    return drop
