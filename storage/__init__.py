"""The storage layer: the only package that talks to Redis. See keys.py for the layout."""

from .errors import (
    AlreadyExistsError,
    InvalidInputError,
    NotFoundError,
    RevisionMismatchError,
    StoreError,
    StoreUnavailableError,
    TooLargeError,
)
from .records import SWEEPER, SYSTEM, Actor, Item, Page, Permission, Service, SyncObject
from .store import Store, StoreConfig

__all__ = [
    "SWEEPER",
    "SYSTEM",
    "Actor",
    "AlreadyExistsError",
    "InvalidInputError",
    "Item",
    "NotFoundError",
    "Page",
    "Permission",
    "RevisionMismatchError",
    "Service",
    "Store",
    "StoreConfig",
    "StoreError",
    "StoreUnavailableError",
    "SyncObject",
    "TooLargeError",
]
