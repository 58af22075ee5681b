"""The webhook HTTP client: keep-alive POSTs, on aiohttp's client, that only connect to permitted networks.

Why aiohttp: a well-kept HTTP client instead of a protocol implementation of our own (it replaces a
hand-written one on h11; httpx was ~0.5k requests/s here, far too slow). Issue 8 measured it at
8.7–10.2k requests/s against the h11 client's 6.5–7.6k; re-measured on a busy shared machine it
cost about the same client CPU per request as the h11 client (±20 %), and a delivery's cost is
dominated by the worker's Redis work either way (README, Performance). It does exactly what
webhooks need: one POST, the status, the body drained and ignored, the connection kept.

Guards, each one deliberate:
- only ``http``/``https`` URLs; credentials in the URL become HTTP Basic auth (as Twilio does);
- every address a host name resolves to is checked against the network policy (policy.py) *at
  connect time* by the connector's resolver (``PolicyResolver``), and aiohttp connects to the
  addresses that resolver returns, i.e. the checked ones: DNS rebinding cannot slip past. An IP
  literal never reaches a resolver in aiohttp, so ``post`` checks it itself;
- no redirects, no proxies (``trust_env=False``), no cookies, no content negotiation headers;
- at most ``max_connections`` connections, kept alive ``idle_s`` for the next request;
- timeouts: ``connect_s`` for DNS + TCP + TLS, then ``read_s`` for the whole response (sending
  the request included), on one deadline that the connector moves when a connection is in hand.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import ipaddress
import re
import socket
import ssl
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit
from weakref import WeakSet

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.client_proto import ResponseHandler
from aiohttp.connector import Connection
from aiohttp.tracing import Trace
from yarl import URL

from .policy import DestinationBlockedError, NetworkPolicy

_SKIPPED_HEADERS = ("Accept", "Accept-Encoding")  # aiohttp would add them; webhooks never sent them


class DeliveryError(Exception):
    """The request did not get a response: connect/TLS/protocol error or timeout."""


class PolicyResolver(AbstractResolver):
    """Resolves like the system (getaddrinfo in a thread), then keeps only the permitted addresses;
    none left: DestinationBlockedError, which aiohttp lets through unwrapped (it is not an OSError)."""

    def __init__(self, policy: NetworkPolicy) -> None:
        self.policy = policy
        self._system = aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._system.resolve(host, port, family)
        permitted = set(self.policy.permitted(host, (r["host"] for r in found)))
        return [r for r in found if r["host"] in permitted]

    async def close(self) -> None:
        await self._system.close()


@dataclass
class _Attempt:
    """One request's deadline: ``connect_s`` until a connection is in hand, then ``read_s`` from there."""

    deadline: asyncio.Timeout
    read_s: float
    connected: bool = False
    reused: bool = False

    def got_connection(self, reused: bool) -> None:
        self.connected, self.reused = True, reused
        self.deadline.reschedule(asyncio.get_running_loop().time() + self.read_s)


_ATTEMPT: ContextVar[_Attempt | None] = ContextVar("webhook_attempt", default=None)


class _Connector(aiohttp.TCPConnector):
    """Tells the request being made (``_ATTEMPT``) when its connection is in hand, and whether it is a
    kept one. (aiohttp's trace hooks could say the same, but they cost ~60 µs a request here.)"""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._seen: WeakSet[ResponseHandler] = WeakSet()  # connections that already served a request

    async def connect(  # aiohttp's signature: it passes ``timeout`` by name
        self,
        req: aiohttp.ClientRequest,
        traces: list[Trace],
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109
    ) -> Connection:
        connection = await super().connect(req, traces, timeout)
        attempt = _ATTEMPT.get()
        protocol = connection.protocol
        if attempt is not None and protocol is not None:
            attempt.got_connection(reused=protocol in self._seen)
            self._seen.add(protocol)
        return connection


class _StaleConnectionError(Exception):
    """A kept-alive connection the receiver had closed meanwhile failed before any response."""


class WebhookClient:
    """POSTs to webhook URLs over a pool of keep-alive connections. ``await start()`` inside the running
    loop (the aiohttp session belongs to it), ``await aclose()`` when done."""

    def __init__(
        self, policy: NetworkPolicy, connect_s: float, read_s: float, max_connections: int = 200, idle_s: float = 30.0
    ) -> None:
        self.policy = policy
        self.connect_s = connect_s
        self.read_s = read_s
        self.max_connections = max_connections
        self.idle_s = idle_s
        self._session: aiohttp.ClientSession | None = None
        self._permitted_literals: set[str] = set()

    async def start(self) -> None:
        connector = _Connector(
            resolver=PolicyResolver(self.policy),
            use_dns_cache=False,  # every new connection resolves and checks again
            ssl=ssl.create_default_context(),  # the system trust store (SSL_CERT_FILE honoured)
            limit=self.max_connections,
            limit_per_host=0,
            keepalive_timeout=self.idle_s,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None),  # our own deadline, see _Attempt
            trust_env=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def post(self, url: str, body: bytes, headers: list[tuple[str, str]]) -> int:
        """POST ``body``; the response status. Raises DeliveryError or DestinationBlockedError, nothing
        else (CancelledError aside): any failure to build or send the request is one of them."""
        target = _target(url)
        if target.literal is not None and target.literal not in self._permitted_literals:
            self.policy.permitted(target.literal, [target.literal])  # aiohttp resolves no literal: checked here
            self._permitted_literals.add(target.literal)  # the policy never changes: once is enough
        all_headers = [*target.headers, *headers]
        try:
            return await self._attempt(target.url, body, all_headers, target.where)
        except _StaleConnectionError:
            pass  # a kept connection the receiver had closed meanwhile: once more on another one
        try:
            return await self._attempt(target.url, body, all_headers, target.where)
        except _StaleConnectionError as exc:
            raise DeliveryError(f"{type(exc.__cause__).__name__}: {exc.__cause__}") from exc.__cause__

    async def _attempt(self, url: URL, body: bytes, headers: list[tuple[str, str]], where: str) -> int:
        assert self._session is not None, "WebhookClient.start() was not awaited"
        attempt: _Attempt | None = None
        token = None
        try:
            async with asyncio.timeout(self.connect_s) as deadline:
                attempt = _Attempt(deadline, self.read_s)
                token = _ATTEMPT.set(attempt)
                async with self._session.post(
                    url, data=body, headers=headers, allow_redirects=False, skip_auto_headers=_SKIPPED_HEADERS
                ) as response:
                    async for _ in response.content.iter_any():
                        pass  # drained and ignored: only the status counts, the connection is kept
                    return response.status
        except TimeoutError:
            if attempt is not None and attempt.connected:
                raise DeliveryError(f"read timeout ({self.read_s} s)") from None
            raise DeliveryError(f"connect timeout ({self.connect_s} s) to {where}") from None
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.__cause__, DestinationBlockedError):
                raise exc.__cause__ from None
            raise DeliveryError(f"cannot connect to {where}: {_reason(exc)}") from exc
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
            if attempt is not None and attempt.reused:
                raise _StaleConnectionError from exc
            raise DeliveryError(f"{type(exc).__name__}: {exc}") from exc
        except aiohttp.InvalidURL as exc:
            raise DestinationBlockedError(f"not a valid URL: {exc}") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise DeliveryError(f"{type(exc).__name__}: {exc}") from exc
        except DestinationBlockedError:
            raise  # from the resolver, unwrapped by aiohttp: not a retryable failure
        except Exception as exc:  # building the request failed (a header aiohttp refuses, an encoding…)
            raise DeliveryError(f"{type(exc).__name__}: {exc}") from exc
        finally:
            if token is not None:
                _ATTEMPT.reset(token)


_SENDABLE = re.compile(r"[\x21-\x7e]+")  # printable ASCII: a request line carries it unchanged (and it is signed)


@dataclass(frozen=True, slots=True)
class _Target:
    """What a webhook URL means for the request: where to send it and the headers it implies."""

    url: URL  # without credentials, path and query exactly as configured (the signed URL)
    headers: tuple[tuple[str, str], ...]  # Host as written in the URL; Basic auth from its credentials
    where: str  # host:port, for error messages
    literal: str | None  # the host when it is an IP address (aiohttp resolves none: checked by post)


@functools.lru_cache(maxsize=1024)  # a Service's URL is posted to again and again
def _target(url: str) -> _Target:
    if not _SENDABLE.fullmatch(url):  # queued before WebhookUrl was validated: sent as written, or not at all
        raise DestinationBlockedError(f"not a valid URL: {url!r} (whitespace, control or non-ASCII characters)")
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:  # e.g. a port out of range: no retry can fix the URL
        raise DestinationBlockedError(f"not a valid URL: {url} ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DestinationBlockedError(f"not an http(s) URL: {url}")
    host = parts.netloc.rpartition("@")[2]
    headers = [("Host", host)]
    if parts.username is not None:  # credentials in the URL: HTTP Basic, as Twilio does
        creds = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        headers.append(("Authorization", "Basic " + base64.b64encode(creds).decode()))
    query = f"?{parts.query}" if parts.query else ""
    return _Target(
        url=URL(f"{parts.scheme}://{host}{parts.path or '/'}{query}", encoded=True),
        headers=tuple(headers),
        where=f"{parts.hostname}:{port}",
        literal=parts.hostname if _is_ip_literal(parts.hostname) else None,
    )


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


def _reason(exc: aiohttp.ClientConnectorError) -> str:
    """The underlying OS or TLS error, worded as the old client did (e.g. CERTIFICATE_VERIFY_FAILED)."""
    cause: Any = getattr(exc, "certificate_error", None) or exc.os_error
    return f"{type(cause).__name__}: {cause}"
