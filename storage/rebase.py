"""Moving an object's event ids past a cursor some client saw: the answer to a store that came back
older than its clients (a failover without SYNC_DURABILITY=replica, a restored backup).

Event ids are the only order the twilio-sync SDK trusts: it drops any event whose id is at or below
one it has seen (per Document, per List/Map item). A store rolled back under a client would reuse
the ids it saw for other changes, and the client would see nothing, ever, until the ids passed its
cursor. ``rebase`` (scripts/object_rebase.lua, one atomic step) lifts the object's counter to the
cursor and records the current state as fresh events above it, so every client, of any node and any
cursor, gets the current state and every later write. The realtime gateway calls it when a
subscriber's cursor is ahead of the object (realtime/replay.py) and when a feed sees an id it has
already read come back (realtime/hub.py). Idempotent: a counter already past the cursor is left as
it is, so two nodes doing it at once record the state once.

``rolled_back`` is the cheap check (one read) a reader makes before it asks for the script.
"""

from __future__ import annotations

from . import events, keys
from .events import ChangeEvent
from .records import SWEEPER
from .redis_client import text
from .store import Store

GONE_MAX = 1000  # List indexes at most reported removed per rebase (object_rebase.lua)


async def rebase(store: Store, service_sid: str, sid: str, cursor: int, reused: bool = False) -> tuple[int, int]:
    """Make the object's last event id at least ``cursor`` + 1 if it is below ``cursor`` (or equal to
    it and ``reused``: the caller found another event at ``cursor`` than the one it read), restating
    its current state above ``cursor``. A counter merely equal to the cursor is left alone: a caller
    whose own read of the counter is older than the cursor cannot tell a rollback from a write that
    came in between, and the script, which reads the counter now, can. Answers (last event id now,
    events recorded: 0 when nothing was rolled back). NotFoundError if the object is gone."""
    reply = await store.run(
        "object_rebase",
        service_sid,
        keys.obj(service_sid, sid),
        SWEEPER,
        sid=sid,
        cursor=cursor,
        gone_max=GONE_MAX,
        reused=int(reused),
    )
    return reply.number(1), reply.number(2)


async def last_event_id(store: Store, service_sid: str, sid: str) -> int | None:
    """The object's event counter as stored now (None: no such object)."""
    raw = await store.redis.hget(keys.obj(service_sid, sid), "e")
    return None if raw is None else int(text(raw))


async def rolled_back(store: Store, service_sid: str, sid: str, last_id: int, last: ChangeEvent | None) -> bool:
    """Did the store roll back under a reader that read the object's log up to ``last_id`` (event
    ``last``, if it has it)? Yes if the counter is below ``last_id``, or if the log holds another
    event ``last_id`` than the one read (a write after the rollback reused the id). One read when
    the log still holds ``last_id``; a log trimmed past it has moved on, which is no rollback."""
    if last is not None and last.id == last_id:
        found = await events.read_since(store, service_sid, sid, last_id - 1, 1)
        if found:
            return found[0] != last if found[0].id == last_id else False
    counter = await last_event_id(store, service_sid, sid)
    return counter is not None and counter < last_id
