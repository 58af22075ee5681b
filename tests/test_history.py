"""Revision history and time travel (issue 13, an extension): ``…/Revisions`` of Documents and
List/Map items, ``AsOf`` reads of a collection, restoring with If-Match, the keep limit, the age
limit and history off, end to end on a standalone Valkey and on a Cluster."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from tests.helpers import ACCOUNT_SID, AUTH_TOKEN, ON_EVERY_BACKEND, Backend, ServerProcess
from tests.sync_items import KINDS, create, item_id

pytestmark = ON_EVERY_BACKEND

SMALL = {"SYNC_HISTORY_KEEP": "3", "SYNC_HISTORY_MAX_AGE_S": "2"}  # keep 3; drop after 2 s
OFF = {"SYNC_HISTORY_KEEP": "0"}


@pytest.fixture(scope="module")
def extra_servers() -> Iterator[dict[tuple[str, str], ServerProcess]]:
    """Servers with other history settings on the test's Redis, started once per backend."""
    started: dict[tuple[str, str], ServerProcess] = {}
    yield started
    for s in started.values():
        s.stop()


async def _client(backend: Backend, extra: dict[tuple[str, str], ServerProcess], env: dict[str, str]) -> Any:
    name = (backend.name, json.dumps(env))
    if name not in extra:
        extra[name] = await asyncio.to_thread(backend.server_process(**env).start)
    return httpx.AsyncClient(base_url=extra[name].base_url, auth=(ACCOUNT_SID, AUTH_TOKEN), timeout=10)


@pytest.fixture
async def small(backend: Backend, extra_servers: dict[tuple[str, str], ServerProcess]) -> AsyncIterator[Any]:
    async with await _client(backend, extra_servers, SMALL) as c:
        yield c


@pytest.fixture
async def off(backend: Backend, extra_servers: dict[tuple[str, str], ServerProcess]) -> AsyncIterator[Any]:
    async with await _client(backend, extra_servers, OFF) as c:
        yield c


async def _doc(http: httpx.AsyncClient, service: str, data: Any, name: str = "") -> dict[str, Any]:
    form = {"Data": json.dumps(data)} | ({"UniqueName": name} if name else {})
    r = await http.post(f"/v1/Services/{service}/Documents", data=form)
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


async def _set(http: httpx.AsyncClient, path: str, data: Any, if_match: str | None = None) -> dict[str, Any]:
    headers = {"If-Match": if_match} if if_match else {}
    r = await http.post(path, data={"Data": json.dumps(data)}, headers=headers)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def _all_pages(http: httpx.AsyncClient, url: str, key: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    next_url: str | None = url
    while next_url:
        r = await http.get(next_url)
        assert r.status_code == 200, r.text
        rows += r.json()[key]
        next_url = r.json()["meta"]["next_page_url"]
    return rows


async def test_document_revisions_page_newest_first_and_fetch_one(http: httpx.AsyncClient, service: str) -> None:
    doc = await _doc(http, service, {"v": 0}, name="hist")
    path = f"/v1/Services/{service}/Documents/{doc['sid']}"
    for v in range(1, 5):
        await _set(http, path, {"v": v})
    r = await http.get(f"/v1/Services/{service}/Documents/hist/Revisions", params={"PageSize": 2})
    assert r.status_code == 200, r.text
    page = r.json()
    assert [x["data"] for x in page["revisions"]] == [{"v": 4}, {"v": 3}]
    first = page["revisions"][0]
    assert first["revision"] == "4" and first["event_id"] == 4 and first["updated_by"] == "system"
    assert first["document_sid"] == doc["sid"] and first["date_updated"].endswith("Z")
    assert first["url"] == f"{http.base_url}{path}/Revisions/4"
    assert page["meta"]["key"] == "revisions" and page["meta"]["next_page_url"]
    rows = await _all_pages(http, f"{path}/Revisions?PageSize=2", "revisions")
    assert [x["data"]["v"] for x in rows] == [4, 3, 2, 1, 0]
    one = await http.get(f"{path}/Revisions/2")
    assert one.status_code == 200 and one.json()["data"] == {"v": 2} and one.json()["revision"] == "2"
    for missing in ("99", "zz"):
        r = await http.get(f"{path}/Revisions/{missing}")
        assert r.status_code == 404 and r.json()["code"] == 20404, r.text


async def test_restore_is_an_update_with_old_data_and_if_match(http: httpx.AsyncClient, service: str) -> None:
    doc = await _doc(http, service, {"theme": "dark"})
    path = f"/v1/Services/{service}/Documents/{doc['sid']}"
    now = await _set(http, path, {"theme": "light"})
    old = (await http.get(f"{path}/Revisions/0")).json()
    stale = await http.post(path, data={"Data": json.dumps(old["data"])}, headers={"If-Match": "0"})
    assert stale.status_code == 412 and stale.json()["code"] == 54103
    restored = await _set(http, path, old["data"], if_match=now["revision"])
    assert restored["data"] == {"theme": "dark"} and restored["revision"] == "2"
    rows = (await http.get(f"{path}/Revisions")).json()["revisions"]
    assert [(x["revision"], x["data"]) for x in rows] == [
        ("2", {"theme": "dark"}),
        ("1", {"theme": "light"}),
        ("0", {"theme": "dark"}),
    ]


@pytest.mark.parametrize("kind", KINDS)
async def test_item_revisions_include_the_removal(http: httpx.AsyncClient, service: str, kind: str) -> None:
    c = await create(http, service, kind)
    first = await c.added("k", {"n": 1})
    ident = item_id(first)
    await _set(http, c.item_path(ident), {"n": 2})
    assert (await http.delete(c.item_path(ident))).status_code == 204
    r = await http.get(c.item_path(ident) + "/Revisions")
    assert r.status_code == 200, r.text
    rows = r.json()["revisions"]
    assert [(x["removed"], x["data"]) for x in rows] == [(True, None), (False, {"n": 2}), (False, {"n": 1})]
    assert rows[2]["revision"] == first["revision"] and rows[0]["event_id"] > rows[1]["event_id"]
    assert rows[1][f"{kind}_sid"] == c.sid and ("index" in rows[1] if kind == "list" else rows[1]["key"] == "k")
    one = await http.get(f"{c.item_path(ident)}/Revisions/{first['revision']}")
    assert one.status_code == 200 and one.json()["data"] == {"n": 1}
    never = await http.get(c.item_path("404" if kind == "list" else "never") + "/Revisions")
    assert never.status_code == 404 and never.json()["code"] == {"list": 54151, "map": 54201}[kind]


@pytest.mark.parametrize("kind", KINDS)
async def test_as_of_by_event_id_and_by_time(http: httpx.AsyncClient, service: str, kind: str) -> None:
    c = await create(http, service, kind)
    a = await c.added("a", {"v": "a1"})
    b = await c.added("b", {"v": "b1"})
    mark = b["revision"]
    await asyncio.sleep(0.05)  # a time strictly between the writes (AsOf takes fractions of a second)
    then = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    await asyncio.sleep(0.05)
    await _set(http, c.item_path(item_id(a)), {"v": "a2"})
    assert (await http.delete(c.item_path(item_id(b)))).status_code == 204
    await c.added("c", {"v": "c1"})
    for point in (str(int(mark, 16)), then):
        rows = await _all_pages(http, f"{c.path}/Items?AsOf={point}&PageSize=1", "items")
        assert [x["data"]["v"] for x in rows] == ["a1", "b1"], point
        assert rows[1]["revision"] == mark
    now = (await http.get(f"{c.path}/Items", params={"AsOf": "999999"})).json()["items"]
    assert [x["data"]["v"] for x in now] == ["a2", "c1"]
    bad = await http.get(f"{c.path}/Items", params={"AsOf": "yesterday"})
    assert bad.status_code == 400 and "AsOf" in bad.json()["message"]


@pytest.mark.parametrize("kind", KINDS)
async def test_keep_limit_trims_and_older_points_are_refused(small: httpx.AsyncClient, service: str, kind: str) -> None:
    c = await create(small, service, kind)
    first = await c.added("k", {"n": 0})
    other = await c.added("z", {"n": 0})
    path = c.item_path(item_id(first))
    for n in range(1, 6):
        await _set(small, path, {"n": n})
    rows = (await small.get(path + "/Revisions")).json()["revisions"]
    assert [x["data"]["n"] for x in rows] == [5, 4, 3]
    gone = await small.get(f"{path}/Revisions/{first['revision']}")
    assert gone.status_code == 404
    oldest = rows[-1]["event_id"]
    r = await small.get(f"{c.path}/Items", params={"AsOf": str(int(other["revision"], 16))})
    assert r.status_code == 400 and r.json()["code"] == 20001, r.text
    assert f"oldest reachable point is event id {oldest}" in r.json()["message"]
    ok = (await small.get(f"{c.path}/Items", params={"AsOf": str(oldest)})).json()["items"]
    assert [x["data"]["n"] for x in ok] == [3, 0]


async def test_max_age_drops_revisions_superseded_long_ago(small: httpx.AsyncClient, service: str) -> None:
    doc = await _doc(small, service, {"n": 0})
    path = f"/v1/Services/{service}/Documents/{doc['sid']}"
    await _set(small, path, {"n": 1})
    await asyncio.sleep(2.3)  # SYNC_HISTORY_MAX_AGE_S=2: revision 0 was superseded longer ago
    await _set(small, path, {"n": 2})
    rows = (await small.get(path + "/Revisions")).json()["revisions"]
    assert [x["data"]["n"] for x in rows] == [2, 1]


async def test_history_off_records_nothing_and_moves_the_floor(
    http: httpx.AsyncClient, off: httpx.AsyncClient, service: str
) -> None:
    doc = await _doc(off, service, {"n": 0})
    path = f"/v1/Services/{service}/Documents/{doc['sid']}"
    await _set(off, path, {"n": 1})
    assert (await off.get(path + "/Revisions")).json()["revisions"] == []
    c = await create(http, service, "map")  # history on (the default server) …
    await c.added("k", {"n": 1})
    await _set(off, c.item_path("k"), {"n": 2})  # … then a write with history off
    assert (await off.get(c.item_path("k") + "/Revisions")).json()["revisions"][0]["data"] == {"n": 1}
    r = await http.get(f"{c.path}/Items", params={"AsOf": "1"})
    assert r.status_code == 400 and "oldest reachable point is event id 2" in r.json()["message"], r.text
    await _set(http, c.item_path("k"), {"n": 3})  # on again: the write it missed is recorded first
    rows = (await http.get(c.item_path("k") + "/Revisions")).json()["revisions"]
    assert [x["data"]["n"] for x in rows] == [3, 2, 1]


async def test_deleting_the_object_or_its_service_removes_its_history(
    http: httpx.AsyncClient, service: str, redis: Any
) -> None:
    c = await create(http, service, "map")
    await c.added("k", {"n": 1})
    doc = await _doc(http, service, {"n": 1})
    pattern = f"sync:{{{service}}}:h*"
    # the map's records, item index and key index; the document's records and index
    assert await _count(redis, pattern) == 5
    assert (await http.delete(c.path)).status_code == 204
    assert (await http.delete(f"/v1/Services/{service}/Documents/{doc['sid']}")).status_code == 204
    assert await _count(redis, pattern) == 0
    await _doc(http, service, {"n": 1})
    assert await _count(redis, pattern) == 2
    assert (await http.delete(f"/v1/Services/{service}")).status_code == 204  # the purge removes it
    for _ in range(75):
        if not await _count(redis, pattern):
            break
        await asyncio.sleep(0.2)
    assert await _count(redis, pattern) == 0


async def _count(redis: Any, pattern: str) -> int:
    return len({k async for k in redis.scan_iter(match=pattern)})  # a Cluster client scans every master
