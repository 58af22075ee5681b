"""Contract tests: Twilio's official Python helper library (``twilio`` 9.13.0), unchanged, against
this server. The library is synchronous, so these are plain test functions. Its own known bugs
(path segments not escaped, If-Match dropped on item DELETE) are in docs/twilio-helper-notes.md."""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import pytest
from twilio.base.exceptions import TwilioRestException

from tests.helpers import ON_EVERY_BACKEND

Api = Any  # twilio.rest.sync.v1.service.ServiceContext

pytestmark = ON_EVERY_BACKEND


@pytest.fixture
def svc(twilio: Any) -> Iterator[Api]:
    """A fresh Service, created and removed through the helper library."""
    created = twilio.sync.v1.services.create(friendly_name="contract")
    yield twilio.sync.v1.services(created.sid)
    twilio.sync.v1.services(created.sid).delete()


def _error(call: Callable[[], object]) -> tuple[int, int]:
    with pytest.raises(TwilioRestException) as info:
        call()
    return info.value.status, info.value.code


# --- Services ---------------------------------------------------------------------------------


def test_services_create_fetch_update_list_and_delete(twilio: Any) -> None:
    services = twilio.sync.v1.services
    s = services.create(friendly_name="contract", acl_enabled=True)
    assert s.sid.startswith("IS") and s.friendly_name == "contract" and s.acl_enabled is True
    assert isinstance(s.date_created, datetime.datetime) and s.reachability_debouncing_window == 5000
    assert services(s.sid).fetch().friendly_name == "contract"
    updated = services(s.sid).update(friendly_name="renamed", webhooks_from_rest_enabled=True)
    assert updated.friendly_name == "renamed" and updated.webhooks_from_rest_enabled is True
    assert s.sid in [x.sid for x in services.stream(page_size=2)]
    assert services(s.sid).delete() is True
    assert _error(services(s.sid).fetch) == (404, 20404)


# --- Documents, Lists, Maps and Streams as objects ----------------------------------------------

OBJECTS = [  # (ServiceContext attribute, SID prefix, TTL parameter on create, on update)
    ("documents", "ET", "ttl", "ttl"),
    ("sync_lists", "ES", "collection_ttl", "collection_ttl"),
    ("sync_maps", "MP", "ttl", "collection_ttl"),  # create through the Ttl alias
    ("sync_streams", "TO", "ttl", "ttl"),
]


@pytest.mark.parametrize(("attr", "prefix", "create_ttl", "update_ttl"), OBJECTS)
def test_object_create_fetch_by_unique_name_update_ttl_list_and_delete(
    svc: Api, attr: str, prefix: str, create_ttl: str, update_ttl: str
) -> None:
    objects = getattr(svc, attr)
    o = objects.create(unique_name="obj", **{create_ttl: 600})
    assert o.sid.startswith(prefix) and isinstance(o.date_expires, datetime.datetime) and o.created_by == "system"
    assert objects("obj").fetch().sid == o.sid
    assert objects(o.sid).update(**{update_ttl: 0}).date_expires is None
    assert [x.sid for x in objects.list(page_size=1)] == [o.sid]
    assert _error(lambda: objects.create(unique_name="obj")) == (409, 54301)
    assert objects("obj").delete() is True
    assert _error(objects(o.sid).fetch) == (404, 20404)


# --- Documents --------------------------------------------------------------------------------


def test_document_create_and_fetch_by_sid_and_unique_name(svc: Api) -> None:
    d = svc.documents.create(unique_name="settings", data={"theme": "dark"}, ttl=3600)
    assert d.sid.startswith("ET") and d.revision == "0" and d.data == {"theme": "dark"}
    assert isinstance(d.date_expires, datetime.datetime) and d.created_by == "system"
    for ident in (d.sid, "settings"):
        got = svc.documents(ident).fetch()
        assert got.sid == d.sid and got.data == {"theme": "dark"}


def test_document_update_with_and_without_if_match(svc: Api) -> None:
    d = svc.documents.create(unique_name="counter", data={"n": 0})
    plain = svc.documents("counter").update(data={"n": 1})
    assert plain.revision == "1" and plain.data == {"n": 1} and plain.sid == d.sid
    guarded = svc.documents(d.sid).update(data={"n": 2}, if_match=plain.revision)
    assert guarded.revision == "2" and guarded.data == {"n": 2}
    assert guarded.update(data={"n": 3}).data == {"n": 3}


def test_document_list_pages_over_more_than_one_page(svc: Api) -> None:
    sids = [svc.documents.create(data={"i": i}).sid for i in range(5)]
    assert [d.sid for d in svc.documents.list(page_size=2)] == sids
    assert [d.sid for d in svc.documents.stream(page_size=2, limit=3)] == sids[:3]
    page = svc.documents.page(page_size=2)
    assert [d.sid for d in page] == sids[:2] and page.previous_page() is None
    second = page.next_page()
    assert [d.sid for d in second] == sids[2:4] and [d.sid for d in second.previous_page()] == sids[:2]


def test_document_delete(svc: Api) -> None:
    d = svc.documents.create(unique_name="gone")
    assert svc.documents("gone").delete() is True
    assert _error(svc.documents(d.sid).fetch) == (404, 20404)


def test_document_errors_carry_twilio_status_and_code(svc: Api) -> None:
    d = svc.documents.create(unique_name="taken", data={"v": 1})
    assert _error(svc.documents("missing").fetch) == (404, 20404)
    assert _error(lambda: svc.documents.create(unique_name="taken")) == (409, 54301)
    assert _error(lambda: svc.documents(d.sid).update(data={"v": 2}, if_match="7")) == (412, 54103)
    assert _error(lambda: svc.documents(d.sid).update(data={"k": "x" * 17000})) == (413, 54006)
    assert svc.documents(d.sid).fetch().data == {"v": 1}


# --- List items -------------------------------------------------------------------------------


def test_list_items_create_fetch_update_and_delete(svc: Api) -> None:
    items = svc.sync_lists.create(unique_name="jobs").sync_list_items
    first = items.create(data={"job": 1})
    second = items.create(data={"job": 2}, item_ttl=60)
    assert (first.index, second.index) == (0, 1) and isinstance(second.date_expires, datetime.datetime)
    assert items(0).fetch().data == {"job": 1}
    updated = items(0).update(data={"job": 10}, if_match=first.revision)
    assert updated.data == {"job": 10} and updated.revision != first.revision
    assert items(1).update(data={"job": 20}).data == {"job": 20}
    assert items(0).delete() is True
    assert [i.index for i in items.list()] == [1]


def test_list_item_errors_carry_twilio_status_and_code(svc: Api) -> None:
    items = svc.sync_lists.create().sync_list_items
    item = items.create(data={"v": 1})
    items(item.index).update(data={"v": 2})
    assert _error(lambda: items(item.index).update(data={"v": 3}, if_match=item.revision)) == (412, 54155)
    assert _error(items(99).fetch) == (404, 54151)
    assert _error(lambda: items.create(data={"k": "x" * 17000})) == (413, 54006)


def test_list_items_are_listed_with_order_from_and_bounds_over_pages(svc: Api) -> None:
    items = svc.sync_lists.create().sync_list_items
    for i in range(7):
        items.create(data={"i": i})
    items(3).delete()
    assert [i.index for i in items.list(page_size=2)] == [0, 1, 2, 4, 5, 6]
    assert [i.index for i in items.list(order="desc", from_="5", bounds="exclusive", page_size=2)] == [4, 2, 1, 0]
    assert [i.index for i in items.stream(from_="3", bounds="inclusive", page_size=2)] == [4, 5, 6]


# --- Map items --------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["plain", "with space", "ünïcødé 日本", "a+b&c=d"])
def test_map_items_create_fetch_update_and_delete(svc: Api, key: str) -> None:
    items = svc.sync_maps.create().sync_map_items
    item = items.create(key=key, data={"v": 1})
    assert item.key == key and item.revision == "1"
    assert items(key).fetch().data == {"v": 1}
    assert items(key).update(data={"v": 2}, if_match=item.revision).data == {"v": 2}
    assert items(key).delete() is True
    assert _error(items(key).fetch) == (404, 54201)


@pytest.mark.parametrize("key", ["a/b", "what?", "#hash", "50%25", "a/../b"])
def test_map_item_keys_with_reserved_characters_work_when_the_caller_escapes_them(svc: Api, key: str) -> None:
    items = svc.sync_maps.create().sync_map_items
    items.create(key=key, data={"k": key})  # the key travels in the form body: no escaping needed
    path_key = quote(key, safe="")  # twilio-python puts it into the URL path as given
    assert items(path_key).fetch().data == {"k": key}
    assert items(path_key).update(data={"v": 2}).key == key
    assert items(path_key).delete() is True
    assert list(items.list()) == []


def test_map_item_errors_carry_twilio_status_and_code(svc: Api) -> None:
    items = svc.sync_maps.create().sync_map_items
    item = items.create(key="k", data={"v": 1})
    assert _error(lambda: items.create(key="k", data={})) == (409, 54208)
    items("k").update(data={"v": 2})
    assert _error(lambda: items("k").update(data={"v": 3}, if_match=item.revision)) == (412, 54205)
    assert _error(lambda: items.create(key="x" * 321, data={})) == (400, 54209)
    assert _error(items("nope").fetch) == (404, 54201)


def test_map_items_are_listed_by_key_with_order_from_and_bounds_over_pages(svc: Api) -> None:
    items = svc.sync_maps.create().sync_map_items
    for key in ("d", "a", "c", "e", "b"):
        items.create(key=key, data={})
    assert [i.key for i in items.list(page_size=2)] == ["a", "b", "c", "d", "e"]
    assert [i.key for i in items.list(order="desc", from_="d", bounds="inclusive", page_size=2)] == ["d", "c", "b", "a"]
    assert [i.key for i in items.stream(from_="b", bounds="exclusive", page_size=2)] == ["c", "d", "e"]


# --- Stream messages --------------------------------------------------------------------------


def test_stream_message_create_answers_sid_and_data(svc: Api) -> None:
    messages = svc.sync_streams.create(unique_name="chat").stream_messages
    msg = messages.create(data={"text": "hi"})
    assert msg.sid.startswith("TZ") and msg.data == {"text": "hi"}
    assert _error(lambda: messages.create(data={"k": "x" * 5000})) == (413, 54006)
    assert _error(lambda: svc.sync_streams("nosuch").stream_messages.create(data={})) == (404, 20404)


# --- Permissions ------------------------------------------------------------------------------


def _permission_lists(svc: Api) -> list[tuple[str, str, Any]]:
    """(sid field, object SID, permission list) for a new Document, List and Map."""
    d, lst, m = svc.documents.create(), svc.sync_lists.create(), svc.sync_maps.create()
    return [
        ("document_sid", d.sid, svc.documents(d.sid).document_permissions),
        ("list_sid", lst.sid, svc.sync_lists(lst.sid).sync_list_permissions),
        ("map_sid", m.sid, svc.sync_maps(m.sid).sync_map_permissions),
    ]


def test_document_list_and_map_permissions_update_fetch_list_and_delete(svc: Api) -> None:
    for sid_field, sid, perms in _permission_lists(svc):
        p = perms("alice").update(read=True, write=False, manage=True)
        assert (p.identity, p.read, p.write, p.manage, getattr(p, sid_field)) == ("alice", True, False, True, sid)
        assert perms("alice").fetch().manage is True
        perms("bob").update(read=True, write=True, manage=False)
        assert [x.identity for x in perms.list(page_size=1)] == ["alice", "bob"]
        assert perms("alice").delete() is True
        assert _error(perms("alice").fetch) == (404, 54354)
