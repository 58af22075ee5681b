"""Webhook wake-ups on shard channels (Redis/Valkey 7+): this process hears only its own Services.

queue_webhook() in storage/scripts/lib.lua SPUBLISHes each queued webhook's Service SID on the
Service's shard channel ``sync:{IS}:whw`` (storage/keys.py). A shard channel lives in its slot, so on
a Cluster the wake-up stays on the shard that owns the Service (its replicas get a copy) instead of
crossing the bus to every node, and only a subscriber of that channel hears it. The process holding
a Service's bucket (storage/buckets.py) is the one that delivers it, so the worker of each process
SSUBSCRIBEs the channels of the Services in the buckets it holds, and nothing else:

* which Services: the bucket sets ``sync:{w<b>}:webhooks`` (every Service that has had a URL);
* when a Service joins a set, ``webhooks.sync_config`` SPUBLISHes it on the bucket's own shard
  channel ``sync:{w<b>}:whnew``, which the holder subscribes too, and the holder re-reads its sets;
* when the process gains or loses a bucket (checked here every ``_LOOK_S``, no round trip), and every
  ``every_s`` anyway (a lost ``whnew``), the sets are read again and the subscriptions follow;
* a Service subscribed anew is kicked if its queue is not empty (what was queued before the
  subscription took effect is not left to the scan).

The subscriptions go through the realtime brokers (realtime/broker.py standalone,
realtime/cluster_broker.py on a Cluster: one connection per master, slot moves and failovers
followed), made by the factory app/main.py passes in (``cluster_broker.shard_broker``: webhooks and
the gateway do not import each other). Pub/sub is at-most-once: after a reconnect or re-route
``rescan`` asks the worker for a scan of its queues at once, and the worker's periodic scan stays the
safety net; the queue in Valkey is the truth. Servers older than 7 have no shard channels: there
the worker keeps the global channel (realtime/webhooks/worker.py ``_listen``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import Protocol

from storage import Store, keys, webhooks
from storage.errors import StoreUnavailableError

log = logging.getLogger("sync.webhooks")

_LOOK_S = 0.25  # how often the held buckets are compared with the subscribed ones (in memory)
_RETRY_S = 1.0  # after a failure to reach Redis

Handler = Callable[[str, bytes], None]


class ShardBroker(Protocol):
    """realtime/broker.py's brokers, SSUBSCRIBing (the gateway's side: app/main.py passes one in)."""

    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def subscribe(self, channel: str) -> None: ...
    async def unsubscribe(self, channel: str) -> None: ...


# makes the broker: (wake-up handler, what to call after a reconnect or re-route)
BrokerFactory = Callable[[Handler, Callable[[], None]], ShardBroker]


def wanted_channels(held: Iterable[int], service_sids: Iterable[str]) -> set[str]:
    """The shard channels a process holding ``held`` subscribes: each bucket's ``whnew`` and the
    ``whw`` of each Service in those buckets."""
    buckets = set(held)
    wanted = {keys.webhook_joined_channel(b) for b in buckets}
    wanted.update(keys.webhook_wake_channel(s) for s in service_sids if keys.bucket(s) in buckets)
    return wanted


class ShardWakeUps:
    """Follows ``held()`` (the worker's buckets) with shard subscriptions; ``kick(sid)`` on a wake-up,
    ``rescan()`` when wake-ups may have been missed. Run with ``await run(stop)``."""

    def __init__(
        self,
        store: Store,
        brokers: BrokerFactory,
        held: Callable[[], set[int]],
        kick: Callable[[str], None],
        rescan: Callable[[], None],
        every_s: float,
    ) -> None:
        self.store = store
        self._held = held
        self._kick = kick
        self._every_s = every_s
        self.broker = brokers(self._heard, rescan)
        self.channels: set[str] = set()  # subscribed now
        self._joined = {keys.webhook_joined_channel(b): b for b in range(keys.BUCKETS)}
        self._changed = asyncio.Event()
        self._started = False
        self._seen: frozenset[int] | None = None  # the buckets subscribed for
        self._last = 0.0  # when the sets were last read (monotonic)

    def _heard(self, channel: str, _data: bytes) -> None:
        if channel in self._joined:
            self._changed.set()  # a Service joined one of our buckets: subscribe it
            return
        sid = keys.wake_channel_service(channel)
        if keys.bucket(sid) in self._held():  # a bucket just given away: its new holder hears it too
            self._kick(sid)

    async def update(self) -> None:
        """Subscribe the channels of the buckets held now; kick the Services subscribed anew that
        have work. The worker calls it once before the process is ready (so a Service made right
        after is heard), then ``run`` whenever something changed."""
        self._changed.clear()
        held = frozenset(self._held())
        if not self._started:
            await self.broker.start()
            self._started = True
        new = await self.follow(held)
        self._seen, self._last = held, time.monotonic()
        for sid in await webhooks.with_work(self.store, new):
            self._kick(sid)

    async def run(self, stop: asyncio.Event) -> None:
        """Follow the buckets until ``stop`` (then ``close``)."""
        failing = False
        while not stop.is_set():
            held = frozenset(self._held())
            if self._changed.is_set() or held != self._seen or time.monotonic() - self._last >= self._every_s:
                try:
                    await self.update()
                    failing = False
                except Exception as exc:  # Redis away: the periodic scan still finds every queue
                    if not failing and not isinstance(exc, StoreUnavailableError):
                        log.warning("webhook wake-up subscriptions not updated (%s); retrying", exc)
                    failing = True
                    self._changed.set()
                    await _wait(stop, _RETRY_S)
                    continue
            await _wait(stop, _LOOK_S, self._changed)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.broker.close()

    async def follow(self, held: frozenset[int]) -> list[str]:
        """Subscribe exactly the channels of ``held``; the Services subscribed anew."""
        wanted = wanted_channels(held, await webhooks.services_in(self.store, held))
        for channel in sorted(self.channels - wanted):
            self.channels.discard(channel)
            await self.broker.unsubscribe(channel)
        new: list[str] = []
        for channel in sorted(wanted - self.channels):
            await self.broker.subscribe(channel)  # a failure: tried again on the next round
            self.channels.add(channel)
            if channel not in self._joined:
                new.append(keys.wake_channel_service(channel))
        return new


async def _wait(stop: asyncio.Event, seconds: float, also: asyncio.Event | None = None) -> None:
    """Sleep ``seconds``, cut short by ``stop`` (or ``also``)."""
    waits = [asyncio.ensure_future(stop.wait())]
    if also is not None:
        waits.append(asyncio.ensure_future(also.wait()))
    try:
        await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
