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

The claim a request holds, and how its write script picks it up: storage/claims.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgpack

from . import lua
from .claims import CURRENT, LEASE_MS, Claim
from .clock import now_ms
from .errors import IdempotencyConflictError
from .redis_client import text
from .store import Store

__all__ = ["CURRENT", "LEASE_MS", "Answer", "Claim", "Outcome", "claim", "finish"]


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
