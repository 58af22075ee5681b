"""storage/startup.py without Redis: which failures are waited out, for how long, what is said once,
and that a URL's password never reaches a message."""

from __future__ import annotations

import logging
import time

import pytest
from redis.exceptions import AuthenticationError, ResponseError

from storage.errors import StoreUnavailableError
from storage.startup import RedisNotReachableError, redacted, when_reachable

log = logging.getLogger("test.startup")


def test_redacted_hides_only_the_password() -> None:
    assert redacted("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert redacted("redis://user@h:1/0") == "redis://user@h:1/0"
    assert redacted("rediss://default:pa:ss@cache.example:6380/2") == "rediss://default:***@cache.example:6380/2"
    assert redacted("redis://:pw@[::1]:7000") == "redis://:***@[::1]:7000"


async def test_unreachable_is_retried_until_it_answers_and_said_once(caplog: pytest.LogCaptureFixture) -> None:
    tries: list[float] = []

    async def attempt() -> str:
        tries.append(time.monotonic())
        if len(tries) < 4:
            raise StoreUnavailableError("Redis is not reachable") from ConnectionRefusedError("refused")
        return "store"

    with caplog.at_level(logging.WARNING, "test.startup"):
        assert await when_reachable(attempt, "redis://u:pw@h:1/0", 30, log) == "store"
    assert len(tries) == 4
    assert [r.getMessage() for r in caplog.records] == [
        "Redis at redis://u:***@h:1/0 is not reachable yet (refused): retrying for 30 s"
    ]
    pauses = [b - a for a, b in zip(tries, tries[1:], strict=False)]
    assert pauses[0] >= 0.15 and pauses[1] > pauses[0]  # backoff


async def test_the_wait_is_bounded_and_the_last_cause_is_said() -> None:
    async def attempt() -> None:
        raise ConnectionRefusedError("Connect call failed")

    start = time.monotonic()
    with pytest.raises(RedisNotReachableError) as err:
        await when_reachable(attempt, "redis://:secret@h:1/0", 0.5, log)
    assert 0.4 < time.monotonic() - start < 3
    assert str(err.value) == (
        "Redis at redis://:***@h:1/0 is not reachable after waiting 0.5 s (SYNC_REDIS_STARTUP_WAIT_S): "
        "Connect call failed"
    )
    with pytest.raises(RedisNotReachableError, match="not reachable \\(SYNC"):
        await when_reachable(attempt, "redis://h:1/0", 0, log)  # 0: one attempt


@pytest.mark.parametrize("error", [AuthenticationError("invalid password"), ResponseError("NOSCRIPT"), KeyError()])
async def test_what_waiting_cannot_fix_is_raised_at_once(error: Exception) -> None:
    tries = []

    async def attempt() -> None:
        tries.append(1)
        raise error

    with pytest.raises(type(error)):
        await when_reachable(attempt, "redis://h:1/0", 30, log)
    assert tries == [1]
