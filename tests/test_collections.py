"""Lists and Maps over raw HTTP: what both collection kinds do alike, each test run for both kinds.

List-only behaviour (index assignment, concurrent appends) is in test_lists.py, Map-only behaviour
(keys, 409 on an existing key, key ordering) in test_maps.py.
"""

from __future__ import annotations

import asyncio
import json
import re
from urllib.parse import quote

import httpx
import pytest

from storage import Store, events
from tests.helpers import ON_EVERY_BACKEND
from tests.sync_items import (
    KINDS,
    MISMATCH,
    NO_DATA,
    NOT_FOUND,
    PLURAL,
    PREFIX,
    create,
    expires_in,
    item_id,
    order_key,
    wait_for_event,
    walk,
    walk_back,
)

pytestmark = [ON_EVERY_BACKEND, pytest.mark.parametrize("kind", KINDS)]
DATE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


async def test_collection_has_twilio_shape_and_is_fetched_by_sid_and_unique_name(
    http: httpx.AsyncClient, service: str, kind: str
) -> None:
    c = await create(http, service, kind, UniqueName="roster")
    b = c.body
    assert re.match(rf"^{PREFIX[kind]}[0-9a-f]{{32}}$", b["sid"])
    assert b["unique_name"] == "roster" and b["revision"] == "0" and b["created_by"] == "system"
    assert b["date_expires"] is None and DATE.match(b["date_created"]) and DATE.match(b["date_updated"])
    assert b["url"] == f"{http.base_url}/v1/Services/{service}/{PLURAL[kind]}/{b['sid']}"
    assert b["links"] == {"items": b["url"] + "/Items", "permissions": b["url"] + "/Permissions"}
    for ident in (b["sid"], "roster"):
        r = await http.get(f"/v1/Services/{service}/{PLURAL[kind]}/{ident}")
        assert r.status_code == 200 and r.headers["etag"] == "0"
        assert r.json() == b


async def test_collection_update_by_unique_name_sets_ttl_and_delete_removes_it(
    http: httpx.AsyncClient, service: str, kind: str
) -> None:
    c = await create(http, service, kind, UniqueName="temp")
    url = f"/v1/Services/{service}/{PLURAL[kind]}/temp"
    r = await http.post(url, data={"Ttl": "3600"})
    assert r.status_code == 200 and r.json()["sid"] == c.sid
    assert abs(expires_in(r.json()) - 3600) < 5
    assert (await http.delete(url)).status_code == 204
    gone = await http.get(f"/v1/Services/{service}/{PLURAL[kind]}/{c.sid}")
    assert gone.status_code == 404 and gone.json()["code"] == 20404
    assert (await http.delete(url)).status_code == 404


async def test_collection_update_without_a_ttl_is_400_54010(http: httpx.AsyncClient, service: str, kind: str) -> None:
    c = await create(http, service, kind)
    r = await http.post(c.path, data={})
    assert r.status_code == 400 and r.json()["code"] == 54010


async def test_collection_ttl_wins_over_its_ttl_alias(http: httpx.AsyncClient, service: str, kind: str) -> None:
    both = await create(http, service, kind, CollectionTtl="100", Ttl="5000")
    assert abs(expires_in(both.body) - 100) < 5
    alias = await create(http, service, kind, Ttl="5000")
    assert abs(expires_in(alias.body) - 5000) < 5
    r = await http.post(alias.path, data={"CollectionTtl": "0", "Ttl": "7"})
    assert r.status_code == 200 and r.json()["date_expires"] is None


async def test_unique_name_taken_by_a_collection_is_409_54301(http: httpx.AsyncClient, service: str, kind: str) -> None:
    await create(http, service, kind, UniqueName="dup")
    r = await http.post(f"/v1/Services/{service}/{PLURAL[kind]}", data={"UniqueName": "dup"})
    assert r.status_code == 409 and r.json()["code"] == 54301


async def test_collections_are_read_in_pages_following_next_page_url(
    http: httpx.AsyncClient, service: str, kind: str
) -> None:
    sids = [(await create(http, service, kind)).sid for _ in range(5)]
    key = PLURAL[kind].lower()
    pages, meta = await walk(http, f"/v1/Services/{service}/{PLURAL[kind]}?PageSize=2", key)
    assert [len(p) for p in pages] == [2, 2, 1] and sorted(sum(pages, [])) == sorted(sids)
    assert meta["key"] == key and meta["page"] == 2 and meta["next_page_url"] is None


async def test_item_create_fetch_update_delete(http: httpx.AsyncClient, service: str, kind: str) -> None:
    c = await create(http, service, kind, UniqueName="box")
    item = await c.added("first", {"a": 1})
    ident = item_id(item)
    assert item["data"] == {"a": 1} and item["revision"] == "1" and item["created_by"] == "system"
    assert item[f"{kind}_sid"] == c.sid and item["service_sid"] == service and item["date_expires"] is None
    assert item["url"] == f"{http.base_url}{c.item_path(ident)}"
    common = {"account_sid", "service_sid", "url", "revision", "data", "date_expires", "date_created", "date_updated"}
    assert set(item) == common | {"created_by", f"{kind}_sid", "index" if kind == "list" else "key"}
    by_name = f"/v1/Services/{service}/{PLURAL[kind]}/box/Items/{ident}"
    r = await http.get(by_name)
    assert r.status_code == 200 and r.json() == item and r.headers["etag"] == "1"
    upd = await http.post(by_name, data={"Data": '{"a": 2}'})
    assert upd.status_code == 200 and upd.json()["data"] == {"a": 2}
    assert upd.json()["revision"] == "2" and upd.headers["etag"] == "2"
    assert upd.json()["date_created"] == item["date_created"]
    assert (await http.get(c.path)).json()["revision"] == "2"
    assert (await http.delete(by_name)).status_code == 204
    gone = await http.get(c.item_path(ident))
    assert gone.status_code == 404 and gone.json()["code"] == NOT_FOUND[kind]


async def test_item_update_with_stale_if_match_is_412_and_changes_nothing(
    http: httpx.AsyncClient, service: str, kind: str
) -> None:
    c = await create(http, service, kind)
    ident = item_id(await c.added("k", {"v": 0}))
    first = (await http.post(c.item_path(ident), data={"Data": '{"v": 1}'})).json()
    stale = await http.post(c.item_path(ident), data={"Data": '{"v": -1}'}, headers={"If-Match": "1"})
    assert stale.status_code == 412 and stale.json()["code"] == MISMATCH[kind]
    assert (await http.get(c.item_path(ident))).json() == first
    ok = await http.post(c.item_path(ident), data={"Data": '{"v": 2}'}, headers={"If-Match": first["revision"]})
    assert ok.status_code == 200 and ok.json()["data"] == {"v": 2}


async def test_item_delete_with_stale_if_match_is_412_and_keeps_the_item(
    http: httpx.AsyncClient, service: str, kind: str
) -> None:
    c = await create(http, service, kind)
    ident = item_id(await c.added("k", {"v": 0}))
    current = (await http.post(c.item_path(ident), data={"Data": '{"v": 1}'})).json()["revision"]
    stale = await http.delete(c.item_path(ident), headers={"If-Match": "1"})
    assert stale.status_code == 412 and stale.json()["code"] == MISMATCH[kind]
    assert (await http.get(c.item_path(ident))).status_code == 200
    assert (await http.delete(c.item_path(ident), headers={"If-Match": current})).status_code == 204
    assert await c.items() == []


async def test_item_if_match_that_is_not_a_revision_is_400_54003(
    http: httpx.AsyncClient, service: str, kind: str
) -> None:
    c = await create(http, service, kind)
    ident = item_id(await c.added("k", {"v": 0}))
    r = await http.post(c.item_path(ident), data={"Data": "{}"}, headers={"If-Match": "nope"})
    assert r.status_code == 400 and r.json()["code"] == 54003


async def test_missing_item_is_404_with_the_item_code(http: httpx.AsyncClient, service: str, kind: str) -> None:
    c = await create(http, service, kind)
    missing = c.item_path("7")
    for r in (
        await http.get(missing),
        await http.post(missing, data={"Data": "{}"}),
        await http.delete(missing),
    ):
        assert r.status_code == 404 and r.json()["code"] == NOT_FOUND[kind]


async def test_items_of_a_missing_collection_are_404_20404(http: httpx.AsyncClient, service: str, kind: str) -> None:
    base = f"/v1/Services/{service}/{PLURAL[kind]}/nosuch/Items"
    for r in (
        await http.get(base),
        await http.post(base, data={"Data": "{}", "Key": "k"}),
        await http.get(base + "/0"),
    ):
        assert r.status_code == 404 and r.json()["code"] == 20404


async def test_item_create_without_data_is_400_and_writes_nothing(
    http: httpx.AsyncClient, service: str, kind: str, store: Store
) -> None:
    c = await create(http, service, kind)
    r = await c.add("k")
    assert r.status_code == 400 and r.json()["code"] == NO_DATA[kind]
    bad = await c.add("k", "{not json")
    assert bad.status_code == 400 and bad.json()["code"] == 54008
    assert await c.items() == []
    assert [e.type for e in await events.read_since(store, service, c.sid)] == [f"{kind}_created"]


async def test_item_data_over_16_kib_is_413_54006_and_nothing_is_written(
    http: httpx.AsyncClient, service: str, kind: str, store: Store
) -> None:
    c = await create(http, service, kind)
    overhead = len(json.dumps({"k": ""}, separators=(",", ":")))
    exact = await c.added("fits", {"k": "x" * (16 * 1024 - overhead)})
    too_big = {"k": "x" * (16 * 1024 - overhead + 1)}
    r = await c.add("big", too_big)
    assert r.status_code == 413 and r.json()["code"] == 54006
    upd = await http.post(c.item_path(item_id(exact)), data={"Data": json.dumps(too_big)})
    assert upd.status_code == 413 and upd.json()["code"] == 54006
    assert await c.items() == [item_id(exact)]
    assert (await http.get(c.item_path(item_id(exact)))).json()["revision"] == exact["revision"]
    log = await events.read_since(store, service, c.sid)
    assert [e.type for e in log] == [f"{kind}_created", f"{kind}_item_added"]


async def test_item_update_without_data_or_ttl_is_400_54010(http: httpx.AsyncClient, service: str, kind: str) -> None:
    c = await create(http, service, kind)
    ident = item_id(await c.added("k", {"v": 0}))
    r = await http.post(c.item_path(ident), data={"CollectionTtl": "60"})
    assert r.status_code == 400 and r.json()["code"] == 54010


async def test_item_ttl_sets_date_expires_and_its_ttl_alias_is_ignored_when_both_given(
    http: httpx.AsyncClient, service: str, kind: str
) -> None:
    c = await create(http, service, kind)
    both = await c.added("both", {}, ItemTtl="100", Ttl="5000")
    assert abs(expires_in(both) - 100) < 5
    data_only = await http.post(c.item_path(item_id(both)), data={"Data": '{"v": 1}'})
    assert data_only.json()["date_expires"] == both["date_expires"]  # a data write does not extend a TTL
    alias = await c.added("alias", {}, Ttl="5000")
    assert abs(expires_in(alias) - 5000) < 5
    r = await http.post(c.item_path(item_id(alias)), data={"ItemTtl": "0", "Ttl": "9"})
    assert r.status_code == 200 and r.json()["date_expires"] is None and r.json()["data"] == {}
    bad = await c.add("bad", {}, ItemTtl="31536001")
    assert bad.status_code == 400 and bad.json()["code"] == 54011


async def test_collection_ttl_on_an_item_write_resets_the_parents_expiry(
    http: httpx.AsyncClient, service: str, kind: str
) -> None:
    c = await create(http, service, kind, Ttl="1")
    item = await c.added("k", {"v": 0}, CollectionTtl="5000")
    assert item["date_expires"] is None
    assert abs(expires_in((await http.get(c.path)).json()) - 5000) < 5
    await asyncio.sleep(1.5)  # past the first TTL, and several sweeps later: nothing was swept
    assert (await http.get(c.path)).status_code == 200
    r = await http.post(c.item_path(item_id(item)), data={"Data": '{"v": 1}', "CollectionTtl": "0"})
    assert r.status_code == 200
    assert (await http.get(c.path)).json()["date_expires"] is None


async def test_expired_item_is_gone_at_once_and_swept_with_a_removal_event(
    http: httpx.AsyncClient, service: str, kind: str, store: Store
) -> None:
    c = await create(http, service, kind)
    keep = item_id(await c.added("keep", {"v": 0}))
    short = item_id(await c.added("short", {"v": 1}, ItemTtl="1"))
    await asyncio.sleep(1.1)
    assert (await http.get(c.item_path(short))).status_code == 404
    assert await c.items() == [keep]
    log = await wait_for_event(store, service, c.sid, f"{kind}_item_removed")
    removed = log[-1]
    assert removed.type == f"{kind}_item_removed" and removed.key == short and removed.origin == "system"
    assert json.loads(removed.previous_data) == {"v": 1}
    assert [e.id for e in log] == list(range(len(log)))
    assert await store.redis.hexists(f"sync:{{{service}}}:it:{c.sid}", short) == 0


async def test_expired_collection_is_gone_with_its_items_and_swept_with_a_removal_event(
    http: httpx.AsyncClient, service: str, kind: str, store: Store
) -> None:
    c = await create(http, service, kind, UniqueName="brief", Ttl="1")
    ident = item_id(await c.added("k", {"v": 0}))
    await asyncio.sleep(1.1)
    assert (await http.get(c.path)).status_code == 404
    assert (await http.get(c.item_path(ident))).json()["code"] == 20404
    assert (await http.get(f"/v1/Services/{service}/{PLURAL[kind]}")).json()[PLURAL[kind].lower()] == []
    log = await wait_for_event(store, service, c.sid, f"{kind}_removed")
    assert [e.type for e in log] == [f"{kind}_created", f"{kind}_item_added", f"{kind}_removed"]
    assert log[-1].origin == "system"
    assert await store.redis.exists(f"sync:{{{service}}}:it:{c.sid}", f"sync:{{{service}}}:o:{c.sid}") == 0
    assert (await create(http, service, kind, UniqueName="brief")).sid != c.sid


async def test_every_item_mutation_appends_one_event_with_strictly_increasing_ids(
    http: httpx.AsyncClient, service: str, kind: str, store: Store
) -> None:
    c = await create(http, service, kind)
    ident = item_id(await c.added("k", {"v": 0}))
    await http.post(c.item_path(ident), data={"Data": '{"v": 1}'})
    await http.post(c.item_path(ident), data={"Data": '{"v": 9}'}, headers={"If-Match": "1"})  # refused
    await http.delete(c.item_path(ident))
    await http.delete(c.path)
    log = await events.read_since(store, service, c.sid)
    assert [(e.id, e.type) for e in log] == [
        (0, f"{kind}_created"),
        (1, f"{kind}_item_added"),
        (2, f"{kind}_item_updated"),
        (3, f"{kind}_item_removed"),
        (4, f"{kind}_removed"),
    ]
    added, updated, removed = log[1:4]
    assert added.key == updated.key == removed.key == ident and added.revision == "1"
    assert json.loads(updated.data) == {"v": 1} and json.loads(updated.previous_data) == {"v": 0}
    assert json.loads(removed.previous_data) == {"v": 1}
    assert all(e.identity == "system" and e.origin == "rest" for e in log)


async def test_deleting_a_collection_deletes_its_items(http: httpx.AsyncClient, service: str, kind: str) -> None:
    c = await create(http, service, kind, UniqueName="again")
    await c.fill(3)
    assert (await http.delete(c.path)).status_code == 204
    fresh = await create(http, service, kind, UniqueName="again")
    assert await fresh.items() == []


@pytest.mark.parametrize("order", ["asc", "desc"])
@pytest.mark.parametrize("bounds", ["inclusive", "exclusive"])
@pytest.mark.parametrize("start", ["present", "removed", "none"])
async def test_item_query_pages_in_order_from_a_bound_following_next_and_previous_urls(
    http: httpx.AsyncClient, service: str, kind: str, order: str, bounds: str, start: str
) -> None:
    c = await create(http, service, kind)
    ids = await c.fill(9)
    assert (await http.delete(c.item_path(ids[4]))).status_code == 204  # a gap
    present = [i for i in ids if i != ids[4]]
    query = f"Order={order}&Bounds={bounds}&PageSize=2"
    first = {"present": ids[2], "removed": ids[4], "none": None}[start]
    if first is not None:
        query += f"&From={first}"
    pages, meta = await walk(http, f"{c.path}/Items?{query}", "items")
    expected = sorted(present, key=lambda i: order_key(kind, i), reverse=order == "desc")
    if first is not None:
        edge = order_key(kind, first)

        def keep(i: str) -> bool:
            k = order_key(kind, i)
            if bounds == "inclusive" and k == edge:
                return True
            return k > edge if order == "asc" else k < edge

        expected = [i for i in expected if keep(i)]
    assert sum(pages, []) == expected
    assert all(len(p) == 2 for p in pages[:-1]) and len(pages) == (len(expected) + 1) // 2
    assert (await walk_back(http, meta)) == pages[-2::-1]


async def test_next_page_url_carries_every_filter(http: httpx.AsyncClient, service: str, kind: str) -> None:
    c = await create(http, service, kind)
    ids = await c.fill(4)
    r = await http.get(
        f"{c.path}/Items", params={"Order": "desc", "From": ids[3], "Bounds": "exclusive", "PageSize": 1}
    )
    meta = r.json()["meta"]
    nxt = httpx.URL(meta["next_page_url"])
    assert str(nxt).startswith(f"{http.base_url}{c.path}/Items?")
    assert {k: nxt.params[k] for k in ("Order", "From", "Bounds", "PageSize", "Page")} == {
        "Order": "desc",
        "From": ids[3],
        "Bounds": "exclusive",
        "PageSize": "1",
        "Page": "1",
    }
    assert nxt.params["PageToken"] and meta["key"] == "items" and meta["previous_page_url"] is None
    assert httpx.URL(meta["first_page_url"]).params["From"] == ids[3]


async def test_bad_item_query_parameters_are_400(http: httpx.AsyncClient, service: str, kind: str) -> None:
    c = await create(http, service, kind)
    for q, code in [("Order=up", 54451), ("Bounds=open", 54452), ("PageSize=0", 54454), ("PageToken=%%", 54453)]:
        r = await http.get(f"{c.path}/Items?{q}")
        assert r.status_code == 400 and r.json()["code"] == code, q


@pytest.mark.parametrize("order", ["asc", "desc"])
async def test_previous_page_never_crosses_the_from_bound(
    http: httpx.AsyncClient, service: str, kind: str, order: str
) -> None:
    c = await create(http, service, kind)
    ids = await c.fill(8)
    if order == "desc":
        ids.reverse()
    r = await http.get(f"{c.path}/Items", params={"From": ids[2], "Order": order, "PageSize": 2})
    first = r.json()
    assert [item_id(i) for i in first["items"]] == ids[2:4]
    second = (await http.get(first["meta"]["next_page_url"])).json()
    assert [item_id(i) for i in second["items"]] == ids[4:6]
    assert (await http.delete(c.item_path(ids[3]))).status_code == 204
    back = (await http.get(second["meta"]["previous_page_url"])).json()
    assert [item_id(i) for i in back["items"]] == [ids[2]]
    assert back["meta"]["previous_page_url"] is None


async def test_page_urls_percent_encode_a_unique_name_in_the_path(
    http: httpx.AsyncClient, service: str, kind: str
) -> None:
    name = "my list ü?"
    c = await create(http, service, kind, UniqueName=name)
    ids = await c.fill(2)
    by_name = f"/v1/Services/{service}/{PLURAL[kind]}/{quote(name, safe='')}/Items"
    meta = (await http.get(f"{by_name}?PageSize=1")).json()["meta"]
    for url in (meta["url"], meta["first_page_url"], meta["next_page_url"]):
        assert url.startswith(f"{http.base_url}{by_name}?"), url
    pages, _ = await walk(http, meta["next_page_url"], "items")
    assert pages == [ids[1:]]


async def test_item_writes_by_unique_name_reach_a_collection_recreated_under_that_name(
    http: httpx.AsyncClient, service: str, kind: str
) -> None:
    by_name = f"/v1/Services/{service}/{PLURAL[kind]}/reborn"
    old = await create(http, service, kind, UniqueName="reborn")
    assert (await http.post(f"{by_name}/Items", data={"Data": "{}", "Key": "a"})).status_code == 201
    assert (await http.delete(by_name)).status_code == 204
    new = await create(http, service, kind, UniqueName="reborn")
    r = await http.post(f"{by_name}/Items", data={"Data": '{"v": 2}', "Key": "a"})
    assert r.status_code == 201 and r.json()[f"{kind}_sid"] == new.sid != old.sid
    assert (await http.delete(f"{by_name}/Items/{item_id(r.json())}")).status_code == 204
    assert await new.items() == []


async def test_item_writes_into_a_service_deleted_by_another_process_are_refused(
    http: httpx.AsyncClient, service: str, kind: str, store: Store
) -> None:
    c = await create(http, service, kind)
    ident = item_id(await c.added("k", {"v": 0}))
    await store.redis.set(f"sync:{{{service}}}:gone", "1")  # the tombstone a Service delete leaves
    for r in (
        await c.add("k2", {"v": 1}),
        await http.post(c.item_path(ident), data={"Data": '{"v": 2}'}),
        await http.delete(c.item_path(ident)),
    ):
        assert r.status_code == 404 and r.json()["code"] == 20404
    await store.redis.delete(f"sync:{{{service}}}:gone")
    assert await c.items() == [ident]
    assert (await http.get(c.item_path(ident))).json()["data"] == {"v": 0}
