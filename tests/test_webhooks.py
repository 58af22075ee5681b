"""Webhooks: every change POSTed to the Service's webhook_url, signed as Twilio signs, from a durable queue.

A real receiver (tests/webhook_receiver.py) checks each request with twilio's RequestValidator.
SDK-origin changes are written through the storage layer with an SDK actor; the running server's
worker delivers them. Every test runs on both backends; the fault tests at the end start servers
with settings of their own on a Redis of their own, of the backend's kind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from redis import asyncio as aioredis
from redis.exceptions import ResponseError

from storage import Actor, Kind, Store, items, keys, objects, streams, webhooks
from storage.reachability import record_endpoint
from tests.helpers import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    ON_EVERY_BACKEND,
    SCALE,
    Backend,
    ClusterProcess,
    Endpoint,
    RedisProcess,
    ServerProcess,
)
from tests.webhook_receiver import Receiver

pytestmark = ON_EVERY_BACKEND

ALICE = Actor(identity="alice", origin="sdk", endpoint="ep1")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    if r.hold is not None:
        r.hold.set()
    await r.stop()


async def hooked(http: httpx.AsyncClient, url: str, **flags: str) -> str:
    """A fresh Service with this webhook URL (and Service flags such as WebhooksFromRestEnabled)."""
    r = await http.post("/v1/Services", data={"FriendlyName": "hooks", "WebhookUrl": url, **flags})
    assert r.status_code == 201, r.text
    return str(r.json()["sid"])


async def drained(redis: aioredis.Redis, service: str, within: float = 20.0) -> None:
    """Wait until the Service's webhook queue is empty (everything queued was delivered)."""
    for _ in range(int(within * SCALE / 0.02)):
        if not await redis.xlen(keys.webhook_queue(service)):
            return
        await asyncio.sleep(0.02)
    raise AssertionError("webhook queue not drained")


async def dead_letters(store: Store, service: str, within: float = 20.0) -> list[webhooks.DeadLetter]:
    """Wait until the Service has dead letters; return them."""
    for _ in range(int(within * SCALE / 0.02)):
        dead = await webhooks.failed(store, service)
        if dead:
            return dead
        await asyncio.sleep(0.02)
    raise AssertionError("no dead letters")


def common(r: Any, service: str, event_type: str) -> None:
    assert r.signature_valid, "X-Twilio-Signature rejected by twilio's RequestValidator"
    assert r.headers["content-type"].startswith("application/x-www-form-urlencoded")
    assert r.form["AccountSid"] == ACCOUNT_SID and r.form["ServiceSid"] == service
    assert r.form["EventType"] == event_type


async def test_document_events_from_an_sdk_client(http, store: Store, receiver: Receiver) -> None:
    service = await hooked(http, receiver.url)
    doc = await objects.create(store, service, Kind.DOCUMENT, ALICE, unique_name="d", data_json='{"a":1}')
    await objects.update(store, service, Kind.DOCUMENT, doc.sid, ALICE, data_json='{"a":2}')
    await objects.delete(store, service, Kind.DOCUMENT, doc.sid, ALICE)
    got = await receiver.wait_for(3)
    for r, t in zip(got, ["document_created", "document_updated", "document_removed"], strict=True):
        common(r, service, t)
        assert r.form["Identity"] == "alice" and r.form["EndpointId"] == "ep1"
        assert r.form["DocumentSid"] == doc.sid and r.form["DocumentUniqueName"] == "d"
        assert r.form["DateCreated"].endswith("Z")
    assert [r.form["DocumentRevision"] for r in got] == ["0", "1", "2"]
    assert json.loads(got[0].form["DocumentData"]) == {"a": 1}
    assert json.loads(got[1].form["DocumentData"]) == {"a": 2}
    assert "DocumentData" not in got[2].form
    assert got[0].headers["i-twilio-idempotency-token"] != got[1].headers["i-twilio-idempotency-token"]


async def test_list_events_from_an_sdk_client(http, store: Store, receiver: Receiver) -> None:
    service = await hooked(http, receiver.url)
    lst = await objects.create(store, service, Kind.LIST, ALICE, unique_name="l")
    item, _ = await items.write(store, service, Kind.LIST, lst.sid, ALICE, "append", data_json='{"v":1}')
    await items.write(store, service, Kind.LIST, lst.sid, ALICE, "update", key=item.key, data_json='{"v":2}')
    await items.delete(store, service, Kind.LIST, lst.sid, item.key, ALICE)
    await objects.delete(store, service, Kind.LIST, lst.sid, ALICE)
    got = await receiver.wait_for(5)
    types = ["list_created", "list_item_added", "list_item_updated", "list_item_removed", "list_removed"]
    for r, t in zip(got, types, strict=True):
        common(r, service, t)
        assert r.form["ListSid"] == lst.sid and r.form["ListUniqueName"] == "l" and r.form["Identity"] == "alice"
    added, updated, removed = got[1].form, got[2].form, got[3].form
    assert added["ItemIndex"] == "0" and json.loads(added["ItemData"]) == {"v": 1}
    assert json.loads(updated["ItemData"]) == {"v": 2} and json.loads(removed["ItemData"]) == {"v": 2}
    assert [int(f["EventId"]) for f in (added, updated, removed)] == [1, 2, 3]
    assert [f["ItemRevision"] for f in (added, updated)] == ["1", "2"] and "ListRevision" in removed
    assert "ItemIndex" not in got[0].form and "ListRevision" in got[4].form


async def test_map_events_from_an_sdk_client(http, store: Store, receiver: Receiver) -> None:
    service = await hooked(http, receiver.url)
    m = await objects.create(store, service, Kind.MAP, ALICE)
    await items.write(store, service, Kind.MAP, m.sid, ALICE, "create", key="k1", data_json='{"v":1}')
    await items.write(store, service, Kind.MAP, m.sid, ALICE, "update", key="k1", data_json='{"v":2}')
    await items.delete(store, service, Kind.MAP, m.sid, "k1", ALICE)
    await objects.delete(store, service, Kind.MAP, m.sid, ALICE)
    got = await receiver.wait_for(5)
    types = ["map_created", "map_item_added", "map_item_updated", "map_item_removed", "map_removed"]
    for r, t in zip(got, types, strict=True):
        common(r, service, t)
        assert r.form["MapSid"] == m.sid and "MapUniqueName" not in r.form  # no unique name given
    for r in got[1:4]:
        assert r.form["ItemKey"] == "k1" and "ItemIndex" not in r.form and "MapRevision" in r.form
    assert json.loads(got[2].form["ItemData"]) == {"v": 2} and got[2].form["ItemRevision"] == "2"


async def test_streams_and_ttl_only_changes_send_no_webhooks(http, store: Store, redis, receiver: Receiver) -> None:
    service = await hooked(http, receiver.url)
    s = await objects.create(store, service, Kind.STREAM, ALICE)
    await streams.publish(store, service, s.sid, '{"m":1}', ALICE)
    await objects.delete(store, service, Kind.STREAM, s.sid, ALICE)
    lst = await objects.create(store, service, Kind.LIST, ALICE)
    await objects.update(store, service, Kind.LIST, lst.sid, ALICE, ttl=3600)
    await drained(redis, service)
    assert [r.form["EventType"] for r in await receiver.wait_for(1)] == ["list_created"]


async def test_rest_changes_only_with_webhooks_from_rest_enabled(http, store: Store, receiver: Receiver) -> None:
    service = await hooked(http, receiver.url)
    base = f"/v1/Services/{service}/Documents"
    assert (await http.post(base, data={"UniqueName": "d", "Data": '{"by":"rest"}'})).status_code == 201
    await objects.update(store, service, Kind.DOCUMENT, "d", ALICE, data_json='{"by":"sdk"}')
    first = (await receiver.wait_for(1))[0]
    # same object, delivered in order: had the REST create been queued, it would have come first
    assert first.form["EventType"] == "document_updated" and first.form["Identity"] == "alice"
    assert (await http.post(f"/v1/Services/{service}", data={"WebhooksFromRestEnabled": "true"})).status_code == 200
    assert (await http.post(f"{base}/d", data={"Data": '{"by":"rest2"}'})).status_code == 200
    rest = (await receiver.wait_for(2))[1]
    common(rest, service, "document_updated")
    assert rest.form["Identity"] == "system" and "EndpointId" not in rest.form
    assert json.loads(rest.form["DocumentData"]) == {"by": "rest2"}


async def test_sdk_changes_are_sent_whatever_the_rest_flag(http, store: Store, receiver: Receiver) -> None:
    service = await hooked(http, receiver.url, WebhooksFromRestEnabled="true")
    await http.post(f"/v1/Services/{service}/Documents", data={"UniqueName": "d"})
    await objects.update(store, service, Kind.DOCUMENT, "d", ALICE, data_json='{"x":1}')
    got = await receiver.wait_for(2)
    assert [(r.form["EventType"], r.form["Identity"]) for r in got] == [
        ("document_created", "system"),
        ("document_updated", "alice"),
    ]


async def test_changes_through_the_realtime_gateway_carry_its_endpoint(
    http, server: Endpoint, api_key: Any, receiver: Receiver
) -> None:
    from realtime.client import SyncClient
    from tests.sdk import token

    service = await hooked(http, receiver.url, ReachabilityWebhooksEnabled="true")
    url = f"ws://127.0.0.1:{server.port}/v3/wsconnect"
    async with await SyncClient.connect(url, token(api_key.sid, api_key.secret, service, "erin")) as client:
        doc = await client.open("document", "gw", {"via": "gateway"})
        got = await receiver.wait_for(2)  # endpoint_connected and document_created: two order keys
    got = await receiver.wait_for(3)
    by_type = {r.form["EventType"]: r.form for r in got}
    assert set(by_type) == {"endpoint_connected", "document_created", "endpoint_disconnected"}
    assert {f["Identity"] for f in by_type.values()} == {"erin"}
    assert len({f["EndpointId"] for f in by_type.values()}) == 1 and by_type["document_created"]["EndpointId"]
    assert by_type["document_created"]["DocumentSid"] == doc["sid"]
    assert json.loads(by_type["document_created"]["DocumentData"]) == {"via": "gateway"}
    assert all(r.signature_valid for r in got)


async def test_expiry_removals_are_sent_as_system(http, store: Store, receiver: Receiver) -> None:
    service = await hooked(http, receiver.url)  # webhooks_from_rest_enabled off: expiry is not REST
    doc = await objects.create(store, service, Kind.DOCUMENT, ALICE, ttl=1)
    got = await receiver.wait_for(2)
    assert [r.form["EventType"] for r in got] == ["document_created", "document_removed"]
    removed = got[1].form
    assert removed["DocumentSid"] == doc.sid and removed["Identity"] == "system" and "EndpointId" not in removed


async def test_no_webhook_url_queues_nothing(http, service: str, store: Store, redis) -> None:
    await objects.create(store, service, Kind.DOCUMENT, ALICE)
    assert not await redis.exists(keys.webhook_queue(service))


async def test_a_url_change_applies_to_later_events(http, store: Store, receiver: Receiver) -> None:
    second = await Receiver(path="/second").start()
    try:
        receiver.hold = asyncio.Event()
        service = await hooked(http, receiver.url)
        doc = await objects.create(store, service, Kind.DOCUMENT, ALICE)
        await receiver.wait_held()  # the create is on its way to the first URL
        r = await http.post(f"/v1/Services/{service}", data={"WebhookUrl": second.url})
        assert r.status_code == 200
        await objects.update(store, service, Kind.DOCUMENT, doc.sid, ALICE, data_json='{"n":2}')
        receiver.hold.set()
        assert [r.form["EventType"] for r in await receiver.wait_for(1)] == ["document_created"]
        got = await second.wait_for(1)
        assert got[0].form["EventType"] == "document_updated" and got[0].signature_valid
        assert got[0].path == "/second"
    finally:
        await second.stop()


async def test_marking_a_deleted_services_receiver_failing_does_not_bring_its_config_back(
    http, store: Store, redis, receiver: Receiver
) -> None:
    """The worker marks a receiver failing after a failed attempt, which may come just after the
    Service was deleted: the mark is made only on an existing config copy, atomically, and keeps
    the earliest time (CI once found a deleted Service's config key come back)."""
    service = await hooked(http, receiver.url)
    await webhooks.mark_failing(store, service, 1000)
    await webhooks.mark_failing(store, service, 2000)
    assert await redis.hget(keys.webhook_config(service), webhooks.FAILING_SINCE) == b"1000"
    assert (await http.delete(f"/v1/Services/{service}")).status_code == 204
    await webhooks.mark_failing(store, service, 3000)
    assert not await redis.exists(keys.webhook_config(service))
    for _ in range(10):  # and while the deletion drops the copy: a check and a write apart fell around it
        service = await hooked(http, receiver.url)
        await asyncio.gather(webhooks.mark_failing(store, service, 1000), webhooks.drop(store, service))
        assert not await redis.exists(keys.webhook_config(service))


async def test_deleting_a_service_drops_its_queue(http, store: Store, redis, receiver: Receiver) -> None:
    await receiver.stop()  # nobody answers: the entries stay queued
    service = await hooked(http, receiver.url)
    for _ in range(3):
        await objects.create(store, service, Kind.DOCUMENT, ALICE)
    assert await redis.xlen(keys.webhook_queue(service)) == 3
    await record_endpoint(store, service, "zed", "ep9", True)
    assert await redis.exists(keys.endpoints(service, "zed"))
    assert (await http.delete(f"/v1/Services/{service}")).status_code == 204
    gone = [keys.webhook_queue(service), keys.webhook_config(service), keys.endpoints(service, "zed")]
    assert not await redis.exists(*gone), [
        (k, await redis.type(k), await redis.hgetall(k) if (await redis.type(k)) == b"hash" else None)
        for k in gone
        if await redis.exists(k)
    ]
    assert not await redis.sismember(keys.webhook_services(keys.bucket(service)), service)


async def test_500_then_200_is_retried_and_delivered_once_more(http, store: Store, receiver: Receiver) -> None:
    receiver.statuses = [500]
    service = await hooked(http, receiver.url)
    await objects.create(store, service, Kind.DOCUMENT, ALICE)
    await receiver.wait_for(1)
    assert [r.status for r in receiver.requests] == [500, 200]
    a, b = receiver.requests
    assert a.form == b.form and a.signature_valid and b.signature_valid
    assert a.headers["i-twilio-idempotency-token"] == b.headers["i-twilio-idempotency-token"]


async def test_a_bad_url_queued_before_the_validation_is_dead_lettered_and_later_entries_go_out(
    http, store: Store, redis, receiver: Receiver
) -> None:
    """Queues written before WebhookUrl was validated may hold URLs no request can be built for: each
    such entry is a failed attempt (dead-lettered, never stuck pending), and once the URL is fixed
    the Service's webhooks go out again."""
    service = await hooked(http, receiver.url)
    bad = [receiver.url + "/a\x01b", receiver.url + "/a b", receiver.url + "/caf\u00e9"]
    assert (await http.post(f"/v1/Services/{service}", data={"WebhookUrl": bad[1]})).json()["code"] == 54051
    for n, url in enumerate(bad):  # the config copy as an older server stored it
        await redis.hset(keys.webhook_config(service), "url", url)
        await objects.create(store, service, Kind.DOCUMENT, ALICE, unique_name=f"bad{n}")
    for _ in range(int(20 * SCALE / 0.02)):
        dead = await webhooks.failed(store, service)
        if len(dead) == len(bad):
            break
        await asyncio.sleep(0.02)
    assert sorted(d.url for d in dead) == sorted(bad), dead
    assert all("not a valid URL" in d.error for d in dead), dead
    assert receiver.requests == []
    await drained(redis, service)  # nothing left pending
    r = await http.post(f"/v1/Services/{service}", data={"WebhookUrl": receiver.url})
    assert r.status_code == 200, r.text
    await objects.create(store, service, Kind.DOCUMENT, ALICE, unique_name="good")
    got = await receiver.wait_for(1)
    assert got[0].form["DocumentUniqueName"] == "good" and got[0].signature_valid


async def _cli(backend: Backend, *args: str) -> str:
    env = {**os.environ, "REDIS_URL": backend.redis_url, **backend.env, "TWILIO_ACCOUNT_SID": ACCOUNT_SID}
    env["TWILIO_AUTH_TOKEN"] = AUTH_TOKEN
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from app.cli import main; main()", *args, env=env, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    return out.decode()


async def test_exhausted_retries_go_to_dead_letters_and_replay(
    http, backend: Backend, store: Store, redis, receiver: Receiver
) -> None:
    receiver.fail_all = True
    service = await hooked(http, receiver.url)
    doc = await objects.create(store, service, Kind.DOCUMENT, ALICE)
    await objects.update(store, service, Kind.DOCUMENT, doc.sid, ALICE, data_json='{"n":1}')
    await drained(redis, service)
    # the first entry: one attempt and SYNC_WEBHOOK_MAX_RETRIES=3 retries; the receiver is known to be
    # failing by then, so the next entry gets a single attempt
    assert len(receiver.requests) == 5
    assert [(d.event.type, d.attempts) for d in await webhooks.failed(store, service)] == [
        ("document_created", 4),
        ("document_updated", 1),
    ]
    listing = await _cli(backend, "webhooks", "failed", "--service", service)
    assert "document_created" in listing and doc.sid in listing and "HTTP 500" in listing
    receiver.fail_all = False
    out = await _cli(backend, "webhooks", "replay", "--service", service)
    assert "queued 2" in out
    got = await receiver.wait_for(2)
    assert [r.form["EventType"] for r in got] == ["document_created", "document_updated"]
    assert all(r.signature_valid for r in got)
    assert await _cli(backend, "webhooks", "failed", "--service", service) == ""


async def _status(backend: Backend, service: str | None = None) -> dict[str, dict[str, str]]:
    """`sync-server webhooks status [--service IS…]`: per Service, its fields (``pending=1`` …)."""
    out = await _cli(backend, "webhooks", "status", *(["--service", service] if service else []))
    rows: dict[str, dict[str, str]] = {}
    for line in out.splitlines():
        sid, *rest = line.split("  ")
        rows[sid] = dict(f.split("=", 1) for f in rest[:-1]) | {"url": rest[-1]}
    return rows


async def test_webhooks_status_shows_pending_oldest_failing_since_and_dead_letters(
    http, backend: Backend, store: Store, redis, receiver: Receiver
) -> None:
    service = await hooked(http, receiver.url)
    other = await hooked(http, receiver.url + "?other=1")
    idle = {"pending": "0", "oldest": "-", "failing_since": "-", "dead_letters": "0", "url": receiver.url}
    assert await _status(backend, service) == {service: idle}
    receiver.fail_all = True  # a failing receiver: the entry is retried, then dead-lettered
    doc = await objects.create(store, service, Kind.DOCUMENT, ALICE)
    await dead_letters(store, service)
    failing = (await _status(backend, service))[service]
    assert failing["pending"] == "0" and failing["dead_letters"] == "1", failing
    assert failing["failing_since"].endswith(" ago)") and failing["failing_since"][:2] == "20", failing
    assert (await http.post(f"/v1/Services/{service}", data={"FriendlyName": "renamed"})).status_code == 200
    kept = (await _status(backend, service))[service]  # the same URL: still failing since then
    assert kept["failing_since"].split(" ")[0] == failing["failing_since"].split(" ")[0], kept
    receiver.fail_all, receiver.hold = False, asyncio.Event()  # a stalled receiver: nothing answers
    await objects.update(store, service, Kind.DOCUMENT, doc.sid, ALICE, data_json='{"n":1}')
    await receiver.wait_held()
    await asyncio.sleep(0.2)
    stalled = (await _status(backend, service))[service]
    assert stalled["pending"] == "1" and stalled["oldest"].endswith("s") and stalled["oldest"] != "0.0s", stalled
    assert stalled["failing_since"].split(" ")[0] == failing["failing_since"].split(" ")[0]  # still failing
    receiver.hold.set()  # it answers: the failure is over, the dead letter stays
    await receiver.wait_for(1)
    await drained(redis, service)
    assert await _status(backend, service) == {service: idle | {"dead_letters": "1"}}
    every = await _status(backend)
    assert every[service] == idle | {"dead_letters": "1"}
    assert every[other] == idle | {"url": receiver.url + "?other=1"}


async def test_a_slow_receiver_does_not_delay_another_service(http, store: Store, receiver: Receiver) -> None:
    other = await Receiver(path="/other").start()
    receiver.hold = asyncio.Event()
    try:
        slow = await hooked(http, receiver.url)
        fast = await hooked(http, other.url)
        for _ in range(10):
            await objects.create(store, slow, Kind.DOCUMENT, ALICE)
        await receiver.wait_held(8)  # the slow Service has all its slots waiting on its receiver
        for n in range(20):
            await objects.create(store, fast, Kind.DOCUMENT, ALICE, unique_name=f"d{n}")
        assert len(await other.wait_for(20)) == 20
        assert receiver.held == 8 and not receiver.requests  # still waiting: nothing answered there
    finally:
        receiver.hold.set()
        await other.stop()


# --- fault tests on their own Redis and server processes -----------------------------------------

PATIENT = {"SYNC_WEBHOOK_MAX_RETRIES": "100000"}  # retry (quickly) until the receiver is back


@dataclass
class OwnRedis:
    """A Redis of the test's backend kind that only the test's own servers use: the session's
    servers, with other settings, would deliver the test's webhooks too."""

    url: str
    cluster: bool
    env: dict[str, str] = field(default_factory=dict)  # what a process needs to reach it

    def server(self, **env: str) -> ServerProcess:
        """A ``sync-server`` (not started yet) on this Redis, with these extra settings."""
        return ServerProcess(redis_url=self.url, env={**self.env, **env})


@pytest.fixture(scope="module")
def spare_cluster() -> Iterator[ClusterProcess]:
    """A second Cluster of the scale-out topology (3 masters + 3 replicas), started once for the module
    the first time a fault test runs on the cluster backend, and emptied before each of them."""
    with ClusterProcess() as cluster:
        yield cluster


@pytest.fixture
def own_redis(backend: Backend, request: pytest.FixtureRequest) -> Iterator[OwnRedis]:
    """A fresh standalone Valkey, or on the cluster backend the module's spare Cluster, emptied."""
    if backend.cluster:
        cluster: ClusterProcess = request.getfixturevalue("spare_cluster")
        for port in cluster.masters():
            cluster.cli("-p", str(port), "flushall")
        yield OwnRedis(cluster.url, cluster=True, env={"REDIS_CLUSTER": "true"})
        return
    r = RedisProcess()
    yield OwnRedis(r.url, cluster=False)
    r.stop()


@contextlib.asynccontextmanager
async def own_server(redis: OwnRedis, url: str, **env: str) -> AsyncIterator[tuple[ServerProcess, Store, str]]:
    """A server with these SYNC_ settings on its own Redis, a store on that Redis, and a Service
    whose webhook goes to ``url``."""
    server = await asyncio.to_thread(redis.server(**env).start)
    store = await Store.connect(redis.url, cluster=redis.cluster)
    try:
        async with httpx.AsyncClient(base_url=server.base_url, auth=(ACCOUNT_SID, AUTH_TOKEN), timeout=10) as c:
            service = await hooked(c, url)
        yield server, store, service
    finally:
        await store.close()
        await asyncio.to_thread(server.stop)


async def write_round_robin(store: Store, service: str, n_docs: int, updates: int) -> list[str]:
    """Create ``n_docs`` documents, then ``updates`` updates spread over them; their SIDs."""
    docs = [(await objects.create(store, service, Kind.DOCUMENT, ALICE)).sid for _ in range(n_docs)]
    for n in range(updates):
        await objects.update(store, service, Kind.DOCUMENT, docs[n % n_docs], ALICE, data_json=json.dumps({"n": n}))
    return docs


def assert_in_order_per_object(got: list[Any], docs: list[str], per_doc: int) -> None:
    """Each document's revisions arrived 0, 1, 2, … (a repeat right after itself is an at-least-once retry)."""
    per: dict[str, list[int]] = {}
    for r in got:
        assert r.signature_valid
        per.setdefault(r.form["DocumentSid"], []).append(int(r.form["DocumentRevision"], 16))
    for sid in docs:
        revisions = per[sid]
        deduped = [v for i, v in enumerate(revisions) if i == 0 or v != revisions[i - 1]]
        assert deduped == list(range(per_doc)), (sid, revisions)


async def test_receiver_down_during_100_writes_then_back_gets_all_in_order(
    own_redis: OwnRedis, receiver: Receiver
) -> None:
    async with own_server(own_redis, receiver.url, **PATIENT) as (_, store, service):
        await receiver.stop()
        docs = await write_round_robin(store, service, 4, 96)
        await receiver.start()  # back on the same port
        assert_in_order_per_object(await receiver.wait_for(100), docs, 25)


async def _pending(store: Store, queue: str) -> int:
    """Entries read from ``queue`` and not yet acknowledged; 0 until the worker has made its group."""
    try:
        return int((await store.redis.xpending(queue, "wh"))["pending"])
    except ResponseError as exc:
        if "NOGROUP" not in str(exc):
            raise
        return 0


async def test_server_sigkilled_with_pending_deliveries_delivers_all_after_restart(
    own_redis: OwnRedis, receiver: Receiver
) -> None:
    async with own_server(own_redis, receiver.url, **PATIENT) as (first, store, service):
        await receiver.stop()
        docs = await write_round_robin(store, service, 3, 27)
        queue = keys.webhook_queue(service)
        for _ in range(int(500 * SCALE)):  # the first server has read entries it cannot deliver
            if await _pending(store, queue):
                break
            await asyncio.sleep(0.02)
        assert await _pending(store, queue) > 0
        await asyncio.to_thread(first.stop, signal.SIGKILL)
        await receiver.start()
        second = await asyncio.to_thread(own_redis.server(**PATIENT).start)
        try:
            assert_in_order_per_object(await receiver.wait_for(30), docs, 10)
        finally:
            await asyncio.to_thread(second.stop)


async def test_two_server_processes_deliver_one_service_in_order(own_redis: OwnRedis, receiver: Receiver) -> None:
    async with own_server(own_redis, receiver.url) as (_, store, service):
        other = await asyncio.to_thread(own_redis.server().start)
        try:
            docs = await write_round_robin(store, service, 3, 117)  # both workers are woken by each write
            assert_in_order_per_object(await receiver.wait_for(120), docs, 40)
        finally:
            await asyncio.to_thread(other.stop)


async def test_denied_destination_network_is_never_called(own_redis: OwnRedis, receiver: Receiver) -> None:
    async with own_server(own_redis, receiver.url, SYNC_WEBHOOK_DENY_NETWORKS="127.0.0.0/8") as (_, store, service):
        await objects.create(store, service, Kind.DOCUMENT, ALICE)
        dead = await dead_letters(store, service)
        assert len(dead) == 1 and "not an allowed network" in dead[0].error and dead[0].attempts == 1
        assert receiver.requests == []


async def test_a_host_name_resolving_to_a_denied_network_is_dead_lettered_without_retries(
    own_redis: OwnRedis, receiver: Receiver
) -> None:
    """The check is on the resolved address, not the URL's text: localhost is refused as 127.0.0.1."""
    url = receiver.url.replace("127.0.0.1", "localhost")
    deny = {"SYNC_WEBHOOK_DENY_NETWORKS": "127.0.0.0/8,::1/128"}
    async with own_server(own_redis, url, **deny) as (_, store, service):
        await objects.create(store, service, Kind.DOCUMENT, ALICE)
        dead = await dead_letters(store, service)
        assert len(dead) == 1 and dead[0].attempts == 1, dead
        assert "localhost resolves to" in dead[0].error and "not an allowed network" in dead[0].error
        assert receiver.requests == []


async def test_a_receiver_slower_than_the_read_timeout_fails_the_attempt(
    own_redis: OwnRedis, receiver: Receiver
) -> None:
    receiver.hold = asyncio.Event()
    quick = {"SYNC_WEBHOOK_READ_TIMEOUT_S": "0.3", "SYNC_WEBHOOK_MAX_RETRIES": "0"}
    async with own_server(own_redis, receiver.url, **quick) as (_, store, service):
        await objects.create(store, service, Kind.DOCUMENT, ALICE)
        dead = await dead_letters(store, service)
        assert len(dead) == 1 and dead[0].error == "read timeout (0.3 s)" and dead[0].attempts == 1, dead


async def test_https_receiver_is_verified_against_the_servers_trust_store(
    own_redis: OwnRedis, tmp_path, http, store: Store
) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    await asyncio.to_thread(
        subprocess.run,
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    receiver = await Receiver(tls=tls).start()
    try:
        # SSL_CERT_FILE: the server's default trust store holds this certificate only
        async with own_server(own_redis, receiver.url, SSL_CERT_FILE=str(cert)) as (_, own_store, service):
            await objects.create(own_store, service, Kind.DOCUMENT, ALICE, data_json='{"secure":true}')
            got = await receiver.wait_for(1)
            assert receiver.url.startswith("https://") and got[0].signature_valid
            assert json.loads(got[0].form["DocumentData"]) == {"secure": True}
        # the session server does not trust this certificate: nothing is delivered, it is dead-lettered
        untrusting = await hooked(http, receiver.url)
        await objects.create(store, untrusting, Kind.DOCUMENT, ALICE)
        dead = await dead_letters(store, untrusting)
        assert len(dead) == 1 and "CERTIFICATE_VERIFY_FAILED" in dead[0].error, dead
        assert len(receiver.delivered) == 1
    finally:
        await receiver.stop()
