"""Map-only behaviour over raw HTTP: user keys (encoding, length, uniqueness, byte order). What Maps
share with Lists (CRUD, If-Match, TTL, expiry, limits, events, queries) is in test_collections.py."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import msgpack
import pytest

from storage import Store, events
from tests.helpers import ON_EVERY_BACKEND
from tests.sync_items import create, walk

pytestmark = ON_EVERY_BACKEND

ODD_KEYS = [
    "a/b/c",
    "with space",
    "what?",
    "100%",
    "50%25",
    "#hash",
    "ünïcødé 日本",
    "emoji 🎉",
    "+plus&amp=x",
    "..",
    ".",
]


@pytest.mark.parametrize("key", ODD_KEYS)
async def test_key_with_reserved_or_non_ascii_characters_round_trips(
    http: httpx.AsyncClient, service: str, key: str
) -> None:
    m = await create(http, service, "map")
    item = await m.added(key, {"k": key})
    assert item["key"] == key and item["url"] == f"{http.base_url}{m.item_path(key)}"
    r = await http.get(m.item_path(key))
    assert r.status_code == 200 and r.json()["key"] == key and r.json()["data"] == {"k": key}
    upd = await http.post(m.item_path(key), data={"Data": '{"v": 2}'}, headers={"If-Match": item["revision"]})
    assert upd.status_code == 200 and upd.json()["key"] == key
    assert await m.items() == [key]
    assert (await http.delete(m.item_path(key))).status_code == 204
    assert await m.items() == []


async def test_create_with_an_existing_key_is_409_54208_and_keeps_the_item(
    http: httpx.AsyncClient, service: str
) -> None:
    m = await create(http, service, "map")
    await m.added("taken", {"v": 1})
    r = await m.add("taken", {"v": 2})
    assert r.status_code == 409 and r.json()["code"] == 54208
    assert (await http.get(m.item_path("taken"))).json()["data"] == {"v": 1}


async def test_concurrent_creates_of_one_key_let_exactly_one_win(http: httpx.AsyncClient, service: str) -> None:
    m = await create(http, service, "map")
    answers = await asyncio.gather(*(m.add("race", {"n": n}) for n in range(20)))
    assert sorted(r.status_code for r in answers) == [201] + [409] * 19
    winner = next(r.json() for r in answers if r.status_code == 201)
    assert (await http.get(m.item_path("race"))).json() == winner


async def test_key_of_320_characters_is_accepted_and_longer_or_empty_is_400_54209(
    http: httpx.AsyncClient, service: str
) -> None:
    m = await create(http, service, "map")
    assert (await m.added("é" * 320))["key"] == "é" * 320
    for bad in ("k" * 321, ""):
        r = await m.add(bad, {})
        assert r.status_code == 400 and r.json()["code"] == 54209
    r = await http.get(m.item_path("k" * 321))
    assert r.status_code == 400 and r.json()["code"] == 54209
    assert await m.items() == ["é" * 320]


async def test_items_are_ordered_by_the_utf8_bytes_of_their_keys(http: httpx.AsyncClient, service: str) -> None:
    m = await create(http, service, "map")
    keys = ["b", "B", "a", "é", "z", "日本", "Z9", "~", "a b", "ab"]
    for k in keys:
        await m.added(k, {})
    by_bytes = sorted(keys, key=str.encode)
    assert await m.items() == by_bytes
    assert await m.items(Order="desc") == by_bytes[::-1]
    pages, _ = await walk(http, f"{m.path}/Items?From=%C3%A9&Bounds=exclusive&PageSize=1", "items")
    assert sum(pages, []) == ["日本"] and len(pages) == 1
    pages, _ = await walk(http, f"{m.path}/Items?From=a&Order=desc&PageSize=2", "items")
    assert sum(pages, []) == ["a", "Z9", "B"]


async def test_writing_over_an_expired_unswept_item_records_its_removal_first(
    http: httpx.AsyncClient, service: str, store: Store
) -> None:
    m = await create(http, service, "map")
    await m.added("k", {"v": 1})
    field = f"sync:{{{service}}}:it:{m.sid}"
    stored = msgpack.unpackb(await store.redis.hget(field, "k"))
    stored["x"] = int(time.time() * 1000) - 1000  # expired, and not on the sweeper's schedule
    await store.redis.hset(field, "k", msgpack.packb(stored))
    assert (await http.get(m.item_path("k"))).status_code == 404
    again = await m.added("k", {"v": 2})
    assert again["data"] == {"v": 2} and again["date_expires"] is None
    log = await events.read_since(store, service, m.sid)
    assert [e.type for e in log] == ["map_created", "map_item_added", "map_item_removed", "map_item_added"]
    assert [e.id for e in log] == [0, 1, 2, 3] and log[-1].previous_data is None
    assert log[2].origin == "system" and log[2].key == "k" and json.loads(log[2].previous_data) == {"v": 1}
