"""Catching a new subscriber up before it joins live delivery: replay, or the current state.

A subscriber arrives with a cursor (the last event id its client saw). ``catch_up`` offers it every
event after that cursor from the object's event log, in order, and then asks the hub to
``activate`` it; activation succeeds only once the cursor has reached what the object's feed has
read on this process, and happens in one synchronous step, so no event falls between replay and
live delivery and none is delivered twice (events the feed reads meanwhile are replayed here first).

For a Document only the latest event of a batch is sent: its state is all a client needs. When the
log (the last ``SYNC_EVENT_LOG_MAX`` events) no longer reaches back to the cursor, the subscriber
gets the current state instead: the document, or every list/map item changed since its cursor in
the order of their last events (items removed during such a long gap are not reported, as the log
that recorded their removal is gone). Replaying a removal ends the subscription: the removal is the
client's answer.

A cursor *ahead* of the object's log means the store came back with older data than the client saw
(a failover without SYNC_DURABILITY=replica, a restored backup): the ids the client knows would be
reused for other changes, and twilio-sync drops every event at or below an id it has seen, so
waiting would be silence. The same holds for a cursor at or below the log's end when this
process's feed has read further (its subscribers saw ids the store lost). The object is then
rebased (storage/rebase.py, one atomic script): its counter jumps to the highest of them and its
current state (the document, every live list/map item, the list indexes the client may hold that
are gone) is recorded as new events above it, which this replay then sends like any other. Every
later write continues above the cursor, for every client of every node (a feed that sees an id it
already read come back rebases too: hub.py); two subscribers or nodes doing it at once record the
state once.
"""

from __future__ import annotations

from storage import Item, Kind, Store, events, items, objects, rebase
from storage.paging import Cursor

from . import twilsock
from .events import document_state, item_state
from .hub import BATCH, Hub, Subscriber, frame
from .websocket import Message

ITEM_PAGE = 1000


async def catch_up(hub: Hub, sub: Subscriber, kind: Kind, latest: int | None = None) -> bool:
    """Send ``sub`` everything after its cursor, then activate it. False if the object was removed
    (the removal was delivered and the subscription ended). ``latest``: the object's last event id
    as just read, if known: a subscriber already there needs no read of the log to start with."""
    replayed = False
    feed = hub.feeds.get(sub.sid)
    seen = max(sub.cursor, -1 if feed is None or feed.last_read is None else feed.last_read)
    if latest is not None and seen > latest:  # the store rolled back under the client, or this process
        # read further since ``latest`` was read: the script, reading the counter now, tells which
        _, restated = await rebase.rebase(hub.store, sub.service_sid, sub.sid, seen)
        hub.stats.state_replays += restated > 0  # none when ``latest`` was merely read before a write
        latest = None  # the restated state is in the log now, above both: replayed below
    while True:
        if latest is not None and sub.cursor >= latest:
            batch, latest = [], None  # only the first time: a failed activation reads the log
        else:
            batch = await events.read_since(hub.store, sub.service_sid, sub.sid, sub.cursor, BATCH)
        if batch and batch[0].id > sub.cursor + 1:
            hub.stats.state_replays += 1
            await _send_state(hub.store, sub, kind)  # the log no longer reaches back: current state
            continue
        if kind.has_data and len(batch) > 1:
            batch = batch[-1:]  # for a document the latest state is all a client needs
        if batch:
            hub.stats.replays += not replayed
            hub.stats.replayed_events += len(batch)
            replayed = True
        for ev in batch:
            sub.offer(ev.id, frame(ev, sub.base), ev.endpoint, ev.is_removal, replay=True)
            if ev.is_removal:
                return False
        if len(batch) < BATCH and hub.activate(sub):
            return True


async def _send_state(store: Store, sub: Subscriber, kind: Kind) -> None:
    """The current state in place of a trimmed log; moves the cursor to the object's last event."""
    o = await objects.get(store, sub.service_sid, kind, sub.sid)
    if kind.has_data:
        sub.offer(o.last_event_id, Message(twilsock.notification(document_state(o))), None, False, replay=True)
        return
    if kind.has_items:
        newer: list[Item] = []
        cursor: Cursor | None = None
        while True:
            page = await items.page(store, sub.service_sid, kind, sub.sid, ITEM_PAGE, cursor=cursor)
            newer += [i for i in page.items if i.last_event_id > sub.cursor]
            if page.next is None:
                break
            cursor = Cursor(page.next, True)
        for item in sorted(newer, key=lambda i: i.last_event_id):
            state = Message(twilsock.notification(item_state(item, sub.base, o.revision)))
            sub.offer(item.last_event_id, state, None, False, replay=True)
    sub.cursor = max(sub.cursor, o.last_event_id)
