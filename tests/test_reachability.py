"""Reachability webhooks (endpoint_connected / endpoint_disconnected), with and without debouncing.

The realtime gateway reports connections through ``storage.reachability.record_endpoint``; these
tests call it on the real Redis, and the running server's worker delivers the webhooks.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from storage import Store
from storage.reachability import record_endpoint
from tests.helpers import ACCOUNT_SID, ON_EVERY_BACKEND
from tests.webhook_receiver import Receiver

pytestmark = ON_EVERY_BACKEND


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.stop()


async def reachable_service(http: httpx.AsyncClient, url: str, **flags: str) -> str:
    data = {"WebhookUrl": url, "ReachabilityWebhooksEnabled": "true", **flags}
    r = await http.post("/v1/Services", data=data)
    assert r.status_code == 201, r.text
    return str(r.json()["sid"])


def seen(got: list) -> list[tuple[str, str, str]]:
    for r in got:
        assert r.signature_valid and r.form["AccountSid"] == ACCOUNT_SID
        assert not any(k.startswith(("Document", "List", "Map")) for k in r.form)
    return [(r.form["EventType"], r.form["Identity"], r.form["EndpointId"]) for r in got]


async def test_connect_and_disconnect_without_debouncing(http, store: Store, receiver: Receiver) -> None:
    service = await reachable_service(http, receiver.url)
    await record_endpoint(store, service, "alice", "ep1", True)
    await record_endpoint(store, service, "alice", "ep2", True)
    await record_endpoint(store, service, "alice", "ep1", False)  # fires at once, other endpoints or not
    assert seen(await receiver.wait_for(3)) == [
        ("endpoint_connected", "alice", "ep1"),
        ("endpoint_connected", "alice", "ep2"),
        ("endpoint_disconnected", "alice", "ep1"),
    ]
    assert all(r.form["ServiceSid"] == service for r in receiver.delivered)


async def test_nothing_is_sent_while_reachability_webhooks_are_off(http, store: Store, receiver: Receiver) -> None:
    r = await http.post("/v1/Services", data={"WebhookUrl": receiver.url})
    service = r.json()["sid"]
    await record_endpoint(store, service, "bob", "ep0", True)
    await record_endpoint(store, service, "bob", "ep0", False)
    r = await http.post(f"/v1/Services/{service}", data={"ReachabilityWebhooksEnabled": "true"})
    assert r.status_code == 200
    await record_endpoint(store, service, "bob", "ep1", True)
    # one identity's webhooks go out in order: ep0's would have come first
    assert seen(await receiver.wait_for(1)) == [("endpoint_connected", "bob", "ep1")]


async def test_debouncing_suppresses_a_disconnect_followed_by_a_reconnect(
    http, store: Store, receiver: Receiver
) -> None:
    service = await reachable_service(
        http, receiver.url, ReachabilityDebouncingEnabled="true", ReachabilityDebouncingWindow="1000"
    )
    await record_endpoint(store, service, "carol", "ep1", True)
    await record_endpoint(store, service, "carol", "ep1", False)
    await record_endpoint(store, service, "carol", "ep2", True)  # back inside the window
    await record_endpoint(store, service, "carol", "ep2", False)  # this one stays away
    assert seen(await receiver.wait_for(3)) == [
        ("endpoint_connected", "carol", "ep1"),
        ("endpoint_connected", "carol", "ep2"),
        ("endpoint_disconnected", "carol", "ep2"),
    ]


async def test_debouncing_waits_for_the_identitys_last_endpoint(http, store: Store, receiver: Receiver) -> None:
    service = await reachable_service(
        http, receiver.url, ReachabilityDebouncingEnabled="true", ReachabilityDebouncingWindow="1000"
    )
    await record_endpoint(store, service, "dave", "ep1", True)
    await record_endpoint(store, service, "dave", "ep2", True)
    await record_endpoint(store, service, "dave", "ep1", False)  # dave is still online through ep2
    await record_endpoint(store, service, "dave", "ep2", False)
    assert seen(await receiver.wait_for(3)) == [
        ("endpoint_connected", "dave", "ep1"),
        ("endpoint_connected", "dave", "ep2"),
        ("endpoint_disconnected", "dave", "ep2"),
    ]
