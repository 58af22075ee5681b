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
webhook worker for the buckets it holds) reads the earliest entry of each bucket in one pipeline
and tells the worker when to look again: when the earliest pending one is due, and at the latest
after ``POLL_S``. A disconnect recorded after a look is due a whole debouncing window later (at
least ``MIN_DEBOUNCING_WINDOW_MS``, longer than ``POLL_S``), so the next look sees it before it is
due and the worker then waits for it exactly: fired on time, with one look every ``POLL_S`` when
nothing is pending.
Firing removes the entry in the same script, so several workers never fire one twice.
"""

from __future__ import annotations

from collections.abc import Iterable

from . import buckets, keys
from .clock import now_ms
from .expiry import reschedule
from .limits import MIN_DEBOUNCING_WINDOW_MS
from .records import Actor
from .store import Store

SYSTEM_ACTOR = Actor(identity="system", origin="system")
# The longest wait between two looks for due disconnects: shorter than the shortest debouncing
# window (limits.MIN_DEBOUNCING_WINDOW_MS), with room for a slow loop and the clocks of the
# processes that record the disconnects.
POLL_S = 0.8 * MIN_DEBOUNCING_WINDOW_MS / 1000


async def record_endpoint(store: Store, service_sid: str, identity: str, endpoint_id: str, connected: bool) -> None:
    """Record that ``endpoint_id`` of ``identity`` connected (True) or disconnected (False)."""
    actor = Actor(identity=identity, origin="sdk", endpoint=endpoint_id)
    mode = "connect" if connected else "disconnect"
    reply = await store.run("reachability", service_sid, keys.webhook_config(service_sid), actor, mode=mode)
    due = reply.text(1)
    if due:
        await store.redis.zadd(keys.reach_due(keys.bucket(service_sid)), {service_sid: int(due)}, lt=True)


async def fire_due(store: Store, held: Iterable[int] = range(keys.BUCKETS), batch: int = 100) -> float:
    """Queue the debounced endpoint_disconnected webhooks that are due, in the Services of the buckets ``held``
    (this process's share: storage/buckets.py). Returns how many seconds the caller may wait before
    it calls again: until the earliest pending one is due, at most ``POLL_S``; 0 after firing (more
    may be due)."""
    heads = await buckets.earliest_in(store, keys.reach_due, held)
    now = now_ms()
    ripe = [b for b, at in heads.items() if at <= now]
    if ripe:
        for b, due in await buckets.due_in(store, keys.reach_due, ripe, batch):
            for sid in due:
                await store.run("reachability", sid, keys.webhook_config(sid), SYSTEM_ACTOR, mode="due")
                await reschedule(store, sid, keys.reach_pending(sid), keys.reach_due(b))
        return 0.0
    return min([POLL_S] + [(at - now) / 1000 for at in heads.values()])
