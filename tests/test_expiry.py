"""The expiry sweeper: removal events recorded once, even with several server processes sweeping."""

from __future__ import annotations

import asyncio

import httpx

from storage import events, keys
from tests.helpers import ON_EVERY_BACKEND, Backend

pytestmark = ON_EVERY_BACKEND


async def _wait_removed(store, service: str, sids: list[str], kind: str) -> dict[str, list[str]]:
    logs: dict[str, list[str]] = {}
    for _ in range(100):
        logs = {sid: [e.type for e in await events.read_since(store, service, sid)] for sid in sids}
        if all(types and types[-1] == f"{kind}_removed" for types in logs.values()):
            break
        await asyncio.sleep(0.1)
    return logs


async def test_two_sweeping_processes_record_each_removal_exactly_once(backend: Backend, http, service, store):
    second = backend.server_process().start()
    try:
        sids = []
        for n in range(60):
            r = await http.post(f"/v1/Services/{service}/Documents", data={"UniqueName": f"d{n}", "Ttl": "1"})
            sids.append(r.json()["sid"])
        r = await http.post(f"/v1/Services/{service}/Maps", data={"UniqueName": "m"})
        msid = r.json()["sid"]
        for n in range(40):
            await http.post(f"/v1/Services/{service}/Maps/m/Items", data={"Key": f"k{n}", "Data": "{}", "ItemTtl": "1"})
        await asyncio.sleep(1.0)
        logs = await _wait_removed(store, service, sids, "document")
        for sid in sids:
            assert logs[sid] == ["document_created", "document_removed"], sid
        for _ in range(100):
            map_log = [e.type for e in await events.read_since(store, service, msid)]
            if map_log.count("map_item_removed") == 40:
                break
            await asyncio.sleep(0.1)
        assert map_log.count("map_item_added") == 40 and map_log.count("map_item_removed") == 40
        assert (await http.get(f"/v1/Services/{service}/Maps/m/Items")).json()["items"] == []
        assert await store.redis.zcard(f"sync:{{{service}}}:exp") == 0
        assert await store.redis.zscore(keys.due(keys.bucket(service)), service) is None
    finally:
        second.stop()


async def test_nothing_scheduled_means_no_due_entry(http: httpx.AsyncClient, service: str, store) -> None:
    await http.post(f"/v1/Services/{service}/Documents", data={"UniqueName": "forever"})
    assert await store.redis.zscore(keys.due(keys.bucket(service)), service) is None
    await http.post(f"/v1/Services/{service}/Documents/forever", data={"Ttl": "3600"})
    assert await store.redis.zscore(keys.due(keys.bucket(service)), service) is not None


async def test_deleting_a_service_purges_its_objects_with_removal_events(http, service, store) -> None:
    sids = [(await http.post(f"/v1/Services/{service}/Documents")).json()["sid"] for _ in range(3)]
    lst = (await http.post(f"/v1/Services/{service}/Lists")).json()["sid"]
    await http.post(f"/v1/Services/{service}/Lists/{lst}/Items", data={"Data": "{}"})
    assert (await http.delete(f"/v1/Services/{service}")).status_code == 204
    logs = await _wait_removed(store, service, sids, "document")
    assert all(types[-1] == "document_removed" for types in logs.values())
    lst_log = await _wait_removed(store, service, [lst], "list")
    assert lst_log[lst][-1] == "list_removed"
    for _ in range(50):
        if not await store.redis.keys(f"sync:{{{service}}}:o:*"):
            break
        await asyncio.sleep(0.1)
    assert await store.redis.keys(f"sync:{{{service}}}:o:*") == []
    assert await store.redis.keys(f"sync:{{{service}}}:it:*") == []
