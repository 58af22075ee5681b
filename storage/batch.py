"""Reads go to Redis together: one pipeline at a time, carrying every read that arrived meanwhile.

Why: a crowd of clients (re)connecting at once (a server restart, a network blip) each subscribes,
and each subscription reads its object once. One command through redis-py costs a connection taken
from the pool and given back, a task for the send and a system call on each side; a pipeline of
the reads that arrived meanwhile pays that once. The first read after a quiet spell goes one loop
turn later, with the others of that turn (alone: as a plain command); while a batch is in flight,
new reads wait for its answer and then go together, as a client with automatic pipelining does, so
the busier the process the larger the batches, at the cost of at most one round trip of waiting.

Only idempotent reads whose answers need no ordering against each other belong here: the commands
of one batch may reach Redis in any order relative to other connections' commands (so does any
command issued concurrently). On a Redis Cluster the pipeline is split by node by redis-py.
The same read asked for several times in one batch (a crowd subscribing to one Document) is sent
once and its reply given to each; every caller has its own future, so one cancelled caller cancels
nobody else's read.
Errors: a batch that fails is sent again read by read, so each read fails or succeeds as it would
have alone (a Cluster master failing over fails only the reads of its slots; StoreUnavailableError
when Redis cannot be reached, as for a plain command).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from .redis_client import RedisClient

Read = tuple[str, tuple[str, ...]]  # (key, fields): one HMGET
Waiting = list["asyncio.Future[list[bytes | None]]"]  # the callers of one read
Pending = tuple[str, tuple[str, ...], Waiting]


class ReadBatch:
    """HMGETs of this process, batched per loop turn (one instance per Store)."""

    def __init__(self, redis: RedisClient, multiplexed: RedisClient | None = None) -> None:
        """``multiplexed``: the (guarded) shared connection of multiplex.py, when the Store has one:
        each read of a batch goes as its own HMGET over it (the multiplexer writes a loop turn's
        commands at once and answers each read alone); otherwise redis-py's pipeline."""
        self._redis = redis
        self._multiplexed = multiplexed
        self._pending: dict[Read, Waiting] = {}
        self._busy = False  # a batch is in flight: the pending reads go when it is answered
        self._tasks: set[asyncio.Task[None]] = set()

    def hmget(self, key: str, fields: Sequence[str]) -> asyncio.Future[list[bytes | None]]:
        """``HMGET key *fields``, sent with the other reads of this loop turn (or of the batch in flight)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[list[bytes | None]] = loop.create_future()
        if not self._pending and not self._busy:
            loop.call_soon(self._flush)
        read = (key, tuple(fields))
        waiting = self._pending.get(read)
        if waiting is None:
            self._pending[read] = [fut]
        else:  # asked for already in this batch: one HMGET answers both
            waiting.append(fut)
        return fut

    def _flush(self) -> None:
        if self._busy or not self._pending:
            return
        batch = [(key, fields, waiting) for (key, fields), waiting in self._pending.items()]
        self._pending = {}
        self._busy = True
        task = asyncio.ensure_future(self._run(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: list[Pending]) -> None:
        try:
            await self._send(batch)
        finally:
            self._busy = False
            self._flush()  # what arrived meanwhile

    async def _send(self, batch: list[Pending]) -> None:
        if self._multiplexed is not None:
            answers = await asyncio.gather(
                *(self._multiplexed.hmget(key, fields) for key, fields, _ in batch), return_exceptions=True
            )
            for (*_, waiting), answer in zip(batch, answers, strict=True):
                _answer(waiting, answer)
            return
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
            if len(batch) > 1:  # each read gets its own outcome, as if sent alone
                await asyncio.gather(*(self._send([one]) for one in batch))
                return
            _answer(batch[0][2], exc)
            return
        for (*_, waiting), reply in zip(batch, replies, strict=True):
            _answer(waiting, reply)


def _answer(waiting: Waiting, reply: list[bytes | None] | BaseException) -> None:
    """Every caller of one read gets its reply (each its own list) or its error."""
    for i, fut in enumerate(waiting):
        if fut.done():  # its reader was cancelled meanwhile
            continue
        if isinstance(reply, BaseException):
            fut.set_exception(reply)
        else:
            fut.set_result(list(reply) if i else reply)
