"""Documents over raw HTTP: shapes, revisions, If-Match, limits, TTL and the event log."""

from __future__ import annotations

import asyncio
import json
import time

import httpx

from storage import events
from tests.helpers import ON_EVERY_BACKEND

pytestmark = ON_EVERY_BACKEND


async def _doc(http: httpx.AsyncClient, service: str, **form: str) -> dict:
    r = await http.post(f"/v1/Services/{service}/Documents", data=form)
    assert r.status_code == 201, r.text
    return r.json()


async def test_create_fetch_by_sid_and_unique_name(http: httpx.AsyncClient, service: str) -> None:
    d = await _doc(http, service, UniqueName="settings", Data='{"theme": "dark"}')
    assert d["sid"].startswith("ET") and d["revision"] == "0" and d["created_by"] == "system"
    assert d["data"] == {"theme": "dark"} and d["date_expires"] is None
    assert d["links"]["permissions"] == d["url"] + "/Permissions"
    for ident in (d["sid"], "settings"):
        r = await http.get(f"/v1/Services/{service}/Documents/{ident}")
        assert r.status_code == 200 and r.headers["etag"] == "0"
        assert r.json()["sid"] == d["sid"] and r.json()["url"].endswith(d["sid"])


async def test_create_without_data_gives_empty_object(http: httpx.AsyncClient, service: str) -> None:
    assert (await _doc(http, service))["data"] == {}


async def test_revision_is_lowercase_hex_and_if_match_guards_updates(http: httpx.AsyncClient, service: str) -> None:
    d = await _doc(http, service, UniqueName="counter", Data='{"n": 0}')
    url = f"/v1/Services/{service}/Documents/counter"
    for n in range(1, 12):
        r = await http.post(url, data={"Data": json.dumps({"n": n})})
        assert r.status_code == 200
    assert r.json()["revision"] == "b" and r.headers["etag"] == "b"
    stale = await http.post(url, data={"Data": '{"n": -1}'}, headers={"If-Match": "a"})
    assert stale.status_code == 412 and stale.json()["code"] == 54103
    assert (await http.get(url)).json()["data"] == {"n": 11}
    ok = await http.post(url, data={"Data": '{"n": 12}'}, headers={"If-Match": "b"})
    assert ok.status_code == 200 and ok.json()["revision"] == "c"
    bad = await http.post(url, data={"Data": "{}"}, headers={"If-Match": "not-a-rev"})
    assert bad.status_code == 400 and bad.json()["code"] == 54003
    assert d["sid"] == ok.json()["sid"]


async def test_unique_name_conflict_and_validation(http: httpx.AsyncClient, service: str) -> None:
    await _doc(http, service, UniqueName="taken")
    r = await http.post(f"/v1/Services/{service}/Documents", data={"UniqueName": "taken"})
    assert r.status_code == 409 and r.json()["code"] == 54301
    for name in ("x" * 321, "ET" + "a" * 32):
        r = await http.post(f"/v1/Services/{service}/Documents", data={"UniqueName": name})
        assert r.status_code == 400 and r.json()["code"] == 54302
    assert (await _doc(http, service, UniqueName="y" * 320))["unique_name"] == "y" * 320


async def test_bad_data_is_rejected_and_nothing_is_written(http: httpx.AsyncClient, service: str) -> None:
    base = f"/v1/Services/{service}/Documents"
    cases = [
        ({"UniqueName": "a", "Data": "{not json"}, 400, 54008),
        ({"UniqueName": "b", "Data": "[1, 2]"}, 400, 54008),
        ({"UniqueName": "c", "Data": json.dumps({"k": "x" * 16400})}, 413, 54006),
        ({"UniqueName": "d", "Ttl": "-5"}, 400, 54011),
        ({"UniqueName": "e", "Ttl": "31536001"}, 400, 54011),
    ]
    for form, status, code in cases:
        r = await http.post(base, data=form)
        assert (r.status_code, r.json()["code"]) == (status, code), form
        assert (await http.get(f"{base}/{form['UniqueName']}")).status_code == 404
    listed = (await http.get(base)).json()["documents"]
    assert listed == []
    d = await _doc(http, service, UniqueName="keep", Data='{"v": 1}')
    r = await http.post(f"{base}/keep", data={"Data": json.dumps({"k": "x" * 17000})})
    assert r.status_code == 413
    after = (await http.get(f"{base}/keep")).json()
    assert after["data"] == {"v": 1} and after["revision"] == d["revision"]
    r = await http.post(f"{base}/keep", data={})
    assert r.status_code == 400 and r.json()["code"] == 54010


async def test_data_of_exactly_16_kib_is_accepted(http: httpx.AsyncClient, service: str) -> None:
    overhead = len(json.dumps({"k": ""}, separators=(",", ":")))
    body = json.dumps({"k": "x" * (16 * 1024 - overhead)})
    r = await http.post(f"/v1/Services/{service}/Documents", data={"Data": body})
    assert r.status_code == 201


async def test_ttl_sets_date_expires_and_zero_removes_it(http: httpx.AsyncClient, service: str) -> None:
    d = await _doc(http, service, UniqueName="t", Ttl="3600")
    expires = time.mktime(time.strptime(d["date_expires"], "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    assert abs(expires - (time.time() + 3600)) < 5
    r = await http.post(f"/v1/Services/{service}/Documents/t", data={"Ttl": "0"})
    assert r.status_code == 200 and r.json()["date_expires"] is None


async def test_expired_document_is_gone_at_once_and_swept_with_an_event(http, service, store) -> None:
    d = await _doc(http, service, UniqueName="short", Ttl="1")
    await asyncio.sleep(1.1)
    assert (await http.get(f"/v1/Services/{service}/Documents/short")).status_code == 404
    assert (await http.get(f"/v1/Services/{service}/Documents")).json()["documents"] == []
    for _ in range(50):  # the sweeper runs every 0.2 s in tests
        log = await events.read_since(store, service, d["sid"])
        if log and log[-1].type == "document_removed":
            break
        await asyncio.sleep(0.1)
    assert [e.type for e in log] == ["document_created", "document_removed"]
    assert log[-1].origin == "system"
    assert await store.redis.exists(f"sync:{{{service}}}:o:{d['sid']}") == 0
    again = await http.post(f"/v1/Services/{service}/Documents", data={"UniqueName": "short"})
    assert again.status_code == 201


async def test_every_write_appends_one_event_with_increasing_ids(http, service, store) -> None:
    d = await _doc(http, service, UniqueName="ev", Data='{"a": 1}')
    await http.post(f"/v1/Services/{service}/Documents/ev", data={"Data": '{"a": 2}'})
    await http.post(f"/v1/Services/{service}/Documents/ev", data={"Data": '{"bad'})  # refused: no event
    await http.delete(f"/v1/Services/{service}/Documents/ev")
    log = await events.read_since(store, service, d["sid"])
    assert [(e.id, e.type) for e in log] == [
        (0, "document_created"),
        (1, "document_updated"),
        (2, "document_removed"),
    ]
    assert json.loads(log[1].data) == {"a": 2} and log[1].revision == "1" and log[1].identity == "system"
    assert [e.id for e in await events.read_since(store, service, d["sid"], after=0)] == [1, 2]


async def test_delete_then_fetch_is_404_20404(http: httpx.AsyncClient, service: str) -> None:
    d = await _doc(http, service, UniqueName="gone")
    assert (await http.delete(f"/v1/Services/{service}/Documents/gone")).status_code == 204
    r = await http.get(f"/v1/Services/{service}/Documents/{d['sid']}")
    assert r.status_code == 404 and r.json()["code"] == 20404
    assert r.json()["message"] == f"The requested resource /Services/{service}/Documents/{d['sid']} was not found"
    assert (await http.delete(f"/v1/Services/{service}/Documents/gone")).status_code == 404


async def test_paging_while_writing_returns_each_existing_document_once(http: httpx.AsyncClient, service: str) -> None:
    base = f"/v1/Services/{service}/Documents"
    existing = {(await _doc(http, service))["sid"] for _ in range(7)}
    seen: list[str] = []
    url: str | None = f"{base}?PageSize=3"
    while url:
        body = (await http.get(url)).json()
        seen += [d["sid"] for d in body["documents"]]
        await _doc(http, service)  # written while paging
        url = body["meta"]["next_page_url"]
    assert existing <= set(seen) and len(seen) == len(set(seen))


async def test_page_meta_and_bad_paging_params(http: httpx.AsyncClient, service: str) -> None:
    for _ in range(3):
        await _doc(http, service)
    base = f"/v1/Services/{service}/Documents"
    first = (await http.get(f"{base}?PageSize=2")).json()
    meta = first["meta"]
    assert meta["page"] == 0 and meta["previous_page_url"] is None and meta["key"] == "documents"
    assert meta["url"] == f"{http.base_url}{base}?PageSize=2&Page=0"
    assert "PageToken=" in meta["next_page_url"] and "Page=1" in meta["next_page_url"]
    second = (await http.get(meta["next_page_url"])).json()
    assert second["meta"]["next_page_url"] is None and len(second["documents"]) == 1
    back = (await http.get(second["meta"]["previous_page_url"])).json()
    assert [d["sid"] for d in back["documents"]] == [d["sid"] for d in first["documents"]]
    for q, code in [("PageSize=0", 54454), ("PageSize=1001", 54454), ("PageToken=%%%", 54453)]:
        r = await http.get(f"{base}?{q}")
        assert r.status_code == 400 and r.json()["code"] == code


async def test_nan_and_infinity_are_not_json(http: httpx.AsyncClient, service: str) -> None:
    for raw in ('{"a": NaN}', '{"a": Infinity}', '{"a": -Infinity}'):
        r = await http.post(f"/v1/Services/{service}/Documents", data={"Data": raw})
        assert r.status_code == 400 and r.json()["code"] == 54008


async def test_oversized_body_is_refused_before_parsing(http: httpx.AsyncClient, service: str) -> None:
    r = await http.post(f"/v1/Services/{service}/Documents", data={"Data": "{}", "Pad": "x" * 300_000})
    assert r.status_code == 413 and r.json()["code"] == 54006
    assert (await http.get(f"/v1/Services/{service}/Documents")).json()["documents"] == []


async def test_trailing_slash_is_a_json_404_not_a_redirect(http: httpx.AsyncClient, service: str) -> None:
    r = await http.get(f"/v1/Services/{service}/")
    assert r.status_code == 404 and r.json()["code"] == 20404
