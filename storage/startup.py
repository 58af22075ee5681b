"""Waiting for Redis at start, instead of dying with a traceback.

A server is often started before its Redis answers: containers of one deployment start in any order,
a Valkey restarting after a host reboot loads its AOF for a while, and a Cluster whose master has
just died serves its slots again only once a replica is promoted (``cluster-node-timeout`` plus an
election). Each of these heals by itself within seconds, so ``serve`` (and each worker) retries its
first steps with backoff for a bounded time (SYNC_REDIS_STARTUP_WAIT_S), saying once what it waits
for and why, and then gives up with one line. Errors that waiting cannot fix (a wrong password, a
script Redis refuses) are raised at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

from redis.exceptions import AuthenticationError

from .errors import StoreUnavailableError
from .redis_client import MOVING, UNREACHABLE

T = TypeVar("T")

FIRST_PAUSE_S = 0.2  # then doubled after each failed attempt, up to MAX_PAUSE_S
MAX_PAUSE_S = 3.0

# What a Redis that is down, still loading, partitioned, or a Cluster without a master for some of
# its slots, raises (redis_client.UNREACHABLE and MOVING, and the store's own error for them). AuthenticationError
# is a ConnectionError in redis-py, and is not transient.
TRANSIENT: tuple[type[BaseException], ...] = (StoreUnavailableError, *UNREACHABLE, *MOVING)


class RedisNotReachableError(Exception):
    """Redis did not answer within the startup wait; the message says where and the last cause."""


def redacted(url: str) -> str:
    """``url`` without its password, for logs and messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port is not None else "")
    return urlunsplit(parts._replace(netloc=netloc))


async def when_reachable(
    attempt: Callable[[], Awaitable[T]],
    url: str,
    wait_s: float,
    log: logging.Logger,
) -> T:
    """``attempt()``'s result, retried with backoff while Redis is unreachable, for up to ``wait_s``
    seconds (0: one attempt). ``attempt`` must be safe to run again (close what it opened on failure).
    Raises RedisNotReachableError when the time is up."""
    deadline = time.monotonic() + wait_s
    pause = FIRST_PAUSE_S
    told = False
    while True:
        try:
            return await attempt()
        except AuthenticationError:
            raise
        except TRANSIENT as exc:
            cause = str(exc.__cause__ or exc) or type(exc).__name__  # StoreUnavailableError: its cause
            left = deadline - time.monotonic()
            if left <= 0:
                raise RedisNotReachableError(
                    f"Redis at {redacted(url)} is not reachable"
                    + (f" after waiting {wait_s:g} s" if wait_s > 0 else "")
                    + f" (SYNC_REDIS_STARTUP_WAIT_S): {cause}"
                ) from exc
            if not told:
                log.warning("Redis at %s is not reachable yet (%s): retrying for %g s", redacted(url), cause, wait_s)
                told = True
            await asyncio.sleep(min(pause, left))
            pause = min(pause * 2, MAX_PAUSE_S)
