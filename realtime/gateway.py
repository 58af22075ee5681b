"""The WebSocket endpoint ``/v3/wsconnect``: accept, authenticate (twilsock ``init``), read loop.

I/O only: framing is in twilsock.py, the tunnelled API in cds.py, per-connection state in
session.py, fan-out in hub.py. Limits: connections per process (an ``init`` beyond it is answered
429 with a ``backoff_policy``, so the SDK retries later), frame size (a larger twilsock frame ends
the connection with ``close`` 406; data over 16 KiB is a TOO_LARGE answer from cds.py), and
subscriptions per connection (TOO_MANY_SUBSCRIPTIONS, session.py), and tunnelled requests in flight
per connection (SYNC_WS_MAX_INFLIGHT: at the limit the read loop stops reading, so TCP pushes back
on the client; nothing is refused, see session.py). Heartbeats are WebSocket pings (uvicorn's
``ws_ping_interval``/``ws_ping_timeout``, set from SYNC_WS_PING_S by the server command).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from redis.exceptions import RedisError
from starlette.websockets import WebSocket, WebSocketDisconnect

from storage import Store, StoreError, accounts, reachability, services
from storage.errors import StoreUnavailableError
from storage.wire import errors
from storage.wire.errors import TwilioError

from . import cds, twilsock
from .broker import RedisBroker
from .hub import Hub
from .session import Limits, Session
from .tokens import Grant, invalid, verify

log = logging.getLogger("sync.realtime")
CloseWith = Callable[[int, str], None]


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
    """Owns the hub and the broker of this process, and every open session."""

    def __init__(self, store: Store, redis_url: str | None, config: GatewayConfig) -> None:
        self.store = store
        self.config = config
        self.hub = Hub(store)
        self.broker = RedisBroker(redis_url, self.hub.on_wake, self.hub.on_reconnect) if redis_url else None
        self.hub.broker = self.broker
        self.sessions: set[Session] = set()
        self._sockets: dict[Session, WebSocket] = {}  # each session's WebSocket, for drain()
        self._no_sessions = asyncio.Event()
        self._no_sessions.set()
        self._closing = False

    async def start(self) -> None:
        if self.broker is not None:
            await self.broker.start()

    async def drain(self) -> None:
        """Shutdown, first step: refuse new connections (``init`` answered 429 with a backoff), tell
        every connected client to reconnect (twilsock ``close`` 308 with a ``backoff_policy``, so the
        SDK reconnects, to another process or to this server once restarted, and resumes by replay)
        and end its WebSocket (close 1000); wait up to ``drain_timeout_s`` for every session to end.

        It must run while the WebSockets are still open, i.e. before uvicorn's own shutdown closes
        them with 1012: app/main.py runs it when the server is signalled, then lets uvicorn go on.
        The close is sent from here, on the socket, rather than by interrupting each connection's
        task (``close_with``): a cancellation that lands just as a frame arrives can be lost there.
        Frames still queued for a client are dropped: it resumes by replay after reconnecting.
        Idempotent."""
        self._closing = True
        await asyncio.gather(*(self._reconnect(s, ws) for s, ws in list(self._sockets.items())))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._no_sessions.wait(), self.config.drain_timeout_s)

    async def _reconnect(self, session: Session, ws: WebSocket) -> None:
        session.closed = True  # nothing more is queued for it (Session.send)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.send_bytes(twilsock.close(308, "Server shutting down", self._backoff())), 1.0)
            await asyncio.wait_for(ws.close(), 1.0)  # its read loop sees the disconnect and ends the session

    async def close(self) -> None:
        """Stop: drain (if the server was not signalled, e.g. in tests), then close the broker."""
        await self.drain()
        for session in list(self.sessions):  # only those that did not end within the drain
            await session.close()
        if self.broker is not None:
            await self.broker.close()

    def _backoff(self) -> dict[str, Any]:
        ms = self.config.reconnect_backoff_ms
        return {"backoff_policy": {"reconnect_min_ms": ms, "reconnect_max_ms": ms * 5}}

    def _base(self, ws: WebSocket) -> str:
        if self.config.public_url:
            return self.config.public_url.rstrip("/")
        scheme = "https" if ws.url.scheme == "wss" else "http"
        return f"{scheme}://{ws.url.netloc}"

    async def endpoint(self, ws: WebSocket) -> None:
        """The ASGI WebSocket handler."""
        await ws.accept()
        try:
            await self._serve(ws)
        except WebSocketDisconnect:
            pass
        finally:
            # a stalled peer never drains its socket: don't wait for it (its heartbeat times it out)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 1.0)

    async def _receive(self, ws: WebSocket) -> bytes:
        msg = await ws.receive()
        if msg["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(msg.get("code", 1000))
        data = msg.get("bytes")
        if data is None:
            data = (msg.get("text") or "").encode()
        return bytes(data)

    async def _serve(self, ws: WebSocket) -> None:
        try:
            first = twilsock.decode(await asyncio.wait_for(self._receive(ws), self.config.init_timeout_s))
        except (TimeoutError, twilsock.ProtocolError):
            await ws.send_bytes(twilsock.close(406, "Expected a twilsock init"))
            return
        if first.method != "init":
            await ws.send_bytes(twilsock.close(406, "Expected a twilsock init"))
            return
        if self._closing or len(self.sessions) >= self.config.max_connections:
            await ws.send_bytes(
                _error_reply(first.id, errors.TOO_MANY_REQUESTS("Too many connections"), self._backoff())
            )
            return
        try:
            grant = await verify(self.store, _token(first))
            acl = (await services.get(self.store, grant.account_sid, grant.service_sid)).acl_enabled
            offline = _offline_storage(await accounts.store_id(self.store), grant)
        except TwilioError as exc:
            await ws.send_bytes(_error_reply(first.id, exc))
            return
        except StoreUnavailableError:  # an outage: Store.health logged it once
            await ws.send_bytes(_error_reply(first.id, errors.UNAVAILABLE()))
            return
        except (StoreError, RedisError, OSError):
            log.warning("init failed: the store is unavailable", exc_info=True)
            await ws.send_bytes(_error_reply(first.id, errors.UNAVAILABLE()))
            return
        endpoint = grant.endpoint_id or f"EP{uuid.uuid4().hex}"
        caller = cds.Caller(self.store, grant.service_sid, grant.identity, endpoint, self._base(ws), acl)
        me = asyncio.current_task()
        stopped: list[tuple[int, str]] = []

        def close_with(code: int, text: str) -> None:
            """End the connection (overflow, token expiry, protocol error): interrupts the read loop."""
            if not stopped:
                stopped.append((code, text))
                if me is not None and asyncio.current_task() is not me:
                    me.cancel()

        session = Session(self.hub, caller, grant, ws.send_bytes, self.config.limits, close_with)
        self.sessions.add(session)
        self._sockets[session] = ws
        self._no_sessions.clear()
        session.send(
            twilsock.reply(
                first.id,
                payload={},
                continuation_token=uuid.uuid4().hex,
                capabilities=["client_update"],
                offline_storage=offline,
            )
        )
        session.start_token_timer(time.time)
        await self._reach(session, True)
        writer = asyncio.create_task(session.writer())
        try:
            try:
                await self._read_loop(ws, session, close_with)  # in this task: one task less per connection
            except asyncio.CancelledError:
                if not stopped or me is None:
                    raise
                me.uncancel()
            if stopped and stopped[0][0] != 200:
                code, text = stopped[0]
                writer.cancel()
                payload = self._backoff() if code == 308 else None
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(ws.send_bytes(twilsock.close(code, text, payload)), 1.0)
        finally:
            writer.cancel()
            with contextlib.suppress(BaseException):
                await writer
            self.sessions.discard(session)
            self._sockets.pop(session, None)
            if not self.sessions:
                self._no_sessions.set()
            await session.close()
            await self._reach(session, False)

    async def _reach(self, session: Session, connected: bool) -> None:
        """Record the endpoint's connect/disconnect for the reachability webhooks (best effort)."""
        c = session.caller
        try:
            await reachability.record_endpoint(c.store, c.service_sid, c.identity, c.endpoint, connected)
        except StoreUnavailableError:  # an outage: Store.health logged it once (not one line per socket)
            pass
        except Exception:  # never fail a connection over a webhook record
            log.warning("could not record reachability of %s", c.endpoint, exc_info=True)

    async def _read_loop(self, ws: WebSocket, session: Session, close_with: CloseWith) -> None:
        while True:
            data = await self._receive(ws)
            if len(data) > self.config.max_frame_bytes:
                close_with(406, f"Frame larger than {self.config.max_frame_bytes} bytes")
                return
            try:
                frame = twilsock.decode(data)
            except twilsock.ProtocolError as exc:
                close_with(406, f"Protocol error: {exc}")
                return
            method = frame.method
            if method == "message":
                session.spawn_request(self._message(session, frame))
                await session.wait_for_room()  # back-pressure: read no more while at the limit
            elif method == "update":
                await self._update(session, frame)
            elif method == "close":
                close_with(200, "Closed by client")
                return
            # "reply" (acknowledgements), "telemetry.v1" and unknown methods need no answer

    async def _message(self, session: Session, frame: twilsock.Frame) -> None:
        request = frame.header.get("http_request") or {}
        path = str(request.get("path") or "")
        params = {str(k): unquote(str(v)) for k, v in (request.get("params") or {}).items()}
        headers = {str(k): str(v) for k, v in (request.get("headers") or {}).items()}
        method = str(request.get("method") or "GET").upper()
        body = frame.body() if method in ("POST", "PUT") else None
        then: Callable[[], Awaitable[None]] | None = None
        try:
            if path.rstrip("/") == "/v4/Subscriptions" and method == "POST":
                status, answer, then = session.subscriptions_request(body)
            else:
                status, answer = await cds.handle(session.caller, cds.Request(method, path, params, headers, body))
        except StoreUnavailableError:  # cds.handle answers store errors itself; an outage is logged once
            status, answer = 503, errors.UNAVAILABLE().body()
        except Exception:  # every request gets an answer, in Twilio's error shape
            log.exception("tunnelled %s %s failed", method, path)
            status, answer = 500, errors.INTERNAL().body()
        session.send(twilsock.http_reply(frame.id, status, _REASONS.get(status, "Error"), answer))
        if then is not None:
            await then()  # after the answer, still holding this request's in-flight slot

    async def _update(self, session: Session, frame: twilsock.Frame) -> None:
        """``update``: a new token for this connection (same identity and Service). Always answered:
        a refused token with its Twilio error, an outage with 503/20503, anything else with 500; the
        connection stays open (its current token holds until it expires)."""
        try:
            grant: Grant = await verify(self.store, _token(frame))
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
