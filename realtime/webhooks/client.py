"""The webhook HTTP client: HTTP/1.1 keep-alive POSTs that only connect to permitted networks.

A small client on asyncio streams and the h11 state machine (the sans-I/O HTTP/1.1 parser httpx
itself uses): httpx measured ~550 deliveries/s here, spending its time in its connection pool,
while h11 on plain streams does several thousand. It does exactly what webhooks need: one POST,
the status, the body drained and ignored, the connection kept for the next request.

Guards: only ``http``/``https`` URLs; every address a host name resolves to is checked against the
network policy (policy.py) *at connect time*, and the client connects to the checked address itself,
so DNS rebinding cannot slip past the check. No redirects, no proxies. Timeouts: ``connect_s`` for
DNS + TCP + TLS, ``read_s`` for the whole response.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import ssl
import time
from urllib.parse import unquote, urlsplit

import h11

from .policy import DestinationBlockedError, NetworkPolicy


class DeliveryError(Exception):
    """The request did not get a response: connect/TLS/protocol error or timeout."""


class _NoResponseError(DeliveryError):
    """The connection failed before any response arrived."""


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.h11 = h11.Connection(h11.CLIENT)
        self.idle_since = time.monotonic()

    def close(self) -> None:
        self.writer.close()


class WebhookClient:
    """POSTs to webhook URLs over pooled keep-alive connections (at most ``max_idle`` kept per origin)."""

    def __init__(
        self, policy: NetworkPolicy, connect_s: float, read_s: float, max_idle: int = 32, idle_s: float = 30.0
    ) -> None:
        self.policy = policy
        self.connect_s = connect_s
        self.read_s = read_s
        self.max_idle = max_idle
        self.idle_s = idle_s
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._tls = ssl.create_default_context()

    async def post(self, url: str, body: bytes, headers: list[tuple[str, str]]) -> int:
        """POST ``body``; the response status. Raises DeliveryError (or DestinationBlockedError)."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise DestinationBlockedError(f"not an http(s) URL: {url}")
        origin = (parts.scheme, parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host = parts.netloc.rpartition("@")[2]
        all_headers = [("Host", host), ("Content-Length", str(len(body))), *headers]
        if parts.username is not None:  # credentials in the URL: HTTP Basic, as Twilio does
            creds = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            all_headers.append(("Authorization", "Basic " + base64.b64encode(creds).decode()))
        request = h11.Request(method="POST", target=target, headers=all_headers)
        conn = self._reuse(origin)
        if conn is not None:
            try:
                return await self._exchange(origin, conn, request, body)
            except _NoResponseError:
                pass  # a kept connection the server had closed meanwhile: once more on a fresh one
        return await self._exchange(origin, await self._connect(origin), request, body)

    async def aclose(self) -> None:
        for conns in self._idle.values():
            for c in conns:
                c.close()
        self._idle.clear()

    def _reuse(self, origin: tuple[str, str, int]) -> _Connection | None:
        conns = self._idle.get(origin)
        while conns:
            conn = conns.pop()
            if time.monotonic() - conn.idle_since < self.idle_s and not conn.reader.at_eof():
                return conn
            conn.close()
        return None

    async def _connect(self, origin: tuple[str, str, int]) -> _Connection:
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_s):
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
                permitted = self.policy.permitted(host, (str(info[4][0]) for info in infos))
                error: Exception = DeliveryError(f"cannot connect to {host}")
                for address in permitted:  # connect to the checked address itself
                    try:
                        tls = {"ssl": self._tls, "server_hostname": host} if scheme == "https" else {}
                        reader, writer = await asyncio.open_connection(address, port, **tls)  # type: ignore[arg-type]
                        return _Connection(reader, writer)
                    except (OSError, ssl.SSLError) as exc:
                        error = exc
                raise DeliveryError(f"cannot connect to {host}:{port}: {error}")
        except TimeoutError:
            raise DeliveryError(f"connect timeout ({self.connect_s} s) to {host}:{port}") from None

    async def _exchange(
        self, origin: tuple[str, str, int], conn: _Connection, request: h11.Request, body: bytes
    ) -> int:
        c = conn.h11
        status = 0
        try:
            async with asyncio.timeout(self.read_s):
                conn.writer.write(c.send(request) + c.send(h11.Data(data=body)) + c.send(h11.EndOfMessage()))
                await conn.writer.drain()
                while True:
                    event = c.next_event()
                    if event is h11.NEED_DATA:
                        c.receive_data(await conn.reader.read(65536))
                    elif isinstance(event, h11.Response):
                        status = event.status_code
                    elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                        break
        except TimeoutError:
            conn.close()
            raise DeliveryError(f"read timeout ({self.read_s} s)") from None
        except (OSError, h11.ProtocolError) as exc:
            conn.close()
            error = _NoResponseError if status == 0 else DeliveryError
            raise error(f"{type(exc).__name__}: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        if status == 0:
            conn.close()
            raise _NoResponseError("connection closed without a response")
        if c.our_state is h11.DONE and c.their_state is h11.DONE:
            c.start_next_cycle()
            conn.idle_since = time.monotonic()
            pool = self._idle.setdefault(origin, [])
            if len(pool) < self.max_idle:
                pool.append(conn)
                return status
        conn.close()
        return status
