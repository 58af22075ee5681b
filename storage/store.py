"""The Store: one Redis connection (standalone or Cluster) plus the Lua scripts that write.

Every mutation goes through ``Store.run``: one script, one slot, one atomic step that writes the
data and appends the change event. Script answers ``{"E", reason, what, detail}`` become domain
errors here, so callers never see Redis replies.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from importlib import resources
from typing import Any

from redis import asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError, TimeoutError as RedisTimeoutError

from . import keys
from .clock import now_ms
from .errors import (
    AlreadyExistsError,
    InvalidInputError,
    NotFoundError,
    RevisionMismatchError,
    StoreError,
    StoreUnavailableError,
)
from .records import Actor
from .redis_client import text

SCRIPTS = (
    "object_create",
    "object_update",
    "object_delete",
    "item_write",
    "item_delete",
    "stream_publish",
    "permission_write",
    "reachability",
)


@dataclass(frozen=True)
class StoreConfig:
    event_log_max: int = 1000
    event_log_keep_s: int = 86400
    cache_s: float = 2.0  # how long this process trusts a Service's existence / a unique name's SID


class TtlCache:
    """A small per-process cache. Only ever used where a stale entry is caught by the write
    scripts (tombstones, existence checks) and retried, so it saves round trips, never correctness."""

    def __init__(self, ttl_s: float, max_entries: int = 100_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._data: dict[Any, tuple[Any, float]] = {}

    def get(self, key: Any) -> Any:
        hit = self._data.get(key)
        if hit is None or hit[1] < time.monotonic():
            return None
        return hit[0]

    def put(self, key: Any, value: Any) -> None:
        if len(self._data) >= self.max_entries:
            self._data.clear()
        self._data[key] = (value, time.monotonic() + self.ttl_s)

    def drop(self, key: Any) -> None:
        self._data.pop(key, None)


POOL_SIZE = 200  # Redis connections per process
POOL_WAIT_S = 10.0  # how long a request waits for one before failing (StoreUnavailableError)


def _load(name: str) -> str:
    return resources.files("storage").joinpath("scripts", f"{name}.lua").read_text()


_ERRORS: dict[str, type[StoreError]] = {
    "notfound": NotFoundError,
    "exists": AlreadyExistsError,
    "mismatch": RevisionMismatchError,
    "nodata": InvalidInputError,
}


class Store:
    """Owns the Redis client and the registered scripts. Create with ``await Store.connect(url)``."""

    def __init__(self, redis: Any, config: StoreConfig | None = None) -> None:
        self.redis = redis
        self.config = config or StoreConfig()
        self.cache = TtlCache(self.config.cache_s)
        lib = _load("lib")
        self._scripts = {name: redis.register_script(lib + "\n" + _load(name)) for name in SCRIPTS}

    @classmethod
    async def connect(cls, url: str, config: StoreConfig | None = None, cluster: bool = False) -> Store:
        if cluster:
            client: Any = aioredis.RedisCluster.from_url(url, decode_responses=False)
        else:
            # a burst of concurrent requests waits for a free connection instead of failing
            pool = aioredis.BlockingConnectionPool.from_url(
                url, max_connections=POOL_SIZE, timeout=POOL_WAIT_S, decode_responses=False, health_check_interval=30
            )
            client = aioredis.Redis.from_pool(pool)  # closing the client closes the pool
        store = cls(client, config)
        await store.ping()
        return store

    async def ping(self) -> None:
        try:
            await self.redis.ping()
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise StoreUnavailableError("redis", message=f"Redis is not reachable: {exc}") from exc

    async def close(self) -> None:
        await self.redis.aclose()

    async def run(self, script: str, service_sid: str, key: str, actor: Actor, *args: Any) -> list[Any]:
        """Run one write script in the Service's slot; raise the domain error it answers."""
        argv = [
            keys.service_prefix(service_sid),
            now_ms(),
            actor.identity,
            actor.origin,
            actor.endpoint,
            self.config.event_log_max,
            *args,
        ]
        try:
            reply: list[Any] = await self._scripts[script](keys=[key], args=argv)
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise StoreUnavailableError("redis", message=f"Redis is not reachable: {exc}") from exc
        if reply[0] == b"E":
            reason, what, detail = text(reply[1]), text(reply[2]), text(reply[3])
            if reason == "live":  # only the sweeper asks for this; it is not an error for it
                raise NotFoundError(what, detail, "not expired")
            raise _ERRORS[reason](what, detail)
        return reply

    async def schedule_expiry(self, service_sid: str, *expires_ms: str | bytes | int | None) -> None:
        """Tell the sweeper this Service has something expiring (lower its due time to the earliest).

        Call it only for expiries the write just set: an unchanged one is scheduled already, and
        this is a round trip to another slot."""
        due = [int(x) for x in expires_ms if x not in (None, "", b"")]
        if due:
            await self.redis.zadd(keys.DUE, {service_sid: min(due)}, lt=True)
