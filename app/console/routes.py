"""The console's routes: the page, its static files, and ``/console/api``.

Every ``/console/api`` endpoint authenticates like REST (the same ``Authenticator`` through
``context``) and checks that the Service in the path belongs to the caller's account, so the console
can see nothing the REST API would not show the same credentials.

Live events are Server-Sent Events. The page reads them with ``fetch`` (EventSource cannot send an
``Authorization`` header) and reconnects with ``Last-Event-ID`` itself.

- One object (``?object=SID``): a hub ``Subscriber`` (realtime/hub.py) whose ``offer`` is only a
  wake-up; the stream reads the object's event log from its own cursor, so it sends every event in
  order, none twice, and resumes after a reconnect from ``Last-Event-ID`` (the event id) while the
  log still reaches back (``SYNC_EVENT_LOG_MAX``). Without it, the log's retained events come first.
- A whole Service: a hub *tap* (every change wake-up of the Service), each woken object's log read
  from the last id seen of it. Pub/sub wake-ups are at most once, so this view is live only: a lost
  wake-up delays an object's events to its next one, and events of the reconnect gap are not replayed.
  A Service nobody watches costs nothing: taps and subscribers exist only while a view is open.

This package may not import ``realtime`` (tests/test_layering.py): it reaches the gateway of this
process through ``app.state.gateway``, typed here by the small protocols below (the hub's
``Subscriber`` is structural too).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from storage import ChangeEvent, Kind, Store, events, objects, webhooks
from storage.wire import errors

from ..context import context

STATIC = Path(__file__).parent / "static"
KEEPALIVE_S = 15.0
BATCH = 200
SERVICE_QUEUE = 10_000  # wake-ups waiting in a per-Service view; beyond: dropped (said in the stream)

Tap = Callable[[str, int | None], None]
_ENDERS: set[Callable[[], None]] = set()  # one per open event stream of this process: ends it


def end_streams() -> None:
    """Shutdown: end every open event stream now (the page reconnects, to another process or to this
    server once restarted, and resumes by ``Last-Event-ID``), so that none holds up uvicorn's graceful
    wait for requests in flight. app/main.py calls it on SIGTERM/SIGINT, before the gateway's drain."""
    for end in list(_ENDERS):
        end()


class _Hub(Protocol):
    async def join(self, sub: Any) -> None: ...
    async def leave(self, sub: Any) -> None: ...
    def activate(self, sub: Any) -> bool: ...
    async def tap(self, service_sid: str, callback: Tap) -> None: ...
    async def untap(self, service_sid: str, callback: Tap) -> None: ...


class _Caller(Protocol):
    service_sid: str
    identity: str


class _Session(Protocol):
    caller: _Caller


class _Gateway(Protocol):
    hub: _Hub
    sessions: Iterable[_Session]


def routes() -> list[BaseRoute]:
    api = "/console/api/Services/{ServiceSid}"
    return [
        Route("/console", page, methods=["GET"]),
        Route("/console/", page, methods=["GET"]),
        Mount("/console/static", app=StaticFiles(directory=STATIC), name="console-static"),
        Route(api + "/events", event_stream, methods=["GET"]),
        Route(api + "/webhooks", webhook_status, methods=["GET"]),
        Route(api + "/webhooks/replay", webhook_replay, methods=["POST"]),
        Route(api + "/connections", connections, methods=["GET"]),
    ]


async def page(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})


# --- live events -------------------------------------------------------------------------------


def event_json(ev: ChangeEvent) -> dict[str, Any]:
    """One event as the console shows it (data parsed back from its JSON text)."""

    def parsed(text: str | None) -> Any:
        if text is None:
            return None
        try:
            return json.loads(text)
        except ValueError:
            return text

    return {
        "id": ev.id,
        "type": ev.type,
        "object_sid": ev.sid,
        "kind": str(ev.kind) if ev.kind else None,
        "unique_name": ev.unique_name,
        "revision": ev.revision,
        "key": ev.key,
        "data": parsed(ev.data),
        "origin": ev.origin,
        "identity": ev.identity,
        "endpoint": ev.endpoint,
        "time": datetime.fromtimestamp(ev.time / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "expires": ev.expires,
    }


def sse(ev: ChangeEvent, sse_id: str) -> bytes:
    return f"id: {sse_id}\nevent: change\ndata: {json.dumps(event_json(ev), separators=(',', ':'))}\n\n".encode()


class Watcher:
    """A hub ``Subscriber`` for one object whose ``offer`` only wakes the stream that reads the log."""

    def __init__(self, service_sid: str, sid: str, cursor: int) -> None:
        self.service_sid = service_sid
        self.sid = sid
        self.base = "console"  # the hub renders a frame per base; the console never uses it
        self.cursor = cursor
        self.active = False
        self.woken = asyncio.Event()

    def offer(self, eid: int, frame: object, origin: str | None, removal: bool, replay: bool = False) -> None:
        if eid > self.cursor:
            self.cursor = eid
            self.woken.set()

    def offer_many(self, offers: list[tuple[int, object, str | None, bool]]) -> None:
        for eid, frame, origin, removal in offers:
            self.offer(eid, frame, origin, removal)

    async def recheck(self, identities: frozenset[str] | None) -> None:
        """Account credentials hold every right: nothing to re-check."""


def _kind_of(sid: str) -> Kind:
    for kind in Kind:
        if sid.startswith(kind.sid_prefix):
            return kind
    raise errors.INVALID_PARAMETER(f"object must be the SID of a Document, List, Map or Stream: {sid}")


def _last_event_id(request: Request) -> str | None:
    return request.headers.get("last-event-id") or request.query_params.get("after") or None


async def event_stream(request: Request) -> Response:
    c = await context(request)
    gateway: _Gateway = request.app.state.gateway
    obj = request.query_params.get("object")
    if obj:
        kind = _kind_of(obj)
        sid = (await objects.get(c.store, c.service, kind, obj)).sid
        after = _last_event_id(request)
        cursor = int(after) if after and after.lstrip("-").isdigit() else -1
        body = _object_events(request, gateway.hub, c.store, c.service, sid, cursor)
    else:
        body = _service_events(request, gateway.hub, c.store, c.service, _last_event_id(request))
    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(body, media_type="text/event-stream", headers=headers)


async def _object_events(
    request: Request, hub: _Hub, store: Store, service: str, sid: str, cursor: int
) -> AsyncIterator[bytes]:
    yield b"retry: 1000\n: watching\n\n"
    watcher = Watcher(service, sid, cursor)
    ended = False

    def end() -> None:
        nonlocal ended
        ended = True
        watcher.woken.set()

    try:
        _ENDERS.add(end)
        await hub.join(watcher)
        if cursor >= 0 and (first := await events.first_id(store, service, sid)) is not None and first > cursor + 1:
            yield f"event: gap\ndata: {first - cursor - 1}\n\n".encode()  # trimmed from the log meanwhile
        while not ended:
            batch = await events.read_since(store, service, sid, cursor, BATCH)
            for ev in batch:
                cursor = ev.id
                yield sse(ev, str(ev.id))
                if ev.is_removal:
                    yield b"event: removed\ndata: {}\n\n"
                    return
            if len(batch) == BATCH:
                continue
            if not watcher.active:
                watcher.cursor = max(watcher.cursor, cursor)
                if not hub.activate(watcher):
                    continue  # the feed has read further than this stream: read on first
                continue  # read once more after joining: nothing written meanwhile is missed
            watcher.woken.clear()
            if ended:
                break
            if watcher.cursor > cursor:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(watcher.woken.wait(), KEEPALIVE_S)
            if not watcher.woken.is_set():
                yield b": keepalive\n\n"
    finally:
        _ENDERS.discard(end)
        await hub.leave(watcher)


async def _service_events(
    request: Request, hub: _Hub, store: Store, service: str, after: str | None
) -> AsyncIterator[bytes]:
    yield b"retry: 1000\n: watching\n\n"
    queue: asyncio.Queue[tuple[str, int | None]] = asyncio.Queue(SERVICE_QUEUE)
    dropped = 0

    def tap(sid: str, eid: int | None) -> None:
        nonlocal dropped
        try:
            queue.put_nowait((sid, eid))
        except asyncio.QueueFull:
            dropped += 1

    def end() -> None:
        with contextlib.suppress(asyncio.QueueFull):
            queue.put_nowait(("", None))  # past the last wake-up queued: those are sent first

    cursors: dict[str, int] = {}
    if after and ":" in after:
        resume_sid, _, resume_id = after.rpartition(":")
        if resume_id.isdigit():
            cursors[resume_sid] = int(resume_id)
    try:
        _ENDERS.add(end)
        await hub.tap(service, tap)
        while True:
            try:
                sid, eid = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
            except TimeoutError:
                yield b": keepalive\n\n"
                continue
            if not sid:
                return
            if dropped:
                yield f"event: dropped\ndata: {dropped}\n\n".encode()
                dropped = 0
            start = cursors.get(sid, eid - 1 if eid is not None else None)
            if start is None or (eid is not None and eid <= start):
                continue
            for ev in await events.read_since(store, service, sid, start, BATCH):
                cursors[sid] = ev.id
                yield sse(ev, f"{sid}:{ev.id}")
    finally:
        _ENDERS.discard(end)
        await hub.untap(service, tap)


# --- webhooks and connections ---------------------------------------------------------------------


async def webhook_status(request: Request) -> Response:
    c = await context(request)
    found = await webhooks.status(c.store, c.service)
    q = found[0] if found else None
    dead = await webhooks.failed(c.store, c.service, count=200)
    return JSONResponse(
        {
            "service_sid": c.service,
            "url": q.url if q else None,
            "pending": q.pending if q else 0,
            "oldest_age_s": q.oldest_age_s if q else None,
            "failing_since": q.failing_since if q else None,
            "dead_letter_count": q.dead_letters if q else len(dead),
            "dead_letters": [
                {
                    "id": d.id,
                    "url": d.url,
                    "error": d.error,
                    "attempts": d.attempts,
                    "event": event_json(d.event),
                }
                for d in dead
            ],
        }
    )


async def webhook_replay(request: Request) -> Response:
    c = await context(request)
    form = await request.form()
    wanted = [str(v) for v in form.getlist("Id")]
    n = await webhooks.replay(c.store, c.service, wanted or None)
    return JSONResponse({"replayed": n})


async def connections(request: Request) -> Response:
    c = await context(request)
    gateway: _Gateway = request.app.state.gateway
    per: dict[str, int] = {}
    for s in list(gateway.sessions):
        if s.caller.service_sid == c.service:
            per[s.caller.identity] = per.get(s.caller.identity, 0) + 1
    return JSONResponse(
        {
            "service_sid": c.service,
            "connections": sum(per.values()),
            "identities": dict(sorted(per.items())),
            "pid": os.getpid(),
            "workers": request.app.state.settings.workers,
            "scope": "this worker process" if request.app.state.settings.workers > 1 else "this server",
        }
    )
