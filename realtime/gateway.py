"""The twilsock endpoint ``/v3/wsconnect``: authenticate (twilsock ``init``), then frames to the session.

Framing is in twilsock.py, the WebSocket itself in websocket.py (a bare asyncio Protocol: no task
per connection), the tunnelled API in cds.py, per-connection state in session.py, fan-out in
hub.py. Limits: connections per process (an ``init`` beyond it is answered 429 with a
``backoff_policy``, so the SDK retries later), frame size (a larger twilsock frame ends the
connection with ``close`` 406; data over 16 KiB is a TOO_LARGE answer from cds.py), subscriptions
per connection (TOO_MANY_SUBSCRIPTIONS, session.py), and tunnelled requests in flight per
connection (SYNC_WS_MAX_INFLIGHT: at the limit the connection stops reading, so TCP pushes back on
the client; nothing is refused, see session.py). Heartbeats are WebSocket pings (websocket.py, every
SYNC_WS_PING_S).

Acknowledgements: the SDK answers every notification with a twilsock ``reply`` carrying its id.
They need no answer and change nothing, and there is one per delivery, so they are recognised from
the header's first bytes (``is_ack``) and dropped without decoding JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from redis.exceptions import RedisError

from storage import Store, StoreError, accounts, keys, reachability
from storage.errors import StoreUnavailableError
from storage.wire import errors
from storage.wire.errors import TwilioError

from . import cds, retries, twilsock
from .broker import RedisBroker
from .cluster_broker import ClusterBroker
from .hub import Hub
from .session import Limits, Session
from .tokens import Grant, invalid, verify, verify_cached
from .websocket import ServerConnection

log = logging.getLogger("sync.realtime")
CloseWith = Callable[[int, str], None]
PATH = "/v3/wsconnect"


@dataclass(frozen=True, kw_only=True)
class GatewayConfig:
    """Knobs without a default are settings (SYNC_WS_*, SYNC_PUBLIC_URL), whose defaults the app declares."""

    max_connections: int
    max_frame_bytes: int
    init_timeout_s: float = 10.0
    reconnect_backoff_ms: int = 1000
    drain_timeout_s: float = 2.0  # at shutdown, how long the sessions told to reconnect may take to end
    public_url: str | None
    limits: Limits


class Gateway:
    """Owns the hub and the broker of this process, and every open connection (the websocket.py
    ``Endpoint`` of ``/v3/wsconnect``)."""

    def __init__(self, store: Store, redis_url: str | None, config: GatewayConfig) -> None:
        self.store = store
        self.config = config
        self.hub = Hub(store)
        # the broker also carries cache invalidations (storage/invalidation.py): after a reconnect
        # (messages may have been lost) every cache is forgotten, as every feed is re-read
        invalidations = {keys.INVALIDATE: lambda _channel, data: store.invalidations.apply(data)}
        self.broker: RedisBroker | ClusterBroker | None = None
        if redis_url and store.cluster and store.sharded:
            self.broker = ClusterBroker(redis_url, self.hub.on_wake, self._reconnected, invalidations)
        elif redis_url:  # standalone, or a Cluster of Redis 6 (plain PUBLISH reaches every node)
            self.broker = RedisBroker(
                redis_url, self.hub.on_wake, self._reconnected, invalidations, sharded=store.sharded
            )
        self.hub.broker = self.broker
        self.connections: set[Connection] = set()
        self.sessions: set[Session] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._no_connections = asyncio.Event()
        self._no_connections.set()
        self._closing = False

    def _reconnected(self) -> None:
        self.store.invalidations.reset()
        self.hub.on_reconnect()

    async def start(self) -> None:
        if self.broker is not None:
            await self.broker.start()

    def connect(self, ws: ServerConnection) -> Connection:
        """A new WebSocket on ``/v3/wsconnect`` (websocket.py ``Endpoint``)."""
        conn = Connection(self, ws)
        self.connections.add(conn)
        self._no_connections.clear()
        return conn

    def backlog(self) -> tuple[int, int, int]:
        """(connections whose socket is backed up, bytes waiting in all their transports,
        connections behind on acknowledgements): the send queue of this process, for /metrics.
        Walks every connection: for a scrape, not a loop."""
        backed_up = buffered = behind = 0
        for conn in self.connections:
            ws, session = conn.ws, conn.session
            backed_up += ws.write_paused
            buffered += ws.buffered()
            behind += session is not None and session.behind
        return backed_up, buffered, behind

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        """A task the gateway keeps track of until it ends (close() waits for none of them: each is short)."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def ended(self, conn: Connection, session: Session | None) -> None:
        self.connections.discard(conn)
        if session is not None:
            self.sessions.discard(session)
        if not self.connections:
            self._no_connections.set()

    async def drain(self) -> None:
        """Shutdown, first step: refuse new connections (``init`` answered 429 with a backoff), tell
        every connected client to reconnect (twilsock ``close`` 308 with a ``backoff_policy``, so the
        SDK reconnects, to another process or to this server once restarted, and resumes by replay)
        and close its WebSocket; wait up to ``drain_timeout_s`` for every connection to end.

        It runs when the server is signalled (app/main.py), before uvicorn's own shutdown, which
        would close the WebSockets with 1012 (websocket.py ``shutdown``). Idempotent."""
        self._closing = True
        for conn in list(self.connections):
            conn.end(308, "Server shutting down")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._no_connections.wait(), self.config.drain_timeout_s)

    async def close(self) -> None:
        """Stop: drain (if the server was not signalled, e.g. in tests), then close the broker."""
        await self.drain()
        for conn in list(self.connections):  # only those that did not end within the drain
            conn.ws.close()
            conn.on_close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.broker is not None:
            await self.broker.close()

    def backoff(self) -> dict[str, Any]:
        ms = self.config.reconnect_backoff_ms
        return {"backoff_policy": {"reconnect_min_ms": ms, "reconnect_max_ms": ms * 5}}

    def base(self, ws: ServerConnection) -> str:
        """The base of the URLs in this connection's events: SYNC_PUBLIC_URL, or its own Host."""
        if self.config.public_url:
            return self.config.public_url.rstrip("/")
        scheme = "https" if ws.scheme == "wss" else "http"
        return f"{scheme}://{ws.host or 'localhost'}"

    async def _reach(self, session: Session, connected: bool) -> None:
        """Record the endpoint's connect/disconnect for the reachability webhooks (best effort)."""
        c = session.caller
        try:
            await reachability.record_endpoint(c.store, c.service_sid, c.identity, c.endpoint, connected)
        except StoreUnavailableError:  # an outage: Store.health logged it once (not one line per socket)
            pass
        except Exception:  # never fail a connection over a webhook record
            log.warning("could not record reachability of %s", c.endpoint, exc_info=True)


class Connection:
    """The gateway's side of one WebSocket (websocket.py ``Handler``): the twilsock ``init``, then
    every frame to its session."""

    __slots__ = ("_init", "_timer", "ended", "gateway", "reachable", "session", "ws")

    def __init__(self, gateway: Gateway, ws: ServerConnection) -> None:
        self.gateway = gateway
        self.ws = ws
        self.session: Session | None = None
        self.ended = False
        self.reachable = False  # connect recorded for the reachability webhooks (so is the disconnect)
        self._init: asyncio.Task[None] | None = None
        timeout = gateway.config.init_timeout_s
        self._timer: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(timeout, self._no_init)

    # -- websocket.Handler --------------------------------------------------------------------

    def on_message(self, data: bytes) -> None:
        session = self.session
        if session is None:
            if self._init is None and not self.ended:
                self._begin(data)
            return
        if is_ack(data):
            session.acked(data)
            return
        if len(data) > self.gateway.config.max_frame_bytes:
            self.end(406, f"Frame larger than {self.gateway.config.max_frame_bytes} bytes")
            return
        try:
            frame = twilsock.decode(data)
        except twilsock.ProtocolError as exc:
            self.end(406, f"Protocol error: {exc}")
            return
        method = frame.method
        if method == "message":
            session.spawn_request(self._message(session, frame))
        elif method == "update":
            session.spawn_request(self._update(session, frame))
        elif method == "close":
            self.end(200, "Closed by client")
        # "reply" (acknowledgements), "telemetry.v1" and unknown methods need no answer

    def on_drained(self) -> None:
        if self.session is not None:
            self.session.drained()

    def on_heartbeat(self) -> None:
        if self.session is not None:
            self.session.token_tick()

    def on_close(self) -> None:
        """The WebSocket is gone: end the session (its subscriptions leave the hub). Idempotent."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        session, self.session = self.session, None
        if session is None and self._init is not None and not self._init.done():
            self._init.cancel()  # still authenticating: nothing to keep
        self.ended = True
        self.gateway.ended(self, session)
        if session is not None:
            session.closed = True
            self.gateway.spawn(self._finish(session))

    async def _finish(self, session: Session) -> None:
        await session.close()
        if self._init is not None:  # its reachability record first, so "disconnected" comes last
            await asyncio.wait([self._init])
        if self.reachable:
            await self.gateway._reach(session, False)

    # -- ending --------------------------------------------------------------------------------

    def end(self, code: int, text: str) -> None:
        """End the connection: twilsock ``close`` ``code`` first (308 with a backoff: reconnect and
        resume; 410 token expired; 406 protocol error; 200: the client asked, nothing to say)."""
        if self.ended:
            return
        self.ended = True
        if self.session is not None:
            self.session.flush()  # a deferred reply still goes before the close
            self.session.closed = True  # nothing more is sent (Session.send)
        if code != 200:
            payload = self.gateway.backoff() if code == 308 else None
            self.ws.send(twilsock.close(code, text, payload))
        self.ws.close()

    def _no_init(self) -> None:
        self._timer = None
        if self.session is None and self._init is None:
            self.end(406, "Expected a twilsock init")

    # -- init ----------------------------------------------------------------------------------

    def _begin(self, data: bytes) -> None:
        """The first frame, which must be a twilsock ``init``. Answered at once when its token can
        be checked from this process's caches (tokens.verify_cached: the usual case when a crowd
        connects, one key, one Service); otherwise the connection reads nothing more until
        ``_start`` has checked it."""
        gateway = self.gateway
        try:
            first = twilsock.decode(data)
        except twilsock.ProtocolError:
            first = None
        if first is None or first.method != "init":
            self.end(406, "Expected a twilsock init")
            return
        if gateway._closing or len(gateway.sessions) >= gateway.config.max_connections:
            self._refuse(first.id, errors.TOO_MANY_REQUESTS("Too many connections"), gateway.backoff())
            return
        try:
            grant = verify_cached(gateway.store, _token(first))
        except TwilioError as exc:
            self._refuse(first.id, exc)
            return
        store_id = accounts.store_id_cached(gateway.store)
        if grant is not None and store_id is not None:
            self._open(first, grant, store_id)
            return
        self.ws.pause_reading()  # nothing else is read before the init is answered
        self._init = gateway.spawn(self._start(first))

    async def _start(self, first: twilsock.Frame) -> None:
        store = self.gateway.store
        try:
            grant = await verify(store, _token(first))
            store_id = await accounts.store_id(store)
        except TwilioError as exc:
            self._refuse(first.id, exc)
            return
        except StoreUnavailableError:  # an outage: Store.health logged it once
            self._refuse(first.id, errors.UNAVAILABLE())
            return
        except (StoreError, RedisError, OSError):
            log.warning("init failed: the store is unavailable", exc_info=True)
            self._refuse(first.id, errors.UNAVAILABLE())
            return
        if self.ended:
            return
        self._open(first, grant, store_id)
        self.ws.resume_reading()

    def _open(self, first: twilsock.Frame, grant: Grant, store_id: str) -> None:
        """The token is good: the session starts, and the ``init`` is answered."""
        gateway, ws = self.gateway, self.ws
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        endpoint = grant.endpoint_id or f"EP{secrets.token_hex(16)}"
        caller = cds.Caller(
            gateway.store, grant.service_sid, grant.identity, endpoint, gateway.base(ws), grant.acl_enabled
        )
        session = Session(gateway.hub, caller, grant, ws, gateway.config.limits, self.end)
        self.session = session
        gateway.sessions.add(session)
        session.send(
            twilsock.reply(
                first.id,
                payload={},
                continuation_token=secrets.token_hex(16),
                capabilities=["client_update"],
                offline_storage=_offline_storage(store_id, grant),
            )
        )
        session.start_token_timer(time.time)
        if grant.reachability:  # a script per connect and disconnect only where webhooks need them
            self.reachable = True
            self._init = gateway.spawn(gateway._reach(session, True))  # _finish waits for it

    def _refuse(self, msg_id: str, error: TwilioError, payload: Any = None) -> None:
        """Answer the ``init`` with ``error`` and end the connection."""
        self.ws.send(_error_reply(msg_id, error, payload))
        self.end(200, "")

    # -- frames --------------------------------------------------------------------------------

    async def _message(self, session: Session, frame: twilsock.Frame) -> None:
        then: Callable[[], Awaitable[None]] | None = None
        method = path = "?"
        try:
            method, path, params, headers = _tunnelled(frame.header.get("http_request"))
            body = frame.body() if method in ("POST", "PUT") else None
            if path.rstrip("/") == "/v4/Subscriptions" and method == "POST":
                status, answer, then = session.subscriptions_request(body)
            else:
                status, answer = await retries.handle(session.caller, cds.Request(method, path, params, headers, body))
        except TwilioError as exc:  # a malformed http_request
            status, answer = exc.status, exc.body()
        except StoreUnavailableError:  # cds.handle answers store errors itself; an outage is logged once
            status, answer = 503, errors.UNAVAILABLE().body()
        except Exception:  # every request gets an answer, in Twilio's error shape
            log.exception("tunnelled %s %s failed", method, path)
            status, answer = 500, errors.INTERNAL().body()
        reply = twilsock.http_reply(frame.id, status, _REASONS.get(status, "Error"), answer)
        if then is None:
            session.send(reply)
            return
        session.defer(reply)  # it leaves with the work's first notification, in one write
        try:
            await then()  # after the answer, still holding this request's in-flight slot
        finally:
            session.flush()

    async def _update(self, session: Session, frame: twilsock.Frame) -> None:
        """``update``: a new token for this connection (same identity and Service). Always answered:
        a refused token with its Twilio error, an outage with 503/20503, anything else with 500; the
        connection stays open (its current token holds until it expires)."""
        try:
            # the Service read afresh: an update is rare (once per token lifetime), unlike a connect
            grant: Grant = await verify(self.gateway.store, _token(frame), fresh=True)
            if (grant.identity, grant.service_sid) != (session.grant.identity, session.grant.service_sid):
                raise invalid("identity or Service differs from the connection's")
        except TwilioError as exc:
            session.send(_error_reply(frame.id, exc))
            return
        except StoreUnavailableError:  # an outage: Store.health logged it once
            session.send(_error_reply(frame.id, errors.UNAVAILABLE()))
            return
        except Exception:
            log.exception("token update failed")
            session.send(_error_reply(frame.id, errors.INTERNAL()))
            return
        session.grant = grant
        session.start_token_timer(time.time)
        session.send(twilsock.reply(frame.id, payload={}))


def _tunnelled(request: Any) -> tuple[str, str, dict[str, str], dict[str, str]]:
    """(method, path, params, headers) of a ``message``'s ``http_request``; absent fields take the
    SDK's defaults, and one of the wrong shape is a 400 (every message gets an answer)."""
    if request is None:
        request = {}
    if not isinstance(request, dict):
        raise errors.INVALID_PARAMETER("http_request must be an object")
    params, headers = request.get("params") or {}, request.get("headers") or {}
    if not isinstance(params, dict) or not isinstance(headers, dict):
        raise errors.INVALID_PARAMETER("http_request params and headers must be objects")
    return (
        str(request.get("method") or "GET").upper(),
        str(request.get("path") or ""),
        {str(k): unquote(str(v)) for k, v in params.items()},
        {str(k): str(v) for k, v in headers.items()},
    )


# ``method`` is the first or the second header field in every client: {"method":"reply",…} or the
# SDK's own order {"id":"TM…","method":"reply",…} (a crafted id can only hide its own frame); the
# header's first 120 bytes are enough (an id of up to 95 characters), as is a length of 8 digits
_ACK = re.compile(rb'TWILSOCK V3\.0 [^\r\n]{0,8}\r\n\{(?:"id":"[^"]{0,95}",)?"method":"reply"')


def is_ack(data: bytes) -> bool:
    """A twilsock ``reply`` from the client (the SDK's acknowledgement of a notification), found
    without decoding JSON, in one regular-expression match: one per delivery when subscribers ack
    (a third of the cost of the same test in bytes methods, ~0.7 µs against 2.2 µs on this box)."""
    return _ACK.match(data) is not None


def _offline_storage(store_id: str, grant: Grant) -> dict[str, Any]:
    """The init reply's ``offline_storage``: twilsock hands ``[<product id>].storage_id`` to the SDK,
    which enables its session cache (browser ``sessionStorage``) and prefixes every cached entry
    with it. Stable for one account, Service and identity on one data store, and different on
    another store, so a browser's cache never outlives the data it copies."""
    scope = "\0".join((store_id, grant.account_sid, grant.service_sid, grant.identity))
    return {"data_sync": {"storage_id": hashlib.sha256(scope.encode()).hexdigest()[:32]}}


def _token(frame: twilsock.Frame) -> str:
    """The SDK sends ``init``/``update`` fields in the header itself (the payload is empty)."""
    body = frame.body()
    value = frame.header.get("token") or (body.get("token") if isinstance(body, dict) else None)
    return str(value or "")


def _error_reply(msg_id: str, error: TwilioError, payload: Any = None) -> bytes:
    """A twilsock reply refusing ``init``/``update`` with a Twilio error."""
    return twilsock.error_reply(
        msg_id, error.status, _REASONS.get(error.status, "Error"), error.code, error.message, payload
    )


_REASONS = {
    200: "OK",
    201: "Created",
    204: "No Content",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    412: "Precondition Failed",
    413: "Payload Too Large",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
