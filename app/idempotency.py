"""``Idempotency-Key`` on every REST POST and DELETE (an extension: Twilio's clients never send it).

A pure ASGI middleware (no task, so the claim it puts in a contextvar reaches the handler; see
storage/idempotency.py for the record and its states). For a request carrying the header:

1. authenticate (a request that fails it passes through untouched, and the handler answers 401),
   read the body, and fingerprint the request: method, path, query and the form body's sorted
   fields (a retry whose helper library orders the fields differently still matches);
2. claim the key, scoped by account and key, in the Service's slot for writes inside a Service
   (so the write script records it atomically with the write) and in the account's slot otherwise;
3. by what the claim found: a stored answer is sent again with ``Idempotent-Replayed: true``; a
   key applied by a request that died before storing its answer has the handler run again with the
   recorded script reply standing in for the write (nothing is written; the answer is rebuilt);
   another request still holding the key is waited for (storage/idempotency.claim polls it up to the
   time left on its claim, at most LEASE_MS), then its stored answer is sent, or the lapsed claim of a
   request that died is taken over and the handler runs; 409/20409 with ``Retry-After`` only when the
   key is still held after that; other parameters: 422/20422;
4. after the handler: its answer is stored under the key (any status below 500 but 429: a 4xx is
   the answer to those parameters, as in the IETF draft); a 5xx, or an exception, gives a pending
   claim up, so a retry runs afresh (a write whose script ran stays recorded as applied whatever
   happens after it).
"""

from __future__ import annotations

import hashlib
import re
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from storage import Store, StoreError, idempotency, keys
from storage.wire import errors
from storage.wire.errors import TwilioError

from .errors import error_response
from .params import MAX_BODY

HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
_HEADER = HEADER.lower().encode()
_KEY = re.compile(r"^[\x21-\x7e][\x20-\x7e]{0,254}$")  # printable ASCII, 1 to 255, no leading space
_IN_SERVICE = re.compile(r"^/v1/Services/(IS[0-9a-fA-F]{32})/")
KEPT_HEADERS = ("content-type", "etag")  # what a replay sends again besides status and body
_METHODS = ("POST", "DELETE")


def fingerprint(method: str, path: str, query: bytes, content_type: str, body: bytes) -> str:
    """What makes two requests "the same parameters": method, path, query and body; a form body by
    its fields, sorted (the order of fields means nothing to the API)."""
    h = hashlib.sha256(f"{method}\n{path}\n".encode() + query + b"\n")
    if content_type.startswith("application/x-www-form-urlencoded"):
        fields = sorted(parse_qsl(body.decode("latin-1"), keep_blank_values=True))
        h.update(repr(fields).encode())
    else:
        h.update(body)
    return h.hexdigest()


def record_key(path: str, account: str, key: str) -> tuple[str, str]:
    """(Service SID or "", the record's Redis key) for a write on ``path`` by ``account``."""
    m = _IN_SERVICE.match(path)
    if m:
        return m.group(1), keys.idempotency(m.group(1), account, key)
    return "", keys.account_idempotency(account, key)


class Idempotency:
    """The middleware described in the module docstring; ``ttl_s`` is SYNC_IDEMPOTENCY_TTL_S."""

    def __init__(self, app: ASGIApp, ttl_s: int) -> None:
        self.app = app
        self.ttl_s = ttl_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _METHODS:
            await self.app(scope, receive, send)
            return
        raw = next((v for n, v in scope["headers"] if n == _HEADER), None)
        if raw is None:
            await self.app(scope, receive, send)
            return
        await self._idempotent(raw.decode("latin-1"), scope, receive, send)

    async def _idempotent(self, key: str, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope)
        if not _KEY.match(key):
            await error_response(errors.INVALID_PARAMETER(errors.INVALID_IDEMPOTENCY_KEY))(scope, receive, send)
            return
        try:
            account = await request.app.state.auth.account_for(request)
        except (TwilioError, StoreError):  # the handler refuses it the same way
            await self.app(scope, receive, send)
            return
        read = await _read(receive)
        if read is None:  # the client went away mid-body: a cut request is never executed
            return
        body, more = read
        replay = _replaying(body, receive, more)
        if more:  # over the size limit: the handler answers 413 and nothing is recorded
            await self.app(scope, replay, send)
            return
        store: Store = request.app.state.store
        service, rkey = record_key(scope["path"], account, key)
        claim = idempotency.Claim(service, rkey)
        ctype = request.headers.get("content-type", "")
        print_ = fingerprint(scope["method"], scope["path"], scope.get("query_string", b""), ctype, body)
        try:
            outcome = await idempotency.claim(store, claim, print_, self.ttl_s)
        except StoreError as exc:
            error = errors.from_store_error(exc, "rest", scope["path"])
            headers = {"Retry-After": exc.ident} if exc.kind == "busy" else None  # seconds the claim holds on
            await error_response(error, headers)(scope, receive, send)
            return
        if outcome.answer is not None:
            a = outcome.answer
            await Response(a.body, a.status, {**a.headers, REPLAYED: "true"})(scope, receive, send)
            return
        claim.reply = outcome.reply
        await self._run(scope, replay, send, store, claim)

    async def _run(self, scope: Scope, receive: Receive, send: Send, store: Store, claim: idempotency.Claim) -> None:
        """Run the handler under the claim, capturing its answer to store it."""
        status = 0
        kept: dict[str, str] = {}
        chunks: list[bytes] = []
        rebuilt = claim.reply is not None

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                for name, value in message.get("headers", ()):
                    if name.decode("latin-1").lower() in KEPT_HEADERS:
                        kept[name.decode("latin-1")] = value.decode("latin-1")
                if rebuilt:
                    message["headers"] = [*message.get("headers", ()), (REPLAYED.lower().encode(), b"true")]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
            await send(message)

        token = idempotency.CURRENT.set(claim)
        try:
            await self.app(scope, receive, capture)
        except BaseException:
            await _give_up(store, claim)
            raise
        finally:
            idempotency.CURRENT.reset(token)
        if status >= 500 or status == 429 or not status:
            await _give_up(store, claim)
            return
        if rebuilt and not claim.bound:  # failed before its write (say, a name deleted since): keep the record
            return
        answer = idempotency.Answer(status, b"".join(chunks), kept)
        try:
            await idempotency.finish(store, claim, answer, rebuilt)
        except StoreError:
            pass  # the answer is sent; a retry finds the key applied (or pending, then lapsed) and rebuilds it


async def _give_up(store: Store, claim: idempotency.Claim) -> None:
    try:
        await idempotency.finish(store, claim, None)
    except StoreError:
        pass  # the claim lapses by itself (LEASE_MS)


async def _read(receive: Receive) -> tuple[bytes, bool] | None:
    """The request body, up to MAX_BODY + 1 bytes, and True when there is more (over the limit);
    None when the client disconnected before its end."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), False
        if size > MAX_BODY:
            return b"".join(chunks), True


def _replaying(body: bytes, receive: Receive, more: bool) -> Receive:
    """A ``receive`` that gives the body read already (as one chunk), then whatever is left."""
    given = False

    async def replay() -> Message:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": more}
        return await receive()

    return replay
