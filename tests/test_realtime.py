"""The realtime gateway at the protocol level: twilsock framing, tokens, the tunnelled CDS API,
subscriptions, replay and limits, driven by realtime.client (the Python client) over a real socket."""

from __future__ import annotations

import asyncio
import functools
import time
from typing import Any

import httpx
import jwt
import pytest
from websockets.asyncio.client import connect

from realtime import twilsock
from realtime.client import SyncClient, SyncClientError
from realtime.tokens import mint
from storage import Store, keys
from tests.helpers import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    ON_EVERY_BACKEND,
    Backend,
    Endpoint,
    RedisProcess,
    ServerProcess,
)
from tests.sdk import token

pytestmark = ON_EVERY_BACKEND


def ws_url(server: Endpoint) -> str:
    return server.ws_url


@pytest.fixture
async def client(server: Endpoint, api_key: Any, service: str) -> Any:
    async with await SyncClient.connect(ws_url(server), token(api_key.sid, api_key.secret, service, "alice")) as c:
        yield c


# -- tokens -----------------------------------------------------------------------------------------


async def test_init_reply_grants_client_update(client: SyncClient) -> None:
    assert client.init_reply["status"]["code"] == 200
    assert "client_update" in client.init_reply["capabilities"]


@pytest.mark.parametrize(
    ("case", "code"),
    [("bad_signature", 20101), ("unknown_key", 20101), ("expired", 20104), ("no_grant", 20101), ("garbage", 20101)],
)
async def test_refused_tokens_get_the_sdk_error(server: Endpoint, api_key: Any, service: str, case: str, code: int):
    now = int(time.time())
    claims = {
        "jti": f"{api_key.sid}-{now}",
        "iss": api_key.sid,
        "sub": ACCOUNT_SID,
        "exp": now + 600,
        "grants": {"identity": "alice", "data_sync": {"service_sid": service}},
    }
    secret = api_key.secret
    if case == "bad_signature":
        secret = "not-the-secret-but-long-enough-for-hs256"
    elif case == "unknown_key":
        claims["iss"] = "SK" + "f" * 32
    elif case == "expired":
        claims["exp"] = now - 5
    elif case == "no_grant":
        claims["grants"] = {"identity": "alice"}
    tok = jwt.encode(claims, secret, algorithm="HS256", headers={"cty": "twilio-fpa;v=1"})
    if case == "garbage":
        tok = "not.a.token"
    with pytest.raises(SyncClientError) as err:
        await SyncClient.connect(ws_url(server), tok)
    assert err.value.status in (401, 403)
    assert err.value.code == code


async def test_update_token_replaces_the_grant_and_refuses_another_identity(
    server: Endpoint, api_key: Any, service: str
) -> None:
    async with await SyncClient.connect(ws_url(server), token(api_key.sid, api_key.secret, service, "alice")) as c:
        await c.update_token(token(api_key.sid, api_key.secret, service, "alice"))
        with pytest.raises(SyncClientError) as err:
            await c.update_token(token(api_key.sid, api_key.secret, service, "mallory"))
        assert err.value.code == 20101
        assert (await c.open("document", "still-works"))["unique_name"] == "still-works"


async def test_server_warns_before_expiry_then_closes_with_410(server: Endpoint, api_key: Any, service: str):
    tok = mint(ACCOUNT_SID, api_key.sid, api_key.secret, "alice", service, ttl_s=2)
    async with await SyncClient.connect(ws_url(server), tok) as c:
        first = await asyncio.wait_for(c.control.get(), 10)
        assert first["method"] == "client_update" and first["client_update_type"] == "token_about_to_expire"
        second = await asyncio.wait_for(c.control.get(), 10)
        assert second["method"] == "close" and second["status"]["code"] == 410


async def test_first_frame_must_be_init(server: Endpoint) -> None:
    async with connect(ws_url(server)) as ws:
        await ws.send(twilsock.encode({"method": "message", "id": "TM1"}, {}))
        frame = twilsock.decode(await asyncio.wait_for(ws.recv(), 10))
        assert frame.method == "close" and frame.header["status"]["code"] == 406


# -- the CDS API ------------------------------------------------------------------------------------


async def test_document_lifecycle_and_errors(client: SyncClient, twilio: Any, service: str) -> None:
    doc = await client.open("document", "settings", {"theme": "dark"})
    assert doc["revision"] == "0" and doc["data"] == {"theme": "dark"} and doc["url"].startswith("http://")
    status, body = await client.request("POST", doc["url"], {"data": {"theme": "light"}}, if_match="0")
    assert status == 200 and body["revision"] == "1" and body["last_event_id"] == 1
    status, body = await client.request("POST", doc["url"], {"data": {"theme": "x"}}, if_match="0")
    assert (status, body["code"]) == (412, 54103)
    status, body = await client.request("POST", doc["url"], {"data": [1, 2]})
    assert (status, body["code"]) == (400, 54008)
    status, body = await client.request("POST", doc["url"], {"data": {"big": "x" * 17000}})
    assert (status, body["code"]) == (413, 54006)
    status, body = await client.request("POST", "/v3/Documents", {"unique_name": "settings"})
    assert (status, body["code"]) == (409, 54301)
    rest = twilio.sync.v1.services(service).documents("settings").fetch()
    assert rest.data == {"theme": "light"} and rest.created_by == "alice"
    assert (await client.request("DELETE", doc["url"]))[0] == 200
    status, body = await client.request("GET", doc["url"])
    assert (status, body["code"]) == (404, 54100)


async def test_map_items_put_reports_added_then_updated(client: SyncClient) -> None:
    m = await client.open("map", "prefs")
    url = m["links"]["items"] + "/a%2Fb"
    status, body = await client.request("PUT", url, {"data": {"v": 1}})
    assert status == 201 and body["key"] == "a/b" and body["revision"] == "1"
    status, body = await client.request("PUT", url, {"data": {"v": 2}}, if_match="1")
    assert status == 200 and body["revision"] == "2"
    status, body = await client.request("PUT", m["links"]["items"] + "/new", {"data": {"v": 1}}, if_match="-1")
    assert status == 201
    status, body = await client.request("PUT", m["links"]["items"] + "/new", {"data": {"v": 2}}, if_match="-1")
    assert (status, body["code"]) == (412, 54205)
    page = await client.call("GET", m["links"]["items"], params={"Key": "missing", "HideExpired": "true"})
    assert page["items"] == []
    removed = await client.call(
        "DELETE", body_url := (await client.call("GET", m["links"]["items"]))["items"][0]["url"]
    )
    assert removed["last_event_id"] == 4 and body_url.endswith("/Items/a%2Fb")


async def test_list_paging_with_from_order_and_tokens(client: SyncClient) -> None:
    lst = await client.open("list", "log")
    for n in range(7):
        item = await client.call("POST", lst["links"]["items"], {"data": {"n": n}})
        assert item["index"] == n
    items = lst["links"]["items"]
    page = await client.call("GET", items, params={"PageSize": 3, "Order": "asc"})
    assert [i["index"] for i in page["items"]] == [0, 1, 2]
    assert page["meta"]["previous_token"] is None and page["meta"]["next_token"]
    page = await client.call("GET", items, params={"PageToken": page["meta"]["next_token"], "PageSize": 3})
    assert [i["index"] for i in page["items"]] == [3, 4, 5] and page["meta"]["previous_token"]
    page = await client.call("GET", items, params={"From": 5, "PageSize": 3, "Order": "desc"})
    assert [i["index"] for i in page["items"]] == [5, 4, 3]
    assert page["meta"]["previous_token"] and page["meta"]["next_token"]
    page = await client.call("GET", items, params={"From": 4, "PageSize": 10})
    assert [i["index"] for i in page["items"]] == [4, 5, 6] and page["meta"]["next_token"] is None
    status, body = await client.request("GET", items, params={"PageSize": 0})
    assert (status, body["code"]) == (400, 54454)


async def test_stream_publish(client: SyncClient, server: Endpoint, api_key: Any, service: str) -> None:
    stream = await client.open("stream", "chat")
    async with await SyncClient.connect(ws_url(server), token(api_key.sid, api_key.secret, service, "bob")) as bob:
        established = await bob.subscribe(stream["sid"], "stream")
        assert established["event_type"] == "subscription_established"
        sent = await client.call("POST", stream["links"]["messages"], {"data": {"text": "hi"}})
        assert sent["sid"].startswith("TZ")
        ev = await bob.next_event()
        assert ev["event_type"] == "stream_message_published"
        assert ev["event"]["message_sid"] == sent["sid"] and ev["event"]["message_data"] == {"text": "hi"}
        status, body = await client.request("POST", stream["links"]["messages"], {"data": {"x": "y" * 5000}})
        assert (status, body["code"]) == (413, 54006)


# -- subscriptions, live events and replay ----------------------------------------------------------


async def test_rest_write_reaches_subscriber_with_payload(client: SyncClient, twilio: Any, service: str) -> None:
    doc = await client.open("document", "live")
    est = await client.subscribe(doc["sid"], "document", doc["last_event_id"])
    assert est["replay_status"] == "completed" and est["last_event_id"] == 0
    twilio.sync.v1.services(service).documents(doc["sid"]).update(data={"n": 1})
    ev = await client.next_event()
    assert ev["event_type"] == "document_updated"
    e = ev["event"]
    assert e["id"] == 1 and e["document_sid"] == doc["sid"] and e["document_revision"] == "1"
    assert e["document_data"] == {"n": 1} and e["date_created"].endswith("Z") and "." in e["date_created"]
    twilio.sync.v1.services(service).documents(doc["sid"]).delete()
    ev = await client.next_event()
    assert ev["event_type"] == "document_removed" and ev["event"]["document_sid"] == doc["sid"]


async def _xrange_calls(redis: Any) -> int:
    """XRANGE commands the backend's Valkey processes have run (every node of a Cluster)."""
    if hasattr(redis, "get_nodes"):  # a Cluster: each node's own counts
        await redis.initialize()  # (a no-op once done) the client learns its nodes lazily
        infos = [await redis.info("commandstats", target_nodes=node) for node in redis.get_nodes()]
    else:
        infos = [await redis.info("commandstats")]
    return sum(int(info.get("cmdstat_xrange", {}).get("calls", 0)) for info in infos)


async def test_small_events_ride_in_their_wake_up_and_large_ones_are_read_from_the_log(
    client: SyncClient, twilio: Any, service: str, redis: Any
) -> None:
    """An up-to-date subscriber gets a small event from the wake-up itself (no XRANGE of the log);
    an event too large to ride along (scripts/lib.lua WAKE_INLINE_MAX) is read from the log; both
    arrive whole and in order."""
    doc = await client.open("document", "inline")
    await client.subscribe(doc["sid"], "document", doc["last_event_id"])
    docs = twilio.sync.v1.services(service).documents(doc["sid"])
    docs.update(data={"n": 0})  # the first one may come either way (the subscription's first read)
    assert (await client.next_event())["event"]["document_data"] == {"n": 0}
    before = await _xrange_calls(redis)
    for n in range(1, 6):
        await asyncio.sleep(0.01)  # a pause (hub.QUIET_S): in a burst the log is read, to batch it
        docs.update(data={"n": n})
        e = (await client.next_event())["event"]
        assert e["document_data"] == {"n": n} and e["id"] == n + 1
    assert await _xrange_calls(redis) == before  # delivered from the wake-ups alone
    big = "x" * 3000
    for n in range(6, 8):
        docs.update(data={"n": n, "big": big})
        e = (await client.next_event())["event"]
        assert e["document_data"] == {"n": n, "big": big} and e["id"] == n + 1
    assert await _xrange_calls(redis) >= before + 2  # too large for a wake-up: read from the log
    docs.update(data={"n": 8})
    e = (await client.next_event())["event"]
    assert e["document_data"] == {"n": 8} and e["id"] == 9


async def test_own_writes_are_not_echoed(client: SyncClient, twilio: Any, service: str) -> None:
    m = await client.open("map", "mine")
    await client.subscribe(m["sid"], "map", m["last_event_id"])
    await client.call("PUT", m["links"]["items"] + "/k", {"data": {"v": 1}})
    twilio.sync.v1.services(service).sync_maps(m["sid"]).sync_map_items.create(key="rest", data={"v": 2})
    ev = await client.next_event()
    assert ev["event_type"] == "map_item_added" and ev["event"]["item_key"] == "rest" and ev["event"]["id"] == 2
    assert ev["event"]["item_url"].endswith("/v3/Maps/" + m["sid"] + "/Items/rest")
    assert ev["event"]["map_revision"] == "2" and ev["event"]["item_revision"] == "2"


async def test_replay_sends_missed_events_in_order_before_established(
    client: SyncClient, twilio: Any, service: str
) -> None:
    m = twilio.sync.v1.services(service).sync_maps.create(unique_name="replayed")
    items = twilio.sync.v1.services(service).sync_maps(m.sid).sync_map_items
    for n in range(5):
        items.create(key=f"k{n}", data={"n": n})
    items("k1").update(data={"n": 10})
    items("k2").delete()
    est = await client.subscribe(m.sid, "map", 2)  # the client saw events 0..2
    assert est["last_event_id"] == 7
    got = [client.events.get_nowait() for _ in range(client.events.qsize())]
    assert [(e["event_type"], e["event"]["id"]) for e in got] == [
        ("map_item_added", 3),
        ("map_item_added", 4),
        ("map_item_added", 5),
        ("map_item_updated", 6),
        ("map_item_removed", 7),
    ]
    assert got[-1]["event"]["item_data"] == {"n": 2}


async def test_replay_when_log_was_trimmed_sends_current_state(
    client: SyncClient, twilio: Any, service: str, redis: Any
) -> None:
    doc = twilio.sync.v1.services(service).documents.create(unique_name="trimmed", data={"v": 0})
    for v in range(1, 6):
        twilio.sync.v1.services(service).documents(doc.sid).update(data={"v": v})
    await redis.xtrim(keys.events(service, doc.sid), minid="0-5")  # keep ids 4, 5 only
    est = await client.subscribe(doc.sid, "document", 1)
    assert est["last_event_id"] == 5
    ev = client.events.get_nowait()
    assert ev["event_type"] == "document_updated" and ev["event"]["id"] == 5
    assert ev["event"]["document_data"] == {"v": 5}
    assert client.events.empty()


async def test_subscription_to_missing_object_fails_with_404(client: SyncClient) -> None:
    res = await client.subscribe("ET" + "0" * 32, "document", 0)
    assert res["event_type"] == "subscription_failed"
    assert res["error"]["status"] == 404 and res["error"]["code"] == 54100


async def test_subscriptions_per_connection_are_limited(
    backend: Backend, api_key: Any, service: str, twilio: Any
) -> None:
    srv = backend.server_process(SYNC_WS_SUBSCRIPTIONS="2").start()
    try:
        sids = [twilio.sync.v1.services(service).documents.create().sid for _ in range(3)]
        async with await SyncClient.connect(ws_url(srv), token(api_key.sid, api_key.secret, service, "a")) as c:
            results = [await c.subscribe(sid, "document", 0) for sid in sids]
        assert [r["event_type"] for r in results] == ["subscription_established"] * 2 + ["subscription_failed"]
        assert results[2]["error"]["code"] == 54419
    finally:
        srv.stop()


async def test_acl_decides_reads_writes_and_removals(server: Endpoint, api_key: Any, service: str, twilio: Any) -> None:
    svc = twilio.sync.v1.services(service)
    svc.update(acl_enabled=True)
    doc = svc.documents.create(unique_name="guarded", data={"v": 1})
    svc.documents(doc.sid).document_permissions("reader").update(read=True, write=False, manage=False)
    svc.documents(doc.sid).document_permissions("owner").update(read=True, write=True, manage=True)
    url = ws_url(server)
    async with (
        await SyncClient.connect(url, token(api_key.sid, api_key.secret, service, "reader")) as reader,
        await SyncClient.connect(url, token(api_key.sid, api_key.secret, service, "owner")) as owner,
        await SyncClient.connect(url, token(api_key.sid, api_key.secret, service, "nobody")) as nobody,
    ):
        assert (await reader.call("GET", "/v3/Documents/guarded"))["data"] == {"v": 1}
        status, body = await reader.request("POST", f"/v3/Documents/{doc.sid}", {"data": {"v": 2}})
        assert (status, body["code"]) == (403, 54007)
        status, body = await nobody.request("GET", "/v3/Documents/guarded")
        assert (status, body["code"]) == (403, 54007)
        refused = await nobody.subscribe(doc.sid, "document", 0)
        assert refused["event_type"] == "subscription_failed" and refused["error"]["code"] == 54007
        status, body = await reader.request("POST", "/v3/Documents", {"unique_name": "new"})
        assert (status, body["code"]) == (403, 54007)
        status, body = await reader.request("DELETE", f"/v3/Documents/{doc.sid}")
        assert (status, body["code"]) == (403, 54007)
        await owner.call("POST", f"/v3/Documents/{doc.sid}", {"data": {"v": 3}})
        await owner.call("DELETE", f"/v3/Documents/{doc.sid}")
    # REST with account credentials is never limited by ACL
    assert svc.documents.create(unique_name="by-rest").unique_name == "by-rest"


async def test_sdk_writes_carry_identity_and_endpoint_in_events(client: SyncClient, store: Any, service: str) -> None:
    from storage import events

    lst = await client.open("list", "audit")
    await client.call("POST", lst["links"]["items"], {"data": {"a": 1}})
    log = await events.read_since(store, service, lst["sid"])
    assert [(e.type, e.identity, e.origin) for e in log] == [
        ("list_created", "alice", "sdk"),
        ("list_item_added", "alice", "sdk"),
    ]
    assert log[1].endpoint


async def test_connections_and_frame_size_are_limited(backend: Backend, api_key: Any, service: str) -> None:
    srv = backend.server_process(SYNC_WS_MAX_CONNECTIONS="1", SYNC_WS_MAX_FRAME_BYTES="2048").start()
    try:
        tok = token(api_key.sid, api_key.secret, service, "alice")
        async with await SyncClient.connect(ws_url(srv), tok) as first:
            with pytest.raises(SyncClientError) as err:
                await SyncClient.connect(ws_url(srv), tok)
            assert err.value.status == 429
            with pytest.raises(SyncClientError):
                await first.request("POST", "/v3/Documents", {"unique_name": "big", "data": {"x": "y" * 2500}})
            closed = await asyncio.wait_for(first.control.get(), 10)
            assert closed["method"] == "close" and closed["status"]["code"] == 406
    finally:
        srv.stop()


async def test_a_crowd_connecting_at_once_reads_its_key_and_service_once() -> None:
    """40 clients connect to a fresh process at once (as after a restart): its caches are empty,
    and each connect needs the signing key, the Service and the store id; they are read once for
    the crowd (TtlCache.load), not once per client (which opened a Redis connection each). On a
    Valkey of its own: the session's servers' background reads would be counted too."""
    from storage import accounts

    valkey = RedisProcess()
    srv = ServerProcess(redis_url=valkey.url).start()
    store = await Store.connect(valkey.url)
    try:
        key = await accounts.create_key(store, ACCOUNT_SID, "crowd")
        async with httpx.AsyncClient(base_url=srv.base_url, auth=(ACCOUNT_SID, AUTH_TOKEN)) as http:
            r = await http.post("/v1/Services", data={"FriendlyName": "crowd"})
            assert r.status_code == 201, r.text
            service = r.json()["sid"]
        srv.stop()
        srv = ServerProcess(redis_url=valkey.url).start()  # fresh caches

        async def calls(command: str) -> int:
            info = await store.redis.info("commandstats")
            return int(info.get(f"cmdstat_{command}", {}).get("calls", 0))

        before = {c: await calls(c) for c in ("hget", "hgetall")}
        tok = token(key.sid, key.secret, service, "crowd")
        crowd = await asyncio.gather(*(SyncClient.connect(ws_url(srv), tok) for _ in range(40)))
        try:
            assert all(c.init_reply["status"]["code"] == 200 for c in crowd)
            read = {c: await calls(c) - before[c] for c in before}
            # the key: two HGETs, the Service: one HGETALL, once for the crowd, not 40 times (the
            # server's background work reads a few of its own)
            assert read["hget"] < 10 and read["hgetall"] < 10, read
        finally:
            await asyncio.gather(*(c.close() for c in crowd))
    finally:
        await store.close()
        srv.stop()
        valkey.stop()


@pytest.mark.parametrize("enabled", [False, True])
async def test_compression_is_negotiated_only_when_enabled(backend: Backend, enabled: bool) -> None:
    """Clients offer permessage-deflate (websockets, Node's ws, browsers); by default it is declined."""
    srv = backend.server_process(SYNC_WS_COMPRESSION=str(enabled).lower()).start()
    try:
        async with connect(ws_url(srv), compression="deflate") as ws:
            assert ws.request is not None and "permessage-deflate" in ws.request.headers["Sec-WebSocket-Extensions"]
            assert ws.response is not None
            agreed = ws.response.headers.get("Sec-WebSocket-Extensions", "")
            assert ("permessage-deflate" in agreed) is enabled
    finally:
        srv.stop()


async def test_cli_token_connects_with_the_given_identity_and_service(backend: Backend, service: str) -> None:
    from tests.test_cli import _cli

    cli = functools.partial(_cli, backend.redis_url, env=backend.env)
    out = await asyncio.to_thread(cli, "token", "--identity", "dev", "--service", service, "--ttl", "600")
    assert out.returncode == 0, out.stderr
    async with await SyncClient.connect(backend.server.ws_url, out.stdout.strip()) as c:
        doc = await c.open("document", "from-cli-token")
        assert doc["created_by"] == "dev"
    refused = await asyncio.to_thread(cli, "token", "--identity", "dev", "--ttl", "90000")
    assert refused.returncode != 0


async def test_ttl_options_on_creates_and_writes(client: SyncClient) -> None:
    doc = await client.call("POST", "/v3/Documents", {"unique_name": "short-doc", "data": {}, "ttl": 100})
    stream = await client.call("POST", "/v3/Streams", {"unique_name": "short-stream", "ttl": 100})
    lst = await client.call("POST", "/v3/Lists", {"unique_name": "short-list", "ttl": 100})
    assert doc["date_expires"] and stream["date_expires"] and lst["date_expires"]
    item = await client.call("POST", lst["links"]["items"], {"data": {"a": 1}, "ttl": 50})
    assert item["date_expires"]
    cleared = await client.call("POST", item["url"], {"ttl": 0})
    assert cleared["date_expires"] is None
    assert (await client.call("POST", doc["url"], {"ttl": 0}))["date_expires"] is None
    for bad in (-1, "10", 31_536_001, True):
        status, body = await client.request("POST", doc["url"], {"ttl": bad})
        assert (status, body["code"]) == (400, 54011)


@pytest.mark.parametrize(("proto", "scheme"), [(None, "http"), ("https", "https"), ("http", "http")])
async def test_urls_follow_a_trusted_proxys_x_forwarded_proto(
    server: Endpoint, api_key: Any, service: str, proto: str | None, scheme: str
) -> None:
    """Behind a TLS-terminating proxy on loopback (uvicorn's default FORWARDED_ALLOW_IPS), as for REST."""
    headers = {"X-Forwarded-Proto": proto} if proto else None
    tok = token(api_key.sid, api_key.secret, service, "alice")
    async with await SyncClient.connect(server.ws_url, tok, headers=headers) as c:
        doc = await c.open("document", f"proxied-{scheme}-{proto}")
        assert doc["url"].startswith(f"{scheme}://127.0.0.1:{server.port}/")
