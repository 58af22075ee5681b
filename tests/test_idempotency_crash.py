"""Idempotency-Key across crashes (issue 13, "Proof"): kill -9 the server mid-load, twice; clients
retry every unanswered write with its key once a server is back; in the end every write is applied
exactly once: 0 lost, 0 doubled.

One sync-server on its own embedded Valkey (appendfsync always, its default); when it is
killed the test plays systemd and starts a new one on the same data dir and port. The writes are List
appends, the one write that is never idempotent by itself (each would add an item): writer ``w``
appends ``{"w": w, "seq": n}`` with key ``w{w}-{n}``, and retries it (same key, same body) after a
cut connection, a 5xx or a 409 until it gets a 2xx. A write whose answer was lost after it applied
is answered from its record (``Idempotent-Replayed: true``), which the test counts.
"""

from __future__ import annotations

import asyncio
import json
import signal
import tempfile
import time
from dataclasses import dataclass, field

import httpx
import pytest

from tests.helpers import ACCOUNT_SID, AUTH_TOKEN, SCALE, ServerProcess

pytestmark = pytest.mark.chaos

WRITERS = 8
WRITES = 30  # per writer
CRASHES = 2


@dataclass
class Tally:
    acked: int = 0
    retried: int = 0  # writes sent again at least once
    in_doubt: int = 0  # writes whose connection was cut after sending (applied or not: unknown)
    replayed: int = 0  # retries answered from the record: the first attempt had applied
    done: set[tuple[int, int]] = field(default_factory=set)


async def _writer(w: int, base: str, url: str, tally: Tally, deadline: float) -> None:
    async with httpx.AsyncClient(base_url=base, auth=(ACCOUNT_SID, AUTH_TOKEN), timeout=5) as http:
        for n in range(WRITES):
            body = {"Data": json.dumps({"w": w, "seq": n})}
            headers = {"Idempotency-Key": f"w{w}-{n}"}
            attempts = 0
            while True:
                assert time.monotonic() < deadline, f"writer {w} stuck at seq {n}"
                attempts += 1
                try:
                    r = await http.post(url, data=body, headers=headers)
                except (httpx.ConnectError, httpx.ConnectTimeout):
                    await asyncio.sleep(0.1)  # nothing was sent: the server is down
                    continue
                except httpx.TransportError:
                    tally.in_doubt += 1  # sent, answer lost: exactly what the key is for
                    await asyncio.sleep(0.1)
                    continue
                if r.status_code == 201:
                    break
                assert r.status_code in (409, 500, 503), r.text
                await asyncio.sleep(0.2)
            tally.acked += 1
            tally.retried += attempts > 1
            tally.replayed += r.headers.get("idempotent-replayed") == "true"
            tally.done.add((w, n))
            await asyncio.sleep(0.005)


async def test_kill_9_mid_load_then_retry_with_keys_applies_every_write_exactly_once() -> None:
    data_dir = tempfile.mkdtemp(prefix="sync-idem-crash-")
    servers = [ServerProcess(data_dir=data_dir).start()]
    port = servers[0].port
    try:
        async with httpx.AsyncClient(base_url=servers[0].base_url, auth=(ACCOUNT_SID, AUTH_TOKEN)) as http:
            service = (await http.post("/v1/Services", data={"FriendlyName": "crash"})).json()["sid"]
            assert (await http.post(f"/v1/Services/{service}/Lists", data={"UniqueName": "l"})).status_code == 201
        url = f"/v1/Services/{service}/Lists/l/Items"
        tally = Tally()
        deadline = time.monotonic() + 90 * SCALE
        writers = [asyncio.create_task(_writer(w, servers[0].base_url, url, tally, deadline)) for w in range(WRITERS)]
        for crash in range(CRASHES):
            target = (crash + 1) * WRITERS * WRITES // (CRASHES + 1)
            while tally.acked < target:  # mid-load: writers are sending right now
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
            servers[-1].stop(signal.SIGKILL)  # its Valkey child dies with it (PDEATHSIG)
            servers.append(await asyncio.to_thread(ServerProcess(data_dir=data_dir, port=port).start))
        await asyncio.gather(*writers)

        async with httpx.AsyncClient(base_url=servers[-1].base_url, auth=(ACCOUNT_SID, AUTH_TOKEN)) as http:
            seen: list[tuple[int, int]] = []
            page: str | None = f"{url}?PageSize=1000"
            while page:
                r = await http.get(page)
                assert r.status_code == 200, r.text
                seen += [(i["data"]["w"], i["data"]["seq"]) for i in r.json()["items"]]
                page = r.json()["meta"]["next_page_url"]
        expected = {(w, n) for w in range(WRITERS) for n in range(WRITES)}
        lost = expected - set(seen)
        doubled = len(seen) - len(set(seen))
        print(
            f"\nidempotency crash test: {len(expected)} writes, {CRASHES} kill -9, {tally.in_doubt} answers lost "
            f"in flight, {tally.retried} writes retried, {tally.replayed} answered from their record; "
            f"lost {len(lost)}, doubled {doubled}"
        )
        assert tally.done == expected
        assert not lost and doubled == 0, (sorted(lost)[:10], doubled)
        assert tally.retried > 0  # the kills did cut writes off, or the test proves nothing
    finally:
        for s in servers:
            s.stop(signal.SIGKILL if s is not servers[-1] else signal.SIGTERM)
