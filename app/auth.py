"""HTTP Basic authentication on every REST endpoint: AccountSid:AuthToken or ApiKeySid:secret."""

from __future__ import annotations

import base64
import binascii
import time

from starlette.requests import Request

from storage import Store, accounts, invalidation
from storage.wire import errors


class Authenticator:
    """Checks Basic credentials against the store, remembering good ones for a few seconds. A key
    revoked or an auth token set on any process is forgotten here at once (storage/invalidation.py);
    the few seconds are the fallback when that message is lost."""

    def __init__(self, store: Store, cache_s: float = 5.0) -> None:
        self.store = store
        self.cache_s = cache_s
        self._cache: dict[str, tuple[str, float]] = {}
        self._by_user: dict[str, set[str]] = {}  # username (AC… or SK…) -> its cached encoded credentials
        store.invalidations.listen(self._forget)

    def _forget(self, kind: str, ids: tuple[str, ...]) -> None:
        if kind == invalidation.EVERYTHING:
            self._cache.clear()
            self._by_user.clear()
        elif kind in (invalidation.KEY, invalidation.ACCOUNT) and ids:
            for encoded in self._by_user.pop(ids[0], ()):
                self._cache.pop(encoded, None)

    async def account_for(self, request: Request) -> str:
        header = request.headers.get("authorization", "")
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic" or not encoded:
            raise errors.UNAUTHENTICATED("No credentials provided")
        cached = self._cache.get(encoded)
        if cached and cached[1] > time.monotonic():
            return cached[0]
        try:
            username, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise errors.UNAUTHENTICATED("invalid credentials") from None
        account = await accounts.check_credentials(self.store, username, password)
        if account is None:
            raise errors.UNAUTHENTICATED("invalid username")
        if len(self._cache) > 10_000:
            self._cache.clear()
            self._by_user.clear()
        self._cache[encoded] = (account, time.monotonic() + self.cache_s)
        self._by_user.setdefault(username, set()).add(encoded)
        return account
