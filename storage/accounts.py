"""Accounts (AC…:auth token) and their API keys (SK…:secret).

The REST edge authenticates with either pair; the realtime gateway verifies access tokens with an
API key's secret, so secrets are stored (not hashed) exactly as Twilio must keep them.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass

import msgpack

from . import ids, invalidation, keys
from .clock import now_ms
from .redis_client import text
from .store import Store


@dataclass(frozen=True)
class ApiKey:
    sid: str
    account_sid: str
    friendly_name: str
    date_created: int
    secret: str


async def ensure_account(store: Store, account_sid: str, auth_token: str) -> None:
    """Create the account, or set its auth token (credentials from the environment win)."""
    r = store.redis
    await r.hset(keys.account(account_sid), mapping={"auth_token": auth_token, "date_created": now_ms()})
    await r.sadd(keys.ACCOUNTS, account_sid)
    await store.invalidate(invalidation.ACCOUNT, account_sid)  # an old token stops working everywhere


async def serve_account(store: Store, account_sid: str, auth_token: str) -> None:
    """Create or update the account a server is started for and record it as the store's default, so
    the admin commands (``sync-server keys``, ``account``, ``token``) act on it when none is chosen."""
    await ensure_account(store, account_sid, auth_token)
    await store.redis.set(keys.DEFAULT_ACCOUNT, account_sid)


class NoAccount(Exception):
    """No account could be chosen in a store (the message says why and how to choose one)."""


async def chosen_account(store: Store, account_sid: str | None) -> tuple[str, str, str]:
    """(sid, auth token, why this one) of an existing account, never creating one: ``account_sid`` if
    given, else the one the server records as served (the default account), else the store's only one.
    Raises NoAccount when the given one does not exist, the store has none, or it has several and
    none is recorded."""
    known = await list_accounts(store)
    if account_sid:
        token = await auth_token(store, account_sid)
        if token is None:
            raise NoAccount(f"no account {account_sid} in this store; it has: {', '.join(known) or 'none'}")
        return account_sid, token, "chosen"
    recorded = await store.redis.get(keys.DEFAULT_ACCOUNT)
    if recorded is not None:
        token = await auth_token(store, text(recorded))
        if token is not None:
            return text(recorded), token, "the server's"
    if not known:
        raise NoAccount("this store has no account yet: start the server on it once (`sync-server`)")
    if len(known) > 1:
        raise NoAccount(f"this store has several accounts ({', '.join(known)}): choose one with --account")
    token = await auth_token(store, known[0])
    if token is None:  # deleted in between
        raise NoAccount("this store has no account yet: start the server on it once (`sync-server`)")
    return known[0], token, "the store's only"


async def default_account(store: Store) -> tuple[str, str, bool]:
    """The account created on first start: (sid, token, created_now). Persisted in Redis."""
    r = store.redis
    existing = await r.get(keys.DEFAULT_ACCOUNT)
    if existing:
        sid = text(existing)
        stored = await r.hget(keys.account(sid), "auth_token")
        if stored:
            return sid, text(stored), False
    sid, token = ids.new_sid(ids.ACCOUNT), secrets.token_hex(16)
    if await r.set(keys.DEFAULT_ACCOUNT, sid, nx=True):
        await ensure_account(store, sid, token)
        return sid, token, True
    return await default_account(store)  # another process won the race: use its account


async def store_id(store: Store) -> str:
    """A random id of this data store, made on first use and kept in it: a different store (another
    data dir, a flushed or replaced Redis) has a different one. Clients key their caches with it."""
    cached = store_id_cached(store)  # read at every WebSocket connect
    if cached is not None:
        return cached
    found: str = await store.cache.load(keys.STORE_ID, lambda: _read_store_id(store))  # once for a crowd
    return found


async def _read_store_id(store: Store) -> str:
    r = store.redis
    existing = await r.get(keys.STORE_ID)
    if existing:
        return text(existing)
    await r.set(keys.STORE_ID, secrets.token_hex(16), nx=True)
    return await _read_store_id(store)  # ours, or another process's that won the race


def store_id_cached(store: Store) -> str | None:
    """``store_id`` as this process read it in the last few seconds, if it did (no read)."""
    cached: str | None = store.cache.get(keys.STORE_ID)
    return cached


async def list_accounts(store: Store) -> list[str]:
    return sorted(text(a) for a in await store.redis.smembers(keys.ACCOUNTS))


async def check_credentials(store: Store, username: str, password: str) -> str | None:
    """The account SID these Basic credentials belong to, or None."""
    if ids.is_sid(username, ids.ACCOUNT):
        token = await store.redis.hget(keys.account(username), "auth_token")
        if token is not None and hmac.compare_digest(text(token).encode(), password.encode()):
            return username
        return None
    if ids.is_sid(username, ids.API_KEY):
        key = await get_key(store, username)
        if key is not None and hmac.compare_digest(key.secret.encode(), password.encode()):
            return key.account_sid
    return None


async def auth_token(store: Store, account_sid: str) -> str | None:
    token = await store.redis.hget(keys.account(account_sid), "auth_token")
    return text(token) if token is not None else None


async def create_key(store: Store, account_sid: str, friendly_name: str = "") -> ApiKey:
    key = ApiKey(ids.new_sid(ids.API_KEY), account_sid, friendly_name, now_ms(), secrets.token_urlsafe(24))
    blob = msgpack.packb({"secret": key.secret, "friendly_name": friendly_name, "date_created": key.date_created})
    async with store.redis.pipeline(transaction=False) as p:
        p.hset(keys.account_keys(account_sid), key.sid, blob)
        p.hset(keys.KEY_INDEX, key.sid, account_sid)
        await p.execute()
    return key


async def get_key(store: Store, key_sid: str) -> ApiKey | None:
    account = await store.redis.hget(keys.KEY_INDEX, key_sid)
    if account is None:
        return None
    blob = await store.redis.hget(keys.account_keys(text(account)), key_sid)
    if blob is None:
        return None
    v = msgpack.unpackb(blob)
    return ApiKey(key_sid, text(account), v["friendly_name"], v["date_created"], v["secret"])


async def list_keys(store: Store, account_sid: str) -> list[ApiKey]:
    raw = await store.redis.hgetall(keys.account_keys(account_sid))
    out = []
    for sid, blob in raw.items():
        v = msgpack.unpackb(blob)
        out.append(ApiKey(text(sid), account_sid, v["friendly_name"], v["date_created"], v["secret"]))
    return sorted(out, key=lambda k: k.date_created)


async def delete_key(store: Store, key_sid: str) -> bool:
    key = await get_key(store, key_sid)
    if key is None:
        return False
    await store.redis.hdel(keys.account_keys(key.account_sid), key_sid)
    await store.redis.hdel(keys.KEY_INDEX, key_sid)
    await store.invalidate(invalidation.KEY, key_sid)  # refused on every process within a round trip
    return True
