"""Reads issued in one turn of the event loop go to Redis together, as one pipeline.

Why: a crowd of clients (re)connecting at once (a server restart, a network blip) each subscribes,
and each subscription reads its object once. One command through redis-py costs a connection taken
from the pool and given back, a task for the send and a system call on each side; a pipeline of
the reads that arrived meanwhile pays that once. A read on its own goes as a plain command, one
loop turn later (a batch is what the turn collected).

Only idempotent reads whose answers need no ordering against each other belong here: the commands
of one batch may reach Redis in any order relative to other connections' commands (so does any
command issued concurrently). On a Redis Cluster the pipeline is split by node by redis-py.
Errors: a failed batch fails every read in it with the same exception (StoreUnavailableError when
Redis cannot be reached, as for a plain command).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from .redis_client import RedisClient

Pending = tuple[str, Sequence[str], "asyncio.Future[list[bytes | None]]"]


class ReadBatch:
    """HMGETs of this process, batched per loop turn (one instance per Store)."""

    def __init__(self, redis: RedisClient) -> None:
        self._redis = redis
        self._pending: list[Pending] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def hmget(self, key: str, fields: Sequence[str]) -> asyncio.Future[list[bytes | None]]:
        """``HMGET key *fields``, sent with the other reads of this loop turn."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[list[bytes | None]] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append((key, fields, fut))
        return fut

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        task = asyncio.ensure_future(self._run(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: list[Pending]) -> None:
        try:
            if len(batch) == 1:
                key, fields, _ = batch[0]
                replies: list[list[bytes | None]] = [await self._redis.hmget(key, fields)]
            else:
                async with self._redis.pipeline(transaction=False) as p:
                    for key, fields, _ in batch:
                        p.hmget(key, fields)
                    replies = await p.execute()
        except Exception as exc:
            for *_, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            return
        for (*_, fut), reply in zip(batch, replies, strict=True):
            if not fut.done():  # its reader may have been cancelled meanwhile
                fut.set_result(reply)
