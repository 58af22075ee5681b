"""The Idempotency-Key claim of the request being served, and how a write script picks it up.

Why a contextvar: the claim is made around the request (app/idempotency.py, realtime/retries.py) and
must reach the one write script that request runs, deep in the storage functions; passing it through
every handler and storage function would thread one argument through forty signatures for a feature
most requests do not use. ``Store.run`` binds the current claim to the first write script it runs
in the claim's Service, and only there. The records themselves: storage/idempotency.py.
"""

from __future__ import annotations

import contextvars
import secrets
from dataclasses import dataclass, field

import msgpack

from .redis_client import LuaReply

LEASE_MS = 5000  # a pending claim holds off retries this long: far above a write's time, short after a crash


@dataclass
class Claim:
    """One request's hold on a key. ``service`` is the Service whose slot holds the record ("" for
    account-level writes, which no write script records). ``reply``: set when the key was applied
    already and the answer is being rebuilt."""

    service: str
    key: str
    token: str = field(default_factory=lambda: secrets.token_hex(8))
    reply: bytes | None = None
    bound: bool = False


CURRENT: contextvars.ContextVar[Claim | None] = contextvars.ContextVar("sync_idempotency", default=None)


def bind(service_sid: str) -> Claim | None:
    """The current request's claim, if a write script in ``service_sid`` should carry it."""
    claim = CURRENT.get()
    if claim is None or claim.bound or claim.service != service_sid:
        return None
    return claim


def recorded_reply(claim: Claim) -> list[LuaReply]:
    """The write script's reply as recorded (cmsgpack), in the shape Redis answers it (bytes, ints)."""
    assert claim.reply is not None
    reply: list[LuaReply] = msgpack.unpackb(claim.reply, raw=True)
    return reply
