"""The change event codec (storage/events.py): the one reader and writer of the short-key legend."""

from __future__ import annotations

import msgpack

from storage.events import LEGEND, ChangeEvent, decode, encode
from storage.kinds import Kind


def test_decode_reads_what_the_scripts_write() -> None:
    packed = msgpack.packb(
        {"t": "map_item_updated", "id": 7, "sid": "MP1", "ot": "map", "un": "", "rev": "7", "crev": "7",
         "d": '{"v":2}', "pd": '{"v":1}', "k": "key", "x": 1700000000000, "ms": 1699999999000, "b": "alice",
         "o": "sdk", "ep": "EP1"}
    )  # fmt: skip
    ev = decode(packed)
    assert ev == ChangeEvent(
        type="map_item_updated",
        id=7,
        sid="MP1",
        kind=Kind.MAP,
        unique_name=None,
        revision="7",
        collection_revision="7",
        data='{"v":2}',
        previous_data='{"v":1}',
        key="key",
        expires=1700000000000,
        time=1699999999000,
        identity="alice",
        origin="sdk",
        endpoint="EP1",
    )
    assert ev.is_item_event and not ev.is_removal


def test_round_trip_and_reachability_events() -> None:
    ev = ChangeEvent(type="endpoint_connected", identity="bob", origin="sdk", endpoint="EP9", time=5)
    assert decode(encode(ev)) == ev
    assert ev.kind is None and not ev.is_item_event and not ev.is_removal
    removal = ChangeEvent(type="list_removed", id=3, sid="ES1", kind=Kind.LIST)
    assert decode(encode(removal)) == removal and removal.is_removal


def test_list_indexes_decode_as_text_and_unknown_keys_are_ignored() -> None:
    ev = decode(msgpack.packb({"t": "list_item_added", "id": 1, "sid": "ES1", "ot": "list", "k": 4, "future": 1}))
    assert ev.key == "4" and ev.kind is Kind.LIST


def test_the_legend_names_every_attribute() -> None:
    assert set(LEGEND.values()) == set(ChangeEvent.__dataclass_fields__)
