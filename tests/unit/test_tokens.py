"""realtime/tokens.py where it is pure: ``mint`` makes what Twilio's helper libraries make.

Verification looks the signing key and the Service up in Redis, so it is tested end to end
(tests/test_realtime.py, tests/test_realtime_sdk.py); ``verify_cached``, which answers from the
process's cache alone, is tested here.
"""

from __future__ import annotations

import json
import time

import jwt
import pytest
from hypothesis import example, given, settings, strategies as st
from twilio.jwt.access_token import AccessToken
from twilio.jwt.access_token.grants import SyncGrant

from realtime import tokens
from storage.wire.errors import TwilioError

ACCOUNT = "AC" + "0" * 32
KEY = "SK" + "1" * 32
SECRET = "a-secret-long-enough-for-hs256-signing"
SERVICE = "IS" + "2" * 32


def _decode(token: str) -> dict:
    return jwt.decode(token, SECRET, algorithms=["HS256"])


def test_minted_token_has_twilios_header_and_claims() -> None:
    before = int(time.time())
    token = tokens.mint(ACCOUNT, KEY, SECRET, "alice", SERVICE, ttl_s=600)
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "JWT", "cty": tokens.CTY}
    claims = _decode(token)
    assert claims["iss"] == KEY and claims["sub"] == ACCOUNT and claims["jti"].startswith(f"{KEY}-")
    assert claims["grants"] == {"identity": "alice", "data_sync": {"service_sid": SERVICE}}
    assert before <= claims["nbf"] <= int(time.time()) and claims["exp"] == claims["nbf"] + 600


def test_no_service_means_a_grant_without_one() -> None:
    assert _decode(tokens.mint(ACCOUNT, KEY, SECRET, "bob", None))["grants"]["data_sync"] == {}


def test_minted_token_matches_the_twilio_helpers_token() -> None:
    """Same header and claims (apart from the clock) as ``AccessToken`` + ``SyncGrant``."""
    ours = tokens.mint(ACCOUNT, KEY, SECRET, "alice", SERVICE, ttl_s=3600)
    helper = AccessToken(ACCOUNT, KEY, SECRET, identity="alice", ttl=3600)
    helper.add_grant(SyncGrant(service_sid=SERVICE))
    theirs = str(helper.to_jwt())
    assert jwt.get_unverified_header(ours) == jwt.get_unverified_header(theirs)
    mine, twilio = _decode(ours), _decode(theirs)
    assert mine["grants"] == twilio["grants"]
    assert {k: v for k, v in mine.items() if k not in ("jti", "nbf", "exp")} == {
        k: v for k, v in twilio.items() if k not in ("jti", "nbf", "exp")
    }
    assert mine["exp"] - mine["nbf"] == 3600 and abs(twilio["exp"] - mine["exp"]) <= 2


def test_a_token_signed_with_another_secret_does_not_verify() -> None:
    token = tokens.mint(ACCOUNT, KEY, SECRET, "alice", SERVICE)
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, "another-secret-long-enough-for-hs256", algorithms=["HS256"])


def test_a_refusal_is_invalid_access_token_with_the_reason() -> None:
    err = tokens.invalid("no Sync grant", 403)
    assert (err.status, err.code, err.message) == (403, 20101, "Invalid Access Token: no Sync grant")
    assert tokens.invalid("unknown API key").status == 401


def test_parse_and_signed_by_agree_with_pyjwt_and_twilios_helper() -> None:
    helper = AccessToken(ACCOUNT, KEY, SECRET, identity="alice", ttl=3600)
    helper.add_grant(SyncGrant(service_sid=SERVICE))
    theirs = str(helper.to_jwt())
    parsed = tokens.parse(theirs)
    assert parsed.header == jwt.get_unverified_header(theirs)
    assert parsed.claims == _decode(theirs)
    assert tokens.signed_by(parsed, SECRET)
    assert not tokens.signed_by(parsed, "another-secret-long-enough-for-hs256")


def test_a_tampered_token_is_not_signed() -> None:
    head, body, sig = tokens.mint(ACCOUNT, KEY, SECRET, "alice", SERVICE).split(".")
    claims = _decode(f"{head}.{body}.{sig}")
    claims["grants"]["identity"] = "mallory"
    forged_body = jwt.utils.base64url_encode(json.dumps(claims).encode()).decode()
    assert not tokens.signed_by(tokens.parse(f"{head}.{forged_body}.{sig}"), SECRET)


@pytest.mark.parametrize("token", ["", "a.b", "a.b.c.d", "!!.??.**", "e30.W10.AA", "bm90IGpzb24.e30.AA"])
def test_what_is_not_a_jwt_is_refused_with_20101(token: str) -> None:
    with pytest.raises(TwilioError) as err:
        tokens.parse(token)
    assert (err.value.status, err.value.code) == (401, 20101)


def test_verify_cached_answers_from_the_cache_alone_or_not_at_all() -> None:
    """What a connect checks without a task when the key and the Service were read moments ago: the
    Grant, or the refusal, from the cache; None (go to Redis) when either is not in it."""
    from types import SimpleNamespace
    from typing import Any, cast

    from storage.accounts import ApiKey
    from storage.cache import TtlCache
    from storage.records import Service

    store = cast(Any, SimpleNamespace(cache=TtlCache(60), health=SimpleNamespace(up=True)))
    token = tokens.mint(ACCOUNT, KEY, SECRET, "alice", SERVICE)
    assert tokens.verify_cached(store, token) is None  # nothing cached
    store.cache.put(("api-key", KEY), ApiKey(KEY, ACCOUNT, "k", 0, SECRET))
    assert tokens.verify_cached(store, token) is None  # the Service is not
    fields: dict[str, Any] = dict(friendly_name=None, unique_name=None, webhook_url=None, date_created=0)
    fields |= dict(reachability_debouncing_enabled=False, reachability_debouncing_window=5000, date_updated=0)
    fields["webhooks_from_rest_enabled"] = False
    service = Service(SERVICE, ACCOUNT, acl_enabled=True, reachability_webhooks_enabled=False, **fields)
    store.cache.put(("service", ACCOUNT, SERVICE), service)
    grant = tokens.verify_cached(store, token)
    assert grant is not None and (grant.identity, grant.service_sid, grant.key_sid) == ("alice", SERVICE, KEY)
    assert grant.acl_enabled and not grant.reachability and grant.expires == _decode(token)["exp"]
    with pytest.raises(TwilioError) as refused:
        tokens.verify_cached(store, tokens.mint(ACCOUNT, KEY, "another-secret-long-enough-for-hs256", "eve", SERVICE))
    assert refused.value.code == 20101
    with pytest.raises(TwilioError) as expired:
        tokens.verify_cached(store, tokens.mint(ACCOUNT, KEY, SECRET, "alice", SERVICE, ttl_s=-10))
    assert expired.value.code == 20104
    assert tokens.verify_cached(store, tokens.mint(ACCOUNT, KEY, SECRET, "alice", None)) is None  # the default Service
    store.health.up = False  # Redis is known to be down: nothing from the cache (the connect reads, and fails)
    assert tokens.verify_cached(store, token) is None


def _signed(header: object, claims_json: str, secret: str = SECRET) -> str:
    """A compact JWT of this header and raw claims text, HS256-signed with ``secret``."""
    import base64
    import hashlib
    import hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = f"{b64(json.dumps(header).encode())}.{b64(claims_json.encode())}"
    signature = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


_JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True)
    | st.text(max_size=20)
    | st.sampled_from(["1e400", "-1e400", "NaN", str(2**1100)]).map(lambda raw: _Raw(raw)),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


class _Raw:
    """A JSON number written as is (json.dumps cannot write 1e400 or integers past floats)."""

    def __init__(self, text: str) -> None:
        self.text = text


def _dumps(value: object) -> str:
    if isinstance(value, _Raw):
        return value.text
    if isinstance(value, list):
        return "[" + ",".join(_dumps(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{_dumps(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)  # NaN and Infinity as JSON's extension, which json.loads reads


@settings(max_examples=300, deadline=None)
@example({"exp": _Raw("1e400")}, True)
@example({"exp": _Raw("NaN")}, True)
@example({"exp": _Raw(str(2**1100))}, True)
@example({"exp": 1e15, "nbf": _Raw("-1e400")}, True)
@given(
    st.fixed_dictionaries(
        {},
        optional={name: _JSON_VALUES for name in ("exp", "nbf", "iat", "sub", "grants", "jti")},
    ),
    st.booleans(),
)
def test_a_signed_token_with_any_claims_is_a_grant_or_a_twilio_error(claims: dict, real_grants: bool) -> None:
    """A token signed with the right key (a customer's own backend can mint anything) but with claims
    of any type and size, numbers past a float's range included: verification answers a Grant or a
    TwilioError, never another exception (which would escape a WebSocket's first frame)."""
    if real_grants:
        claims["grants"] = {"identity": "alice", "data_sync": {"service_sid": SERVICE}}
        claims.setdefault("sub", ACCOUNT)
    claims["iss"] = KEY
    token = _signed({"alg": "HS256", "typ": "JWT", "cty": "twilio-fpa;v=1"}, _dumps(claims))
    from storage.accounts import ApiKey

    try:
        tokens._checked(tokens.parse(token), ApiKey(KEY, ACCOUNT, "k", 0, SECRET), 0)
    except TwilioError:
        pass
