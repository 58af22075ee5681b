"""Reachability: which SDK endpoints of an identity are connected, and the endpoint_* webhooks.

The realtime gateway calls ``record_endpoint`` when a connection is established and when it ends.
Each call is one script (scripts/reachability.lua) in the Service's slot that updates the identity's
set of connected endpoints and, when the Service has ``reachability_webhooks_enabled``, queues the
webhook in the same step (see storage/webhooks.py for the queue):

* ``endpoint_connected`` for every endpoint that connects;
* ``endpoint_disconnected`` at once without debouncing; with debouncing, only when the identity's
  last endpoint goes, ``reachability_debouncing_window`` ms later, and only if the identity is still
  offline then (a reconnect inside the window cancels it).

Deferred disconnects wait in ``sync:{IS}:rd``; ``sync:{w<b>}:reach`` (the Service's work-list
bucket) lists the Services that have some, scored by the earliest, so ``fire_due`` (called by the
webhook worker for the buckets it holds) costs one pipeline of a ZRANGEBYSCORE per bucket when
nothing is due.
Firing removes the entry in the same script, so several workers never fire one twice.
"""

from __future__ import annotations

from collections.abc import Iterable

from . import buckets, keys
from .expiry import reschedule
from .records import Actor
from .store import Store

SYSTEM_ACTOR = Actor(identity="system", origin="system")


async def record_endpoint(store: Store, service_sid: str, identity: str, endpoint_id: str, connected: bool) -> None:
    """Record that ``endpoint_id`` of ``identity`` connected (True) or disconnected (False)."""
    actor = Actor(identity=identity, origin="sdk", endpoint=endpoint_id)
    mode = "connect" if connected else "disconnect"
    reply = await store.run("reachability", service_sid, keys.webhook_config(service_sid), actor, mode=mode)
    due = reply.text(1)
    if due:
        await store.redis.zadd(keys.reach_due(keys.bucket(service_sid)), {service_sid: int(due)}, lt=True)


async def fire_due(store: Store, held: Iterable[int] = range(keys.BUCKETS), batch: int = 100) -> None:
    """Queue the debounced endpoint_disconnected webhooks that are due, in the Services of the buckets ``held``
    (this process's share: storage/buckets.py)."""
    for b, due in await buckets.due_in(store, keys.reach_due, held, batch):
        for sid in due:
            await store.run("reachability", sid, keys.webhook_config(sid), SYSTEM_ACTOR, mode="due")
            await reschedule(store, sid, keys.reach_pending(sid), keys.reach_due(b))
