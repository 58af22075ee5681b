"""The scripts' shared connections on a Redis Cluster: one multiplexer (multiplex.py) per master
(the subscriptions' reads go over them too: ``hmget``).

Every write script names keys of one slot (the Service's hash tag), so a script goes to the master
that owns ``keys[0]``'s slot as redis-py's Cluster client knows it (its slot map; this module reads
it and asks it to refresh, it keeps none of its own). Redirections are where a Cluster differs:
* MOVED: the slot has a new owner (a reshard done, a failover). Nothing ran, so the slot map is
  refreshed and the script sent once more to the new owner (at most ``REDIRECTS`` times);
* ASK: the slot is being moved and the key is on the importing node. Every write script declares
  ``keys.fence``, a key that never exists, so the importing node would refuse it with TRYAGAIN
  (keys.py): this answers that at once ("moving", 503/20503; nothing ran);
* a connection that breaks or times out (a master killed): its calls fail (an unknown outcome:
  503/20503, never sent again, as on a standalone Redis), and the slot map is refreshed before the
  next script, so that a promoted replica is found as soon as the Cluster has promoted it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar, cast

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import (
    AskError,
    ConnectionError as RedisConnectionError,
    MovedError,
    TimeoutError as RedisTimeoutError,
    TryAgainError,
)

from .multiplex import Multiplexer, Script, plain_tcp
from .redis_client import LuaReply, Value

T = TypeVar("T")
REDIRECTS = 3  # sends of one script (after MOVED: nothing ran) before it answers "moving"
REFRESH_EVERY_S = 0.1  # at most one slot map refresh this often while connections keep failing


class ClusterMultiplexer:
    """``register_script`` (and ``hmget``) as redis-py's clients answer them (``guard`` wraps it),
    sending each call over the shared connection to its key's master."""

    def __init__(self, cluster: RedisCluster, username: str | None, password: str | None, timeout_s: float) -> None:
        self._cluster = cluster
        self._username, self._password = username, password
        self._timeout_s = timeout_s
        self._masters: dict[str, Multiplexer] = {}  # node name (host:port) -> its connection
        self._stale = False  # a connection failed: refresh the slot map before the next script
        self._refreshing: asyncio.Future[None] | None = None
        self._refreshed_at = 0.0

    @classmethod
    def for_url(cls, cluster: RedisCluster, url: str, timeout_s: float) -> ClusterMultiplexer | None:
        """None for what multiplex.py does not speak (TLS, a Unix socket)."""
        parts = plain_tcp(url)
        if parts is None:
            return None
        return cls(cluster, parts.get("username"), parts.get("password"), timeout_s)

    @property
    def connects(self) -> int:
        return sum(m.connects for m in self._masters.values())

    @property
    def in_flight(self) -> int:
        return sum(m.in_flight for m in self._masters.values())

    def register_script(self, text: str) -> Script:
        return Script(self.evalsha, text)

    async def aclose(self) -> None:
        masters, self._masters = self._masters, {}
        for mux in masters.values():
            await mux.aclose()

    async def evalsha(self, sha: str, text: str, keys: Sequence[str], args: Sequence[Value]) -> LuaReply:
        try:  # a master new to the script (promoted, or after a SCRIPT FLUSH) gets it loaded there
            return await self._on_master(keys[0], lambda mux: mux.evalsha(sha, text, keys, args))
        except AskError as exc:  # nothing ran: the slot is moving (see the module docstring)
            raise TryAgainError(f"the slot is being moved ({exc})") from exc

    async def hmget(self, key: str, fields: Sequence[str]) -> list[bytes | None]:
        """HMGET (the subscriptions' reads, batch.py) over the shared connection of ``key``'s master.
        A slot half moved (ASK: the key perhaps on the importing node) or that kept moving: read by
        redis-py's Cluster client, which follows the redirections (a read may go anywhere)."""
        try:
            return await self._on_master(key, lambda mux: mux.hmget(key, fields))
        except (AskError, TryAgainError):
            return cast(list[bytes | None], await self._cluster.hmget(key, list(fields)))

    async def _on_master(self, key: str, send: Callable[[Multiplexer], Awaitable[T]]) -> T:
        """``send`` over the shared connection of ``key``'s master. MOVED (nothing ran): the slot map
        refreshed and sent to the new owner, ``REDIRECTS`` times at most (then TryAgainError); a
        broken or late connection: the map refreshed before the next call, the error raised."""
        for _ in range(REDIRECTS):
            if self._stale:
                await self._refresh()
            try:
                return await send(self._master_of(key))
            except MovedError:
                self._stale = True
            except (RedisConnectionError, RedisTimeoutError):
                self._stale = True
                raise
        raise TryAgainError("the slot kept moving")

    def _master_of(self, key: str) -> Multiplexer:
        node = self._cluster.get_node_from_key(key)
        assert node is not None  # only asked for a replica would it answer None
        mux = self._masters.get(node.name)
        if mux is None:
            mux = self._masters[node.name] = Multiplexer(
                node.host, int(node.port), username=self._username, password=self._password, timeout_s=self._timeout_s
            )
        return mux

    async def _refresh(self) -> None:
        """Ask redis-py's client for the Cluster's slot map again (one refresh for all waiting)."""
        if self._refreshing is None:
            self._refreshing = asyncio.ensure_future(self._reload())
            self._refreshing.add_done_callback(self._reloaded)
        await asyncio.shield(self._refreshing)

    async def _reload(self) -> None:
        pause = self._refreshed_at + REFRESH_EVERY_S - time.monotonic()
        if pause > 0:
            await asyncio.sleep(pause)
        self._refreshed_at = time.monotonic()
        await self._cluster.nodes_manager.initialize()
        self._stale = False

    def _reloaded(self, refreshing: asyncio.Future[None]) -> None:
        self._refreshing = None
        if not refreshing.cancelled():
            refreshing.exception()  # retrieved: each waiter has raised it already
