"""One pipelined connection that carries every write script of a process (standalone Redis), and the
subscriptions' reads (batch.py).

Why: through redis-py's pool every EVALSHA takes a connection, arms two timeouts, writes alone and
reads alone: about 100 µs of the server's CPU per REST write, a fifth of it, and as much again for
Valkey, which then reads one command per system call. The clients that fan in the most requests
per process (ioredis's auto-pipelining, StackExchange.Redis, Lettuce) instead share one connection:
commands sent in the same loop turn leave in one write, replies come back in order on one stream,
and a reply finds its caller by position. Measured on this box (tests/bench/rest_writes.py and the
numbers in the README): server CPU per write and Valkey's both fall, writes/s rise.

What it keeps from redis-py, so that the rest of storage/ sees no difference:
* replies are redis-py's (hiredis, bytes; an error reply is redis-py's exception class for its code,
  via ``BaseParser.parse_error``: NoScriptError, OutOfMemoryError, ReadOnlyError, …);
* nothing is ever sent twice. A connection that breaks, or whose oldest reply is later than
  ``timeout_s``, is dropped, and every call waiting on it raises ConnectionError/TimeoutError (an
  unknown outcome: redis_client's guard answers 503/20503); the next call opens a new connection;
* a script Redis does not know (NOSCRIPT: nothing ran) is loaded and sent once more, as redis-py's
  ``AsyncScript`` does.

What it does not do: blocking commands (WAIT, XREADGROUP BLOCK) would stall every call behind them,
so the durability waits (durability.py) and everything else keep redis-py. On a Cluster each master
gets one (multiplex_cluster.py routes by slot and follows redirections). ``for_url`` answers None
for what it does not speak (TLS, a Unix socket), and the caller keeps redis-py's client for scripts.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

import hiredis
from redis._parsers.base import BaseParser
from redis.asyncio.connection import parse_url
from redis.exceptions import (
    ConnectionError as RedisConnectionError,
    InvalidResponse,
    NoScriptError,
    ResponseError,
    TimeoutError as RedisTimeoutError,
)

from .redis_client import LuaReply, Value


class _Link(asyncio.Protocol):
    """One TCP connection: requests written in order, replies handed to their callers in order."""

    def __init__(self, where: str, timeout_s: float) -> None:
        self._where = where
        self._timeout_s = timeout_s
        self._reader = hiredis.Reader(protocolError=InvalidResponse, replyError=BaseParser.parse_error)
        self._waiting: deque[tuple[asyncio.Future[Any], float]] = deque()  # (caller, deadline), oldest first
        self._out: list[bytes] = []  # requests of this loop turn, written together by _flush
        self._transport: asyncio.Transport | None = None
        self._watch: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()
        self.closed = False

    # -- asyncio.Protocol ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not an asyncio.Transport subclass

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        try:
            while (reply := self._reader.gets()) is not False:
                caller, _ = self._waiting.popleft()
                if caller.done():  # its caller gave up (cancelled): the reply is dropped, in its place
                    continue
                if isinstance(reply, ResponseError | RedisConnectionError):
                    caller.set_exception(reply)
                else:
                    caller.set_result(reply)
        except (InvalidResponse, IndexError) as exc:  # a stream out of step: nothing after it can be trusted
            self._fail(RedisConnectionError(f"Protocol error from Redis at {self._where}: {exc!r}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(RedisConnectionError(f"Connection to Redis at {self._where} lost" + (f": {exc}" if exc else "")))

    # -- requests -----------------------------------------------------------------------------------

    def request(self, packed: bytes) -> asyncio.Future[Any]:
        """Queue one packed command; its reply (or error) completes the answered future."""
        caller: asyncio.Future[Any] = self._loop.create_future()
        if self.closed:
            caller.set_exception(RedisConnectionError(f"Connection to Redis at {self._where} closed"))
            return caller
        if not self._out:
            self._loop.call_soon(self._flush)
        self._out.append(packed)
        if self._watch is None:
            self._watch = self._loop.call_later(self._timeout_s, self._check)
        self._waiting.append((caller, self._loop.time() + self._timeout_s))
        return caller

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def _flush(self) -> None:
        if self._out and self._transport is not None and not self.closed:
            self._transport.writelines(self._out)
        self._out = []

    def _check(self) -> None:
        """The watchdog: replies come in order, so only the oldest waiting call can be late."""
        self._watch = None
        if not self._waiting:
            return
        deadline = self._waiting[0][1]
        if deadline <= self._loop.time():
            self._fail(RedisTimeoutError(f"Timeout reading from Redis at {self._where} ({self._timeout_s:g} s)"))
        else:
            self._watch = self._loop.call_at(deadline, self._check)

    def _fail(self, error: Exception) -> None:
        """Drop the connection; every call still waiting raises ``error`` (its outcome is unknown)."""
        self.closed = True
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        if self._transport is not None:
            self._transport.abort()
        waiting, self._waiting, self._out = self._waiting, deque(), []
        for caller, _ in waiting:
            if not caller.done():
                caller.set_exception(error)

    def close(self) -> None:
        self._fail(RedisConnectionError(f"Connection to Redis at {self._where} closed"))


class Multiplexer:
    """Calls on one shared connection to a standalone Redis, opened on first use and again after it
    is dropped (see the module docstring). ``execute_command`` and ``register_script`` are the part
    of redis-py's client that storage/lua.py's write scripts use, so ``guard`` wraps it as it wraps
    redis-py's (redis_client.py)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        timeout_s: float,
    ) -> None:
        self._host, self._port, self._timeout_s = host, port, timeout_s
        self._hello: list[tuple[Value, ...]] = []  # sent first on every new connection
        if password is not None:
            self._hello.append(("AUTH", username, password) if username else ("AUTH", password))
        if db:
            self._hello.append(("SELECT", db))
        self._link: _Link | None = None
        self._opening: asyncio.Future[_Link] | None = None
        self.connects = 0  # connections opened (/metrics: more than one means it was dropped and reopened)

    @classmethod
    def for_url(cls, url: str, timeout_s: float) -> Multiplexer | None:
        """A multiplexer for a plain ``redis://host:port/db`` URL; None for anything else (TLS, a Unix
        socket): the caller then keeps redis-py for scripts too."""
        parts = plain_tcp(url)
        if parts is None:
            return None
        host = str(parts.get("host") or "localhost")
        return cls(
            host,
            int(parts.get("port") or 6379),
            db=int(parts.get("db") or 0),
            username=parts.get("username"),
            password=parts.get("password"),
            timeout_s=timeout_s,
        )

    async def execute_command(self, *args: Value) -> Any:
        """Send one command, answer its reply; an error reply raises redis-py's exception for it."""
        link = self._link
        if link is None or link.closed:
            link = await self._open()
        return await link.request(_pack(args))

    async def hmget(self, key: str, fields: Sequence[str]) -> list[bytes | None]:
        """HMGET: the reads of batch.py, one write with the scripts and reads of the same loop turn."""
        return await self.execute_command("HMGET", key, *fields)  # type: ignore[no-any-return]

    @property
    def in_flight(self) -> int:
        """Calls sent (or about to be) and not answered yet (/metrics)."""
        link = self._link
        return 0 if link is None or link.closed else link.waiting

    def register_script(self, text: str) -> Script:
        return Script(self.evalsha, text)

    async def evalsha(self, sha: str, text: str, keys: Sequence[str], args: Sequence[Value]) -> LuaReply:
        """EVALSHA; a server that does not know the script (NOSCRIPT: nothing ran) gets it loaded and
        the call once more, as redis-py's ``AsyncScript`` does."""
        try:
            return await self.execute_command("EVALSHA", sha, len(keys), *keys, *args)  # type: ignore[no-any-return]
        except NoScriptError:
            await self.execute_command("SCRIPT", "LOAD", text)
            return await self.execute_command("EVALSHA", sha, len(keys), *keys, *args)  # type: ignore[no-any-return]

    async def aclose(self) -> None:
        if self._link is not None:
            self._link.close()
            self._link = None

    async def _open(self) -> _Link:
        """The shared connection, opening it if needed: concurrent callers wait for the same opening
        (shielded: one caller giving up does not abandon it for the others)."""
        if self._opening is None:
            self._opening = asyncio.ensure_future(self._connect())
            self._opening.add_done_callback(self._opened)
        return await asyncio.shield(self._opening)

    def _opened(self, opening: asyncio.Future[_Link]) -> None:
        self._opening = None
        if not opening.cancelled() and opening.exception() is None:
            self._link = opening.result()

    async def _connect(self) -> _Link:
        where = f"{self._host}:{self._port}"
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._timeout_s):
                _, link = await loop.create_connection(lambda: _Link(where, self._timeout_s), self._host, self._port)
                hello = [link.request(_pack(command)) for command in self._hello]
                try:
                    for reply in hello:
                        await reply
                except BaseException:
                    link.close()
                    raise
        except TimeoutError as exc:
            raise RedisConnectionError(f"Timeout connecting to Redis at {where}") from exc
        except OSError as exc:
            raise RedisConnectionError(f"Error connecting to Redis at {where}: {exc}") from exc
        self.connects += 1
        return link


def _pack(command: tuple[Value, ...]) -> bytes:
    """One command in RESP (hiredis's C encoder; its stub types the tuple as one element long)."""
    return hiredis.pack_command(command)  # type: ignore[arg-type,no-any-return]


def plain_tcp(url: str) -> dict[str, Any] | None:
    """redis-py's reading of a ``redis://`` URL over TCP (host, port, db, username, password), or
    None for what the multiplexers do not speak (TLS, a Unix socket)."""
    if not url.startswith("redis://"):
        return None
    parts = dict(parse_url(url))
    return None if "path" in parts or "connection_class" in parts else parts


EvalSha = Callable[[str, str, Sequence[str], Sequence[Value]], Awaitable[LuaReply]]


class Script:
    """A registered script, as redis-py's ``register_script`` answers one: called with keys and
    arguments, sent by its SHA1 through ``evalsha`` (a Multiplexer's, or a ClusterMultiplexer's)."""

    def __init__(self, evalsha: EvalSha, text: str) -> None:
        self._evalsha = evalsha
        self._text = text
        self._sha = hashlib.sha1(text.encode()).hexdigest()

    def __call__(self, keys: Sequence[str] = (), args: Sequence[Value] = ()) -> Awaitable[LuaReply]:
        return self._evalsha(self._sha, self._text, keys, args)
