"""Cross-process wake-ups over Redis pub/sub.

Every write script publishes ``"<SID> <event id>"`` on its Service's channel (storage/keys.py
``wake_channel``). Pub/sub is at-most-once: a lost wake-up only delays delivery until the next one,
never loses an event, because readers always read the object's event log from their own cursor.
After a Redis reconnect ``on_reconnect`` runs so the hub can re-read every feed it holds.

Sharded pub/sub. On Redis/Valkey 7+ (``Store.sharded``, detected once at connect) the scripts
SPUBLISH and the broker SSUBSCRIBEs: a shard channel lives in its Service's slot, so on a Cluster
a wake-up stays on the shard that owns the Service instead of being broadcast over the cluster bus
to every node. On a Cluster the broker (realtime/cluster_broker.py) holds one subscriber connection
per master that owns a watched Service; on a standalone server it is one connection, as before.
Fixed channels that every process must hear (cache invalidations) stay plain SUBSCRIBE.

A Redis that is alive but silent (stopped with SIGSTOP, partitioned) never breaks the connection,
so the reader PINGs it on the subscribed connection every ``PING_S`` of silence and, when no reply
comes within ``REPLY_S``, drops the connection and reconnects (the reader subscribes again). The
connection has no read timeout (its reads wait for messages for as long as there are none);
connecting and the handshake are bounded by ``REPLY_S``, so a reconnect to a frozen Redis fails
and is retried instead of hanging.

The reader reconnects itself, never redis-py: the client has no retries (``connect``), because
redis-py's own retry reconnects to the same address in silence, and on a Cluster that address may
now be a replica (the killed master restarted) that never hears the Service's wake-ups again: the
cluster broker must see every loss to re-read the topology, and the hub to re-read its feeds. And
it subscribes the shard channels again one SSUBSCRIBE each, because redis-py resubscribes them all
in one command, which a Cluster node refuses (CROSSSLOT) as soon as they span two slots.

Two subscribers do this: over plain TCP (``redis://``, and every Cluster node) realtime/pubsub.py's
``WireSubscriber`` reads the socket itself, so a wake-up is handled in the callback that reads it;
``RedisPySubscriber`` below, on redis-py's ``PubSub``, serves TLS and Unix sockets. ``subscriber``
picks one for a URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from redis import asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, TimeoutError as RedisTimeoutError

from . import pubsub
from .pubsub import Address, Handler, Subscriptions, WireSubscriber

log = logging.getLogger("sync.realtime.broker")

_MESSAGES = ("message", b"message", "smessage", b"smessage")
_SUNSUBSCRIBE = ("sunsubscribe", b"sunsubscribe")


class Broker(Protocol):
    """Cross-node wake-ups. At-most-once; readers catch up from storage.events."""

    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def subscribe(self, channel: str) -> None: ...
    async def unsubscribe(self, channel: str) -> None: ...


class RedisPySubscriber(Subscriptions):
    """redis-py's pub/sub, for what realtime/pubsub.py's ``WireSubscriber`` does not speak (TLS, a
    Unix socket): one pub/sub connection and its reader task, PING on silence, reconnect and
    ``on_reconnect`` (the callbacks: realtime/pubsub.py ``Subscriptions``)."""

    def __init__(self, redis: Any, handler: Handler, *args: Any, **kwargs: Any) -> None:
        super().__init__(handler, *args, **kwargs)
        self._redis = redis
        self._pubsub: Any = redis.pubsub(ignore_subscribe_messages=False)

    async def start(self, *first: str) -> None:
        """Subscribe the fixed channels (and ``first``, sharded if so) and start reading."""
        await self._pubsub.subscribe(pubsub.CONTROL, *self._fixed)
        for channel in first:
            await self.subscribe(channel)
        self._task = asyncio.create_task(self._run(), name="realtime-broker")

    async def close(self) -> None:
        await self._stop_task()
        with contextlib.suppress(Exception):
            await self._pubsub.aclose()
        with contextlib.suppress(Exception):
            await self._redis.aclose()

    async def subscribe(self, channel: str) -> None:
        """Returns once the (S)SUBSCRIBE is sent: any later (S)PUBLISH on ``channel`` reaches us."""
        self.channels.add(channel)
        self._leaving.discard(channel)
        await (self._pubsub.ssubscribe if self._sharded else self._pubsub.subscribe)(channel)

    async def unsubscribe(self, channel: str) -> None:
        self.channels.discard(channel)
        if self._sharded:
            self._leaving.add(channel)
        with contextlib.suppress(RedisError, OSError):
            await (self._pubsub.sunsubscribe if self._sharded else self._pubsub.unsubscribe)(channel)

    async def _run(self) -> None:
        broken = False
        heard = time.monotonic()  # when the connection last delivered anything
        pinged: float | None = None  # when the unanswered PING was sent
        while True:
            try:
                now = time.monotonic()
                if pinged is not None and now - pinged > pubsub.REPLY_S:
                    pinged = None
                    raise RedisTimeoutError(f"no answer to a PING within {pubsub.REPLY_S:g} s")
                if broken:
                    await self._resubscribe()
                if pinged is None and now - heard >= pubsub.PING_S:
                    await self._pubsub.ping(pubsub.PING_PAYLOAD)
                    pinged = time.monotonic()
                msg = await self._pubsub.get_message(timeout=1.0)
                if msg is not None:
                    heard, pinged = time.monotonic(), None
                if broken:
                    broken = False
                    heard, pinged = time.monotonic(), None
                    self._tell(self._on_reconnect)
            except (RedisError, OSError) as exc:
                if not broken:
                    log.warning("pub/sub connection lost (%s); retrying", exc)
                self._tell(self._on_lost)  # every failure: a promoted replica may take over
                broken = True
                pinged = None
                await self._drop_connection()  # the next turn reconnects and subscribes again
                await asyncio.sleep(0.5)
                continue
            if msg is None:
                continue
            kind = msg.get("type")
            channel = msg["channel"]
            name = channel.decode() if isinstance(channel, bytes) else str(channel)
            if kind in _SUNSUBSCRIBE:
                self._ended(name)
                continue
            if kind not in _MESSAGES:
                continue
            self._deliver(name, msg["data"])

    def _forget(self, name: str) -> None:
        # redis-py keeps a subscription the server ended in the set it replays on reconnect
        for key in (name, name.encode()):
            self._pubsub.shard_channels.pop(key, None)

    async def _resubscribe(self) -> None:
        """Reconnect: the fixed channels in one SUBSCRIBE (redis-py's ``on_connect``), then each
        shard channel in its own SSUBSCRIBE (a node refuses several slots in one: CROSSSLOT)."""
        connection = self._pubsub.connection
        if connection is None or connection.is_connected:
            return
        shard = [c for c in self.channels if self._sharded]
        self._pubsub.shard_channels.clear()  # else on_connect sends them all in one SSUBSCRIBE
        await connection.connect()
        for channel in shard:
            await self._pubsub.ssubscribe(channel)

    async def _drop_connection(self) -> None:
        connection = self._pubsub.connection
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.disconnect()


def connect(url: str | None = None, **where: Any) -> Any:
    """A redis-py client for a subscriber (or the Cluster broker's topology reads): no read timeout
    on the pub/sub connection's reads is needed (the reader PINGs), connecting and the handshake
    are bounded by REPLY_S."""
    options: dict[str, Any] = {
        "decode_responses": False,
        "socket_connect_timeout": pubsub.REPLY_S,
        "socket_timeout": pubsub.REPLY_S,
        "retry": Retry(NoBackoff(), 0),  # every loss reaches the reader (module docstring)
    }
    if url is not None:
        return aioredis.Redis.from_url(url, **options)
    return aioredis.Redis(**where, **options)


def subscriber(
    url: str,
    handler: Handler,
    on_reconnect: Callable[[], None] | None = None,
    *,
    sharded: bool = False,
    fixed: Mapping[str, Handler] | None = None,
) -> WireSubscriber | RedisPySubscriber:
    """The subscriber for ``url``: read straight from its socket over plain TCP, redis-py's else."""
    address = Address.for_url(url)
    if address is None:
        return RedisPySubscriber(connect(url), handler, on_reconnect, sharded=sharded, fixed=fixed)
    return WireSubscriber(address, handler, on_reconnect, sharded=sharded, fixed=fixed)


class RedisBroker:
    """One server (standalone Redis/Valkey): one connection; SSUBSCRIBE when ``sharded`` (7+),
    else SUBSCRIBE. ``fixed`` channels are subscribed for the broker's whole life, each with its
    own handler (e.g. storage/invalidation.py's)."""

    def __init__(
        self,
        url: str,
        handler: Handler,
        on_reconnect: Callable[[], None] | None = None,
        fixed: Mapping[str, Handler] | None = None,
        *,
        sharded: bool = False,
    ) -> None:
        self._sub = subscriber(url, handler, on_reconnect, sharded=sharded, fixed=fixed)

    async def start(self) -> None:
        await self._sub.start()

    async def close(self) -> None:
        await self._sub.close()

    async def subscribe(self, channel: str) -> None:
        await self._sub.subscribe(channel)

    async def unsubscribe(self, channel: str) -> None:
        await self._sub.unsubscribe(channel)
