"""Twilio's own twilio-sync SDK (pinned in tests/js/package.json) against the server, unchanged:
two clients at once, plus REST writes through the official twilio helper library."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.helpers import ON_EVERY_BACKEND, Backend
from tests.sdk import Sdk, SdkError, token

pytestmark = ON_EVERY_BACKEND


@pytest.fixture
def tokens(api_key: Any, service: str) -> Any:
    def make(identity: str, ttl: int = 3600) -> str:
        return token(api_key.sid, api_key.secret, service, identity, ttl)

    return make


@pytest.fixture
async def two(sdk: Sdk, tokens: Any) -> Sdk:
    """Clients "a" (alice) and "b" (bob), connected."""
    await sdk.client("a", tokens("alice"))
    await sdk.client("b", tokens("bob"))
    await sdk.connected("a")
    await sdk.connected("b")
    return sdk


def remote(args: list[Any]) -> bool:
    return args[0]["isLocal"] is False


async def settle(sdk: Sdk, obj: str) -> None:
    """Wait until the SDK's subscription for ``obj`` is established (it subscribes ~100 ms after opening)."""
    await sdk.expect("_subscriptionStateChanged", obj, lambda a: a[0] == "established")


# -- tokens -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["bad_signature", "unknown_key", "no_grant"])
async def test_refused_token_leaves_the_sdk_denied(sdk: Sdk, api_key: Any, service: str, case: str) -> None:
    from twilio.jwt.access_token import AccessToken
    from twilio.jwt.access_token.grants import SyncGrant

    from tests.helpers import ACCOUNT_SID

    secret = "another-secret-that-is-long-enough-to-sign" if case == "bad_signature" else api_key.secret
    key_sid = "SK" + "e" * 32 if case == "unknown_key" else api_key.sid
    t = AccessToken(ACCOUNT_SID, key_sid, secret, identity="alice")
    if case != "no_grant":
        t.add_grant(SyncGrant(service_sid=service))
    await sdk.client("a", t.to_jwt())
    await sdk.expect("connectionStateChanged", "a", lambda a: a[0] == "denied")
    (error,) = await sdk.expect("connectionError", "a")
    assert error["terminal"] is True and error["errorCode"] == 20101


async def test_expired_token_makes_the_sdk_emit_token_expired(sdk: Sdk, tokens: Any) -> None:
    await sdk.client("a", tokens("alice", ttl=-60))
    await sdk.expect("connectionStateChanged", "a", lambda a: a[0] == "denied")
    await sdk.expect("tokenExpired", "a")


async def test_token_about_to_expire_then_update_token_keeps_the_connection(sdk: Sdk, tokens: Any) -> None:
    await sdk.client("a", tokens("alice", ttl=4))  # well inside the warning window
    await sdk.connected("a")
    await sdk.expect("tokenAboutToExpire", "a")
    await sdk.cmd("client_call", client="a", method="updateToken", args=[tokens("alice")])
    await asyncio.sleep(5)  # past the first token's expiry
    assert sdk.matching("tokenExpired", "a") == []
    doc = await sdk.open("a", "document", "after-update", "d")
    assert doc["uniqueName"] == "after-update"


async def test_token_expiry_without_update_emits_token_expired(sdk: Sdk, tokens: Any) -> None:
    await sdk.client("a", tokens("alice", ttl=3))
    await sdk.connected("a")
    await sdk.expect("tokenExpired", "a")


# -- documents --------------------------------------------------------------------------------------


async def test_document_updates_reach_the_other_client_and_rest_writes_reach_both(
    two: Sdk, twilio: Any, service: str
) -> None:
    sdk = two
    await sdk.open_both("document", "shared", "d")
    await settle(sdk, "db")
    await sdk.call("da", "set", {"x": 1})
    (local,) = await sdk.expect("updated", "da")
    assert local == {"data": {"x": 1}, "isLocal": True, "previousData": {}}
    (remote,) = await sdk.expect("updated", "db")
    assert remote == {"data": {"x": 1}, "isLocal": False, "previousData": {}}
    twilio.sync.v1.services(service).documents("shared").update(data={"x": 2})
    for obj in ("da", "db"):
        (ev,) = await sdk.expect("updated", obj)
        assert ev == {"data": {"x": 2}, "isLocal": False, "previousData": {"x": 1}}
    rest = twilio.sync.v1.services(service).documents("shared").fetch()
    assert rest.created_by == "alice"


async def test_concurrent_mutates_conflict_and_retry_without_losing_an_increment(
    two: Sdk, twilio: Any, service: str
) -> None:
    sdk = two
    await sdk.open_both("document", "counter", "d")
    inc = "return Object.assign({}, value, {n: (value.n || 0) + 1});"
    await asyncio.gather(*[sdk.call(obj, "mutate", fn=inc) for _ in range(10) for obj in ("da", "db")])
    assert twilio.sync.v1.services(service).documents("counter").fetch().data == {"n": 20}


async def test_update_merges_and_remove_document_reaches_the_other_client(two: Sdk, twilio: Any, service: str):
    sdk = two
    await sdk.open_both("document", {"id": "merge", "data": {"a": 1}}, "d", "merge")
    await settle(sdk, "db")
    assert await sdk.call("da", "update", {"b": 2}) == {"a": 1, "b": 2}
    (ev,) = await sdk.expect("updated", "db")
    assert ev["data"] == {"a": 1, "b": 2} and ev["previousData"] == {"a": 1}
    await sdk.call("db", "removeDocument")
    (removed,) = await sdk.expect("removed", "da")
    assert removed["isLocal"] is False
    assert twilio.sync.v1.services(service).documents.list() == []


async def test_document_ttl_expiry_reaches_subscribers_as_removed(two: Sdk) -> None:
    sdk = two
    await sdk.open_both("document", {"id": "ephemeral", "ttl": 1}, "d", "ephemeral")
    (ev,) = await sdk.expect("removed", "db")
    assert ev["isLocal"] is False


# -- lists ------------------------------------------------------------------------------------------


async def test_list_operations_and_events(two: Sdk, twilio: Any, service: str) -> None:
    sdk = two
    await sdk.open_both("list", "todo", "l")
    await settle(sdk, "lb")
    for n in range(5):
        item = await sdk.call("la", "push", {"n": n})
        assert item["index"] == n
    for n in range(5):
        (ev,) = await sdk.expect("itemAdded", "lb")
        assert ev["item"]["index"] == n and ev["item"]["data"] == {"n": n} and ev["isLocal"] is False
    await sdk.call("la", "set", 1, {"n": 10})
    (ev,) = await sdk.expect("itemUpdated", "lb")
    assert ev["item"]["data"] == {"n": 10} and ev["previousItemData"] == {"n": 1}
    await sdk.call("lb", "update", 2, {"extra": True})
    (ev,) = await sdk.expect("itemUpdated", "la", remote)
    assert ev["item"]["data"] == {"n": 2, "extra": True}
    await sdk.call("la", "remove", 0)
    (ev,) = await sdk.expect("itemRemoved", "lb")
    assert ev["index"] == 0 and ev["previousItemData"] == {"n": 0}
    twilio.sync.v1.services(service).sync_lists("todo").sync_list_items.create(data={"n": 5})
    (ev,) = await sdk.expect("itemAdded", "la", remote)
    assert ev["item"]["index"] == 5
    page = await sdk.call("lb", "getItems", {"pageSize": 2})
    assert [i["index"] for i in page["items"]] == [1, 2] and page["hasNextPage"] is True
    page = await sdk.call("lb", "getItems", {"pageSize": 3, "order": "desc"})
    assert [i["index"] for i in page["items"]] == [5, 4, 3]
    page = await sdk.call("lb", "getItems", {"from": 3, "pageSize": 10})
    assert [i["index"] for i in page["items"]] == [3, 4, 5] and page["hasNextPage"] is False
    await sdk.call("la", "removeList")
    await sdk.expect("removed", "lb")


async def test_list_paginator_walks_every_page_from_a_fresh_client(sdk: Sdk, tokens: Any, twilio: Any, service: str):
    lst = twilio.sync.v1.services(service).sync_lists.create(unique_name="long")
    for n in range(7):
        twilio.sync.v1.services(service).sync_lists(lst.sid).sync_list_items.create(data={"n": n})
    await sdk.client("a", tokens("alice"))
    await sdk.open("a", "list", "long", "l")
    seen = []
    page = await sdk.cmd("call", obj="l", method="getItems", args=[{"pageSize": 3}], **{"as": "p"})
    seen += [i["index"] for i in page["items"]]
    while page["hasNextPage"]:
        page = await sdk.cmd("call", obj="p", method="nextPage", args=[], **{"as": "p"})
        seen += [i["index"] for i in page["items"]]
    assert seen == list(range(7))


# -- maps -------------------------------------------------------------------------------------------


async def test_map_operations_and_events(two: Sdk, twilio: Any, service: str) -> None:
    sdk = two
    await sdk.open_both("map", "prefs", "m")
    await settle(sdk, "mb")
    await sdk.call("ma", "set", "color", {"v": "red"})
    (ev,) = await sdk.expect("itemAdded", "mb")
    assert ev["item"]["key"] == "color" and ev["item"]["data"] == {"v": "red"} and ev["isLocal"] is False
    await sdk.call("ma", "set", "color", {"v": "blue"})
    (ev,) = await sdk.expect("itemUpdated", "mb")
    assert ev["item"]["data"] == {"v": "blue"} and ev["previousItemData"] == {"v": "red"}
    assert (await sdk.call("mb", "get", "color"))["data"] == {"v": "blue"}
    inc = "return Object.assign({}, value, {n: (value.n || 0) + 1});"
    assert (await sdk.call("mb", "mutate", "counter", fn=inc))["data"] == {"n": 1}
    (ev,) = await sdk.expect("itemAdded", "ma", remote)
    assert ev["item"]["key"] == "counter"
    assert (await sdk.call("ma", "update", "counter", {"label": "x"}))["data"] == {"n": 1, "label": "x"}
    await sdk.call("mb", "remove", "color")
    (ev,) = await sdk.expect("itemRemoved", "ma", remote)
    assert ev["key"] == "color" and ev["previousItemData"] == {"v": "blue"}
    twilio.sync.v1.services(service).sync_maps("prefs").sync_map_items.create(key="a-rest", data={"r": 1})
    await sdk.expect("itemAdded", "mb", lambda a: a[0]["item"]["key"] == "a-rest")
    with pytest.raises(SdkError) as err:
        await sdk.call("ma", "get", "missing")
    assert err.value.code == 54201
    page = await sdk.call("mb", "getItems", {"pageSize": 1})
    assert [i["key"] for i in page["items"]] == ["a-rest"] and page["hasNextPage"] is True
    page = await sdk.call("mb", "getItems", {"order": "desc"})
    assert [i["key"] for i in page["items"]] == ["counter", "a-rest"]
    assert [e["args"][0]["isLocal"] for e in sdk.matching("itemRemoved", "mb")] == [True]  # no echo
    await sdk.call("mb", "removeMap")
    await sdk.expect("removed", "ma")


async def test_map_item_ttl_expiry_reaches_subscribers(two: Sdk) -> None:
    sdk = two
    await sdk.open_both("map", "sessions", "m")
    await settle(sdk, "mb")
    await sdk.call("ma", "set", "short", {"v": 1}, {"ttl": 1})
    await sdk.expect("itemAdded", "mb")
    (ev,) = await sdk.expect("itemRemoved", "mb")
    assert ev["key"] == "short"


# -- streams ----------------------------------------------------------------------------------------


async def test_stream_messages_reach_every_other_subscriber_once(two: Sdk, twilio: Any, service: str) -> None:
    sdk = two
    await sdk.open_both("stream", "chat", "s")
    await settle(sdk, "sb")
    await settle(sdk, "sa")  # a Stream message reaches only subscriptions established before it
    sent = await sdk.call("sa", "publishMessage", {"text": "hello"})
    assert sent["sid"].startswith("TZ")
    (ev,) = await sdk.expect("messagePublished", "sb")
    assert ev["message"]["sid"] == sent["sid"] and ev["message"]["data"] == {"text": "hello"}
    assert ev["isLocal"] is False
    twilio.sync.v1.services(service).sync_streams("chat").stream_messages.create(data={"text": "rest"})
    (ev,) = await sdk.expect("messagePublished", "sa", remote)
    assert ev["message"]["data"] == {"text": "rest"}
    await sdk.expect("messagePublished", "sb", lambda a: a[0]["message"]["data"] == {"text": "rest"})
    assert len(sdk.matching("messagePublished", "sa")) == 2  # its own (local) and the REST one, no echo
    await sdk.call("sb", "removeStream")
    await sdk.expect("removed", "sa")


# -- reconnect --------------------------------------------------------------------------------------


async def test_reconnect_after_server_restart_replays_every_missed_event_once_in_order(
    sdk: Sdk, tokens: Any, twilio: Any, service: str, backend: Backend
) -> None:
    gw = backend.server_process().start()
    try:
        watcher = Sdk(gw.base_url)
        await watcher.start()
        try:
            await watcher.client("w", tokens("watcher"))
            await watcher.connected("w")
            await watcher.open("w", "map", "feed", "m")
            await watcher.open("w", "document", "status", "d")
            await settle(watcher, "m")
            items = twilio.sync.v1.services(service).sync_maps("feed").sync_map_items
            doc = twilio.sync.v1.services(service).documents("status")
            items.create(key="k00", data={"n": 0})
            await watcher.expect("itemAdded", "m")
            gw.stop()  # the socket dies with the process; writes go on through the other server
            for n in range(1, 15):
                items.create(key=f"k{n:02d}", data={"n": n})
            for v in range(1, 4):
                doc.update(data={"v": v})
            items("k03").update(data={"n": 33})
            items("k04").delete()
            gw.start()  # same port: the SDK reconnects and re-establishes with its last event ids
            await watcher.expect("itemAdded", "m", lambda a: a[0]["item"]["key"] == "k14", wait_s=60)
            await watcher.expect("itemRemoved", "m", wait_s=30)
            (ev,) = await watcher.expect("updated", "d", lambda a: a[0]["data"] == {"v": 3}, wait_s=30)
            items.create(key="k15", data={"n": 15})  # live again after the replay
            await watcher.expect("itemAdded", "m", lambda a: a[0]["item"]["key"] == "k15")
            added = [e["args"][0]["item"]["key"] for e in watcher.matching("itemAdded", "m")]
            assert added == [f"k{n:02d}" for n in range(16)]
            updated = [e["args"][0]["item"]["data"] for e in watcher.matching("itemUpdated", "m")]
            assert updated == [{"n": 33}]
            assert len(watcher.matching("itemRemoved", "m")) == 1
        finally:
            await watcher.close()
    finally:
        gw.stop()


async def test_acl_refusals_reach_the_sdk_as_permission_errors(sdk: Sdk, tokens: Any, twilio: Any, service: str):
    svc = twilio.sync.v1.services(service)
    svc.update(acl_enabled=True)
    doc = svc.documents.create(unique_name="guarded", data={"v": 1})
    svc.documents(doc.sid).document_permissions("reader").update(read=True, write=False, manage=False)
    await sdk.client("r", tokens("reader"))
    await sdk.client("n", tokens("nobody"))
    opened = await sdk.open("r", "document", {"id": "guarded", "mode": "open_existing"}, "dr")
    assert opened["data"] == {"v": 1}
    await settle(sdk, "dr")
    with pytest.raises(SdkError) as err:
        await sdk.call("dr", "set", {"v": 2})
    assert (err.value.status, err.value.code) == (403, 54007)
    with pytest.raises(SdkError) as err:
        await sdk.open("n", "document", {"id": "guarded", "mode": "open_existing"}, "dn")
    assert (err.value.status, err.value.code) == (403, 54007)
    svc.documents(doc.sid).update(data={"v": 3})  # REST is never limited by ACL; the reader sees it
    (ev,) = await sdk.expect("updated", "dr")
    assert ev["data"] == {"v": 3}


async def test_client_shutdown_closes_the_endpoint(
    sdk: Sdk, tokens: Any, service: str, redis: Any, twilio: Any
) -> None:
    from storage import keys
    from tests.test_realtime_nodes import disconnected, reachable

    reachable(twilio, service)
    await sdk.client("a", tokens("leaving"))
    await sdk.connected("a")
    assert await redis.smembers(keys.endpoints(service, "leaving"))
    await sdk.cmd("close", client="a")
    await disconnected(redis, service, "leaving")


# -- a crowd ----------------------------------------------------------------------------------------

CROWD = 20  # SDK clients in one Node process
BURST = 40  # writes to each object, WRITERS in flight


async def test_a_crowd_of_sdk_clients_gets_a_burst_of_writes_once_and_in_order(
    sdk: Sdk, tokens: Any, http: Any, service: str
) -> None:
    """Twenty SDK clients on one Document and one List, then a burst of REST writes four at a time,
    the fan-out's fast paths at work (an event delivered straight from its wake-up after a pause,
    log reads that gather a burst, several frames in one socket write): every client's List gets
    every item once and in index order (collections are never conflated), and every client's
    Document only moves forward, ending at the last write."""
    names = [f"c{i}" for i in range(CROWD)]
    for i, name in enumerate(names):
        await sdk.client(name, tokens(f"user{i}"))
    for name in names:  # the first open creates each object, the others open it
        await sdk.open(name, "document", "crowd", f"{name}d")
        await sdk.open(name, "list", "crowd-list", f"{name}l")
    for name in names:
        await settle(sdk, f"{name}d")
        await settle(sdk, f"{name}l")

    revision_of: dict[int, int] = {}  # the Document's data n -> the revision its update made
    index_of: dict[int, int] = {}  # the List item with data n -> its index
    todo = iter(range(1, BURST + 1))

    async def writer() -> None:
        for n in todo:
            data = {"Data": json.dumps({"n": n})}
            doc = await http.post(f"/v1/Services/{service}/Documents/crowd", data=data)
            item = await http.post(f"/v1/Services/{service}/Lists/crowd-list/Items", data=data)
            assert (doc.status_code, item.status_code) == (200, 201), (doc.text, item.text)
            revision_of[n] = int(doc.json()["revision"], 16)
            index_of[n] = item.json()["index"]

    await asyncio.gather(*(writer() for _ in range(4)))
    assert sorted(index_of.values()) == list(range(BURST))
    last = max(revision_of, key=revision_of.__getitem__)

    def arrived() -> bool:
        for name in names:
            updates = sdk.matching("updated", f"{name}d")
            if len(sdk.matching("itemAdded", f"{name}l")) < BURST or not updates:
                return False
            if updates[-1]["args"][0]["data"] != {"n": last}:
                return False
        return True

    for _ in range(600):
        if arrived():
            break
        await asyncio.sleep(0.05)
    for name in names:
        added = [e["args"][0]["item"] for e in sdk.matching("itemAdded", f"{name}l")]
        assert [a["index"] for a in added] == list(range(BURST)), name
        assert all(index_of[a["data"]["n"]] == a["index"] for a in added), name
        seen = [revision_of[e["args"][0]["data"]["n"]] for e in sdk.matching("updated", f"{name}d")]
        assert seen and seen == sorted(set(seen)), (name, seen)  # only forward, never twice
        assert seen[-1] == revision_of[last], name
