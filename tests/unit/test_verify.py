"""checker.verify on a small hand-made recording: a consistent one passes every check, and each
kind of damage fails the check it belongs to, and only that one."""

from __future__ import annotations

import copy

from checker.linearizable import Op
from checker.record import Obj, Recording
from checker.verify import verify


def recording() -> Recording:
    doc = Obj("ET1", "document", initial="init", final_revision=2, final={"": {"w": "b"}})
    doc.ops = [
        Op("read", "ok", 0, 1, value="init", revision=0),
        Op("cas", "ok", 2, 3, value="a", revision=1, expect=0),
        Op("cas", "fail", 2.5, 3.5, value="x", expect=0, process=1),
        Op("cas", "ok", 4, 5, value="b", revision=2, expect=1),
    ]
    doc.log = [
        {"id": 0, "type": "document_created", "key": None, "data": {"w": "init"}},
        {"id": 1, "type": "document_updated", "key": None, "data": {"w": "a"}},
        {"id": 2, "type": "document_updated", "key": None, "data": {"w": "b"}},
    ]
    lst = Obj("ES1", "list", final_revision=2, final={"0": {"a": "p"}, "1": {"a": "q"}})
    lst.writes = [
        {"value": "p", "outcome": "ok", "key": "0", "revision": 1},
        {"value": "q", "outcome": "unknown"},
    ]
    lst.log = [
        {"id": 0, "type": "list_created", "key": None, "data": None},
        {"id": 1, "type": "list_item_added", "key": "0", "data": {"a": "p"}},
        {"id": 2, "type": "list_item_added", "key": "1", "data": {"a": "q"}},
    ]
    deliveries = {
        "s": {
            "ET1": [{"id": 2, "key": None, "data": {"w": "b"}, "session": 1}],  # a Document may skip to its latest
            "ES1": [
                {"id": 1, "key": "0", "data": {"a": "p"}, "session": 1},
                {"id": 2, "key": "1", "data": {"a": "q"}, "session": 2},
            ],
        }
    }
    return Recording({}, {"ET1": doc, "ES1": lst}, deliveries, {"s": 2})


def failed(rec: Recording) -> dict[str, int]:
    return dict(verify(rec).failed)


def test_a_consistent_recording_passes() -> None:
    v = verify(recording())
    assert v.ok, v.report()
    assert v.figures["operations"] == 6 and v.figures["events delivered"] == 3


def test_an_acknowledged_write_missing_from_the_log() -> None:
    rec = recording()
    rec.objects["ES1"].log[1]["data"] = {"a": "other"}
    assert set(failed(rec)) == {"acknowledged writes kept", "delivered once, in order"}


def test_a_gap_in_event_ids() -> None:
    rec = recording()
    rec.objects["ET1"].log[1]["id"] = 5
    rec.objects["ET1"].log.sort(key=lambda e: e["id"])
    assert "event ids gapless" in failed(rec)


def test_a_list_event_never_delivered_or_delivered_twice() -> None:
    skipped = recording()
    del skipped.deliveries["s"]["ES1"][0]
    assert failed(skipped) == {"delivered once, in order": 1}
    twice = recording()
    twice.deliveries["s"]["ES1"].append(copy.deepcopy(twice.deliveries["s"]["ES1"][1]))
    assert failed(twice) == {"delivered once, in order": 1}


def test_a_subscriber_left_behind() -> None:
    rec = recording()
    rec.deliveries["s"]["ET1"] = []
    assert failed(rec) == {"delivered once, in order": 1}


def test_a_phantom_write_and_a_stale_read() -> None:
    phantom = recording()
    phantom.objects["ET1"].log[2]["data"] = {"w": "nobody"}
    phantom.objects["ET1"].final = {"": {"w": "nobody"}}
    phantom.deliveries["s"]["ET1"][0]["data"] = {"w": "nobody"}
    assert failed(phantom) == {"acknowledged writes kept": 2}  # b is lost, "nobody" came from nowhere
    stale = recording()
    stale.objects["ET1"].ops.append(Op("read", "ok", 6, 7, value="a", revision=1))
    assert failed(stale) == {"linearizable": 1}


def test_a_log_may_start_late_only_when_the_server_trimmed_it() -> None:
    """A log not starting at 0 is a trimmed one only if it holds SYNC_EVENT_LOG_MAX events."""
    rec = recording()
    doc = rec.objects["ET1"]
    doc.log = doc.log[1:]  # events 1 and 2 kept, 0 gone
    assert failed(rec) == {"event ids gapless": 1}
    rec.meta["event_log_max"] = 2
    assert verify(rec).ok


def state_replay() -> Recording:
    """A Map of three keys written ten times; its subscriber reads events 1 and 2, reconnects when
    the server's log (SYNC_EVENT_LOG_MAX 4 here) no longer reaches event 3, gets the current state
    (the latest event of each key: 6, 7, 8) and then the live events 9 and 10."""
    keys = "abcabacbac"  # the key of events 1..10
    mp = Obj("MP1", "map", final_revision=10)
    mp.log = [{"id": 0, "type": "map_created", "key": None, "data": None}]
    for i, key in enumerate(keys, start=1):
        mp.log.append({"id": i, "type": "map_item_updated", "key": key, "data": {"m": f"v{i}"}})
        mp.writes.append({"value": f"v{i}", "outcome": "ok", "key": key, "revision": i})
    mp.final = {key: {"m": f"v{max(i for i, k in enumerate(keys, start=1) if k == key)}"} for key in "abc"}
    got = [(1, 1), (2, 1), (6, 2), (7, 2), (8, 2), (9, 2), (10, 2)]
    delivered = [{"id": i, "key": keys[i - 1], "data": {"m": f"v{i}"}, "session": s} for i, s in got]
    return Recording({"event_log_max": 4}, {"MP1": mp}, {"s": {"MP1": delivered}}, {"s": 2})


def test_a_state_replay_may_skip_what_later_events_of_each_item_replace() -> None:
    v = verify(state_replay())
    assert v.ok, v.report()


def test_a_state_replay_is_allowed_only_once_the_log_could_no_longer_reach_the_cursor() -> None:
    rec = state_replay()
    rec.meta["event_log_max"] = 1000  # the server kept every event: it had no reason to send the state
    assert failed(rec) == {"delivered once, in order": 1}


def test_a_state_replay_must_hold_the_latest_event_of_each_item_and_nothing_older() -> None:
    stale = state_replay()
    stale.deliveries["s"]["MP1"][2] = {"id": 4, "key": "a", "data": {"m": "v4"}, "session": 2}  # a's 4, not its 6
    assert "delivered once, in order" in failed(stale)
    missing = state_replay()
    del missing.deliveries["s"]["MP1"][3]  # c's event 7: c's state never delivered
    assert "delivered once, in order" in failed(missing)
    mid_connection = state_replay()
    for ev in mid_connection.deliveries["s"]["MP1"]:
        ev["session"] = 1  # no reconnect: the server sends the state only on subscribing
    assert "delivered once, in order" in failed(mid_connection)
