"""Frozen records the storage layer returns. Times are integer milliseconds since the epoch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from .kinds import Kind

T = TypeVar("T")


@dataclass(frozen=True)
class Actor:
    """Who causes a write: recorded in ``created_by`` and in every change event."""

    identity: str = "system"
    origin: str = "rest"  # rest | sdk | system (the sweeper)
    endpoint: str = ""


SYSTEM = Actor()
SWEEPER = Actor(identity="system", origin="system")


@dataclass(frozen=True)
class Service:
    sid: str
    account_sid: str
    friendly_name: str | None
    unique_name: str | None
    webhook_url: str | None
    acl_enabled: bool
    reachability_webhooks_enabled: bool
    reachability_debouncing_enabled: bool
    reachability_debouncing_window: int
    webhooks_from_rest_enabled: bool
    date_created: int
    date_updated: int


@dataclass(frozen=True)
class SyncObject:
    """A Document, List, Map or Stream (``kind``). ``data`` is set for documents only."""

    kind: Kind
    sid: str
    service_sid: str
    unique_name: str | None
    created_by: str
    date_created: int
    date_updated: int
    date_expires: int | None
    last_event_id: int
    data: dict[str, Any] | None = None

    @property
    def revision(self) -> str:
        return format(self.last_event_id, "x")


@dataclass(frozen=True)
class Item:
    """One List item (``key`` is the decimal index) or Map item."""

    kind: Kind  # LIST or MAP
    collection_sid: str
    service_sid: str
    key: str
    data: dict[str, Any]
    last_event_id: int
    created_by: str
    date_created: int
    date_updated: int
    date_expires: int | None

    @property
    def revision(self) -> str:
        return format(self.last_event_id, "x")

    @property
    def index(self) -> int:
        return int(self.key)


@dataclass(frozen=True)
class Permission:
    kind: Kind
    object_sid: str
    service_sid: str
    identity: str
    read: bool
    write: bool
    manage: bool


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a keyset-paged listing. ``next``/``prev`` are cursors (opaque strings) or None."""

    items: list[T]
    next: str | None = None
    prev: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
