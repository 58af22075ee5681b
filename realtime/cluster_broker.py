"""Wake-ups on a Redis Cluster with sharded pub/sub: one subscriber per master, following slot moves.

A shard channel is served only by the shard that owns its slot (``sync:{IS}:wake`` shares the
Service's slot), so the broker SSUBSCRIBEs each watched Service's channel on the master that owns
it, through one connection per master (realtime/pubsub.py ``WireSubscriber``: PING on silence,
reconnect, resubscribe). Why not redis-py's asyncio ``ClusterPubSub``: it reads its per-node
connections one after the other, each with the caller's timeout (a wake-up on the third node waits
for the first two to time out), and it does not follow a slot the server moved away by itself.

Following the topology (``CLUSTER SLOTS``, read at start and after any of these):

* a slot migrated: its master ends our subscriptions in it with SUNSUBSCRIBE; the channel is
  subscribed again on the slot's new owner;
* a master lost (killed, partitioned): its subscriber fails to reconnect; after each failure the
  topology is read again (at most once a second), and once a replica is promoted the node's
  channels move to it and the dead node's subscriber is closed. A subscriber that does reconnect
  to its address reads the topology again too: the killed master may be back as a replica.

After each re-route the hub re-reads every feed it holds (``on_reconnect``): wake-ups published
meanwhile may have been missed, events never are (they are in the logs). Fixed channels (cache
invalidations) are plain SUBSCRIBE on one master: a Cluster broadcasts plain PUBLISH to every node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from redis.crc import key_slot
from redis.exceptions import RedisError

from .broker import RedisBroker, connect
from .pubsub import Address, Handler, WireSubscriber

log = logging.getLogger("sync.realtime.broker")

Node = tuple[str, int]
SLOTS = 16384
REROUTE_EVERY_S = 1.0  # at most one topology read a second while something is broken


def owners(reply: Sequence[Any]) -> list[Node | None]:
    """The master of every slot, from a ``CLUSTER SLOTS`` reply (entries ``[start, end, [host,
    port, id, …], replicas…]``); None for a slot no master serves."""
    table: list[Node | None] = [None] * SLOTS
    for entry in reply:
        start, end, master = int(entry[0]), int(entry[1]), entry[2]
        host = master[0].decode() if isinstance(master[0], bytes) else str(master[0])
        node = (host, int(master[1]))
        for slot in range(start, end + 1):
            table[slot] = node
    return table


def shard_broker(
    url: str, cluster: bool, handler: Handler, on_reconnect: Callable[[], None] | None = None
) -> RedisBroker | ClusterBroker:
    """A broker of shard channels only (no fixed channels): the webhook worker's wake-ups
    (realtime/webhooks/wakeups.py; app/main.py hands it this, the two packages do not import each other)."""
    if cluster:
        return ClusterBroker(url, handler, on_reconnect)
    return RedisBroker(url, handler, on_reconnect, sharded=True)


def slot_of(channel: str) -> int:
    return int(key_slot(channel.encode()))


class ClusterBroker:
    """The Broker of a Cluster (see the module docstring)."""

    def __init__(
        self,
        url: str,
        handler: Handler,
        on_reconnect: Callable[[], None] | None = None,
        fixed: Mapping[str, Handler] | None = None,
    ) -> None:
        seed = Address.for_url(url)
        if seed is None:  # app/settings.py refuses it first, in one line
            raise ValueError("a Cluster is reached over redis:// (plain TCP)")
        self._seed = seed  # its credentials go to every node
        self._seeds: list[Node] = [(seed.host, seed.port)]
        self._handler = handler
        self._on_reconnect = on_reconnect
        self._fixed = dict(fixed or {})
        self._owners: list[Node | None] = [None] * SLOTS
        self._subs: dict[Node, WireSubscriber] = {}  # one per master holding shard subscriptions
        self._main: tuple[Node, WireSubscriber] | None = None  # the fixed channels' connection
        self._wanted: set[str] = set()  # channels subscribed through this broker
        self._where: dict[str, Node] = {}  # watched channel -> the master it is subscribed on now
        self._lock = asyncio.Lock()
        self._reroute: asyncio.Task[None] | None = None
        self._again = False
        self._last_reroute = 0.0
        self._closed = False

    def node_of(self, channel: str) -> Node | None:
        """The master this broker holds ``channel``'s subscription on (None: not subscribed)."""
        return self._where.get(channel)

    async def start(self) -> None:
        await self._read_topology()
        async with self._lock:
            await self._ensure_main()

    async def close(self) -> None:
        self._closed = True
        if self._reroute is not None:
            self._reroute.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reroute
        subs = [self._main[1]] if self._main else []
        await asyncio.gather(*(s.close() for s in [*subs, *self._subs.values()]), return_exceptions=True)
        self._subs.clear()

    async def subscribe(self, channel: str) -> None:
        async with self._lock:
            self._wanted.add(channel)
            await self._place(channel)

    async def unsubscribe(self, channel: str) -> None:
        async with self._lock:
            self._wanted.discard(channel)
            node = self._where.pop(channel, None)
            sub = self._subs.get(node) if node else None
            if sub is not None:
                await sub.unsubscribe(channel)

    # --- placement ------------------------------------------------------------------------------

    async def _place(self, channel: str) -> None:
        node = self._owners[slot_of(channel)]
        if node is None:  # slot not served right now: the next re-route places it
            self._where.pop(channel, None)
            self._schedule()
            return
        old = self._where.get(channel)
        if old == node:
            return
        if old is not None and old in self._subs:
            await self._subs[old].unsubscribe(channel)
        sub = self._subs.get(node)
        if sub is None:
            sub = WireSubscriber(
                self._seed.at(*node),
                self._handler,
                self._reconnected,
                sharded=True,
                on_moved=self._moved,
                on_lost=self._schedule,
            )
            self._subs[node] = sub
            self._where[channel] = node
            await sub.start(channel)
            return
        self._where[channel] = node
        await sub.subscribe(channel)

    async def _ensure_main(self) -> None:
        masters = {n for n in self._owners if n is not None}
        if self._main is not None and self._main[0] in masters:
            return
        if not masters:
            return
        node = sorted(masters)[0]
        old, sub = (
            self._main,
            WireSubscriber(
                self._seed.at(*node),
                self._handler,
                self._on_reconnect,
                fixed=self._fixed,
                on_lost=self._schedule,
            ),
        )
        await sub.start()
        self._main = (node, sub)
        if old is not None:
            await old[1].close()

    def _reconnected(self) -> None:
        """A shard subscriber is connected again, but to the same address: after a failover that
        node may be back as a replica (its old master restarted) and hear nothing; the topology
        read moves its channels to the promoted master if so. The hub re-reads its feeds."""
        self._schedule()
        if self._on_reconnect is not None:
            self._on_reconnect()

    def _moved(self, channel: str) -> None:
        self._where.pop(channel, None)
        self._schedule()

    # --- following the topology -----------------------------------------------------------------

    def _schedule(self) -> None:
        """Read the topology and re-route (one task at a time; a request meanwhile runs it again)."""
        if self._closed:
            return
        if self._reroute is not None and not self._reroute.done():
            self._again = True
            return
        self._reroute = asyncio.create_task(self._rerouting(), name="realtime-broker-reroute")

    async def _rerouting(self) -> None:
        while True:
            self._again = False
            wait = self._last_reroute + REROUTE_EVERY_S - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self._last_reroute = time.monotonic()
            try:
                await self._read_topology()
                await self._apply()
            except (RedisError, OSError) as exc:
                log.warning("cluster topology not readable (%s); retrying", exc)
                self._again = True
            except Exception:
                log.exception("re-routing shard subscriptions failed")
                self._again = True
            if not self._again or self._closed:
                return

    async def _apply(self) -> None:
        async with self._lock:
            masters = {n for n in self._owners if n is not None}
            for node in [n for n in self._subs if n not in masters]:  # no longer a master: gone
                sub = self._subs.pop(node)
                for channel in sub.channels:
                    self._where.pop(channel, None)
                await sub.close()
            moved = False
            for channel in list(self._wanted):
                if self._where.get(channel) != self._owners[slot_of(channel)]:
                    await self._place(channel)
                    moved = True
            await self._ensure_main()
        if moved and self._on_reconnect is not None:
            self._on_reconnect()  # wake-ups may have gone to the old owner meanwhile

    async def _read_topology(self) -> None:
        """``CLUSTER SLOTS`` from the first node that answers: the seeds, then every known master."""
        tried: list[Node] = list(dict.fromkeys([*self._seeds, *(n for n in self._owners if n is not None)]))
        error: Exception | None = None
        for host, port in tried:
            client = connect(host=host, port=port, username=self._seed.username, password=self._seed.password)
            try:
                reply = await client.execute_command("CLUSTER SLOTS")
            except (RedisError, OSError) as exc:
                error = exc
                continue
            finally:
                await client.aclose()
            self._owners = owners(reply)
            return
        raise error or RedisError("no cluster node known")
