"""A stored change event -> its webhook's form parameters (realtime/webhooks/params.py)."""

from __future__ import annotations

from typing import Any

import msgpack

from realtime.webhooks.params import form_params
from storage.events import ChangeEvent, decode

AC, IS = "AC" + "1" * 32, "IS" + "2" * 32
MS = 1_767_225_600_123  # 2026-01-01T00:00:00.123Z


def event(**fields: Any) -> ChangeEvent:
    """An event as the write scripts store it (short keys: storage/events.py LEGEND), decoded by the codec."""
    return decode(msgpack.packb({"ms": MS, **fields}))


def params(**fields: Any) -> dict[str, str]:
    return form_params(AC, IS, event(**fields))


def test_common_parameters_and_identity() -> None:
    p = params(t="document_created", id=0, sid="ET1", ot="document", rev="0", d='{"a":1}', b="alice", ep="EP9")
    assert p["AccountSid"] == AC and p["ServiceSid"] == IS and p["EventType"] == "document_created"
    assert p["Identity"] == "alice" and p["EndpointId"] == "EP9"
    assert p["DateCreated"] == "2026-01-01T00:00:00.123Z"


def test_rest_and_system_changes_carry_the_system_identity_and_no_endpoint() -> None:
    p = params(t="document_updated", id=1, sid="ET1", ot="document", rev="1", d="{}", o="rest")
    assert p["Identity"] == "system" and "EndpointId" not in p
    assert params(t="document_updated", id=1, sid="ET1", ot="document", b="", ep="")["Identity"] == "system"


def test_document_events() -> None:
    created = params(t="document_created", id=0, sid="ET1", ot="document", un="settings", rev="0", d='{"a":1}')
    assert {k: created[k] for k in ("DocumentSid", "DocumentUniqueName", "DocumentRevision", "DocumentData")} == {
        "DocumentSid": "ET1",
        "DocumentUniqueName": "settings",
        "DocumentRevision": "0",
        "DocumentData": '{"a":1}',
    }
    removed = params(t="document_removed", id=2, sid="ET1", ot="document", rev="2", d='{"a":1}')
    assert "DocumentData" not in removed and "DocumentUniqueName" not in removed
    assert removed["DocumentRevision"] == "2"
    assert not any(k.startswith("Item") or k == "EventId" for k in removed)


def test_list_item_events() -> None:
    added = params(t="list_item_added", id=3, sid="ES1", ot="list", un="l", k=0, rev="1", crev="3", d='{"v":1}')
    assert added["ListSid"] == "ES1" and added["ListUniqueName"] == "l" and added["ListRevision"] == "3"
    assert added["ItemIndex"] == "0" and added["ItemRevision"] == "1" and added["EventId"] == "3"
    assert added["ItemData"] == '{"v":1}' and "ItemKey" not in added
    removed = params(t="list_item_removed", id=4, sid="ES1", ot="list", k=0, rev="1", crev="4", pd='{"v":1}')
    assert removed["ItemData"] == '{"v":1}'  # a removed item carries its last data


def test_map_item_events() -> None:
    p = params(t="map_item_updated", id=5, sid="MP1", ot="map", k="key/é", rev="2", crev="5", d='{"v":2}')
    assert p["MapSid"] == "MP1" and p["ItemKey"] == "key/é" and p["MapRevision"] == "5"
    assert p["ItemRevision"] == "2" and p["EventId"] == "5" and "ItemIndex" not in p and "MapUniqueName" not in p


def test_collection_events_carry_the_collection_revision_and_no_item() -> None:
    p = params(t="map_removed", id=6, sid="MP1", ot="map", rev="6")
    assert p["MapRevision"] == "6" and not any(k.startswith("Item") for k in p)


def test_reachability_events_carry_only_the_common_parameters() -> None:
    p = params(t="endpoint_connected", b="erin", ep="EP1")
    assert p == {
        "AccountSid": AC,
        "ServiceSid": IS,
        "EventType": "endpoint_connected",
        "Identity": "erin",
        "DateCreated": "2026-01-01T00:00:00.123Z",
        "EndpointId": "EP1",
    }
