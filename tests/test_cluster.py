"""The REST contract on a real 3-master Valkey Cluster (REDIS_CLUSTER=true).

The tests below are mostly the standalone suite's own, run again here: this module's ``server`` and
``store`` fixtures point them (and conftest's ``http``, ``service``, ``twilio``, ``api_key``) at the
Cluster, and each test gets a fresh Service, so the Services (hash tags) spread over the masters.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from redis import asyncio as aioredis

from realtime.client import SyncClient
from storage import Store, keys
from tests import (
    test_collections,
    test_documents,
    test_expiry,
    test_lists,
    test_maps,
    test_permissions,
    test_realtime,
    test_services,
    test_streams,
    test_webhooks,
)
from tests.helpers import ClusterProcess, ServerProcess
from tests.sdk import token
from tests.sync_items import KINDS
from tests.test_webhooks import receiver  # noqa: F401  (a fixture of the reused webhook test)


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[ClusterProcess]:
    with ClusterProcess() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def server(redis_cluster: ClusterProcess) -> Iterator[ServerProcess]:
    """``sync-server`` with REDIS_CLUSTER=true, given one node's URL (here and in conftest's fixtures)."""
    with ServerProcess(redis_url=redis_cluster.url, env={"REDIS_CLUSTER": "true"}) as s:
        yield s


@pytest.fixture
async def store(redis_cluster: ClusterProcess) -> AsyncIterator[Store]:
    s = await Store.connect(redis_cluster.url, cluster=True)
    yield s
    await s.close()


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> Any:
    return request.param


@pytest.mark.parametrize("kind", ["document", "list", "map"])
async def test_permission_write_and_object_delete(http: httpx.AsyncClient, service: str, kind: str) -> None:
    await test_permissions.test_update_then_fetch_returns_the_permission(http, service, kind)
    await test_permissions.test_deleting_the_object_removes_its_permissions(http, service, kind)


async def test_services_are_spread_over_the_masters(http: httpx.AsyncClient, redis_cluster: ClusterProcess) -> None:
    """Services land on different masters, and each one's keys stay together on its master."""
    holders: dict[str, int] = {}
    for _ in range(30):  # each Service picks one of three masters: two differ long before 30
        sid = (await http.post("/v1/Services", data={"FriendlyName": "spread"})).json()["sid"]
        doc = await http.post(f"/v1/Services/{sid}/Documents", data={"UniqueName": "d", "Ttl": "3600"})
        assert doc.status_code == 201, doc.text
        for port in redis_cluster.ports:
            node = aioredis.Redis(host="127.0.0.1", port=port)
            try:
                found = {k.decode() for k in await node.keys(f"{keys.service_prefix(sid)}*")}
            finally:
                await node.aclose()
            if found:
                assert sid not in holders, "one Service's keys on two masters"
                holders[sid] = port
                assert {keys.obj(sid, doc.json()["sid"]), keys.names(sid, "document"), keys.expiry(sid)} <= found
        assert sid in holders
        if len(set(holders.values())) >= 2:
            break
    assert len(set(holders.values())) >= 2, holders


async def test_realtime_wake_up_from_another_master(
    server: ServerProcess,
    http: httpx.AsyncClient,
    store: Store,
    api_key: Any,
    twilio: Any,
    redis_cluster: ClusterProcess,
) -> None:
    """The gateway subscribes on the REDIS_URL node; a Service on another master still wakes it (PUBLISH
    is broadcast over the Cluster bus)."""
    for _ in range(30):
        service = (await http.post("/v1/Services", data={"FriendlyName": "away"})).json()["sid"]
        if store.redis.get_node_from_key(keys.seq(service)).port != redis_cluster.ports[0]:
            break
    else:
        raise AssertionError("every Service landed on the first master")
    ws = test_realtime.ws_url(server)
    async with await SyncClient.connect(ws, token(api_key.sid, api_key.secret, service, "alice")) as client:
        await test_realtime.test_rest_write_reaches_subscriber_with_payload(client, twilio, service)


test_document_create_fetch = test_documents.test_create_fetch_by_sid_and_unique_name
test_document_if_match = test_documents.test_revision_is_lowercase_hex_and_if_match_guards_updates
test_document_events = test_documents.test_every_write_appends_one_event_with_increasing_ids
test_document_delete = test_documents.test_delete_then_fetch_is_404_20404
test_document_ttl_swept = test_documents.test_expired_document_is_gone_at_once_and_swept_with_an_event
test_list_append = test_lists.test_appended_items_get_indexes_from_zero_in_order
test_map_key_order = test_maps.test_items_are_ordered_by_the_utf8_bytes_of_their_keys
test_item_crud = test_collections.test_item_create_fetch_update_delete
test_item_stale_if_match = test_collections.test_item_update_with_stale_if_match_is_412_and_changes_nothing
test_item_paging = test_collections.test_item_query_pages_in_order_from_a_bound_following_next_and_previous_urls
test_item_ttl_swept = test_collections.test_expired_item_is_gone_at_once_and_swept_with_a_removal_event
test_stream_publish = test_streams.test_each_message_is_recorded_as_stream_message_published
test_service_update = test_services.test_update_service_changes_only_given_fields
test_service_paging = test_services.test_list_services_pages_with_absolute_urls
test_service_delete = test_services.test_delete_service_removes_it_and_its_documents
test_service_purge = test_expiry.test_deleting_a_service_purges_its_objects_with_removal_events
test_webhook_delivery = test_webhooks.test_document_events_from_an_sdk_client
