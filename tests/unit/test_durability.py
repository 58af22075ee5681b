"""storage/durability.py: which wait each level sends, which reply satisfies it, and how the
script-and-wait pipeline's errors are sorted (a stand-in pipeline answers canned replies)."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest
from redis.exceptions import ConnectionError, MovedError, OutOfMemoryError, ResponseError

from storage.durability import Durability, run_script
from storage.errors import StoreUnavailableError
from storage.redis_client import Health


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


# --- run_script sorts Redis's replies as every guarded call does --------------------------------


class _Pipeline:
    """redis-py's pipeline as run_script uses it: each ``execute`` answers the next canned replies."""

    def __init__(self, raw: _Raw) -> None:
        self._raw = raw

    def execute_command(self, *args: Any, **kwargs: Any) -> None:
        self._raw.sent.append(args[0])

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        return self._raw.replies.pop(0)


class _Raw:
    """Stands in for the unguarded standalone client (no ``get_node_from_key``)."""

    def __init__(self, replies: list[list[Any]]) -> None:
        self.replies = replies
        self.sent: list[str] = []
        self.nodes_manager = SimpleNamespace(initialize=self._initialize)

    def pipeline(self, transaction: bool = True) -> _Pipeline:
        return _Pipeline(self)

    async def _initialize(self) -> None:
        self.sent.append("refresh")


async def _run(raw: _Raw, health: Health) -> Any:
    return await run_script(raw, health, Durability("replica", 10), "sha", "return 1", ["k"], b"arg")


async def test_a_slot_that_keeps_moving_is_a_logged_moving_503(caplog: pytest.LogCaptureFixture) -> None:
    raw, health = _Raw([[MovedError("3999 127.0.0.1:7001"), 1]] * 3), Health()
    with caplog.at_level(logging.WARNING, logger="sync.store"), pytest.raises(StoreUnavailableError) as raised:
        await _run(raw, health)
    assert raised.value.kind == "moving"
    assert raw.sent == ["EVALSHA", "WAIT", "refresh"] * 3
    assert [r.getMessage().startswith("a Redis Cluster slot is moving") for r in caplog.records] == [True]
    assert health.up  # the rest of the Cluster answers: not an outage


@pytest.mark.parametrize(
    ("replies", "kind", "up"),
    [
        ([OutOfMemoryError("command not allowed when used memory > 'maxmemory'."), 0], "refused", True),
        ([b"ok", ResponseError("NOREPLICAS Not enough good replicas to write.")], "refused", True),
        ([b"ok", ConnectionError("Connection reset by peer")], "redis", False),  # the reply was lost
    ],
    ids=["OOM", "NOREPLICAS", "lost reply"],
)
async def test_replies_are_sorted_as_through_the_guard(replies: list[Any], kind: str, up: bool) -> None:
    health = Health()
    with pytest.raises(StoreUnavailableError) as raised:
        await _run(_Raw([replies]), health)
    assert raised.value.kind == kind and health.up is up


async def test_other_errors_pass_through_and_a_confirmed_write_answers_its_reply() -> None:
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await _run(_Raw([[ResponseError("WRONGTYPE Operation against a key"), 1]]), Health())
    assert await _run(_Raw([[b"done", 1]]), Health()) == b"done"
