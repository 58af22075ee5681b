"""Idempotency-Key records: a retried write is applied once, and answered as the first time.

A record (keys.idempotency / keys.account_idempotency, a hash) goes through three states:

* ``p`` pending: a request claimed the key (``claim``) and is running. It holds the claim for
  LEASE_MS; a retry meanwhile waits (``claim`` polls the record) until the first stores its answer,
  which the retry then gets, or until the claim lapses: a claim whose request died lapses after
  LEASE_MS and the waiting retry takes it over with a new token. So a retry is never told to come
  back later, and waits at most LEASE_MS.
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

import asyncio
import time
from dataclasses import dataclass

import msgpack

from . import lua
from .claims import CURRENT, LEASE_MS, Claim
from .clock import now_ms
from .errors import IdempotencyConflictError
from .redis_client import LuaReply, text
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


async def claim(store: Store, c: Claim, fingerprint: str, ttl_s: int, wait: bool = True) -> Outcome:
    """Claim ``c.key`` for this request, or raise IdempotencyConflictError ("mismatch", "busy").

    A key another request holds is waited for (``wait``): polled, 10 ms apart at first, up to the
    time left on that request's claim, until it is done (its answer is returned) or lapsed (this
    request takes it over). "busy" is raised only without ``wait``, or if the claim is still held
    past that time (another retry took it over meanwhile)."""
    deadline: float | None = None
    pause = 0.01
    while True:
        state, r = await _claim_once(store, c, fingerprint, ttl_s)
        if state != "busy":
            break
        assert isinstance(r[1], int)
        now = time.monotonic()
        if deadline is None:
            deadline = now + r[1] / 1000 + 0.25  # the first holder's lease, and a little for clocks
        if not wait or now >= deadline:
            raise IdempotencyConflictError("busy", str(max(1, -(-r[1] // 1000))))
        await asyncio.sleep(min(pause, deadline - now))
        pause = min(pause * 2, 0.2)
    if state == "mismatch":
        raise IdempotencyConflictError("mismatch")
    if state == "applied":
        assert isinstance(r[1], bytes)
        return Outcome("applied", reply=r[1])
    if state == "done":
        status, body, packed = r[1], r[2], r[3]
        assert isinstance(status, bytes) and isinstance(body, bytes) and isinstance(packed, bytes)
        headers = {k.decode(): v.decode() for k, v in msgpack.unpackb(packed, raw=True).items()}
        return Outcome("done", answer=Answer(int(status), body, headers))
    return Outcome("new")


async def _claim_once(store: Store, c: Claim, fingerprint: str, ttl_s: int) -> tuple[str, list[LuaReply]]:
    args: dict[str, lua.LuaArg] = {"hash": fingerprint, "tok": c.token, "now_ms": now_ms(), "lease_ms": LEASE_MS}
    r = await store.call("idempotency_claim", [c.key], **args, ttl_ms=ttl_s * 1000)
    assert isinstance(r, list)
    return (text(r[0]) if isinstance(r[0], bytes) else ""), r


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
