"""realtime/session.py's token timers: an idle connection holds no timer for its token until the
warning is near (the WebSocket's heartbeat arms it), and without a heartbeat it is armed at once."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from realtime.session import Limits, Session
from realtime.tokens import Grant

LIMITS = Limits(queue_frames=10, ack_window=0, max_inflight=4, subscriptions=10, token_warn_s=180)
NOW = 1_000_000.0


def _session(heartbeat_s: float | None, expires_in: float) -> tuple[Session, list[bytes], list[tuple[int, str]]]:
    sent: list[bytes] = []
    closed: list[tuple[int, str]] = []
    ws: Any = SimpleNamespace(
        heartbeat_s=heartbeat_s, write_paused=False, send_message=lambda m: sent.append(m.payload)
    )
    grant = Grant("AC1", "SK1", "alice", "IS1", None, int(NOW + expires_in))
    caller: Any = SimpleNamespace(endpoint="EP1", base="http://x", service_sid="IS1")
    session = Session(SimpleNamespace(), caller, grant, ws, LIMITS, lambda code, text: closed.append((code, text)))  # type: ignore[arg-type]
    return session, sent, closed


def _due_in(timer: asyncio.TimerHandle | None) -> float:
    assert timer is not None
    return timer.when() - asyncio.get_running_loop().time()


async def test_an_hour_long_token_holds_no_timer_until_its_heartbeat_brings_the_warning_near() -> None:
    clock = [NOW]
    session, _, _ = _session(heartbeat_s=20.0, expires_in=3600)
    session.start_token_timer(lambda: clock[0])
    assert session._timer is None  # 3,420 s to the warning: far beyond two beats
    clock[0] = NOW + 3600 - 180 - 41
    session.token_tick()
    assert session._timer is None
    clock[0] = NOW + 3600 - 180 - 39  # within two beats (40 s): armed for the exact moment
    session.token_tick()
    assert 38 < _due_in(session._timer) <= 39
    armed = session._timer
    session.token_tick()  # a later beat does not arm it twice
    assert session._timer is armed
    session._timer.cancel()  # type: ignore[union-attr]


async def test_without_a_heartbeat_the_warning_is_armed_at_once_and_the_expiry_closes_with_410() -> None:
    clock = [NOW + 0.95]
    session, sent, closed = _session(heartbeat_s=None, expires_in=181)
    session.start_token_timer(lambda: clock[0])
    assert 0.0 < _due_in(session._timer) <= 0.05
    clock[0] = NOW + 1.0
    await asyncio.sleep(0.07)
    assert len(sent) == 1 and b'"client_update_type":"token_about_to_expire"' in sent[0]
    assert 179.9 < _due_in(session._timer) <= 180  # the expiry, on the same clock
    session._timer.cancel()  # type: ignore[union-attr]
    session._token_expired()
    assert closed == [(410, "Token expired")]


async def test_a_new_token_rearms_from_scratch() -> None:
    session, _, _ = _session(heartbeat_s=20.0, expires_in=30)
    session.start_token_timer(lambda: NOW)
    assert _due_in(session._timer) <= 0.0  # the warning is overdue already: at once
    session.grant = Grant("AC1", "SK1", "alice", "IS1", None, int(NOW + 3600))
    session.start_token_timer(lambda: NOW)  # an ``update``: the old timer is gone, the new one waits
    assert session._timer is None
