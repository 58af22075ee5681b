"""ACL revocation reaches live subscriptions (issue 9, item 7): deleting a Permission, turning its
``read`` off or enabling the Service's ``acl_enabled`` ends the subscriptions that may no longer read,
with ``subscription_failed`` 403/54007 as a refused establish, and nothing else."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from realtime.client import SyncClient
from tests.helpers import ON_EVERY_BACKEND, Backend, Endpoint, ServerProcess
from tests.sdk import token

pytestmark = ON_EVERY_BACKEND


async def connect(url: str, api_key: Any, service: str, identity: str) -> SyncClient:
    return await SyncClient.connect(url, token(api_key.sid, api_key.secret, service, identity))


READ_ONLY = {"read": True, "write": False, "manage": False}


def failures(client: SyncClient) -> list[dict[str, Any]]:
    """The subscription notifications the server sends on its own (no establish waits for them):
    SyncClient drops those, so record them here."""
    seen: list[dict[str, Any]] = []
    original = client._notification

    def record(body: Any) -> None:
        if isinstance(body, dict) and body.get("event_type") == "subscription_failed":
            seen.extend({"correlation_id": body.get("correlation_id"), **ev} for ev in body.get("events", []))
        original(body)

    client._notification = record  # type: ignore[method-assign]
    return seen


async def until(check: Any, wait_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + wait_s
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


def refused(seen: list[dict[str, Any]], sid: str) -> bool:
    return any(f["object_sid"] == sid for f in seen)


def assert_refused_once(seen: list[dict[str, Any]], sid: str, kind: str) -> None:
    (failure,) = [f for f in seen if f["object_sid"] == sid]
    assert failure["object_type"] == kind
    assert failure["correlation_id"] is None
    assert (failure["error"]["status"], failure["error"]["code"]) == (403, 54007)


async def no_event(client: SyncClient, wait_s: float = 0.5) -> None:
    with pytest.raises(TimeoutError):
        ev = await client.next_event(wait_s)
        raise AssertionError(f"unexpected event {ev}")


@pytest.fixture
def second(backend: Backend) -> Any:
    """Another server process on the test's Redis."""
    srv = backend.server_process().start()
    yield srv
    srv.stop()


@pytest.mark.parametrize("how", ["delete", "read_false"])
async def test_revoking_read_ends_only_that_subscription(
    server: Endpoint, api_key: Any, service: str, twilio: Any, how: str
) -> None:
    svc = twilio.sync.v1.services(service)
    svc.update(acl_enabled=True)
    doc = svc.documents.create(unique_name="guarded", data={"v": 0})
    other = svc.documents.create(unique_name="other", data={"v": 0})
    m = svc.sync_maps.create(unique_name="board")
    for ident in ("reader", "keeper"):
        svc.documents(doc.sid).document_permissions(ident).update(**READ_ONLY)
    svc.documents(other.sid).document_permissions("reader").update(**READ_ONLY)
    svc.sync_maps(m.sid).sync_map_permissions("reader").update(**READ_ONLY)
    async with (
        await connect(server.ws_url, api_key, service, "reader") as reader,
        await connect(server.ws_url, api_key, service, "keeper") as keeper,
    ):
        seen, kept = failures(reader), failures(keeper)
        for sid, kind in ((doc.sid, "document"), (other.sid, "document"), (m.sid, "map")):
            assert (await reader.subscribe(sid, kind, 0))["event_type"] == "subscription_established"
        assert (await keeper.subscribe(doc.sid, "document", 0))["event_type"] == "subscription_established"

        if how == "delete":
            svc.documents(doc.sid).document_permissions("reader").delete()
        else:
            svc.documents(doc.sid).document_permissions("reader").update(read=False, write=True, manage=True)
        svc.documents(doc.sid).update(data={"v": 1})  # at once: the next update must not reach the reader
        svc.documents(other.sid).update(data={"v": 1})

        got = await reader.next_event()  # the other object's event, and no event of the revoked one
        assert (got["event_type"], got["event"]["document_sid"]) == ("document_updated", other.sid)
        await until(lambda: refused(seen, doc.sid))
        assert_refused_once(seen, doc.sid, "document")
        got = await keeper.next_event()  # another identity that may read keeps receiving
        assert (got["event_type"], got["event"]["document_data"]) == ("document_updated", {"v": 1})

        svc.documents(doc.sid).update(data={"v": 2})
        svc.sync_maps(m.sid).sync_map_items.create(key="k", data={"n": 1})
        got = await reader.next_event()
        assert (got["event_type"], got["event"]["map_sid"]) == ("map_item_added", m.sid)
        assert (await keeper.next_event())["event"]["document_data"] == {"v": 2}
        await no_event(reader)
        assert not kept and [f["object_sid"] for f in seen] == [doc.sid]
        # subscribing again is refused as well
        again = await reader.subscribe(doc.sid, "document", 0)
        assert (again["event_type"], again["error"]["code"]) == ("subscription_failed", 54007)


async def test_granting_or_keeping_read_ends_nothing(server: Endpoint, api_key: Any, service: str, twilio: Any) -> None:
    svc = twilio.sync.v1.services(service)
    svc.update(acl_enabled=True)
    doc = svc.documents.create(unique_name="kept", data={"v": 0})
    perms = svc.documents(doc.sid).document_permissions
    perms("reader").update(**READ_ONLY)
    async with await connect(server.ws_url, api_key, service, "reader") as c:
        seen = failures(c)
        await c.subscribe(doc.sid, "document", 0)
        perms("reader").update(read=True, write=True, manage=True)  # still reads
        perms("someone-else").update(read=False, write=True, manage=False)
        perms("someone-else").delete()
        svc.documents(doc.sid).update(data={"v": 1})
        assert (await c.next_event())["event"]["document_data"] == {"v": 1}
        assert not seen


async def test_enabling_acl_ends_the_subscriptions_without_permission(
    server: Endpoint, api_key: Any, service: str, twilio: Any
) -> None:
    svc = twilio.sync.v1.services(service)
    doc = svc.documents.create(unique_name="open", data={"v": 0})
    stream = svc.sync_streams.create(unique_name="feed")
    svc.documents(doc.sid).document_permissions("bob").update(**READ_ONLY)
    async with (
        await connect(server.ws_url, api_key, service, "alice") as alice,
        await connect(server.ws_url, api_key, service, "bob") as bob,
    ):
        seen_a, seen_b = failures(alice), failures(bob)
        for c in (alice, bob):
            await c.subscribe(doc.sid, "document", 0)
        await alice.subscribe(stream.sid, "stream", 0)  # Streams have no Permissions: never refused
        assert (await alice.request("GET", f"/v3/Documents/{doc.sid}"))[0] == 200

        svc.update(acl_enabled=False)  # turning it off (or leaving it off) ends nothing
        svc.documents(doc.sid).update(data={"v": 1})
        for c in (alice, bob):
            assert (await c.next_event())["event"]["document_data"] == {"v": 1}

        svc.update(acl_enabled=True)
        svc.documents(doc.sid).update(data={"v": 2})
        svc.sync_streams(stream.sid).stream_messages.create(data={"m": 1})
        got = await alice.next_event()
        assert (got["event_type"], got["event"]["message_data"]) == ("stream_message_published", {"m": 1})
        await until(lambda: refused(seen_a, doc.sid))
        assert_refused_once(seen_a, doc.sid, "document")
        assert (await bob.next_event())["event"]["document_data"] == {"v": 2}
        # the connection follows the Service's new setting for its requests too
        status, body = await alice.request("GET", f"/v3/Documents/{doc.sid}")
        assert (status, body["code"]) == (403, 54007)

        svc.update(acl_enabled=False)
        svc.documents(doc.sid).update(data={"v": 3})
        assert (await bob.next_event())["event"]["document_data"] == {"v": 3}
        await no_event(alice)
        assert not seen_b and len(seen_a) == 1
        assert (await alice.request("GET", f"/v3/Documents/{doc.sid}"))[0] == 200


async def test_revocation_reaches_every_server_process(
    server: Endpoint, second: ServerProcess, api_key: Any, service: str, twilio: Any
) -> None:
    svc = twilio.sync.v1.services(service)
    svc.update(acl_enabled=True)
    lst = svc.sync_lists.create(unique_name="shared")
    svc.sync_lists(lst.sid).sync_list_permissions("reader").update(**READ_ONLY)
    tok = token(api_key.sid, api_key.secret, service, "reader")
    async with (
        await SyncClient.connect(server.ws_url, tok) as here,
        await SyncClient.connect(second.ws_url, tok) as there,
    ):
        seen = [failures(here), failures(there)]
        for c in (here, there):
            await c.subscribe(lst.sid, "list", 0)
        svc.sync_lists(lst.sid).sync_list_permissions("reader").delete()
        svc.sync_lists(lst.sid).sync_list_items.create(data={"n": 1})
        for c, s in zip((here, there), seen, strict=True):
            await until(lambda s=s: refused(s, lst.sid))
            assert_refused_once(s, lst.sid, "list")
            await no_event(c)
