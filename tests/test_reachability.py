"""Reachability webhooks (endpoint_connected / endpoint_disconnected), with and without debouncing.

The realtime gateway reports connections through ``storage.reachability.record_endpoint``; these
tests call it on the real Redis, and the running server's worker delivers the webhooks.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import httpx
import pytest

from storage import Store, keys
from storage.clock import now_ms
from storage.reachability import POLL_S, fire_due, record_endpoint
from tests.helpers import ACCOUNT_SID, ON_EVERY_BACKEND, SCALE
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


async def test_a_debounced_disconnect_fires_when_its_window_ends(http, store: Store, receiver: Receiver) -> None:
    """The worker waits for the disconnect's due time itself (storage.reachability.fire_due), not
    for its next look: on time, neither before the window ends nor a look's period after it."""
    service = await reachable_service(
        http, receiver.url, ReachabilityDebouncingEnabled="true", ReachabilityDebouncingWindow="1000"
    )
    await record_endpoint(store, service, "erin", "ep1", True)
    await receiver.wait_for(1)
    start = time.monotonic()
    await record_endpoint(store, service, "erin", "ep1", False)
    assert seen(await receiver.wait_for(2))[1] == ("endpoint_disconnected", "erin", "ep1")
    took = time.monotonic() - start
    assert 0.99 <= took < 1.0 + 0.35 * SCALE, took


async def test_fire_due_says_how_long_the_worker_may_wait(store: Store) -> None:
    """Until the earliest pending disconnect of the buckets looked at is due, at most POLL_S; at
    once after firing. Bucket 99 is no process's (there are keys.BUCKETS), so only this test
    writes and fires its list."""
    bucket, sid = 99, "IS" + "9" * 32
    await store.redis.delete(keys.reach_due(bucket))
    assert await fire_due(store, [bucket]) == POLL_S  # nothing pending
    await store.redis.zadd(keys.reach_due(bucket), {sid: now_ms() + 300})
    assert 0.2 < await fire_due(store, [bucket]) <= 0.3  # sooner than POLL_S: when it is due
    await store.redis.zadd(keys.reach_due(bucket), {sid: now_ms() + 5000})
    assert await fire_due(store, [bucket]) == POLL_S  # later than POLL_S: look again before then
    await store.redis.zadd(keys.reach_due(bucket), {sid: now_ms() - 1})
    assert await fire_due(store, [bucket]) == 0.0  # fired (a Service without pending disconnects)
    assert await store.redis.zcard(keys.reach_due(bucket)) == 0
    assert await fire_due(store, [bucket]) == POLL_S
