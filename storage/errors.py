"""Domain errors raised by the storage layer. No HTTP in here: app/errors.py maps them.

StoreError
 +-- NotFoundError            (kind says what: service, document, list_item, ...)
 +-- AlreadyExistsError       (unique name or map key taken)
 +-- RevisionMismatchError    (If-Match did not match the current revision)
 +-- InvalidInputError        (a value the store refuses; ``kind`` names the rule, see limits.py)
 +-- TooLargeError            (data over its size limit)
 +-- StoreUnavailableError    (Redis could not be reached; wraps the redis-py error)
 +-- IdempotencyConflictError (an Idempotency-Key is in use by another request, or its parameters differ)
 +-- BeyondHistoryError       (an AsOf read older than the retained history)
"""

from __future__ import annotations


class StoreError(Exception):
    """Base of every error the storage layer raises on purpose."""

    def __init__(self, kind: str, ident: str = "", message: str = "") -> None:
        self.kind = kind
        self.ident = ident
        super().__init__(message or f"{kind} {ident}".strip())


class NotFoundError(StoreError):
    """The addressed object, item or permission does not exist (or has expired)."""


class AlreadyExistsError(StoreError):
    """A create collided with an existing unique name or map key."""


class RevisionMismatchError(StoreError):
    """A conditional write carried a revision that is not the current one."""


class InvalidInputError(StoreError):
    """The store refuses a value (e.g. a list index that is not a number)."""


class TooLargeError(StoreError):
    """Data over its size limit (16 KiB for objects and items, 4 KiB for stream messages)."""


class StoreUnavailableError(StoreError):
    """Redis did not answer; nothing can be said about whether a write happened."""


class IdempotencyConflictError(StoreError):
    """An Idempotency-Key that cannot be used now: ``kind`` "busy" (another request holds it; ``ident``
    says in how many seconds it may be retried), "superseded" (a retry took it over while this request
    waited) or "mismatch" (it was first used with other parameters)."""


class BeyondHistoryError(StoreError):
    """A point-in-time read asked for a moment older than the retained history (``ident`` names
    the oldest reachable point)."""
