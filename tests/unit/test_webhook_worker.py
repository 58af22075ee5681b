"""The delivery worker's attempt logic (realtime/webhooks/worker.py), with a stand-in HTTP client."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import pytest

from realtime.webhooks import worker as worker_module
from realtime.webhooks.client import DeliveryError
from realtime.webhooks.worker import WebhookOptions, WebhookWorker, _Run
from storage import webhooks
from storage.events import ChangeEvent

AC, IS = "AC" + "1" * 32, "IS" + "2" * 32
OPTIONS = WebhookOptions(
    connect_timeout_s=1.0,
    read_timeout_s=1.0,
    max_retries=2,
    backoff_base_s=0.001,
    backoff_max_s=0.001,
    concurrency=4,
    service_concurrency=2,
    lease_ms=1000,
    scan_interval_s=1.0,
    dead_letter_max=10,
    allow_networks=(),
    deny_networks=(),
)


class RaisingClient:
    """Raises what a client may raise while building or sending a request."""

    def __init__(self, exc: Exception) -> None:
        self.exc = exc
        self.calls = 0

    async def post(self, url: str, body: bytes, headers: list[tuple[str, str]]) -> int:
        self.calls += 1
        raise self.exc


def delivery(url: str = "http://127.0.0.1:9/hook") -> webhooks.Delivery:
    event = ChangeEvent(type="document_created", sid="ET" + "3" * 32, time=1)
    return webhooks.Delivery("1-0", IS, AC, url, event)


def worker_with(client: Any) -> WebhookWorker:
    w = WebhookWorker(store=None, options=OPTIONS)  # type: ignore[arg-type]  # no Redis reached here
    w._http = client
    w._tokens[AC] = ("token", float("inf"))
    return w


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("Forbidden control character detected in headers"),
        UnicodeEncodeError("latin-1", "\u2603", 0, 1, "ordinal not in range"),
        RuntimeError("anything else"),
    ],
)
def test_any_failure_to_build_or_send_is_a_failed_attempt_retried_then_dead_lettered(
    exc: Exception, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead: list[tuple[webhooks.Delivery, str, int]] = []

    async def dead_letter(store: Any, d: webhooks.Delivery, error: str, attempts: int, cap: int) -> None:
        dead.append((d, error, attempts))

    marked: list[str] = []

    async def mark_failing(store: Any, sid: str, since_ms: int) -> None:
        marked.append(sid)

    monkeypatch.setattr(worker_module.webhooks, "dead_letter", dead_letter)
    monkeypatch.setattr(worker_module.webhooks, "mark_failing", mark_failing)
    client = RaisingClient(exc)
    w = worker_with(client)
    d = delivery()
    run = _Run(asyncio.Semaphore(2))

    async def go() -> None:
        outcome = await w._post(d)
        assert not outcome.ok and outcome.retry and type(exc).__name__ in outcome.error
        await w._deliver_one(d, run)

    asyncio.run(go())
    assert client.calls == 1 + 1 + OPTIONS.max_retries  # the _post above, then the first attempt and its retries
    assert [(x.id, n) for x, _, n in dead] == [(d.id, 1 + OPTIONS.max_retries)] and run.failing
    assert run.delivered == [] and marked == [IS]  # recorded once, at the first failed attempt


def test_a_delivery_error_stays_a_retryable_failure() -> None:
    outcome = asyncio.run(worker_with(RaisingClient(DeliveryError("read timeout (1 s)")))._post(delivery()))
    assert not outcome.ok and outcome.retry and outcome.error == "read timeout (1 s)"


def test_a_chain_that_fails_outside_the_attempts_ends_the_session_instead_of_dying_silently(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """E.g. Redis failing while dead-lettering: the entry stays pending and the session starts over."""
    w = worker_with(RaisingClient(RuntimeError("unused")))
    boom = ConnectionError("redis went away")

    async def deliver_one(d: webhooks.Delivery, run: _Run) -> None:
        raise boom

    monkeypatch.setattr(w, "_deliver_one", deliver_one)

    async def go() -> _Run:
        run = _Run(asyncio.Semaphore(2))
        queue = run.queues["k"] = deque([delivery()])
        run.inflight = 1
        await w._chain(run, "k", queue)
        return run

    run = asyncio.run(go())
    assert run.error is boom and run.wake.is_set() and "k" not in run.queues
