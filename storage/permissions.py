"""Per-identity Read/Write/Manage permissions on a Document, List or Map."""

from __future__ import annotations

from . import keys, objects
from .errors import NotFoundError
from .kinds import Kind
from .paging import Cursor
from .records import SYSTEM, Page, Permission
from .redis_client import text
from .store import Store


def _bits(read: bool, write: bool, manage: bool) -> str:
    return ("r" if read else "") + ("w" if write else "") + ("m" if manage else "")


def _decode(kind: Kind, sid: str, service_sid: str, identity: str, bits: str) -> Permission:
    return Permission(kind, sid, service_sid, identity, "r" in bits, "w" in bits, "m" in bits)


async def put(
    store: Store, service_sid: str, kind: Kind, ident: str, identity: str, read: bool, write: bool, manage: bool
) -> Permission:
    bits = _bits(read, write, manage)
    sid = await _write(store, service_sid, kind, ident, identity, bits)
    return _decode(kind, sid, service_sid, identity, bits)


async def _write(store: Store, service_sid: str, kind: Kind, ident: str, identity: str, bits: str) -> str:
    """Set (or with bits "-" delete) one permission; the script checks the object is live."""

    async def run(sid: str) -> str:
        okey = keys.obj(service_sid, sid)
        await store.run("permission_write", service_sid, okey, SYSTEM, sid=sid, identity=identity, bits=bits, kind=kind)
        return sid

    return await objects.with_object(store, service_sid, kind, ident, run)


async def get(store: Store, service_sid: str, kind: Kind, ident: str, identity: str) -> Permission:
    sid = await objects.resolve(store, service_sid, kind, ident)
    bits = await store.redis.hget(keys.permissions(service_sid, sid), identity)
    if bits is None:
        raise NotFoundError("permission", identity)
    return _decode(kind, sid, service_sid, identity, text(bits))


async def delete(store: Store, service_sid: str, kind: Kind, ident: str, identity: str) -> None:
    await _write(store, service_sid, kind, ident, identity, "-")


async def page(
    store: Store, service_sid: str, kind: Kind, ident: str, size: int, cursor: Cursor | None
) -> Page[Permission]:
    """Permissions ordered by identity (keyset on the identity string)."""
    sid = await objects.resolve(store, service_sid, kind, ident)
    raw = await store.redis.hgetall(keys.permissions(service_sid, sid))
    rows = sorted((text(k), text(v)) for k, v in raw.items())
    forward = cursor is None or cursor.forward
    if cursor is None:
        window = rows
    elif forward:
        window = [r for r in rows if r[0] > cursor.value]
    else:
        window = [r for r in rows if r[0] < cursor.value][::-1]
    more = len(window) > size
    window = window[:size]
    if not forward:
        window.reverse()
    nxt = window[-1][0] if window and (more or not forward) else None
    prev = window[0][0] if window and (more if not forward else cursor is not None) else None
    return Page([_decode(kind, sid, service_sid, i, b) for i, b in window], nxt, prev)
