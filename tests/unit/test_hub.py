"""The hub's ACL wake-ups: which subscribers are asked to re-check their right (no Redis: no feed here
has read its log yet, so the hub never reads one)."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any, cast

from realtime.hub import Hub
from storage import ChangeEvent, Kind, Store, events, keys


class Probe:
    """A Subscriber that records the re-checks it is asked for."""

    def __init__(self, service_sid: str, sid: str) -> None:
        self.service_sid, self.sid, self.base = service_sid, sid, "http://x"
        self.cursor, self.active = 0, False
        self.asked: list[frozenset[str] | None] = []

    def offer(self, eid: int, frame: bytes | None, origin: str | None, removal: bool, replay: bool = False) -> None:
        raise AssertionError("no event here")

    async def recheck(self, identities: frozenset[str] | None) -> None:
        self.asked.append(identities)


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_acl_wake_ups_reach_only_the_readers_concerned() -> None:
    hub = Hub(cast(Store, None))
    a1, a1b, a2, b1 = Probe("ISa", "ET1"), Probe("ISa", "ET1"), Probe("ISa", "ET2"), Probe("ISb", "ET3")
    for p in (a1, a1b, a2, b1):
        await hub.join(cast(Any, p))

    hub.on_wake(keys.wake_channel("ISa"), b"ET1 acl bob smith")  # an identity may hold a space
    hub.on_wake(keys.wake_channel("ISa"), b"ET9 acl bob")  # nobody watches ET9 here: nothing to do
    await _settle()
    assert a1.asked == a1b.asked == [frozenset({"bob smith"})]
    assert a2.asked == b1.asked == []

    hub.on_wake(keys.wake_channel("ISa"), b"* acl")
    await _settle()
    assert a1.asked[1:] == a2.asked == [None]
    assert b1.asked == []


class Taker(Probe):
    """A Subscriber that records the events it is offered."""

    def __init__(self, service_sid: str, sid: str) -> None:
        super().__init__(service_sid, sid)
        self.got: list[int] = []

    def offer(self, eid: int, frame: Any, origin: str | None, removal: bool, replay: bool = False) -> None:
        if eid > self.cursor:
            self.cursor = eid
            self.got.append(eid)

    def offer_many(self, offers: list[Any]) -> None:
        for offer in offers:
            self.offer(*offer)


def _wake(eid: int, packed: bool = True) -> bytes:
    ev = ChangeEvent(type="document_updated", id=eid, sid="ET1", kind=Kind.DOCUMENT, revision=str(eid), data="{}")
    return b"ET1 %d" % eid + (b" " + events.encode(ev) if packed else b"")


async def test_a_wake_up_for_a_newer_event_reads_the_log() -> None:
    hub = Hub(cast(Store, None))
    sub = Taker("ISa", "ET1")
    sub.cursor = 4
    await hub.join(cast(Any, sub))
    feed = hub.feeds["ET1"]
    kicked: list[int] = []
    feed.kick = lambda: kicked.append(1)  # type: ignore[method-assign]
    assert hub.activate(cast(Any, sub))
    kicked.clear()
    hub.on_wake(keys.wake_channel("ISa"), _wake(6))  # 5 was lost: the log has it
    hub.on_wake(keys.wake_channel("ISa"), _wake(5, packed=False))
    assert sub.got == [] and len(kicked) == 2 and not feed._suspect
    hub.on_wake(keys.wake_channel("ISa"), _wake(4))  # already read here: a rollback? check first
    assert sub.got == [] and len(kicked) == 3 and feed._suspect


class FakeBroker:
    """Records the wake-up channels the hub subscribes to."""

    def __init__(self) -> None:
        self.channels: Counter[str] = Counter()

    async def subscribe(self, channel: str) -> None:
        self.channels[channel] += 1

    async def unsubscribe(self, channel: str) -> None:
        self.channels[channel] -= 1
        if not self.channels[channel]:
            del self.channels[channel]


async def test_a_tap_gets_every_change_wake_up_of_its_service_and_shares_the_channel() -> None:
    broker = FakeBroker()
    hub = Hub(cast(Store, None), cast(Any, broker))
    got: list[tuple[str, int | None]] = []
    other: list[tuple[str, int | None]] = []

    def tap(sid: str, eid: int | None) -> None:
        got.append((sid, eid))

    def failing(sid: str, eid: int | None) -> None:
        raise RuntimeError("a broken tap")

    await hub.tap("ISa", tap)
    await hub.tap("ISa", failing)
    await hub.tap("ISb", lambda sid, eid: other.append((sid, eid)))
    assert broker.channels == {keys.wake_channel("ISa"): 1, keys.wake_channel("ISb"): 1}
    probe = Probe("ISa", "ET1")
    await hub.join(cast(Any, probe))  # a subscriber of the same Service: no second subscription
    assert broker.channels[keys.wake_channel("ISa")] == 1

    hub.on_wake(keys.wake_channel("ISa"), b"ET9 3")  # an object nobody watches: the tap still hears it
    hub.on_wake(keys.wake_channel("ISa"), b"ET1 acl bob")  # a right, not a change: not for taps
    hub.on_wake(keys.wake_channel("ISa"), b"MPx")  # no event id
    await _settle()
    assert got == [("ET9", 3), ("MPx", None)]
    assert other == []

    await hub.untap("ISa", tap)
    await hub.untap("ISa", failing)
    await hub.untap("ISa", failing)  # twice: harmless
    assert keys.wake_channel("ISa") in broker.channels  # the subscriber still needs it
    await hub.leave(cast(Any, probe))
    assert keys.wake_channel("ISa") not in broker.channels  # an idle Service costs nothing
    hub.on_wake(keys.wake_channel("ISa"), b"ET9 4")
    assert got == [("ET9", 3), ("MPx", None)]


async def test_an_activation_reads_the_log_only_when_a_wake_up_may_have_gone_unread() -> None:
    """A new feed (a wake-up may have come before it existed) and a feed whose wake-up found nobody
    active read the log at the next activation; a subscriber joining a feed that is up to date (a
    crowd subscribing to one object) costs no read."""
    hub = Hub(cast(Store, None))
    first, second = Taker("ISa", "ET1"), Taker("ISa", "ET1")
    for sub in (first, second):
        sub.cursor = 4
        await hub.join(cast(Any, sub))
    feed = hub.feeds["ET1"]
    assert feed.missed  # new
    feed.missed = False
    hub.on_wake(keys.wake_channel("ISa"), _wake(5))  # nobody active yet: nobody to deliver it to
    await _settle()
    assert feed.missed and first.got == second.got == []
    kicked: list[int] = []
    feed.kick = lambda: kicked.append(1)  # type: ignore[method-assign]
    assert hub.activate(cast(Any, first)) and kicked == [1] and not feed.missed  # reads what it missed
    assert hub.activate(cast(Any, second)) and kicked == [1]  # up to date: no read
