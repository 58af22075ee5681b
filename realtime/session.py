"""One connection: its grant, its subscriptions (with their cursors) and its bounded send queue.

Sending and slow consumers: frames are written to the connection's transport at once, in order
(fan-out never waits for one client; a notification framed once goes out as the same bytes to every
subscriber, websocket.py). Once the kernel stops taking a connection's bytes, the transport buffers
them; a connection with more than ``queue_frames`` frames written since then, or ``queue_bytes``
bytes buffered, is a slow or stalled consumer and is closed with twilsock ``close`` 308 (reconnect,
with a backoff). The SDK then reconnects and re-establishes every subscription with the last event
id it saw, and the server replays what it missed from the event logs: overflow costs a resync, never
an event. A Document is conflated meanwhile: while a connection's transport is backed up, only the
latest notification of each of its Documents is kept (a Document's state is all a client needs), and
it goes out as soon as the transport drains, so a slow reader of a busy Document falls behind by
one state, not by a backlog.

The socket is not the only place a backlog can grow: twilio-sync (Node's ``ws``, a browser) reads
every frame off its socket as it arrives and queues it for the SDK, so a client too slow for its
events never backs the socket up, and its Documents' states would queue in its own memory, ever
later. But the SDK acknowledges each notification as it gets through it, so a client that has
``ack_window`` (SYNC_WS_ACK_WINDOW) or more object events unacknowledged is treated as backed up
too: its Documents are conflated, and the latest state goes out as acknowledgements come back. Its
Lists, Maps and Streams are not held (each event counts; the socket's own limit still applies). A
client that has never acknowledged anything (one that does not speak acknowledgements) is left to
the socket's back-pressure alone.

Tunnelled requests in flight: each ``message`` frame runs as its own task (the SDK sends requests
concurrently and matches replies by id), at most ``max_inflight`` at a time per connection. At the
limit the connection stops reading from its socket until one finishes, and TCP pushes back on the
client, whose sends simply wait. Nothing is refused, so no SDK retry or backoff logic is involved
(twilsock has none for a tunnelled request: it would surface as an error to the application), and
memory per connection stays bounded. Heartbeats are not starved: a request finishes in
milliseconds, far within the ping timeout. A ``/v4/Subscriptions`` request holds its slot until its
establish/cancel work is done, so a flood of those is bounded too; its answer leaves in one write
with its first notification (``defer``).

Events caused by this connection itself (same endpoint id) are not echoed back: the SDK already
applied its own writes from the replies, and it de-duplicates neither stream messages nor removals.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from storage import Kind, NotFoundError, StoreError, objects, services
from storage.wire import errors
from storage.wire.errors import TwilioError

from . import cds, replay, twilsock
from .cds import Caller
from .hub import Hub, Offer
from .tokens import Grant
from .websocket import Message, ServerConnection

log = logging.getLogger("sync.realtime.session")


@dataclass(frozen=True, kw_only=True)
class Limits:
    """Knobs without a default are settings (SYNC_WS_*), whose defaults the app declares."""

    queue_frames: int
    queue_bytes: int = 8 * 1024 * 1024
    ack_window: int
    max_inflight: int
    subscriptions: int
    token_warn_s: int


class Subscription:
    """One object watched by one session (the hub's ``Subscriber``); ``cursor`` = the last event id
    delivered (or skipped). Frames go to the session's send queue, except the session's own events."""

    __slots__ = ("active", "base", "cursor", "kind", "service_sid", "session", "sid")

    def __init__(self, session: Session, kind: Kind, sid: str, cursor: int) -> None:
        self.session = session
        self.service_sid = session.caller.service_sid
        self.base = session.base
        self.kind = kind
        self.sid = sid
        self.cursor = cursor
        self.active = False

    def offer(self, eid: int, frame: Message | None, origin: str | None, removal: bool, replay: bool = False) -> None:
        """Deliver event ``eid`` unless already past it; a removal ends the subscription."""
        if eid <= self.cursor or not (self.active or replay):
            return
        self.cursor = eid
        if frame is not None:
            session = self.session
            if origin != session.endpoint:
                session.send_event(self, frame)
        if removal:
            self.session.forget(self)

    def offer_many(self, offers: list[Offer]) -> None:
        """Deliver several events in one write (the hub's batch for this object)."""
        due: list[Message] = []
        endpoint = self.session.endpoint
        for eid, frame, origin, removal in offers:
            if eid <= self.cursor or not self.active:
                continue
            self.cursor = eid
            if frame is not None and origin != endpoint:
                due.append(frame)
            if removal:
                self._send(due)
                self.session.forget(self)
                return
        self._send(due)

    def _send(self, due: list[Message]) -> None:
        if not due:
            return
        session = self.session
        if self.kind is Kind.DOCUMENT and (session.ws.write_paused or session.behind):
            session.hold(self, due[-1], len(due) - 1)  # conflated: only the latest state waits (module docstring)
        else:
            session.deliver(due)

    async def recheck(self, identities: frozenset[str] | None) -> None:
        if identities is None or self.session.caller.identity in identities:
            await self.session.recheck(self, identities is None)


class Session:
    """State of one twilsock connection. The gateway owns the socket; this owns everything else.

    Slots, and the containers an idle connection does not use made on first use: a crowd of
    connections is mostly such long-lived objects, each one walked by every young collection of the
    garbage collector until it is old (a tenth of a connect's CPU went to those collections)."""

    __slots__ = (
        "_deferred",
        "_held",
        "_leaving",
        "_now",
        "_on_close",
        "_sub_lock",
        "_tasks",
        "_timer",
        "acks",
        "caller",
        "closed",
        "endpoint",
        "grant",
        "hub",
        "inflight",
        "last_sent",
        "limits",
        "subs",
        "unacked",
        "window",
        "ws",
    )

    def __init__(
        self,
        hub: Hub,
        caller: Caller,
        grant: Grant,
        ws: ServerConnection,
        limits: Limits,
        on_close: Callable[[int, str], None],
    ) -> None:
        self.hub = hub
        self.caller = caller
        self.endpoint = caller.endpoint  # fixed for the connection; read for every delivery (no echo)
        self.grant = grant
        self.limits = limits
        self.ws = ws
        self.subs: dict[str, Subscription] = {}
        self._leaving: set[Subscription] | None = None  # subscriptions leaving the hub (``forget``)
        self._held: dict[Subscription, Message] = {}  # conflated Documents while the socket is backed up
        self._deferred: list[Message] | None = None  # replies that leave with the next frame (``defer``)
        self._on_close = on_close
        self._sub_lock: asyncio.Lock | None = None  # made on the first subscription request
        self._tasks: set[asyncio.Future[Any]] | None = None  # tasks running now (``spawn``)
        self._timer: asyncio.TimerHandle | None = None  # the token's warning or expiry (start_token_timer)
        self._now: Callable[[], float] = time.time  # the clock of the token timer
        self.inflight = 0  # tunnelled requests running now (at most limits.max_inflight)
        self.unacked = 0  # object events sent and not acknowledged yet (module docstring: slow consumers)
        self.acks = False  # the client acknowledges notifications (the SDK does; until then, no window)
        self.last_sent: Message | None = None  # the last object event counted in ``unacked``
        self.window = limits.ack_window or sys.maxsize  # 0: no window
        self.closed = False

    @property
    def base(self) -> str:
        return self.caller.base

    # -- sending --------------------------------------------------------------------------------

    def send(self, frame: bytes) -> None:
        """Send one twilsock frame now; never blocks. Overflow closes the connection (see module docstring)."""
        self.push(Message(frame))

    def defer(self, frame: bytes) -> None:
        """Send ``frame`` in one write with the next frame, or at ``flush`` at the latest: the answer
        to a subscription request leaves with its first notification (a system call and a TCP
        segment fewer per subscribe; the client sees the same frames in the same order)."""
        if self._deferred is None:
            self._deferred = []
        self._deferred.append(Message(frame))

    def flush(self) -> None:
        """Send what ``defer`` holds now."""
        if self._deferred:
            self.push_many([])

    def push(self, message: Message) -> None:
        """Send a notification framed once for every subscriber."""
        if self._deferred:
            self.push_many([message])
        elif not self.closed:
            self.ws.send_message(message)
            if self.ws.write_paused:
                self._check_backlog()

    def deliver(self, events: list[Message]) -> None:
        """Send object events (not replies: the client acknowledges these), counted against the
        acknowledgement window once the client acknowledges."""
        if self.acks:
            self.unacked += len(events)
            self.last_sent = events[-1]
        if len(events) == 1:
            self.push(events[0])
        else:
            self.push_many(events)

    def send_event(self, sub: Subscription, message: Message) -> None:
        """One object event of ``sub``: held if it is a Document and the connection is backed up
        (``hold``), else sent and counted as ``deliver`` does. What ``Subscription._send`` and
        ``deliver`` do for a lone frame, without their lists: a fan-out runs it once per subscriber."""
        if sub.kind is Kind.DOCUMENT and (self.ws.write_paused or self.behind):
            self.hold(sub, message)
            return
        if self.acks:
            self.unacked += 1
            self.last_sent = message
        self.push(message)

    def push_many(self, messages: list[Message]) -> None:
        """Send several notifications in one write."""
        if self._deferred:
            messages, self._deferred = [*self._deferred, *messages], None
        if not self.closed:
            self.ws.send_many(messages)
            if self.ws.write_paused:
                self._check_backlog()

    def hold(self, sub: Subscription, message: Message, dropped: int = 0) -> None:
        """Keep only the latest notification of a Document until the socket drains (``drained``);
        ``dropped``: older ones of the same batch that never went out (counted as conflated too)."""
        if not self.closed:
            self.hub.stats.conflated += dropped + (sub in self._held)  # each older frame dropped
            self._held[sub] = message

    @property
    def behind(self) -> bool:
        """The client has ``ack_window`` or more object events unacknowledged: it reads them off its
        socket faster than it gets through them (module docstring)."""
        return self.unacked >= self.window  # counted only once the client acknowledges (``acks``)

    def acked(self, ack: bytes) -> None:
        """The client acknowledged a notification (``ack``, its twilsock reply): once it is no longer
        behind, the conflated Documents go out. A behind client that acknowledges the last event
        counted has none outstanding, whatever the count says (it may have skipped acknowledging
        some), so a count that drifted cannot hold its Documents back for good."""
        self.acks = True
        if self.unacked > 0:
            self.unacked -= 1
        last = self.last_sent
        if self.behind and last is not None and twilsock.header_id(ack) == twilsock.header_id(last.payload):
            self.unacked = 0
        if self._held and not self.behind:
            self.drained()

    def drained(self) -> None:
        """The transport has room again (or the client caught up on acknowledgements): send the
        conflated Documents, unless the other still holds them back."""
        if not self._held or self.ws.write_paused or self.behind:
            return
        held, self._held = self._held, {}
        self.deliver(list(held.values()))

    def _check_backlog(self) -> None:
        ws = self.ws
        if ws.paused_frames <= self.limits.queue_frames and ws.buffered() <= self.limits.queue_bytes:
            return
        log.warning("endpoint %s is too slow (%d bytes buffered): closing it", self.endpoint, ws.buffered())
        self.closed = True  # nothing more is sent: the client resumes by replay after reconnecting
        self.hub.stats.overflow_closes += 1
        self._held.clear()
        self._on_close(308, "Slow consumer: reconnect and resume")

    def spawn(self, coro: Awaitable[Any]) -> None:
        task: asyncio.Future[Any] = asyncio.ensure_future(coro)
        self._track(task)
        task.add_done_callback(self._untrack)

    def _track(self, task: asyncio.Future[Any]) -> None:
        if self._tasks is None:
            self._tasks = set()
        self._tasks.add(task)

    def _untrack(self, task: asyncio.Future[Any]) -> None:
        tasks = self._tasks
        if tasks is not None:
            tasks.discard(task)
            if not tasks:
                self._tasks = None

    # -- tunnelled requests (bounded, see module docstring) --------------------------------------

    def spawn_request(self, coro: Awaitable[Any]) -> None:
        """Run one tunnelled request as a task; its slot is freed when it ends, however it ends. At
        the limit the connection stops reading (back-pressure, not refusal: module docstring)."""
        self.inflight += 1
        task: asyncio.Future[Any] = asyncio.ensure_future(coro)
        self._track(task)
        task.add_done_callback(self._request_done)
        if self.inflight >= self.limits.max_inflight:
            self.ws.pause_reading()

    def _request_done(self, task: asyncio.Future[Any]) -> None:
        self._untrack(task)
        self.inflight -= 1
        if self.inflight < self.limits.max_inflight and not self.closed:
            self.ws.resume_reading()

    # -- token ----------------------------------------------------------------------------------

    def start_token_timer(self, now: Callable[[], float]) -> None:
        """(Re)arm the expiry timers for the current grant (after init and after each ``update``):
        ``token_about_to_expire`` ``token_warn_s`` before expiry, close 410 at expiry.

        A timer handle holds five objects the garbage collector walks (a crowd connecting is
        mostly such long-lived objects, and each young collection scans them all), so an idle
        connection keeps none for its token until the warning is near: the WebSocket's heartbeat
        (``token_tick``, every ping interval) arms it once the warning is due within two beats.
        Without a heartbeat (pings off) it is armed at once."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._now = now
        self.token_tick()

    def token_tick(self) -> None:
        """Arm the warning's timer if it is due before the heartbeat after next (or there is none)."""
        if self._timer is not None or self.closed:
            return
        warn_in = max(0.0, self.grant.expires - self.limits.token_warn_s - self._now())
        beat = self.ws.heartbeat_s
        if beat is None or warn_in <= 2 * beat:
            self._timer = asyncio.get_running_loop().call_later(warn_in, self._token_warning)

    def _token_warning(self) -> None:
        self.send(twilsock.client_update("token_about_to_expire"))
        delay = max(0.0, self.grant.expires - self._now())
        self._timer = asyncio.get_running_loop().call_later(delay, self._token_expired)

    def _token_expired(self) -> None:
        self._on_close(410, "Token expired")

    # -- subscriptions --------------------------------------------------------------------------

    def subscriptions_request(self, body: Any) -> tuple[int, Any, Callable[[], Awaitable[None]] | None]:
        """``POST /v4/Subscriptions``: (status, answer, then). The caller sends the answer at once,
        then awaits ``then()`` in the same request task (so it keeps its in-flight slot): the
        establish/cancel work, in order, each confirmed by a notification carrying the request's
        ``correlation_id``."""
        if not isinstance(body, dict) or body.get("action") not in ("establish", "cancel"):
            return 400, errors.INVALID_PARAMETER("action must be establish or cancel").body(), None
        requests = body.get("requests")
        if not isinstance(requests, list) or not all(isinstance(r, dict) for r in requests):
            return 400, errors.INVALID_PARAMETER("requests must be a list of objects").body(), None
        action, correlation_id = str(body["action"]), body.get("correlation_id")
        answer = {"estimated_delivery_in_ms": 5000, "max_batch_size": 100, "ttl_in_s": -1}
        return 200, answer, lambda: self._apply(action, correlation_id, requests)

    async def _apply(self, action: str, correlation_id: Any, requests: list[dict[str, Any]]) -> None:
        if self._sub_lock is None:
            self._sub_lock = asyncio.Lock()
        async with self._sub_lock:
            for r in requests:
                if self.closed:
                    return
                sid, kind = str(r.get("object_sid") or ""), str(r.get("object_type") or "")
                try:
                    if action == "cancel":
                        await self.cancel(sid)
                        self._notify("subscription_canceled", correlation_id, sid, kind)
                    else:
                        await self.establish(sid, kind, r.get("last_event_id"), correlation_id)
                except TwilioError as exc:
                    self._notify("subscription_failed", correlation_id, sid, kind, error=exc)
                except StoreError as exc:
                    error = cds.store_error(exc, sid)
                    self._notify("subscription_failed", correlation_id, sid, kind, error=error)
                except Exception:  # e.g. Redis down while subscribing: fail this one, the SDK retries
                    log.exception("subscription to %s failed", sid)
                    await self.cancel(sid)
                    error = errors.UNAVAILABLE()
                    self._notify("subscription_failed", correlation_id, sid, kind, error=error)

    def _notify(
        self, event_type: str, correlation_id: Any, sid: str, kind: str, error: TwilioError | None = None, **extra: Any
    ) -> None:
        ev: dict[str, Any] = {"object_sid": sid, "object_type": kind, **extra}
        if error is not None:
            ev["error"] = {"status": error.status, "code": error.code, "message": error.message}
        body = {"event_type": event_type, "correlation_id": correlation_id, "events": [ev]}
        self.send(twilsock.notification(body))

    async def establish(self, sid: str, object_type: str, last_event_id: Any, correlation_id: Any) -> None:
        kind = Kind.parse(object_type)
        if kind is None:
            raise errors.INVALID_PARAMETER(f"Unknown object_type {object_type!r}")
        if sid not in self.subs and len(self.subs) >= self.limits.subscriptions:
            raise errors.TOO_MANY_SUBSCRIPTIONS(str(self.limits.subscriptions))
        try:
            sid, latest = await objects.last_event(self.caller.store, self.caller.service_sid, kind, sid)
        except NotFoundError:
            raise cds.store_error(NotFoundError(kind, sid), sid) from None
        if not await cds.may(self.caller, kind, sid, "read"):
            raise cds.denied("read")
        old = self.subs.pop(sid, None)
        if old is not None:
            await self.hub.leave(old)
        cursor = last_event_id if isinstance(last_event_id, int) and last_event_id >= 0 else latest
        sub = Subscription(self, kind, sid, cursor)
        self.subs[sid] = sub
        await self.hub.join(sub)
        if not await replay.catch_up(self.hub, sub, kind, latest=latest):
            return  # removed while the client was away: the removal event was its answer
        if self.subs.get(sid) is sub:
            self._notify(
                "subscription_established",
                correlation_id,
                sid,
                kind,
                replay_status="completed",
                last_event_id=sub.cursor,
            )

    async def recheck(self, sub: Subscription, service: bool) -> None:
        """The hub's ACL wake-up (hub.py): may this identity still read ``sub``'s object? If not, end
        the subscription the way a refused establish ends (``subscription_failed`` 403/54007, with no
        correlation id: the SDK matches it to its established subscription). ``service``: read the
        Service's ``acl_enabled`` again first; tunnelled requests follow the new value too."""
        if self.closed or self.subs.get(sub.sid) is not sub:
            return
        if service:
            acl = self.hub.acl_enabled.get(self.caller.service_sid)
            if acl is None:  # a wake-up without the value (an older server): read the Service itself
                svc = await services.get(self.caller.store, self.grant.account_sid, self.caller.service_sid)
                acl = svc.acl_enabled
            if acl != self.caller.acl:
                self.caller = replace(self.caller, acl=acl)
        if await cds.may(self.caller, sub.kind, sub.sid, "read") or self.subs.get(sub.sid) is not sub:
            return
        self.forget(sub)
        self._notify("subscription_failed", None, sub.sid, sub.kind, error=cds.denied("read"))

    async def cancel(self, sid: str) -> None:
        sub = self.subs.pop(sid, None)
        if sub is not None:
            await self.hub.leave(sub)

    def forget(self, sub: Subscription) -> None:
        """The object is gone: stop watching it (from a synchronous delivery path)."""
        if self.subs.get(sub.sid) is sub:
            del self.subs[sub.sid]
        sub.active = False
        if self._leaving is None:
            self._leaving = set()
        self._leaving.add(sub)
        self.spawn(self._leave(sub))

    async def _leave(self, sub: Subscription) -> None:
        await self.hub.leave(sub)
        if self._leaving is not None:
            self._leaving.discard(sub)

    async def close(self) -> None:
        """Drop every subscription and background task; idempotent."""
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
        for task in list(self._tasks or ()):
            task.cancel()
        for sub in [*self.subs.values(), *(self._leaving or ())]:  # a cancelled _leave must not leak a feed
            with contextlib.suppress(Exception):
                await self.hub.leave(sub)
        self.subs.clear()
        self._leaving = None
        self._held.clear()
