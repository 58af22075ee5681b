"""Idempotency-Key (issue 13, an extension): a retried REST write is applied once and answered as the
first time; the same key with other parameters is refused 422; concurrent duplicates apply once;
records lapse after SYNC_IDEMPOTENCY_TTL_S. The states a crash leaves behind (a claim whose request
died, a write applied but never answered) are made here directly in Redis through the storage
functions the server uses, then retried over HTTP; tests/test_idempotency_crash.py kills a real server."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from app.idempotency import fingerprint, record_key
from realtime.client import SyncClient
from storage import Kind, Store, accounts, idempotency, items, objects, records
from storage.errors import IdempotencyConflictError
from tests.helpers import ACCOUNT_SID, AUTH_TOKEN, ON_EVERY_BACKEND, Backend, Endpoint
from tests.sdk import token

pytestmark = ON_EVERY_BACKEND

FORM = "application/x-www-form-urlencoded"


def _key(name: str) -> dict[str, str]:
    return {"Idempotency-Key": f"{name}-{time.monotonic_ns()}"}


async def _items(http: httpx.AsyncClient, service: str, lst: str) -> list[dict[str, Any]]:
    r = await http.get(f"/v1/Services/{service}/Lists/{lst}/Items", params={"PageSize": 100})
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


async def test_retry_gets_the_stored_answer_and_changes_nothing(http: httpx.AsyncClient, service: str) -> None:
    base = f"/v1/Services/{service}"
    create = _key("create")
    first = await http.post(f"{base}/Documents", data={"UniqueName": "d", "Data": '{"n":1}'}, headers=create)
    again = await http.post(f"{base}/Documents", data={"Data": '{"n":1}', "UniqueName": "d"}, headers=create)
    assert first.status_code == again.status_code == 201, again.text
    assert "idempotent-replayed" not in first.headers and again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content and again.headers["etag"] == first.headers["etag"] == "0"

    update = _key("update")
    for _ in range(3):
        r = await http.post(f"{base}/Documents/d", data={"Data": '{"n":2}'}, headers=update)
        assert r.status_code == 200 and r.json()["revision"] == "1" and r.headers["etag"] == "1", r.text
    assert (await http.get(f"{base}/Documents/d")).json()["revision"] == "1"

    assert (await http.post(f"{base}/Lists", data={"UniqueName": "l"})).status_code == 201
    append = _key("append")
    answers = [await http.post(f"{base}/Lists/l/Items", data={"Data": '{"x":1}'}, headers=append) for _ in range(3)]
    assert {a.status_code for a in answers} == {201} and len({a.content for a in answers}) == 1
    assert [i["index"] for i in await _items(http, service, "l")] == [0]

    remove = _key("remove")
    for _ in range(2):
        r = await http.delete(f"{base}/Lists/l/Items/0", headers=remove)
        assert r.status_code == 204, r.text
    assert r.headers["idempotent-replayed"] == "true"

    assert (await http.post(f"{base}/Streams", data={"UniqueName": "s"})).status_code == 201
    publish = _key("publish")
    sids = [(await http.post(f"{base}/Streams/s/Messages", data={"Data": "{}"}, headers=publish)).json()["sid"]]
    sids.append((await http.post(f"{base}/Streams/s/Messages", data={"Data": "{}"}, headers=publish)).json()["sid"])
    assert sids[0] == sids[1]


async def test_an_error_answer_is_stored_too(http: httpx.AsyncClient, service: str) -> None:
    key = _key("missing")
    first = await http.post(f"/v1/Services/{service}/Documents/nope", data={"Data": "{}"}, headers=key)
    assert first.status_code == 404
    await http.post(f"/v1/Services/{service}/Documents", data={"UniqueName": "nope"})
    again = await http.post(f"/v1/Services/{service}/Documents/nope", data={"Data": "{}"}, headers=key)
    assert again.status_code == 404 and again.content == first.content and again.headers["idempotent-replayed"]


async def test_service_writes_are_replayed(http: httpx.AsyncClient) -> None:
    key = _key("service")
    first = await http.post("/v1/Services", data={"FriendlyName": "idem"}, headers=key)
    again = await http.post("/v1/Services", data={"FriendlyName": "idem"}, headers=key)
    assert first.status_code == again.status_code == 201 and first.json()["sid"] == again.json()["sid"]
    listed = (await http.get("/v1/Services", params={"PageSize": 1000})).json()["services"]
    assert [s["sid"] for s in listed].count(first.json()["sid"]) == 1


async def test_same_key_with_other_parameters_is_422(http: httpx.AsyncClient, service: str) -> None:
    base = f"/v1/Services/{service}"
    key = _key("mismatch")
    assert (await http.post(f"{base}/Documents", data={"UniqueName": "a"}, headers=key)).status_code == 201
    for other in (
        http.post(f"{base}/Documents", data={"UniqueName": "b"}, headers=key),  # another body
        http.post(f"{base}/Maps", data={"UniqueName": "a"}, headers=key),  # another path
        http.delete(f"{base}/Documents/a", headers=key),  # another method
    ):
        r = await other
        assert r.status_code == 422, r.text
        body = r.json()
        assert body["code"] == 20422 and body["status"] == 422 and "Idempotency-Key" in body["message"]
        assert body["more_info"].endswith("/20422")
    assert [d["unique_name"] for d in (await http.get(f"{base}/Documents")).json()["documents"]] == ["a"]


async def test_invalid_key_is_400(http: httpx.AsyncClient, service: str) -> None:
    for bad in (b"", b"x" * 256, b"caf\xe9", b"tab\there"):
        r = await http.post(f"/v1/Services/{service}/Documents", data={}, headers={"Idempotency-Key": bad})
        assert r.status_code == 400 and r.json()["code"] == 20001, (bad, r.text)


async def test_concurrent_duplicates_apply_once(http: httpx.AsyncClient, service: str) -> None:
    base = f"/v1/Services/{service}"
    assert (await http.post(f"{base}/Lists", data={"UniqueName": "l"})).status_code == 201
    key = _key("burst")
    answers = await asyncio.gather(
        *[http.post(f"{base}/Lists/l/Items", data={"Data": '{"x":1}'}, headers=key) for _ in range(12)]
    )
    # the retries that came while the first was running waited for it and got its answer
    assert [a.status_code for a in answers] == [201] * 12, [a.text for a in answers]
    assert len({a.content for a in answers}) == 1
    assert sum("idempotent-replayed" not in a.headers for a in answers) == 1
    assert len(await _items(http, service, "l")) == 1
    later = await http.post(f"{base}/Lists/l/Items", data={"Data": '{"x":1}'}, headers=key)
    assert later.status_code == 201 and later.json()["index"] == 0


async def test_keys_are_scoped_by_account(http: httpx.AsyncClient, server: Endpoint, store: Store) -> None:
    other, token = "AC" + "7" * 32, "t" * 32
    await accounts.ensure_account(store, other, token)
    key = _key("shared")
    mine = await http.post("/v1/Services", data={"FriendlyName": "a"}, headers=key)
    async with httpx.AsyncClient(base_url=server.base_url, auth=(other, token)) as theirs:
        r = await theirs.post("/v1/Services", data={"FriendlyName": "a"}, headers=key)
    assert mine.status_code == r.status_code == 201 and "idempotent-replayed" not in r.headers
    assert r.json()["account_sid"] == other and r.json()["sid"] != mine.json()["sid"]


async def test_records_lapse_after_the_ttl(backend: Backend) -> None:
    with backend.server_process(SYNC_IDEMPOTENCY_TTL_S="1") as srv:
        async with httpx.AsyncClient(base_url=srv.base_url, auth=(ACCOUNT_SID, AUTH_TOKEN)) as http:
            service = (await http.post("/v1/Services", data={"FriendlyName": "ttl"})).json()["sid"]
            assert (await http.post(f"/v1/Services/{service}/Lists", data={"UniqueName": "l"})).status_code == 201
            key = _key("ttl")
            url = f"/v1/Services/{service}/Lists/l/Items"
            assert (await http.post(url, data={"Data": "{}"}, headers=key)).status_code == 201
            assert (await http.post(url, data={"Data": "{}"}, headers=key)).headers["idempotent-replayed"] == "true"
            await asyncio.sleep(1.3)
            fresh = await http.post(url, data={"Data": "{}"}, headers=key)
            assert fresh.status_code == 201 and "idempotent-replayed" not in fresh.headers
            assert len(await _items(http, service, "l")) == 2


async def _claim_for(store: Store, service: str, path: str, key: str, form: str) -> idempotency.Claim:
    """Claim ``key`` as the server would for a POST of ``form`` to ``path`` (the test plays a server)."""
    _, rkey = record_key(path, ACCOUNT_SID, key)
    claim = idempotency.Claim(service, rkey)
    outcome = await idempotency.claim(store, claim, fingerprint("POST", path, b"", FORM, form.encode()), 60)
    assert outcome.state == "new"
    return claim


async def test_a_write_applied_but_never_answered_is_answered_on_retry(
    http: httpx.AsyncClient, service: str, store: Store
) -> None:
    """A server that died between the write script (which recorded the key) and storing the answer:
    the retry rebuilds the answer from the recorded reply and writes nothing."""
    await http.post(f"/v1/Services/{service}/Documents", data={"UniqueName": "d"})
    path, key = f"/v1/Services/{service}/Documents/d", "died-after-write"
    claim = await _claim_for(store, service, path, key, "Data=%7B%22n%22%3A7%7D")
    token = idempotency.CURRENT.set(claim)
    try:
        applied = await objects.update(store, service, Kind.DOCUMENT, "d", records.SYSTEM, data_json='{"n":7}')
    finally:
        idempotency.CURRENT.reset(token)
    r = await http.post(path, data={"Data": '{"n":7}'}, headers={"Idempotency-Key": key})
    assert r.status_code == 200 and r.headers["idempotent-replayed"] == "true", r.text
    assert r.json()["revision"] == applied.revision == "1" and r.headers["etag"] == "1"
    assert r.json()["data"] == {"n": 7}
    again = await http.post(path, data={"Data": '{"n":7}'}, headers={"Idempotency-Key": key})
    assert again.content == r.content  # stored now
    assert (await http.get(path)).json()["revision"] == "1"


async def test_a_retry_while_the_first_runs_waits_and_gets_its_stored_answer(
    http: httpx.AsyncClient, service: str, store: Store
) -> None:
    """The first request holds the key (the test plays it); a retry waits rather than being turned
    away, and once the first stores its answer the retry gets exactly that, marked replayed."""
    await http.post(f"/v1/Services/{service}/Lists", data={"UniqueName": "l"})
    path, key = f"/v1/Services/{service}/Lists/l/Items", "slow-first"
    first = await _claim_for(store, service, path, key, "Data=%7B%7D")
    retry = asyncio.create_task(http.post(path, data={"Data": "{}"}, headers={"Idempotency-Key": key}))
    await asyncio.sleep(0.5)
    assert not retry.done()
    body = b'{"index": 41, "answered": "by the first"}'
    await idempotency.finish(store, first, idempotency.Answer(201, body, {"content-type": "application/json"}))
    r = await asyncio.wait_for(retry, 10)
    assert (r.status_code, r.content, r.headers["idempotent-replayed"]) == (201, body, "true")
    assert len(await _items(http, service, "l")) == 0  # the retry wrote nothing itself


async def test_a_claim_whose_request_died_is_taken_over_and_the_late_write_refused(
    http: httpx.AsyncClient, service: str, store: Store, redis: Any
) -> None:
    await http.post(f"/v1/Services/{service}/Lists", data={"UniqueName": "l"})
    path, key = f"/v1/Services/{service}/Lists/l/Items", "died-before-write"
    stale = await _claim_for(store, service, path, key, "Data=%7B%7D")
    retry = asyncio.create_task(http.post(path, data={"Data": "{}"}, headers={"Idempotency-Key": key}))
    await asyncio.sleep(0.5)
    assert not retry.done()  # it waits for the claim's request to answer, or for the claim to lapse
    await redis.hset(stale.key, "lx", 0)  # the claim lapses (LEASE_MS) as its request never finished
    r = await asyncio.wait_for(retry, 10)
    assert r.status_code == 201 and "idempotent-replayed" not in r.headers, r.text
    token = idempotency.CURRENT.set(stale)  # the first request wakes up and tries its write
    try:
        with pytest.raises(IdempotencyConflictError):
            await items.write(store, service, Kind.LIST, "l", records.SYSTEM, "append", data_json="{}")
    finally:
        idempotency.CURRENT.reset(token)
    assert len(await _items(http, service, "l")) == 1


async def test_an_sdk_write_retried_with_its_request_id_applies_once(
    server: Endpoint, api_key: Any, service: str, http: httpx.AsyncClient
) -> None:
    """twilio-sync sends a write's retries with the Twilio-Request-Id of its first attempt."""
    async with await SyncClient.connect(server.ws_url, token(api_key.sid, api_key.secret, service, "alice")) as c:
        lst = await c.open("list", "sdk-list")
        rid = "RQ" + "5" * 32
        first = await c.request("POST", lst["links"]["items"], {"data": {"n": 1}}, request_id=rid)
        again = await c.request("POST", lst["links"]["items"], {"data": {"n": 1}}, request_id=rid)
        assert first[0] == again[0] == 201 and first[1] == again[1]
        other = await c.request("POST", lst["links"]["items"], {"data": {"n": 1}}, request_id="RQ" + "6" * 32)
        assert other[0] == 201 and other[1]["index"] == 1
        reused = await c.request("POST", lst["links"]["items"], {"data": {"n": 2}}, request_id=rid)
        assert reused[0] == 422 and reused[1]["code"] == 20422
    assert [i["index"] for i in await _items(http, service, "sdk-list")] == [0, 1]
