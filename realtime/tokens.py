"""Twilio Access Tokens (JWT, HS256, ``cty: twilio-fpa;v=1``): verify for the gateway, mint for dev.

Verification looks the signing API key up by the ``iss`` claim (``SK…``) and checks the signature with
its secret, then that ``sub`` is the key's account, that the token has not expired and that it holds
a Sync grant for a Service of that account. Every refusal is a TwilioError carrying the code the SDK
expects: ACCESS_TOKEN_EXPIRED for an expired token (the SDK emits ``tokenExpired``),
INVALID_ACCESS_TOKEN for everything else (status 401, or 403 for a valid token that grants no Sync).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Any

import jwt

from storage import NotFoundError, Service, Store, accounts, ids, services
from storage.wire import errors
from storage.wire.errors import TwilioError
from storage.wire.jsontext import loads

CTY = "twilio-fpa;v=1"
MAX_LIFETIME_S = 86400


def invalid(detail: str, status: int = 401) -> TwilioError:
    """A refused token (INVALID_ACCESS_TOKEN): ``detail`` says why."""
    return errors.INVALID_ACCESS_TOKEN(f": {detail}", status=status)


@dataclass(frozen=True, slots=True)
class Grant:
    """What a verified token allows: one identity on one Service, until ``expires`` (epoch s)."""

    account_sid: str
    key_sid: str
    identity: str
    service_sid: str
    endpoint_id: str | None
    expires: int
    acl_enabled: bool = False  # the Service's, as read when the token was verified
    reachability: bool = False  # the Service's reachability_webhooks_enabled, likewise


@dataclass(frozen=True, slots=True)
class Parsed:
    """A JWT split and decoded, not verified yet."""

    header: dict[str, Any]
    claims: dict[str, Any]
    signing_input: bytes
    signature: bytes


def parse(token: str) -> Parsed:
    """Split and decode a compact JWT (no verification). Raises TwilioError if it is not one.

    Why not PyJWT here: every WebSocket connect verifies a token, and PyJWT decodes it three times
    over (header, unverified claims, verified claims), about a third of a connect's CPU; HS256 is
    one HMAC over the first two segments, checked by ``signed_by`` with a constant-time compare.
    PyJWT still mints tokens, and the tests check both against Twilio's helper library."""
    try:
        head, body, sig = token.split(".")
        header, claims = loads(_unb64(head).decode()), loads(_unb64(body).decode())  # UTF-8 (RFC 7519)
        signature = _unb64(sig)
    except (ValueError, binascii.Error, RecursionError):
        raise invalid("not a JSON Web Token") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise invalid("not a JSON Web Token")
    return Parsed(header, claims, f"{head}.{body}".encode(), signature)


def signed_by(parsed: Parsed, secret: str) -> bool:
    """Is ``parsed`` signed with ``secret`` (HS256)?"""
    expected = hmac.new(secret.encode(), parsed.signing_input, hashlib.sha256).digest()
    return hmac.compare_digest(expected, parsed.signature)


def _unb64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


async def verify(store: Store, token: str, leeway_s: int = 0, fresh: bool = False) -> Grant:
    """Check ``token`` completely; raise TwilioError (never anything else) when it is refused.
    ``fresh``: read the Service itself, not the copy cached for connects (services.cached)."""
    parsed, issuer = _issued(token)
    key = await _key(store, issuer)
    if key is None:
        raise invalid("unknown API key")
    identity, sync = _checked(parsed, key, leeway_s)
    service = await _service(store, key.account_sid, sync.get("service_sid"), fresh)
    return _grant(parsed, key, identity, sync, service)


def verify_cached(store: Store, token: str, leeway_s: int = 0) -> Grant | None:
    """``verify`` from this process's caches alone (the signing key and the grant's Service, both
    read in the last few seconds): the same Grant or the same refusal, without an await, for a
    crowd of clients connecting at once (an entry due for its re-read starts it in the background:
    storage/cache.py). None when a lookup has to go to Redis."""
    parsed, issuer = _issued(token)
    key: accounts.ApiKey | None = store.cache.fresh(("api-key", issuer), lambda: accounts.get_key(store, issuer))
    if key is None:
        return None
    identity, sync = _checked(parsed, key, leeway_s)
    requested = sync.get("service_sid")
    service = services.cached_now(store, key.account_sid, requested) if isinstance(requested, str) else None
    return None if service is None else _grant(parsed, key, identity, sync, service)


def _issued(token: str) -> tuple[Parsed, str]:
    """The token parsed, and its issuer (the signing key's SID), if it is a Twilio access token."""
    parsed = parse(token)
    if parsed.header.get("alg") != "HS256" or parsed.header.get("cty") != CTY:
        raise invalid("not a Twilio access token (alg/cty)")
    issuer = parsed.claims.get("iss")
    if not isinstance(issuer, str) or not ids.is_sid(issuer, ids.API_KEY):
        raise invalid("iss is not an API key SID")
    return parsed, issuer


def _checked(parsed: Parsed, key: accounts.ApiKey, leeway_s: int) -> tuple[str, dict[str, Any]]:
    """Every check after the key's lookup but the Service's: (identity, the Sync grant), or the refusal."""
    claims = parsed.claims
    if not signed_by(parsed, key.secret):
        raise invalid("Signature verification failed")
    exp, nbf, iat = _time(claims, "exp", required=True), _time(claims, "nbf"), _time(claims, "iat")
    assert exp is not None
    now = time.time()
    if now > exp + leeway_s:
        raise errors.ACCESS_TOKEN_EXPIRED()
    if nbf is not None and now + leeway_s < nbf:
        raise invalid("The token is not yet valid (nbf)")
    if claims.get("sub") != key.account_sid:
        raise invalid("sub is not the API key's account")
    if int(exp) - int(nbf or iat or now) > MAX_LIFETIME_S:
        raise invalid("lifetime exceeds 24 hours")
    grants = claims.get("grants")
    if not isinstance(grants, dict) or not isinstance(grants.get("data_sync"), dict):
        raise invalid("no Sync grant", 403)
    identity = grants.get("identity")
    if not isinstance(identity, str) or not 1 <= len(identity) <= 256:
        raise invalid("the grant has no identity", 403)
    return identity, grants["data_sync"]


def _grant(parsed: Parsed, key: accounts.ApiKey, identity: str, sync: dict[str, Any], service: Service) -> Grant:
    endpoint = sync.get("endpoint_id")
    return Grant(
        account_sid=key.account_sid,
        key_sid=key.sid,
        identity=identity,
        service_sid=service.sid,
        endpoint_id=endpoint if isinstance(endpoint, str) and endpoint else None,
        expires=int(parsed.claims["exp"]),
        acl_enabled=service.acl_enabled,
        reachability=service.reachability_webhooks_enabled,
    )


async def _key(store: Store, key_sid: str) -> accounts.ApiKey | None:
    """The signing key, trusted for the store's cache time (like REST credentials): every connect
    of a crowd of clients signed by one key would otherwise read it again."""
    # one read for a crowd that connects at once; a revocation heard during the read: not kept
    key: accounts.ApiKey | None = await store.cache.load(("api-key", key_sid), lambda: accounts.get_key(store, key_sid))
    return key


MAX_NUMERIC_DATE = 10**11  # seconds: the year 5138, beyond any real token and far within a float


def _time(claims: dict[str, Any], name: str, required: bool = False) -> float | None:
    """A NumericDate claim (RFC 7519): a number of seconds, or absent unless ``required``."""
    value = claims.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise invalid(f"{name} must be a number" + (" and is required" if required else ""))
    # JSON allows what arithmetic on times does not: 1e400 (inf), NaN, integers of any size
    if not -MAX_NUMERIC_DATE <= value <= MAX_NUMERIC_DATE:  # False for NaN too
        raise invalid(f"{name} is out of range")
    return float(value)


async def _service(store: Store, account_sid: str, requested: Any, fresh: bool) -> Service:
    """The grant's Service, which must be the account's; none given = the account's oldest Service."""
    if requested in (None, "", "default"):
        first = await services.page(store, account_sid, 1, None)
        if not first.items:
            raise errors.SERVICE_NOT_SPECIFIED()
        return first.items[0]
    if not isinstance(requested, str):
        raise invalid("bad service_sid", 403)
    try:  # cached, as the key: a change to the Service reaches every process's cache (services.cached)
        return await (services.get if fresh else services.cached)(store, account_sid, requested)
    except NotFoundError:
        raise invalid(f"no Service {requested} in this account", 403) from None


def mint(account_sid: str, key_sid: str, secret: str, identity: str, service_sid: str | None, ttl_s: int = 3600) -> str:
    """A token exactly as Twilio's helper libraries mint it (``AccessToken`` + ``SyncGrant``)."""
    now = int(time.time())
    sync: dict[str, str] = {"service_sid": service_sid} if service_sid else {}
    payload = {
        "jti": f"{key_sid}-{now}",
        "grants": {"identity": identity, "data_sync": sync},
        "iss": key_sid,
        "sub": account_sid,
        "nbf": now,
        "exp": now + ttl_s,
    }
    return jwt.encode(payload, secret, algorithm="HS256", headers={"cty": CTY, "typ": "JWT"})
