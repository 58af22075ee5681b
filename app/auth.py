"""HTTP Basic authentication on every REST endpoint: AccountSid:AuthToken or ApiKeySid:secret."""

from __future__ import annotations

import base64
import binascii

from starlette.requests import Request

from storage import Store, accounts, invalidation
from storage.cache import TtlCache
from storage.wire import errors


class Authenticator:
    """Checks Basic credentials against the store, remembering good ones for a few seconds (a
    TtlCache: a caller in steady use is re-checked in the background, never waits). A key revoked
    or an auth token set on any process is forgotten here at once (storage/invalidation.py); the few
    seconds are the fallback when that message is lost."""

    def __init__(self, store: Store, cache_s: float = 5.0) -> None:
        self.store = store
        self._cache = TtlCache(cache_s, max_entries=10_000)  # encoded credentials -> account SID
        self._by_user: dict[str, set[str]] = {}  # username (AC… or SK…) -> its cached encoded credentials
        store.invalidations.listen(self._forget)

    def _forget(self, kind: str, ids: tuple[str, ...]) -> None:
        if kind == invalidation.EVERYTHING:
            self._cache.clear()
            self._by_user.clear()
        elif kind in (invalidation.KEY, invalidation.ACCOUNT) and ids:
            for encoded in self._by_user.pop(ids[0], ()):
                self._cache.drop(encoded)

    async def account_for(self, request: Request) -> str:
        header = request.headers.get("authorization", "")
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic" or not encoded:
            raise errors.UNAUTHENTICATED("No credentials provided")
        account: str | None = await self._cache.load(encoded, lambda: self._check(encoded))
        if account is None:
            raise errors.UNAUTHENTICATED("invalid username")
        return account

    async def _check(self, encoded: str) -> str | None:
        try:
            username, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise errors.UNAUTHENTICATED("invalid credentials") from None
        account = await accounts.check_credentials(self.store, username, password)
        if account is not None:
            if len(self._by_user) > 10_000:  # both start over together, so no entry outlives its revocation
                self._by_user.clear()
                self._cache.clear()
            self._by_user.setdefault(username, set()).add(encoded)
        return account
