"""SDK writes retried by twilio-sync apply once: its ``Twilio-Request-Id`` is the idempotency key.

twilio-sync (4.0.1, ``NetworkService``) makes the tunnelled request's headers, ``Twilio-Request-Id:
RQ…`` included, once per operation and sends the same headers on every retry of it (after a 502,
503 or 504 answer). So a retried write carries the id of its first attempt, and the server can
tell: the write is claimed under that id, recorded by its write script in the same atomic step
(storage/idempotency.py, as REST's Idempotency-Key), and a retry gets the first answer again. A
write whose answer was lost in a dropped connection is NOT retried by the SDK (twilsock rejects it
with "disconnected" and the SDK hands that to the application), and a write made while disconnected
is held by twilsock and sent once after the reconnect: neither is a retry the server could see.

A retry that comes while the first attempt still runs is answered 503 (the only answers the SDK
retries a write after), with the 20409 body. Records are kept for SDK_TTL_S: the SDK gives up
retrying long before.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

from storage import StoreError, idempotency, keys
from storage.errors import IdempotencyConflictError

from . import cds
from .cds import Caller, Request, store_error

SDK_TTL_S = 3600
HEADER = "twilio-request-id"
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # RQ + 32 hex as the SDK makes it; never a ":" (the record's key)


async def handle(caller: Caller, req: Request) -> tuple[int, Any]:
    """cds.handle, with a write carrying a Twilio-Request-Id applied once (the module docstring)."""
    rid = request_id(req)
    if rid is None:
        return await cds.handle(caller, req)
    return await once(caller, req, rid, cds.handle)


def request_id(req: Request) -> str | None:
    """The write's Twilio-Request-Id (None for reads, or when there is none)."""
    if req.method.upper() == "GET":
        return None
    for name, value in req.headers.items():
        if name.lower() == HEADER and isinstance(value, str) and _ID.match(value):
            return value
    return None


async def once(
    caller: Caller, req: Request, rid: str, run: Callable[[Caller, Request], Awaitable[tuple[int, Any]]]
) -> tuple[int, Any]:
    """``run(caller, req)`` applied at most once for the id ``rid``; retries get its first answer."""
    store = caller.store
    claim = idempotency.Claim(caller.service_sid, keys.sdk_idempotency(caller.service_sid, caller.identity, rid))
    print_ = f"{req.method.upper()}\n{req.path}\n{json.dumps(req.body, sort_keys=True)}"
    try:
        outcome = await idempotency.claim(store, claim, hashlib.sha256(print_.encode()).hexdigest(), SDK_TTL_S)
    except IdempotencyConflictError as exc:
        err = store_error(exc, req.path)
        return (503 if exc.kind == "busy" else err.status), err.body()
    except StoreError as exc:
        err = store_error(exc, req.path)
        return err.status, err.body()
    if outcome.answer is not None:
        return outcome.answer.status, json.loads(outcome.answer.body)
    claim.reply = outcome.reply
    token = idempotency.CURRENT.set(claim)
    try:
        status, body = await run(caller, req)
    finally:
        idempotency.CURRENT.reset(token)
    try:
        if status >= 500:
            await idempotency.finish(store, claim, None)
        elif claim.reply is None or claim.bound:
            answer = idempotency.Answer(status, json.dumps(body).encode(), {})
            await idempotency.finish(store, claim, answer, rebuilt=claim.reply is not None)
    except StoreError:
        pass  # a retry finds the claim applied (its answer rebuilt) or lapsed (run afresh)
    return status, body
