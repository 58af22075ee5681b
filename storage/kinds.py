"""The four kinds of Sync object, and everything that differs between them, in one place.

``Kind`` is a ``StrEnum``: its values ("document", "list", "map", "stream") are what the Lua scripts
store in the object hash (``t``) and in every change event (``ot``), so a Kind passes to Redis and
compares with a decoded string as is. Code asks a Kind what it has (``has_data``, ``has_items`` …)
instead of comparing names, and the names each edge uses for it (REST path segment, listing key,
``*_sid`` field, webhook parameter prefix, SID prefix) are read from here, never spelled again.
"""

from __future__ import annotations

from enum import StrEnum

from . import ids


class Kind(StrEnum):
    DOCUMENT = "document"
    LIST = "list"
    MAP = "map"
    STREAM = "stream"

    @property
    def has_data(self) -> bool:
        """Only a Document holds data itself (Lists and Maps hold items, Streams hold nothing)."""
        return self is Kind.DOCUMENT

    @property
    def has_items(self) -> bool:
        """Lists and Maps: the collections, with items, item events and a collection revision."""
        return self is Kind.LIST or self is Kind.MAP

    @property
    def has_revision(self) -> bool:
        """Streams have no revision (and no ETag, no Permissions resource)."""
        return self is not Kind.STREAM

    @property
    def has_permissions(self) -> bool:
        return self is not Kind.STREAM

    @property
    def indexed(self) -> bool:
        """List items are addressed by a server-assigned index; Map items by a user key."""
        return self is Kind.LIST

    @property
    def sid_prefix(self) -> str:
        return _SID_PREFIX[self]

    @property
    def label(self) -> str:
        """``Document``: webhook parameter prefix (``DocumentSid``) and wording in messages."""
        return self.value.capitalize()

    @property
    def collection(self) -> str:
        """The path segment of this kind's resources (``/v1/Services/IS…/Documents``, ``/v3/Documents``)."""
        return self.label + "s"

    @property
    def listing_key(self) -> str:
        """The key of a listing page's rows (``{"documents": [...], "meta": ...}``)."""
        return self.value + "s"

    @property
    def sid_field(self) -> str:
        """The JSON field naming the object in its items, permissions and events (``list_sid``)."""
        return self.value + "_sid"

    @property
    def item_subject(self) -> str:
        """What storage errors about one of its items name (``list_item``, ``map_item``)."""
        return self.value + "_item"

    @classmethod
    def parse(cls, value: str) -> Kind | None:
        """The kind named ``value`` ("map" -> MAP), or None for anything else."""
        return _BY_VALUE.get(value)

    @classmethod
    def from_collection(cls, segment: str) -> Kind | None:
        """The kind whose path segment is ``segment`` (``"Maps"`` -> MAP), or None."""
        return _BY_COLLECTION.get(segment)


_SID_PREFIX = {Kind.DOCUMENT: ids.DOCUMENT, Kind.LIST: ids.LIST, Kind.MAP: ids.MAP, Kind.STREAM: ids.STREAM}
_BY_COLLECTION = {k.collection: k for k in Kind}
_BY_VALUE = {k.value: k for k in Kind}
COLLECTIONS = (Kind.LIST, Kind.MAP)
