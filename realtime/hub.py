"""Fan-out on one process: object -> the subscriptions held here, fed from the object's event log.

One ``Feed`` per subscribed object reads the log once per wake-up (one XRANGE for any number of
subscribers), encodes each event once per URL base and offers it to every active subscription,
which skips ids at or below its own cursor. A new subscription first replays from its own cursor
(or receives the current state when the log was trimmed past it), then ``activate`` joins it to
the feed only once its cursor has reached what the feed has read, in one synchronous step: no event
can fall between replay and live delivery, and none is delivered twice.

Service wake-up channels are subscribed while at least one object of the Service is watched here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from typing import TYPE_CHECKING, Any

from storage import ChangeEvent, Kind, Store, events, items, keys, objects
from storage.paging import Cursor

from . import twilsock
from .broker import Broker
from .events import document_state, item_state, to_sdk

if TYPE_CHECKING:
    from .session import Subscription

log = logging.getLogger("sync.realtime.hub")
BATCH = 500


class Feed:
    """The readers of one object on this process, and how far its log has been read here."""

    def __init__(self, hub: Hub, service_sid: str, sid: str) -> None:
        self.hub = hub
        self.service_sid = service_sid
        self.sid = sid
        self.subs: set[Subscription] = set()
        self.last_read: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._again = False

    def kick(self) -> None:
        """Read the log now (or once more after the read in progress)."""
        if self._task is not None and not self._task.done():
            self._again = True
            return
        self._task = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        while True:
            self._again = False
            if self.last_read is not None and any(s.active for s in self.subs):
                try:
                    batch = await events.read_since(self.hub.store, self.service_sid, self.sid, self.last_read, BATCH)
                except Exception:  # Redis trouble: the next wake-up (or reconnect) retries
                    log.exception("reading the event log of %s failed", self.sid)
                    return
                for ev in batch:
                    self._dispatch(ev)
                if len(batch) == BATCH:
                    self._again = True
            if not self._again:
                return

    def _dispatch(self, ev: ChangeEvent) -> None:
        eid = ev.id
        if self.last_read is not None and eid <= self.last_read:
            return
        self.last_read = eid
        frames: dict[str, bytes | None] = {}
        removal = ev.is_removal
        for sub in list(self.subs):
            if not sub.active or eid <= sub.cursor:
                continue
            base = sub.session.base
            if base not in frames:
                payload = to_sdk(ev, base)
                frames[base] = twilsock.notification(payload) if payload is not None else None
            sub.offer(eid, frames[base], ev.endpoint, removal)


class Hub:
    """Feeds of this process, and the ref-counted Service wake-up channels they need."""

    def __init__(self, store: Store, broker: Broker | None = None) -> None:
        self.store = store
        self.broker = broker
        self.feeds: dict[str, Feed] = {}
        self._watching: Counter[str] = Counter()
        self._lock = asyncio.Lock()

    def on_wake(self, channel: str, data: bytes) -> None:
        """A write script's PUBLISH ``"<SID> <event id>"``: read that object's log if it is watched."""
        sid, _, eid = data.decode().partition(" ")
        feed = self.feeds.get(sid)
        if feed is None:
            return
        if feed.last_read is None or not eid.isdigit() or int(eid) > feed.last_read:
            feed.kick()

    def on_reconnect(self) -> None:
        """Wake-ups may have been lost while pub/sub was down: re-read every feed."""
        for feed in self.feeds.values():
            feed.kick()

    async def join(self, sub: Subscription) -> None:
        """Register ``sub`` (inactive) and make sure its Service's wake-ups reach this process."""
        async with self._lock:
            feed = self.feeds.get(sub.sid)
            if feed is None:
                feed = self.feeds[sub.sid] = Feed(self, sub.service_sid, sub.sid)
            if self._watching[sub.service_sid] == 0 and self.broker is not None:
                try:
                    await self.broker.subscribe(keys.wake_channel(sub.service_sid))
                except BaseException:  # not watched after all: the next join subscribes again
                    if not feed.subs:
                        del self.feeds[sub.sid]
                    raise
            feed.subs.add(sub)
            self._watching[sub.service_sid] += 1

    async def leave(self, sub: Subscription) -> None:
        sub.active = False
        async with self._lock:
            feed = self.feeds.get(sub.sid)
            if feed is None or sub not in feed.subs:
                return
            feed.subs.discard(sub)
            if not feed.subs:
                del self.feeds[sub.sid]
            self._watching[sub.service_sid] -= 1
            if self._watching[sub.service_sid] <= 0:
                del self._watching[sub.service_sid]
                if self.broker is not None:
                    with contextlib.suppress(Exception):
                        await self.broker.unsubscribe(keys.wake_channel(sub.service_sid))

    def activate(self, sub: Subscription) -> bool:
        """Join live delivery if ``sub`` has caught up with its feed; False = replay further first.
        Synchronous on purpose: nothing can be dispatched between the check and the switch."""
        feed = self.feeds.get(sub.sid)
        if feed is None:
            return True
        if feed.last_read is None:
            feed.last_read = sub.cursor
        elif feed.last_read > sub.cursor:
            return False
        sub.active = True
        feed.kick()  # a wake-up that came while nobody was active must not be lost
        return True

    async def replay(self, sub: Subscription, kind: Kind) -> bool:
        """Send ``sub`` everything after its cursor, then activate it. False if the object was removed
        (the removal was delivered and the subscription ended)."""
        store, svc = self.store, sub.service_sid
        while True:
            batch = await events.read_since(store, svc, sub.sid, sub.cursor, BATCH)
            if batch and batch[0].id > sub.cursor + 1:
                await self._send_state(sub, kind)  # the log no longer reaches back: current state
                continue
            if kind.has_data and len(batch) > 1:
                batch = batch[-1:]  # for a document the latest state is all a client needs
            for ev in batch:
                payload = to_sdk(ev, sub.session.base)
                frame = twilsock.notification(payload) if payload is not None else None
                sub.offer(ev.id, frame, ev.endpoint, ev.is_removal, replay=True)
                if ev.is_removal:
                    return False
            if len(batch) < BATCH and self.activate(sub):
                return True

    async def _send_state(self, sub: Subscription, kind: Kind) -> None:
        o = await objects.get(self.store, sub.service_sid, kind, sub.sid)
        if kind.has_data:
            sub.offer(o.last_event_id, twilsock.notification(document_state(o)), None, False, replay=True)
            return
        if kind.has_items:
            newer: list[Any] = []
            cursor: Cursor | None = None
            while True:
                page = await items.page(self.store, sub.service_sid, kind, sub.sid, 1000, cursor=cursor)
                newer += [i for i in page.items if i.last_event_id > sub.cursor]
                if page.next is None:
                    break
                cursor = Cursor(page.next, True)
            for item in sorted(newer, key=lambda i: i.last_event_id):
                frame = twilsock.notification(item_state(item, sub.session.base, o.revision))
                sub.offer(item.last_event_id, frame, None, False, replay=True)
        sub.cursor = max(sub.cursor, o.last_event_id)
