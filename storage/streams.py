"""Stream messages: published into the stream's event log only (Twilio does not persist them)."""

from __future__ import annotations

from . import ids, keys, objects
from .records import Actor
from .store import Store


async def publish(store: Store, service_sid: str, stream: str, data_json: str, actor: Actor) -> str:
    """Record one message as a ``stream_message_published`` event; returns its TZ… SID."""
    sid = await objects.resolve(store, service_sid, "stream", stream)
    msid = ids.new_sid(ids.STREAM_MESSAGE)
    await store.run("stream_publish", service_sid, keys.obj(service_sid, sid), actor, sid, msid, data_json)
    return msid
