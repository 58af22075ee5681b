"""Cache invalidation across server processes: a write that changes credentials or removes a
Service tells every process to forget what it cached about it.

Processes cache a few lookups for seconds (checked Basic credentials in app/auth.py, API keys for
access tokens and Service records in ``Store.cache``, auth tokens in the webhook worker), so that
hot paths skip a round trip. Without a message, a revoked key or a changed auth token would keep
working on other processes until their entries expire (and a Service's changed ``acl_enabled`` would
not reach new connections). The writing process PUBLISHes one line on
``keys.INVALIDATE`` after its write; every process's realtime broker is subscribed to it and hands
the line to ``Invalidations.apply``, which calls each registered listener (``Store.invalidate``
publishes, and applies it to its own process at once). Plain PUBLISH, not
SPUBLISH: every process must hear every message (on a Cluster the bus carries it to all shards),
and they are rare (an admin command, a Service delete).

Pub/sub is at most once, so the cache time stays the fallback: a message lost (the subscriber was
reconnecting) is covered by ``reset`` (the broker calls it after every reconnect: everything is
forgotten) or at worst by the entry's expiry.

Messages: ``key SK…`` (an API key deleted), ``account AC…`` (its auth token set), ``service AC… IS…``
(a Service updated or deleted).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from .redis_client import text

log = logging.getLogger("sync.storage.invalidation")

KEY = "key"
ACCOUNT = "account"
SERVICE = "service"

Listener = Callable[[str, tuple[str, ...]], None]
"""Called with the kind and its ids; ``("*", ())`` means forget everything."""

EVERYTHING = "*"


class Invalidations:
    """This process's listeners (one instance per Store). ``apply`` never raises."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def listen(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def apply(self, data: bytes | str) -> None:
        kind, *ids = text(data).split(" ")
        self._call(kind, tuple(ids))

    def reset(self) -> None:
        """Forget everything (messages may have been missed while the subscriber was away)."""
        self._call(EVERYTHING, ())

    def _call(self, kind: str, ids: tuple[str, ...]) -> None:
        for listener in self._listeners:
            try:
                listener(kind, ids)
            except Exception:  # one broken listener must not keep the others stale
                log.exception("cache invalidation %s %s failed", kind, ids)


class Forgets(Protocol):
    """A cache that can forget one entry or everything (``Store.cache``)."""

    def drop(self, key: Any) -> None: ...
    def clear(self) -> None: ...


def store_cache_listener(cache: Forgets) -> Listener:
    """What ``Store.cache`` forgets: an API key's record, a Service's record."""

    def forget(kind: str, ids: tuple[str, ...]) -> None:
        entry: Any = {KEY: ("api-key", *ids), SERVICE: ("service", *ids)}.get(kind)
        if kind == EVERYTHING:
            cache.clear()
        elif entry is not None:
            cache.drop(entry)

    return forget
