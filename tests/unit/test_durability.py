"""storage/durability.py's pure part: which wait each level sends and which reply satisfies it."""

from __future__ import annotations

from storage.durability import Durability


def test_local_sends_no_wait_and_is_always_satisfied() -> None:
    assert Durability("local").wait_command() is None
    assert Durability("local").satisfied(None)


def test_fsync_waits_for_the_local_aof_and_needs_it_fsynced() -> None:
    level = Durability("fsync", 250)
    assert level.wait_command() == ("WAITAOF", 1, 0, 250)
    assert level.satisfied([1, 0])
    assert not level.satisfied([0, 0])  # timed out before the fsync


def test_replica_waits_for_one_replica() -> None:
    level = Durability("replica", 250)
    assert level.wait_command() == ("WAIT", 1, 250)
    assert level.satisfied(1) and level.satisfied(2)
    assert not level.satisfied(0)  # no replica confirmed within the timeout
