"""The storage layer: the only package that talks to Redis. See keys.py for the layout."""

from .durability import Durability
from .errors import (
    AlreadyExistsError,
    InvalidInputError,
    NotFoundError,
    RevisionMismatchError,
    StoreError,
    StoreUnavailableError,
    TooLargeError,
)
from .events import ChangeEvent
from .kinds import Kind
from .records import SWEEPER, SYSTEM, Actor, Item, Page, Permission, Service, SyncObject
from .store import Store, StoreConfig

__all__ = [
    "SWEEPER",
    "SYSTEM",
    "Actor",
    "AlreadyExistsError",
    "ChangeEvent",
    "InvalidInputError",
    "Item",
    "Kind",
    "NotFoundError",
    "Page",
    "Permission",
    "RevisionMismatchError",
    "Service",
    "Store",
    "StoreConfig",
    "Durability",
    "StoreError",
    "StoreUnavailableError",
    "SyncObject",
    "TooLargeError",
]
