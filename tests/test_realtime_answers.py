"""What the tunnelled CDS API answers where Twilio's answer is specific: an unknown unique name
(54300, not the kind's not-found code) and a write by an identity that may not read (no ``data``).
Driven by realtime.client (the Python client) over a real socket, as in test_realtime.py."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from realtime.client import SyncClient
from tests.helpers import ON_EVERY_BACKEND, Endpoint
from tests.sdk import Sdk, SdkError, token

pytestmark = ON_EVERY_BACKEND

PLURAL = {"document": "Documents", "list": "Lists", "map": "Maps", "stream": "Streams"}
GONE = {"document": 54100, "list": 54150, "map": 54200, "stream": 54250}


@pytest.mark.parametrize("kind", list(PLURAL))
async def test_unknown_unique_name_is_54300_but_a_removed_sid_keeps_the_kinds_code(
    server: Endpoint, api_key: Any, service: str, http: httpx.AsyncClient, kind: str
) -> None:
    coll = f"/v3/{PLURAL[kind]}"
    async with await SyncClient.connect(server.ws_url, token(api_key.sid, api_key.secret, service, "alice")) as c:
        status, body = await c.request("GET", f"{coll}/no-such-name")
        assert (status, body["code"], body["message"]) == (404, 54300, "Unique name not found")
        # a write or an item addressed through the unknown name: the same answer
        status, body = await c.request("POST", f"{coll}/no-such-name", {"ttl": 10})
        assert (status, body["code"]) == (404, 54300)
        if kind in ("list", "map"):
            status, body = await c.request("GET", f"{coll}/no-such-name/Items")
            assert (status, body["code"]) == (404, 54300)
        if kind == "stream":
            status, body = await c.request("POST", f"{coll}/no-such-name/Messages", {"data": {}})
            assert (status, body["code"]) == (404, 54300)
        # opened (so the name is cached), then removed: the name is unknown again, the SID is gone
        obj = await c.open(kind, "short-lived")
        assert (await c.request("DELETE", obj["url"]))[0] == 200
        status, body = await c.request("GET", f"{coll}/short-lived")
        assert (status, body["code"]) == (404, 54300)
        status, body = await c.request("GET", obj["url"])
        assert (status, body["code"]) == (404, GONE[kind])
        failed = await c.subscribe(obj["sid"], kind, 0)
        assert failed["event_type"] == "subscription_failed" and failed["error"]["code"] == GONE[kind]
    # REST keeps Twilio's generic 404 for an unknown name
    path = f"/Services/{service}/{PLURAL[kind]}/no-such-name"
    r = await http.get(f"/v1{path}")
    assert (r.status_code, r.json()["code"]) == (404, 20404) and path in r.json()["message"]


async def test_twilios_sdk_opening_an_unknown_name_gets_54300(sdk: Sdk, api_key: Any, service: str) -> None:
    """As Twilio's own SDK test suite expects of real Twilio: ``open_existing`` of an unknown name."""
    await sdk.client("a", token(api_key.sid, api_key.secret, service, "alice"))
    for kind in PLURAL:
        with pytest.raises(SdkError) as err:
            await sdk.open("a", kind, {"id": "never-created", "mode": "open_existing"}, kind)
        assert (err.value.status, err.value.code) == (404, 54300)


async def test_a_write_only_identity_gets_answers_without_data(
    server: Endpoint, api_key: Any, service: str, twilio: Any
) -> None:
    svc = twilio.sync.v1.services(service)
    svc.update(acl_enabled=True)
    doc = svc.documents.create(unique_name="secret-doc", data={"secret": 1})
    lst = svc.sync_lists.create(unique_name="secret-list")
    svc.sync_lists(lst.sid).sync_list_items.create(data={"secret": 2})
    mp = svc.sync_maps.create(unique_name="secret-map")
    svc.sync_maps(mp.sid).sync_map_items.create(key="k", data={"secret": 3})
    for identity, read in (("writer", False), ("editor", True)):
        svc.documents(doc.sid).document_permissions(identity).update(read=read, write=True, manage=False)
        svc.sync_lists(lst.sid).sync_list_permissions(identity).update(read=read, write=True, manage=False)
        svc.sync_maps(mp.sid).sync_map_permissions(identity).update(read=read, write=True, manage=False)
    url = server.ws_url
    async with (
        await SyncClient.connect(url, token(api_key.sid, api_key.secret, service, "writer")) as writer,
        await SyncClient.connect(url, token(api_key.sid, api_key.secret, service, "editor")) as editor,
    ):
        targets = (f"/v3/Documents/{doc.sid}", f"/v3/Lists/{lst.sid}/Items/0", f"/v3/Maps/{mp.sid}/Items/k")
        for target in targets:
            status, body = await writer.request("GET", target.split("/Items")[0])
            assert (status, body["code"]) == (403, 54007)  # it may not read...
            for change in ({"ttl": 3600}, {"data": {"v": "written"}}):
                status, body = await writer.request("POST", target, change)
                assert status == 200 and "data" not in body, body  # ...so no write answers with data
                assert body["revision"] and body["url"]
            answer = await editor.call("POST", target, {"ttl": 3600})
            assert answer["data"] == {"v": "written"}  # an identity that may read still gets it
        status, body = await writer.request("PUT", f"/v3/Maps/{mp.sid}/Items/new", {"data": {"v": 4}})
        assert status == 201 and "data" not in body
        status, body = await writer.request("POST", f"/v3/Lists/{lst.sid}/Items", {"data": {"v": 5}})
        assert status == 201 and "data" not in body
