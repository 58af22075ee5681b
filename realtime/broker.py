"""Cross-process wake-ups over Redis pub/sub.

Every write script PUBLISHes ``"<SID> <event id>"`` on its Service's channel (storage/keys.py
``wake_channel``). Pub/sub is at-most-once: a lost wake-up only delays delivery until the next one,
never loses an event, because readers always read the object's event log from their own cursor.
After a Redis reconnect ``on_reconnect`` runs so the hub can re-read every feed it holds.

A Redis that is alive but silent (stopped with SIGSTOP, partitioned) never breaks the connection,
so the reader PINGs it on the subscribed connection every ``PING_S`` of silence and, when no reply
comes within ``REPLY_S``, drops the connection and reconnects (redis-py subscribes again). The
connection has no read timeout (its reads wait for messages for as long as there are none);
connecting and the handshake are bounded by ``REPLY_S``, so a reconnect to a frozen Redis fails
and is retried instead of hanging.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from redis import asyncio as aioredis
from redis.exceptions import RedisError, TimeoutError as RedisTimeoutError

log = logging.getLogger("sync.realtime.broker")

Handler = Callable[[str, bytes], None]

PING_S = 5.0  # silence on the pub/sub connection after which the reader checks it with a PING
REPLY_S = 5.0  # how long the PING (and a reconnect) may take before the connection counts as lost
_PING = b"sync-broker-ping"


class Broker(Protocol):
    """Cross-node wake-ups. At-most-once; readers catch up from storage.events."""

    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def subscribe(self, channel: str) -> None: ...
    async def unsubscribe(self, channel: str) -> None: ...


class RedisBroker:
    """Plain PUBLISH/SUBSCRIBE on one dedicated connection; ``handler(channel, data)`` is called
    for each message from the reader task (it must not block)."""

    def __init__(self, url: str, handler: Handler, on_reconnect: Callable[[], None] | None = None) -> None:
        self._redis: Any = aioredis.Redis.from_url(
            url, decode_responses=False, socket_connect_timeout=REPLY_S, socket_timeout=REPLY_S
        )
        self._pubsub: Any = self._redis.pubsub(ignore_subscribe_messages=True)
        self._handler = handler
        self._on_reconnect = on_reconnect
        self._task: asyncio.Task[None] | None = None
        self._channels: set[str] = set()

    async def start(self) -> None:
        # a pub/sub connection must subscribe to something before it can be read
        await self._pubsub.subscribe("sync:realtime:control")
        self._task = asyncio.create_task(self._run(), name="realtime-broker")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        with contextlib.suppress(Exception):
            await self._pubsub.aclose()
        with contextlib.suppress(Exception):
            await self._redis.aclose()

    async def subscribe(self, channel: str) -> None:
        """Returns once the SUBSCRIBE is sent: any later PUBLISH on ``channel`` reaches us."""
        self._channels.add(channel)
        await self._pubsub.subscribe(channel)

    async def unsubscribe(self, channel: str) -> None:
        self._channels.discard(channel)
        with contextlib.suppress(RedisError, OSError):
            await self._pubsub.unsubscribe(channel)

    async def _run(self) -> None:
        broken = False
        heard = time.monotonic()  # when the connection last delivered anything
        pinged: float | None = None  # when the unanswered PING was sent
        while True:
            try:
                now = time.monotonic()
                if pinged is not None and now - pinged > REPLY_S:
                    pinged = None
                    raise RedisTimeoutError(f"no answer to a PING within {REPLY_S:g} s")
                if pinged is None and now - heard >= PING_S:
                    await self._pubsub.ping(_PING)
                    pinged = time.monotonic()
                msg = await self._pubsub.get_message(timeout=1.0)
                if msg is not None:
                    heard, pinged = time.monotonic(), None
                if broken:
                    broken = False
                    heard, pinged = time.monotonic(), None
                    if self._on_reconnect is not None:
                        self._on_reconnect()
            except (RedisError, OSError) as exc:
                if not broken:
                    log.warning("pub/sub connection lost (%s); retrying", exc)
                broken = True
                pinged = None
                await self._drop_connection()  # the next read reconnects and subscribes again
                await asyncio.sleep(0.5)
                continue
            if msg is None or msg.get("type") not in ("message", b"message"):
                continue
            channel = msg["channel"]
            name = channel.decode() if isinstance(channel, bytes) else str(channel)
            try:
                self._handler(name, msg["data"])
            except Exception:  # one bad message must not stop the wake-ups
                log.exception("wake-up handler failed")

    async def _drop_connection(self) -> None:
        connection = self._pubsub.connection
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.disconnect()
