"""Streams over raw HTTP: CRUD, TTL, publishing messages (recorded only in the event log)."""

from __future__ import annotations

import asyncio
import json
import re

import httpx

from storage import Store, events
from tests.helpers import ON_EVERY_BACKEND
from tests.sync_items import expires_in, wait_for_event

pytestmark = ON_EVERY_BACKEND


async def _stream(http: httpx.AsyncClient, service: str, **form: str) -> dict:
    r = await http.post(f"/v1/Services/{service}/Streams", data=form)
    assert r.status_code == 201, r.text
    return dict(r.json())


async def test_stream_has_twilio_shape_without_revision(http: httpx.AsyncClient, service: str) -> None:
    s = await _stream(http, service, UniqueName="feed")
    assert re.match(r"^TO[0-9a-f]{32}$", s["sid"]) and s["unique_name"] == "feed"
    assert s["url"] == f"{http.base_url}/v1/Services/{service}/Streams/{s['sid']}"
    assert s["links"] == {"messages": s["url"] + "/Messages"}
    assert "revision" not in s and s["created_by"] == "system" and s["date_expires"] is None
    for ident in (s["sid"], "feed"):
        r = await http.get(f"/v1/Services/{service}/Streams/{ident}")
        assert r.status_code == 200 and r.json() == s and "etag" not in r.headers


async def test_stream_ttl_is_set_on_create_and_update_and_zero_clears_it(http: httpx.AsyncClient, service: str) -> None:
    s = await _stream(http, service, UniqueName="t", Ttl="600")
    assert abs(expires_in(s) - 600) < 5
    r = await http.post(f"/v1/Services/{service}/Streams/t", data={"Ttl": "0"})
    assert r.status_code == 200 and r.json()["date_expires"] is None
    assert (await http.post(s["url"], data={})).json()["code"] == 54010


async def test_streams_are_read_in_pages(http: httpx.AsyncClient, service: str) -> None:
    sids = [(await _stream(http, service))["sid"] for _ in range(3)]
    first = (await http.get(f"/v1/Services/{service}/Streams?PageSize=2")).json()
    assert first["meta"]["key"] == "streams" and len(first["streams"]) == 2
    rest = (await http.get(first["meta"]["next_page_url"])).json()
    assert [s["sid"] for s in first["streams"] + rest["streams"]] == sids


async def test_deleted_stream_is_404_20404(http: httpx.AsyncClient, service: str) -> None:
    s = await _stream(http, service, UniqueName="bye")
    assert (await http.delete(f"/v1/Services/{service}/Streams/bye")).status_code == 204
    r = await http.get(s["url"])
    assert r.status_code == 404 and r.json()["code"] == 20404


async def test_publish_answers_201_with_a_tz_sid_and_the_data(http: httpx.AsyncClient, service: str) -> None:
    s = await _stream(http, service, UniqueName="chat")
    r = await http.post(s["links"]["messages"], data={"Data": '{"text": "hi", "n": [1, 2]}'})
    assert r.status_code == 201
    assert re.match(r"^TZ[0-9a-f]{32}$", r.json()["sid"]) and r.json()["data"] == {"text": "hi", "n": [1, 2]}
    assert set(r.json()) == {"sid", "data"}
    by_name = await http.post(f"/v1/Services/{service}/Streams/chat/Messages", data={"Data": "{}"})
    assert by_name.status_code == 201 and by_name.json()["sid"] != r.json()["sid"]


async def test_each_message_is_recorded_as_stream_message_published(
    http: httpx.AsyncClient, service: str, store: Store
) -> None:
    s = await _stream(http, service)
    sids = [
        (await http.post(s["links"]["messages"], data={"Data": json.dumps({"n": n})})).json()["sid"] for n in (1, 2)
    ]
    log = await events.read_since(store, service, s["sid"])
    assert [(e.id, e.type) for e in log] == [
        (0, "stream_created"),
        (1, "stream_message_published"),
        (2, "stream_message_published"),
    ]
    assert [e.message_sid for e in log[1:]] == sids and [json.loads(e.data) for e in log[1:]] == [{"n": 1}, {"n": 2}]
    assert all(e.identity == "system" and e.origin == "rest" for e in log)


async def test_message_over_4_kib_is_413_54006_and_not_recorded(
    http: httpx.AsyncClient, service: str, store: Store
) -> None:
    s = await _stream(http, service)
    overhead = len(json.dumps({"k": ""}, separators=(",", ":")))
    fits = await http.post(s["links"]["messages"], data={"Data": json.dumps({"k": "x" * (4096 - overhead)})})
    assert fits.status_code == 201
    r = await http.post(s["links"]["messages"], data={"Data": json.dumps({"k": "x" * (4097 - overhead)})})
    assert r.status_code == 413 and r.json()["code"] == 54006
    log = await events.read_since(store, service, s["sid"])
    assert [e.type for e in log] == ["stream_created", "stream_message_published"]


async def test_message_without_data_is_400_54251_and_bad_json_54008(http: httpx.AsyncClient, service: str) -> None:
    s = await _stream(http, service)
    r = await http.post(s["links"]["messages"], data={})
    assert r.status_code == 400 and r.json()["code"] == 54251
    r = await http.post(s["links"]["messages"], data={"Data": "nope"})
    assert r.status_code == 400 and r.json()["code"] == 54008


async def test_messages_are_not_readable_over_rest(http: httpx.AsyncClient, service: str) -> None:
    s = await _stream(http, service)
    await http.post(s["links"]["messages"], data={"Data": "{}"})
    r = await http.get(s["links"]["messages"])
    assert r.status_code == 405 and r.json()["code"] == 20004 and r.json()["status"] == 405


async def test_publishing_to_a_deleted_or_missing_stream_is_404_20404(http: httpx.AsyncClient, service: str) -> None:
    s = await _stream(http, service)
    await http.delete(s["url"])
    for url in (s["links"]["messages"], f"/v1/Services/{service}/Streams/nosuch/Messages"):
        r = await http.post(url, data={"Data": "{}"})
        assert r.status_code == 404 and r.json()["code"] == 20404


async def test_expired_stream_refuses_messages_at_once_and_is_swept_with_a_removal_event(
    http: httpx.AsyncClient, service: str, store: Store
) -> None:
    s = await _stream(http, service, Ttl="1")
    await asyncio.sleep(1.1)
    r = await http.post(s["links"]["messages"], data={"Data": "{}"})
    assert r.status_code == 404 and r.json()["code"] == 20404
    assert (await http.get(s["url"])).status_code == 404
    log = await wait_for_event(store, service, s["sid"], "stream_removed")
    assert [e.type for e in log] == ["stream_created", "stream_removed"] and log[-1].origin == "system"
