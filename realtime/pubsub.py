"""A pub/sub connection read straight from its socket: each wake-up reaches the hub in the same
event-loop callback that reads it.

Why not redis-py's ``PubSub``: its reader is a task that awaits ``get_message`` for each message,
which goes through the parser's stream reader, a timeout scope and a few layers of calls; the
wake-up then waits for the task's next turn, behind whatever the loop does meanwhile (the REST
answer of the very write that published it, which arrives at the same moment). Measured on this
box (tests/bench/fanout.py at N = 100, a write every 50 ms): the fan-out started ~0.25 ms after the
REST answer. Here hiredis parses what ``data_received`` got and the handler runs at once, as in
the reference of issue 10 (tests/bench/reference_ws.py), and as the write-script multiplexer reads
its replies (storage/multiplex.py).

Behaviour is that of the redis-py subscriber (realtime/broker.py module docstring): PING on
``PING_S`` of silence, dropped when no reply comes within ``REPLY_S``; reconnect every 0.5 s until
it works, subscribe the fixed channels in one SUBSCRIBE and each shard channel in its own SSUBSCRIBE,
then ``on_reconnect``; ``on_lost`` after every failure; a SUNSUBSCRIBE the server sent by itself (its
slot moved away) goes to ``on_moved``. An error reply (MOVED for an SSUBSCRIBE on a node that no
longer owns the slot) drops the connection, as redis-py's raised error did: ``on_lost`` makes the
cluster broker read the topology again.

Plain TCP only (``redis://``, and the Cluster's nodes); TLS and Unix sockets keep the redis-py
subscriber, as they keep redis-py for the write scripts (storage/multiplex.py ``plain_tcp``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, cast

import hiredis
from redis._parsers.base import BaseParser
from redis.exceptions import ConnectionError as RedisConnectionError, InvalidResponse, RedisError

from storage.multiplex import plain_tcp

log = logging.getLogger("sync.realtime.broker")

Handler = Callable[[str, bytes], None]

PING_S = 5.0  # silence on the pub/sub connection after which the subscriber checks it with a PING
REPLY_S = 5.0  # how long the PING (and a reconnect) may take before the connection counts as lost
CONTROL = "sync:realtime:control"  # a pub/sub connection must subscribe to something before it can be read
PING_PAYLOAD = b"sync-broker-ping"
_MESSAGES = (b"message", b"smessage")
_CONTROL = CONTROL.encode()


def tick_s() -> float:
    """How often the watch looks at the connection: often enough for PING_S and REPLY_S."""
    return min(1.0, PING_S / 4, REPLY_S / 4)


@dataclass(frozen=True)
class Address:
    """Where a subscriber connects: a TCP address and, when the server wants one, AUTH."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"

    @classmethod
    def for_url(cls, url: str) -> Address | None:
        """The address and credentials of a plain ``redis://`` URL (redis-py's reading of it, as the
        write scripts' connections take it: storage/multiplex.py); None for TLS or a Unix socket."""
        parts = plain_tcp(url)
        if parts is None:
            return None
        host, port = str(parts.get("host") or "localhost"), int(parts.get("port") or 6379)
        return cls(host, port, parts.get("username"), parts.get("password"))

    def at(self, host: str, port: int) -> Address:
        """Another node of the same deployment, with the same credentials (a Cluster's)."""
        return replace(self, host=host, port=port)


def _pack(*args: str | bytes) -> bytes:
    return hiredis.pack_command(args)  # type: ignore[arg-type,no-any-return]


class _Link(asyncio.Protocol):
    """One subscribed connection: every push it reads goes to its subscriber at once."""

    def __init__(self, owner: WireSubscriber) -> None:
        self._owner = owner
        self._reader = hiredis.Reader(protocolError=InvalidResponse, replyError=BaseParser.parse_error)
        self._transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()  # CONTROL confirmed
        self.lost: asyncio.Event = asyncio.Event()
        self.heard = time.monotonic()  # when the connection last delivered anything
        self.pinged: float | None = None  # when the unanswered PING was sent
        self.error: Exception | None = None  # why it was lost

    @property
    def closed(self) -> bool:
        return self.lost.is_set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not an asyncio.Transport subclass

    def data_received(self, data: bytes) -> None:
        self.heard, self.pinged = time.monotonic(), None
        self._reader.feed(data)
        try:
            while (reply := self._reader.gets()) is not False:
                if isinstance(reply, Exception):  # AUTH refused, MOVED for an SSUBSCRIBE, …
                    self.drop(reply)
                    return
                if isinstance(reply, list) and len(reply) >= 2:
                    self._owner._pushed(self, reply)
        except InvalidResponse as exc:  # a stream out of step: nothing after it can be trusted
            self.drop(RedisConnectionError(f"Protocol error from Redis at {self._owner.address}: {exc!r}"))

    def connection_lost(self, exc: Exception | None) -> None:
        why = f": {exc}" if exc else ""
        self.drop(RedisConnectionError(f"Connection to Redis at {self._owner.address} lost{why}"))

    @property
    def sockname(self) -> tuple[str, int] | None:
        return None if self._transport is None else self._transport.get_extra_info("sockname")

    def send(self, *args: str | bytes) -> None:
        if self._transport is not None and not self.closed:
            self._transport.write(_pack(*args))

    def ping(self) -> None:
        self.pinged = time.monotonic()
        self.send("PING", PING_PAYLOAD)

    def drop(self, error: Exception) -> None:
        if self.closed:
            return
        self.error = error
        self.lost.set()
        if not self.ready.done():
            self.ready.set_exception(error)
            self.ready.exception()  # retrieved: a failed handshake is reported by _dial, not by asyncio
        if self._transport is not None:
            self._transport.abort()


class Subscriptions:
    """What every subscriber keeps (this module's and realtime/broker.py's redis-py one): the
    callbacks, the channels, and which ended subscriptions were ours.

    ``handler(channel, data)`` for each message (it must not block); ``fixed`` channels have their
    own handlers and are plain SUBSCRIBE; ``sharded``: ``subscribe`` uses SSUBSCRIBE.
    ``on_moved(channel)``: the server ended a shard subscription we did not end (its slot moved to
    another node: Redis sends SUNSUBSCRIBE); ``on_lost()``: the connection broke (the cluster broker
    re-reads the topology then); ``on_reconnect()``: it is back, every channel subscribed again."""

    def __init__(
        self,
        handler: Handler,
        on_reconnect: Callable[[], None] | None = None,
        *,
        sharded: bool = False,
        fixed: Mapping[str, Handler] | None = None,
        on_moved: Callable[[str], None] | None = None,
        on_lost: Callable[[], None] | None = None,
    ) -> None:
        self._handler = handler
        self._on_reconnect = on_reconnect
        self._sharded = sharded
        self._fixed = dict(fixed or {})
        self._on_moved = on_moved
        self._on_lost = on_lost
        self.channels: set[str] = set()
        self._leaving: set[str] = set()  # unsubscribed by us, confirmation not read yet
        self._task: asyncio.Task[None] | None = None  # the reader or watcher

    async def _stop_task(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    @staticmethod
    def _tell(callback: Callable[[], None] | None) -> None:
        """Run ``on_lost`` / ``on_reconnect``: a failing one is logged, and the watch goes on."""
        if callback is None:
            return
        try:
            callback()
        except Exception:
            log.exception("pub/sub callback %s failed", getattr(callback, "__qualname__", callback))

    def _deliver(self, name: str, data: bytes) -> None:
        try:
            self._fixed.get(name, self._handler)(name, data)
        except Exception:  # one bad message must not stop the wake-ups
            log.exception("wake-up handler failed")

    def _ended(self, name: str) -> None:
        """A shard subscription ended: ours (confirmed) or the server's (the slot moved away)."""
        if name in self._leaving:
            self._leaving.discard(name)
            return
        if name not in self.channels:
            return
        # not ours: forget it here (a reconnect must not SSUBSCRIBE it on this node again, which
        # would answer MOVED) and let the owner of the new topology take it
        self.channels.discard(name)
        self._forget(name)
        if self._on_moved is not None:
            self._on_moved(name)

    def _forget(self, name: str) -> None:
        """What else must forget a subscription the server ended (redis-py's own channel set)."""


class WireSubscriber(Subscriptions):
    """A subscriber over a bare connection to ``address`` (see the module docstring)."""

    def __init__(self, address: Address, handler: Handler, *args: Any, **kwargs: Any) -> None:
        super().__init__(handler, *args, **kwargs)
        self.address = address
        self._link: _Link | None = None

    async def start(self, *first: str) -> None:
        """Connect, subscribe the fixed channels (and ``first``) and start watching the connection.
        Raises redis-py's ConnectionError when Redis cannot be reached within ``REPLY_S``."""
        self.channels.update(first)
        self._link = await self._dial()
        self._task = asyncio.create_task(self._run(), name="realtime-broker")

    async def close(self) -> None:
        await self._stop_task()
        if self._link is not None:
            self._link.drop(RedisConnectionError("closed"))

    async def subscribe(self, channel: str) -> None:
        """Sends the (S)SUBSCRIBE now: any later (S)PUBLISH on ``channel`` reaches us. While the
        connection is down, the reconnect subscribes it (and ``on_reconnect`` re-reads the feeds)."""
        self.channels.add(channel)
        self._leaving.discard(channel)
        if self._link is not None:
            self._link.send("SSUBSCRIBE" if self._sharded else "SUBSCRIBE", channel)

    async def unsubscribe(self, channel: str) -> None:
        self.channels.discard(channel)
        if self._sharded:
            self._leaving.add(channel)
        if self._link is not None:
            self._link.send("SUNSUBSCRIBE" if self._sharded else "UNSUBSCRIBE", channel)

    @property
    def local_address(self) -> tuple[str, int] | None:
        """This end of the connection (as CLIENT LIST names it), None while there is none."""
        link = self._link
        return None if link is None or link.closed else link.sockname

    # -- the connection ------------------------------------------------------------------------------

    async def _dial(self) -> _Link:
        """A new connection, AUTHed, with every channel subscribed; bounded by ``REPLY_S``."""
        loop = asyncio.get_running_loop()
        a = self.address
        try:
            async with asyncio.timeout(REPLY_S):
                _, link = await loop.create_connection(lambda: _Link(self), a.host, a.port)
                if a.password is not None:
                    link.send(*(("AUTH", a.username, a.password) if a.username else ("AUTH", a.password)))
                link.send("SUBSCRIBE", CONTROL, *self._fixed)
                asked = set(self.channels)
                for channel in asked:  # one each: a Cluster node refuses several slots at once
                    link.send("SSUBSCRIBE" if self._sharded else "SUBSCRIBE", channel)
                try:
                    await link.ready
                except BaseException:
                    link.drop(RedisConnectionError("handshake abandoned"))
                    raise
        except TimeoutError as exc:
            raise RedisConnectionError(f"Timeout connecting to Redis at {a} (pub/sub)") from exc
        except OSError as exc:
            raise RedisConnectionError(f"Error connecting to Redis at {a} (pub/sub): {exc}") from exc
        # (un)subscribed meanwhile, while there was no connection to send it on
        for channel in self.channels - asked:
            link.send("SSUBSCRIBE" if self._sharded else "SUBSCRIBE", channel)
        for channel in asked - self.channels:
            link.send("SUNSUBSCRIBE" if self._sharded else "UNSUBSCRIBE", channel)
        return link

    async def _run(self) -> None:
        """Watch the connection (PING on silence) and replace it when it is lost."""
        while True:
            link = self._link
            if link is not None and not link.closed:
                self._watch(link)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(link.lost.wait(), tick_s())
                continue
            if link is not None:
                log.warning("pub/sub connection lost (%s); retrying", link.error)
            self._link = None
            while self._link is None:
                self._tell(self._on_lost)  # every failure: a promoted replica may take over
                await asyncio.sleep(0.5)
                with contextlib.suppress(RedisError, OSError):
                    self._link = await self._dial()
            self._tell(self._on_reconnect)

    @staticmethod
    def _watch(link: _Link) -> None:
        now = time.monotonic()
        if link.pinged is not None:
            if now - link.pinged > REPLY_S:
                link.drop(RedisConnectionError(f"no answer to a PING within {REPLY_S:g} s"))
        elif now - link.heard >= PING_S:
            link.ping()

    def _pushed(self, link: _Link, reply: list[Any]) -> None:
        """One push from Redis (called from ``data_received``)."""
        kind = reply[0]
        if kind in _MESSAGES and len(reply) == 3:
            self._deliver(reply[1].decode(errors="replace"), reply[2])
        elif kind == b"subscribe":
            if not link.ready.done() and reply[1] == _CONTROL:
                link.ready.set_result(None)
        elif kind == b"sunsubscribe" and link is self._link:
            self._ended(reply[1].decode(errors="replace"))
