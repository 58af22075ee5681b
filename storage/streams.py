"""Stream messages: published into the stream's event log only (Twilio does not persist them)."""

from __future__ import annotations

from typing import Any

from . import ids, keys, objects
from .kinds import Kind
from .records import Actor
from .store import Store


async def publish(store: Store, service_sid: str, stream: str, data_json: str, actor: Actor) -> str:
    """Record one message as a ``stream_message_published`` event; returns its TZ… SID."""
    msid = ids.new_sid(ids.STREAM_MESSAGE)

    async def run(sid: str) -> list[Any]:  # the script checks the stream is live: no pre-read
        return await store.run("stream_publish", service_sid, keys.obj(service_sid, sid), actor, sid, msid, data_json)

    await objects.with_object(store, service_sid, Kind.STREAM, stream, run)
    return msid
