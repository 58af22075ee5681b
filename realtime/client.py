"""An asyncio client speaking the same protocol as twilio-sync (twilsock + the tunnelled CDS API),
for backends and tests: open objects, subscribe, receive events, write.

    async with await SyncClient.connect("ws://127.0.0.1:8080/v3/wsconnect", token) as c:
        doc = await c.open("document", "settings")
        await c.subscribe(doc["sid"], "document", doc["last_event_id"])
        await c.request("POST", doc["url"], {"data": {"theme": "dark"}})
        event = await c.next_event()          # {"event_type": "document_updated", "event": {...}}
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlsplit

from websockets.asyncio.client import ClientConnection, connect

from . import twilsock

REPLY_WAIT_S = 30.0


class SyncClientError(Exception):
    """A refused request: ``status`` (HTTP or twilsock) and Twilio ``code``."""

    def __init__(self, status: int, code: int | None, message: str) -> None:
        super().__init__(f"{status}/{code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class SyncClient:
    """One connection. Events for subscribed objects queue in ``events``; ``control`` gets
    ``client_update`` and ``close`` frames from the server (as headers)."""

    def __init__(self, ws: ClientConnection, cds_base: str) -> None:
        self.ws = ws
        self.cds_base = cds_base.rstrip("/")
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.control: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._replies: dict[str, asyncio.Future[twilsock.Frame]] = {}
        self._subscriptions: dict[Any, asyncio.Future[dict[str, Any]]] = {}
        self._reader: asyncio.Task[None] | None = None
        self.init_reply: dict[str, Any] = {}

    @classmethod
    async def connect(
        cls, url: str, token: str, cds_base: str | None = None, headers: dict[str, str] | None = None
    ) -> SyncClient:
        """Open the socket (with extra HTTP ``headers``) and send ``init``; raise SyncClientError if
        the token is refused."""
        parts = urlsplit(url)
        base = cds_base or f"{'https' if parts.scheme == 'wss' else 'http'}://{parts.netloc}"
        ws = await connect(url, max_size=2**24, additional_headers=headers)
        client = cls(ws, base)
        client._reader = asyncio.create_task(client._read())
        header = {
            "method": "init",
            "id": twilsock.new_id(),
            "token": token,
            "continuation_token": None,
            "capabilities": ["client_update"],
            "metadata": {"type": "sync", "sdk": "python"},
            "registrations": [],
        }
        try:
            reply = await client._send(header)
        except BaseException:
            await client.close()
            raise
        client.init_reply = reply.header
        return client

    async def __aenter__(self) -> SyncClient:
        return self

    async def __aexit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(BaseException):
                await self._reader

    async def update_token(self, token: str) -> None:
        await self._send({"method": "update", "id": twilsock.new_id(), "token": token})

    async def _send(self, header: dict[str, Any], payload: Any = None) -> twilsock.Frame:
        fut: asyncio.Future[twilsock.Frame] = asyncio.get_running_loop().create_future()
        self._replies[header["id"]] = fut
        try:
            await self.ws.send(twilsock.encode(header, payload))
        except BaseException:  # never sent: nobody will await the reply (nor its "connection closed")
            self._replies.pop(header["id"], None)
            if fut.done() and not fut.cancelled():
                fut.exception()
            raise
        frame = await asyncio.wait_for(fut, REPLY_WAIT_S)
        status = frame.header.get("status") or {}
        if status.get("code") != 200:
            raise SyncClientError(int(status.get("code", 0)), status.get("errorCode"), str(status.get("description")))
        return frame

    async def _read(self) -> None:
        try:
            async for data in self.ws:
                frame = twilsock.decode(data if isinstance(data, bytes) else data.encode())
                method = frame.method
                if method == "reply":
                    fut = self._replies.pop(frame.id, None)
                    if fut is not None and not fut.done():
                        fut.set_result(frame)
                elif method == "notification":
                    self._notification(frame.body())
                elif method in ("client_update", "close"):
                    await self.control.put(frame.header)
        except Exception:  # connection gone, by error or not: fail whoever waits (below)
            pass
        finally:
            for fut in self._replies.values():
                if not fut.done():
                    fut.set_exception(SyncClientError(0, None, "connection closed"))
            await self.control.put({"method": "disconnected"})

    def _notification(self, body: Any) -> None:
        if not isinstance(body, dict):
            return
        if str(body.get("event_type", "")).startswith("subscription_"):
            for ev in body.get("events", []):
                fut = self._subscriptions.pop((body.get("correlation_id"), ev.get("object_sid")), None)
                if fut is not None and not fut.done():
                    fut.set_result({"event_type": body["event_type"], **ev})
            return
        self.events.put_nowait(body)

    # -- the tunnelled CDS API --------------------------------------------------------------------

    def url(self, path: str) -> str:
        return path if path.startswith("http") else self.cds_base + path

    async def request(
        self,
        method: str,
        url: str,
        body: Any = None,
        params: dict[str, Any] | None = None,
        if_match: str | None = None,
        request_id: str | None = None,
    ) -> tuple[int, Any]:
        """One tunnelled HTTP request: (HTTP status, JSON body), whatever the status. ``request_id``:
        its Twilio-Request-Id, which twilio-sync keeps across the retries of one write."""
        parts = urlsplit(self.url(url))
        headers = {"Content-Type": "application/json"}
        if request_id is not None:
            headers["Twilio-Request-Id"] = request_id
        if if_match is not None:
            headers["If-Match"] = if_match
        http_request = {
            "host": parts.netloc,
            "path": parts.path,
            "method": method,
            "params": {k: quote(str(v), safe="") for k, v in (params or {}).items()},
            "headers": headers,
        }
        header = {
            "method": "message",
            "id": twilsock.new_id(),
            "active_grant": "data_sync",
            "payload_type": "application/json",
            "http_request": http_request,
        }
        frame = await self._send(header, body if body is not None else None)
        return int(frame.header["http_status"]["code"]), frame.body()

    async def call(self, method: str, url: str, body: Any = None, **kw: Any) -> Any:
        """Like ``request``, but a non-2xx answer raises SyncClientError."""
        status, answer = await self.request(method, url, body, **kw)
        if status >= 300:
            answer = answer if isinstance(answer, dict) else {}
            raise SyncClientError(status, answer.get("code"), str(answer.get("message")))
        return answer

    async def open(self, kind: str, name: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
        """Open or create (as the SDK does: GET, on 404 POST, on 409 GET again)."""
        coll = {"document": "Documents", "list": "Lists", "map": "Maps", "stream": "Streams"}[kind]
        status, body = await self.request("GET", f"/v3/{coll}/{quote(name, safe='')}")
        if status == 200:
            return dict(body)
        create: dict[str, Any] = {"unique_name": name}
        if kind == "document":
            create["data"] = data or {}
        status, body = await self.request("POST", f"/v3/{coll}", create)
        if status == 409:
            return dict(await self.call("GET", f"/v3/{coll}/{quote(name, safe='')}"))
        if status >= 300:
            raise SyncClientError(status, body.get("code"), str(body.get("message")))
        return dict(body)

    async def subscribe(self, sid: str, kind: str, last_event_id: int | None = None) -> dict[str, Any]:
        """Establish one subscription; returns the ``subscription_established`` (or ``_failed``)
        event once the server has replayed what was missed since ``last_event_id``."""
        return await self._poke("establish", sid, kind, last_event_id)

    async def unsubscribe(self, sid: str, kind: str) -> dict[str, Any]:
        return await self._poke("cancel", sid, kind, None)

    async def _poke(self, action: str, sid: str, kind: str, last_event_id: int | None) -> dict[str, Any]:
        correlation = time.time_ns()
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._subscriptions[(correlation, sid)] = fut
        req: dict[str, Any] = {"object_sid": sid, "object_type": kind}
        if last_event_id is not None:
            req["last_event_id"] = last_event_id
        body = {"event_protocol_version": 4, "action": action, "correlation_id": correlation}
        body.update(retried_requests=0, ttl_in_s=-1, requests=[req])
        await self.call("POST", "/v4/Subscriptions", body)
        return await asyncio.wait_for(fut, REPLY_WAIT_S)

    async def next_event(self, wait_s: float = 10.0) -> dict[str, Any]:
        """The next object event (``{"event_type", "event"}``), in delivery order."""
        return await asyncio.wait_for(self.events.get(), wait_s)
