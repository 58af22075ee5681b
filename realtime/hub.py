"""Fan-out on one process: object -> the subscribers held here, fed from the object's event log.

One ``Feed`` per subscribed object reads the log once per wake-up (one XRANGE for any number of
subscribers), encodes each event once per URL base and offers it to every active subscriber, which
skips ids at or below its own cursor. A small event comes inside its wake-up (keys.wake_channel):
when it is the feed's very next one and no read is under way, it is delivered without reading the
log (``Feed.take``: a Redis round trip less per write, in latency and CPU); otherwise the log is
read. A new subscriber first catches up from its own cursor (replay.py: the missed events, or the
current state when the log was trimmed past it), then ``activate`` joins it to the feed only once
its cursor has reached what the feed has read, in one synchronous step: no event can fall between
replay and live delivery, and none is delivered twice.

The hub knows subscribers only through the ``Subscriber`` interface below, so a twilsock session's
subscription (session.py), a console live view or a metrics tap can each receive events without the
hub knowing what they are, and the hub imports nothing that imports it.

Service wake-up channels are subscribed while at least one object of the Service is watched here,
or while a *tap* is on the Service: ``tap(service, callback)`` hands ``callback(sid, event id)`` every
change wake-up of the Service (any object, watched or not; the event id is None if the message has
none), e.g. for a per-Service event view that then reads each object's log itself. A tap is a
wake-up, so at most once like pub/sub; a Service with neither costs nothing here.

ACL revocation: a write that may take a right away (a Permission deleted or its ``read`` turned off,
the Service's ``acl_enabled`` changed) publishes ``"<SID> acl <identity>"`` (one Permission) or
``"* acl"`` (the whole Service) on the same channel. The feeds concerned (only objects watched here:
nothing for the rest) then ask their subscribers (of that identity, or all) to ``recheck`` the
right, in the feed's own read task and before its next read of the log, so an event written after
the revocation reaches no refused subscriber.
Known limits: pub/sub is at-most-once, so a lost ``acl`` wake-up leaves a refused subscription
running until the connection's next establish (every reconnect re-checks); and a log read already
in flight when the wake-up arrives may still deliver the events it got.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Protocol

from storage import ChangeEvent, Store, StoreUnavailableError, events, keys, rebase
from storage.stats import FANOUT_BUCKETS, Histogram

from . import twilsock
from .broker import Broker
from .events import to_sdk
from .websocket import Message

log = logging.getLogger("sync.realtime.hub")
BATCH = 500
# A feed that delivered less than this long ago takes no event from a wake-up (Feed.take): it reads
# the log, which batches a burst. Long enough to span a loop turn of a busy process, short enough
# that a write after a pause (the latency that matters) still skips the read.
QUIET_S = 0.002
# A feed whose read of the log failed reads it again after RETRY_S, doubling up to RETRY_MAX_S, for
# as long as it has readers: the wake-up or reconnect that would otherwise trigger the next read may
# never come (the writes stopped; after a failover the pub/sub re-route came before the store could
# answer, and its re-read was the one that failed).
RETRY_S = 0.25
RETRY_MAX_S = 4.0


def frame(ev: ChangeEvent, base: str) -> Message | None:
    """``ev`` as the twilsock notification for subscribers whose URLs start with ``base``, framed
    once for all of them; None if the SDK has no use for it (the subscriber still advances its
    cursor past it)."""
    payload = to_sdk(ev, base)
    return Message(twilsock.notification(payload)) if payload is not None else None


Tap = Callable[[str, int | None], None]

# One event as offered: (event id, frame or None, origin endpoint, is a removal)
Offer = tuple[int, Message | None, str | None, bool]


class Subscriber(Protocol):
    """One receiver of one object's events on this process.

    The hub sets ``active`` (``activate`` / ``leave``) and reads ``cursor``; ``offer`` is handed each
    event once, as a frame rendered for ``base`` (None when the SDK has no use for it). ``offer`` must
    advance ``cursor`` to the event it takes and ignore ids at or below it (replay and live delivery
    may both offer one event; the cursor is what makes that harmless), and a ``removal`` ends the
    subscription: the subscriber then leaves the hub itself.
    """

    cursor: int  # the last event id delivered (or skipped)
    active: bool  # joined to live delivery

    @property
    def service_sid(self) -> str: ...

    @property
    def sid(self) -> str: ...

    @property
    def base(self) -> str: ...

    def offer(self, eid: int, frame: Message | None, origin: str | None, removal: bool, replay: bool = False) -> None:
        """Take event ``eid`` (``replay`` = sent while catching up, before ``active``)."""

    def offer_many(self, offers: list[Offer]) -> None:
        """Take several events at once, in order, as ``offer`` would each (live delivery only), so
        that what a connection is due leaves in one write."""

    async def recheck(self, identities: frozenset[str] | None) -> None:
        """The right to read this object may have been taken away from ``identities`` (None: from
        anyone, the Service's ``acl_enabled`` changed): if that concerns this subscriber, check again,
        and if refused end the subscription (it then leaves the hub itself)."""


class RealtimeStats:
    """What the gateway of this process did (/metrics reads it; app/metrics.py): plain ints, counted
    where it happens, at most once per event or per connection, never a lock."""

    __slots__ = ("conflated", "fanout", "overflow_closes", "replayed_events", "replays", "resyncs", "state_replays")

    def __init__(self) -> None:
        # event time (the write) -> its frame written to the subscribers' sockets, once per event
        # and hub batch, weighted by the subscribers it reached (its count is the deliveries)
        self.fanout = Histogram(FANOUT_BUCKETS)
        self.replays = 0  # subscriptions that were sent missed events from the log on (re)subscribe
        self.replayed_events = 0  # events sent while catching up
        self.state_replays = 0  # catch-ups from the current state (the log no longer reached back)
        self.overflow_closes = 0  # connections closed with twilsock 308 (slow consumer)
        self.conflated = 0  # Document frames held back (replacing an older one) while a socket was backed up
        self.resyncs = 0  # pub/sub regained (or re-routed on a Cluster): every feed re-read its log


class Feed:
    """The readers of one object on this process, and how far its log has been read here."""

    def __init__(self, hub: Hub, service_sid: str, sid: str) -> None:
        self.hub = hub
        self.service_sid = service_sid
        self.sid = sid
        self.subs: set[Subscriber] = set()
        self.last_read: int | None = None
        self.last_event: ChangeEvent | None = None  # the event read at last_read (rolled_back compares it)
        self._suspect = False  # a wake-up named an id already read: did the store roll back?
        self._task: asyncio.Task[None] | None = None
        self._again = False
        self._recheck: set[str] | None = set()  # identities to re-check; None: everyone (acl_enabled)
        # a wake-up may have gone unread: none of the subscribers was active yet, or it came before
        # this feed existed (or its Service's channel was subscribed); the next activation reads the log
        self.missed = True
        self._delivered = 0.0  # monotonic time of the last dispatch (``take``)
        self._retry: asyncio.TimerHandle | None = None  # the read again after a failed one (RETRY_S)
        self._retry_s = 0.0

    def recheck(self, identity: str | None) -> None:
        """Re-check the right of ``identity`` (None: of everyone) before the next read of the log."""
        if identity is None:
            self._recheck = None
        elif self._recheck is not None:
            self._recheck.add(identity)
        self.kick()

    def kick(self) -> None:
        """Read the log now (or once more after the read in progress)."""
        if self._task is not None and not self._task.done():
            self._again = True
            return
        self._task = asyncio.create_task(self._pump())

    def take(self, eid: int, packed: bytes) -> bool:
        """Deliver event ``eid`` that came inside its wake-up, without reading the log, if it is the
        very next one for this feed and nothing else is under way: no read of the log in flight (it
        may be catching up, or re-checking rights, and must go first), no rights to re-check, no
        suspected rollback, someone active, and the feed quiet for ``QUIET_S`` (in a burst, the read
        of the log gathers the events that arrive meanwhile into one write per subscriber, which
        costs far less than a write per event). False: read the log as usual (``kick``)."""
        last = self.last_read
        if last is None or eid != last + 1 or self._suspect or self._recheck is None or self._recheck:
            return False
        if self._task is not None and not self._task.done():
            return False
        if time.monotonic() - self._delivered < QUIET_S:  # a burst: one read of the log batches it
            return False
        if not any(s.active for s in self.subs):
            return False
        try:
            ev = events.decode(packed)
        except Exception:  # not an event after all (a crafted or older message): read the log
            return False
        if ev.id != eid or ev.sid != self.sid:
            return False
        self._dispatch([ev])
        return True

    def suspect(self) -> None:
        """A wake-up named an id at or below ``last_read``: mostly one whose event an earlier read
        already took, but after a rollback of the store it is a write that reused an id the
        subscribers here saw, which they would ignore. Check before the next read of the log."""
        self._suspect = True
        self.kick()

    async def _heal(self) -> None:
        """If the store rolled back under this feed, rebase the object past what was read here
        (storage/rebase.py): its current state and every later write get ids above every cursor."""
        self._suspect = False
        last = self.last_read
        if last is None:
            return
        try:
            if await rebase.rolled_back(self.hub.store, self.service_sid, self.sid, last, self.last_event):
                _, restated = await rebase.rebase(self.hub.store, self.service_sid, self.sid, last, reused=True)
                log.warning("the log of %s went back below event %d: rebased (%d events)", self.sid, last, restated)
        except Exception as exc:  # Redis trouble, the object gone: the next suspect wake-up checks again
            log.warning("checking the log of %s for a rollback failed: %s", self.sid, exc)

    async def _pump(self) -> None:
        while True:
            self._again = False
            if self._suspect:
                await self._heal()
            if self._recheck is None or self._recheck:
                who, self._recheck = self._recheck, set()
                await self._recheck_subs(None if who is None else frozenset(who))
            if self.last_read is not None and any(s.active for s in self.subs):
                try:
                    batch = await events.read_since(self.hub.store, self.service_sid, self.sid, self.last_read, BATCH)
                except StoreUnavailableError:  # an outage: Store.health logged it once
                    self._read_again_later()
                    return
                except Exception:  # Redis trouble
                    log.exception("reading the event log of %s failed", self.sid)
                    self._read_again_later()
                    return
                if self._retry_s:  # read after failures: none is due any more
                    self.stop_retrying()
                self._dispatch(batch)
                if len(batch) == BATCH:
                    self._again = True
            else:
                self.missed = True
            if not self._again:
                return

    def _read_again_later(self) -> None:
        """After a failed read: read again in RETRY_S, twice that after the next failure, up to
        RETRY_MAX_S (a wake-up or a reconnect meanwhile reads at once, as always)."""
        if self._retry is not None:
            return
        self._retry_s = min(max(self._retry_s * 2, RETRY_S), RETRY_MAX_S)
        self._retry = asyncio.get_running_loop().call_later(self._retry_s, self._retried)

    def _retried(self) -> None:
        self._retry = None
        self.kick()

    def stop_retrying(self) -> None:
        """A read succeeded (a wake-up's, before the timer), or the last reader left: no read again
        later, and the next failure waits RETRY_S again."""
        self._retry_s = 0.0
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None

    async def _recheck_subs(self, identities: frozenset[str] | None) -> None:
        results = await asyncio.gather(*(s.recheck(identities) for s in list(self.subs)), return_exceptions=True)
        for r in results:
            if isinstance(r, Exception):  # Redis trouble: the subscriber keeps its subscription
                log.warning("re-checking the readers of %s failed: %s", self.sid, r)

    def _dispatch(self, batch: list[ChangeEvent]) -> None:
        """Offer the events of ``batch`` not read here yet to every active subscriber, each rendered
        (and framed) once per URL base; a subscriber due several gets them in one ``offer_many``."""
        last = self.last_read
        fresh = batch if last is None else [ev for ev in batch if ev.id > last]
        if not fresh:
            return
        self.last_read, self.last_event = fresh[-1].id, fresh[-1]
        rendered: dict[str, list[Offer]] = {}
        reached = 0
        for sub in list(self.subs):
            if not sub.active:
                continue
            reached += 1
            base = sub.base
            offers = rendered.get(base)
            if offers is None:
                offers = rendered[base] = [(ev.id, frame(ev, base), ev.endpoint, ev.is_removal) for ev in fresh]
            if len(offers) == 1:
                sub.offer(*offers[0])
            else:
                sub.offer_many(offers)
        self._delivered = time.monotonic()
        if reached:  # every frame of the batch is written now: one observation per event, not per delivery
            now_ms = time.time() * 1000
            fanout = self.hub.stats.fanout
            for ev in fresh:
                fanout.observe(max(0.0, now_ms - ev.time) / 1000, reached)


class Hub:
    """Feeds of this process, and the ref-counted Service wake-up channels they need."""

    def __init__(self, store: Store, broker: Broker | None = None) -> None:
        self.store = store
        self.broker = broker
        self.feeds: dict[str, Feed] = {}
        self.stats = RealtimeStats()
        self._watching: Counter[str] = Counter()
        self._lock = asyncio.Lock()
        # acl_enabled of each Service as its last "* acl" wake-up announced it: every subscription's
        # re-check reads it here instead of each reading the Service record again
        self.acl_enabled: dict[str, bool] = {}
        self.taps: dict[str, set[Tap]] = {}

    def on_wake(self, channel: str, data: bytes) -> None:
        """A write script's PUBLISH ``"<SID> <event id>"``: read that object's log if it is watched
        (one read for any number of wake-ups that arrive meanwhile: a burst leaves as a batch, one
        write per subscriber); ``"<SID> acl <identity>"`` / ``"* acl"``: re-check the right of its
        readers (of the Service's)."""
        raw_sid, _, rest = data.partition(b" ")
        raw_eid, _, tail = rest.partition(b" ")
        sid = raw_sid.decode(errors="replace")
        if raw_eid == b"acl":
            identity = tail.decode(errors="replace")
            if sid == "*":
                service = keys.wake_channel_service(channel)
                if identity in ("0", "1"):
                    self.acl_enabled[service] = identity == "1"
                else:  # no value (an older server): the re-checks read the Service record
                    self.acl_enabled.pop(service, None)
                for f in list(self.feeds.values()):
                    if f.service_sid == service:
                        f.recheck(None)
            elif (watched := self.feeds.get(sid)) is not None:
                watched.recheck(identity)
            return
        eid = int(raw_eid) if raw_eid.isdigit() else None
        taps = self.taps.get(keys.wake_channel_service(channel)) if self.taps else None
        for tap in list(taps or ()):
            try:
                tap(sid, eid)
            except Exception:  # one tap's failure must not stop delivery to the others
                log.exception("a tap of %s failed", channel)
        feed = self.feeds.get(sid)
        if feed is None:
            return
        if eid is None or feed.last_read is None or eid > feed.last_read:
            if not (tail and eid is not None and feed.take(eid, tail)):
                feed.kick()
        else:
            feed.suspect()

    def on_reconnect(self) -> None:
        """Wake-ups may have been lost while pub/sub was down: re-read every feed."""
        self.stats.resyncs += 1
        for feed in self.feeds.values():
            feed.kick()

    async def join(self, sub: Subscriber) -> None:
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

    async def leave(self, sub: Subscriber) -> None:
        sub.active = False
        async with self._lock:
            feed = self.feeds.get(sub.sid)
            if feed is None or sub not in feed.subs:
                return
            feed.subs.discard(sub)
            if not feed.subs:
                del self.feeds[sub.sid]
                feed.stop_retrying()
            await self._unwatch(sub.service_sid)

    async def tap(self, service_sid: str, callback: Tap) -> None:
        """Hand ``callback(sid, event id)`` every change wake-up of the Service until ``untap``."""
        async with self._lock:
            if self._watching[service_sid] == 0 and self.broker is not None:
                await self.broker.subscribe(keys.wake_channel(service_sid))
            self.taps.setdefault(service_sid, set()).add(callback)
            self._watching[service_sid] += 1

    async def untap(self, service_sid: str, callback: Tap) -> None:
        async with self._lock:
            taps = self.taps.get(service_sid)
            if taps is None or callback not in taps:
                return
            taps.discard(callback)
            if not taps:
                del self.taps[service_sid]
            await self._unwatch(service_sid)

    async def _unwatch(self, service_sid: str) -> None:
        """One watcher (subscriber or tap) of the Service fewer; the last one ends its wake-ups here."""
        self._watching[service_sid] -= 1
        if self._watching[service_sid] <= 0:
            del self._watching[service_sid]
            self.acl_enabled.pop(service_sid, None)  # not watched: its wake-ups stop reaching us
            if self.broker is not None:
                with contextlib.suppress(Exception):
                    await self.broker.unsubscribe(keys.wake_channel(service_sid))

    def activate(self, sub: Subscriber) -> bool:
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
        if feed.missed:  # a wake-up that came while nobody was active must not be lost
            feed.missed = False
            feed.kick()
        return True
