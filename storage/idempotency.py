"""Idempotency-Key records: a retried write is applied once, and answered as the first time.

A record (keys.idempotency / keys.account_idempotency, a hash) goes through three states:

* ``p`` pending: a request claimed the key (``claim``) and is running. It holds the claim for
  LEASE_MS; a retry meanwhile is told "busy" (409 with a retry hint). A claim whose request died
  lapses after LEASE_MS and the next retry takes it over with a new token.
* ``a`` applied: the write script ran. It checks the claim is still its request's (a request that
  lost its claim to a retry is refused, so the write cannot happen twice) and records ``a`` with its
  whole reply IN THE SAME ATOMIC STEP as the write (scripts/idempotency.lua, appended to every
  write script). A process that dies now leaves ``a``: a retry runs the handler again with that
  reply standing in for the script (``Claim.reply``, used by Store.run), which rebuilds the answer
  without writing anything.
* ``d`` done: the whole answer (status, body, headers that matter) is stored (``finish``); a retry
  gets it as is.

Why a contextvar: the claim is made around the request (app/idempotency.py) and must reach the one
write script that request runs, deep in the storage functions; passing it through every handler and
storage function would thread one argument through forty signatures for a feature most requests do
not use. ``Store.run`` binds the current claim to the first write script it runs in the claim's
Service, and only there.
"""

from __future__ import annotations

import contextvars
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import msgpack

from . import lua
from .clock import now_ms
from .errors import IdempotencyConflictError
from .redis_client import LuaReply, text

if TYPE_CHECKING:
    from .store import Store

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


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    headers: dict[str, str]


@dataclass(frozen=True)
class Outcome:
    """What ``claim`` found: "new" (go ahead), "applied" (``reply``), "done" (``answer``)."""

    state: str
    reply: bytes | None = None
    answer: Answer | None = None


async def claim(store: Store, c: Claim, fingerprint: str, ttl_s: int) -> Outcome:
    """Claim ``c.key`` for this request, or raise IdempotencyConflictError ("mismatch", "busy")."""
    args: dict[str, lua.LuaArg] = {"hash": fingerprint, "tok": c.token, "now_ms": now_ms(), "lease_ms": LEASE_MS}
    r = await store.call("idempotency_claim", [c.key], **args, ttl_ms=ttl_s * 1000)
    assert isinstance(r, list)
    state = text(r[0]) if isinstance(r[0], bytes) else ""
    if state == "mismatch":
        raise IdempotencyConflictError("mismatch")
    if state == "busy":
        assert isinstance(r[1], int)
        raise IdempotencyConflictError("busy", str(max(1, -(-r[1] // 1000))))
    if state == "applied":
        assert isinstance(r[1], bytes)
        return Outcome("applied", reply=r[1])
    if state == "done":
        status, body, packed = r[1], r[2], r[3]
        assert isinstance(status, bytes) and isinstance(body, bytes) and isinstance(packed, bytes)
        headers = {k.decode(): v.decode() for k, v in msgpack.unpackb(packed, raw=True).items()}
        return Outcome("done", answer=Answer(int(status), body, headers))
    return Outcome("new")


async def finish(store: Store, c: Claim, answer: Answer | None, rebuilt: bool = False) -> bool:
    """Store the request's whole answer under its key; ``answer`` None gives a pending claim up
    (nothing was applied: the next request with the key runs afresh)."""
    headers = lua.pack(answer.headers) if answer else b""
    r = await store.call(
        "idempotency_finish",
        [c.key],
        tok=c.token,
        status=answer.status if answer else 0,
        body=answer.body if answer else b"",
        headers=headers,
        rebuilt="1" if rebuilt else "",
    )
    return r == 1
