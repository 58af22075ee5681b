"""The hub's ACL wake-ups: which subscribers are asked to re-check their right (no Redis: no feed here
has read its log yet, so the hub never reads one)."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from realtime.hub import Hub
from storage import Store, keys


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
