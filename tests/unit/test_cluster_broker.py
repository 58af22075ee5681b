"""realtime/cluster_broker.py: the slot table read from CLUSTER SLOTS, and channel slots."""

from __future__ import annotations

from realtime.cluster_broker import SLOTS, owners, slot_of
from storage import keys


def test_owners_maps_every_slot_range_to_its_master_and_leaves_gaps_empty() -> None:
    reply = [
        [0, 5460, [b"127.0.0.1", 7000, b"id-a"], [b"127.0.0.1", 7003, b"id-d"]],
        [5461, 10922, ["10.0.0.2", 7001, "id-b"]],
        [12000, 16383, [b"127.0.0.1", 7002, b"id-c"]],
    ]
    table = owners(reply)
    assert len(table) == SLOTS
    assert table[0] == table[5460] == ("127.0.0.1", 7000)  # the master, never the replica
    assert table[5461] == table[10922] == ("10.0.0.2", 7001)
    assert table[10923] is None and table[11999] is None
    assert table[16383] == ("127.0.0.1", 7002)


def test_a_wake_channel_shares_its_services_slot() -> None:
    """The scripts SPUBLISH from the Service's slot: the channel must hash there (Cluster rule)."""
    assert slot_of(keys.wake_channel("IS" + "a" * 32)) == slot_of(keys.seq("IS" + "a" * 32))
    assert slot_of(keys.wake_channel("IS" + "a" * 32)) != slot_of(keys.wake_channel("IS" + "b" * 32))
