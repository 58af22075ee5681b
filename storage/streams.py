"""Stream messages: published into the stream's event log only (Twilio does not persist them)."""

from __future__ import annotations

from . import ids, keys, objects
from .kinds import Kind
from .lua import ScriptReply
from .records import Actor
from .store import Store


async def publish(store: Store, service_sid: str, stream: str, data_json: str, actor: Actor) -> str:
    """Record one message as a ``stream_message_published`` event; returns its TZ… SID."""
    msid = ids.new_sid(ids.STREAM_MESSAGE)

    async def run(sid: str) -> ScriptReply:  # the script checks the stream is live: no pre-read
        okey = keys.obj(service_sid, sid)
        return await store.run("stream_publish", service_sid, okey, actor, sid=sid, message_sid=msid, data=data_json)

    reply = await objects.with_object(store, service_sid, Kind.STREAM, stream, run)
    return reply.text(2)  # msid, unless the reply is an Idempotency-Key's recorded one (storage/idempotency.py)
