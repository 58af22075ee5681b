"""List-only behaviour over raw HTTP: server-assigned indexes. What Lists share with Maps (CRUD,
If-Match, TTL, expiry, limits, events, queries) is tested for both kinds in test_collections.py."""

from __future__ import annotations

import asyncio

import httpx

from storage import Store, events
from tests.helpers import ON_EVERY_BACKEND
from tests.sync_items import create

pytestmark = ON_EVERY_BACKEND


async def test_appended_items_get_indexes_from_zero_in_order(http: httpx.AsyncClient, service: str) -> None:
    lst = await create(http, service, "list")
    assert await lst.fill(3) == ["0", "1", "2"]
    item = (await lst.http.get(lst.item_path(1))).json()
    assert item["index"] == 1 and item["data"] == {"n": 1} and item["url"].endswith("/Items/1")


async def test_indexes_are_never_reused_after_removals(http: httpx.AsyncClient, service: str) -> None:
    lst = await create(http, service, "list")
    await lst.fill(3)
    for index in ("2", "0"):
        assert (await http.delete(lst.item_path(index))).status_code == 204
    assert await lst.fill(2) == ["3", "4"]
    assert await lst.items() == ["1", "3", "4"]
    assert await lst.items(Order="desc") == ["4", "3", "1"]


async def test_fifty_concurrent_appends_get_fifty_distinct_indexes(
    http: httpx.AsyncClient, service: str, store: Store
) -> None:
    lst = await create(http, service, "list")
    answers = await asyncio.gather(*(lst.add(data={"n": n}) for n in range(50)))
    assert all(r.status_code == 201 for r in answers)
    indexes = sorted(r.json()["index"] for r in answers)
    assert indexes == list(range(50))
    by_index = {r.json()["index"]: r.json()["data"]["n"] for r in answers}
    stored = (await http.get(f"{lst.path}/Items", params={"PageSize": "100"})).json()["items"]
    assert {i["index"]: i["data"]["n"] for i in stored} == by_index
    log = await events.read_since(store, service, lst.sid)
    assert sorted(int(e.key) for e in log if e.type == "list_item_added") == list(range(50))


async def test_index_that_is_not_a_non_negative_integer_is_400_54458(http: httpx.AsyncClient, service: str) -> None:
    lst = await create(http, service, "list")
    await lst.fill(1)
    for bad in ("abc", "-1", "1.0", "²"):
        r = await http.get(lst.item_path(bad))
        assert r.status_code == 400 and r.json()["code"] == 54458, bad
    r = await http.get(f"{lst.path}/Items", params={"From": "x"})
    assert r.status_code == 400 and r.json()["code"] == 54458


async def test_list_items_are_addressed_through_the_lists_unique_name(http: httpx.AsyncClient, service: str) -> None:
    lst = await create(http, service, "list", UniqueName="queue")
    r = await http.post(f"/v1/Services/{service}/Lists/queue/Items", data={"Data": '{"job": 1}'})
    assert r.status_code == 201 and r.json()["list_sid"] == lst.sid
    assert r.json()["url"] == f"{http.base_url}{lst.item_path(0)}"
    listed = (await http.get(f"/v1/Services/{service}/Lists/queue/Items")).json()
    assert [i["index"] for i in listed["items"]] == [0]
