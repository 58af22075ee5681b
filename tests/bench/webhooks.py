"""Webhook deliveries per second from one sync-server process to a fast local receiver.

Usage:  python tests/bench/webhooks.py [--events 5000] [--services 1,10] [--objects 100]
Starts its own Valkey and `sync-server`; the receiver (tests/webhook_receiver.py, answering 200 at
once) runs in a child process so it does not share an event loop with the writer.
Two measurements per shape (and the server process's CPU time per delivery, which a shared, noisy
machine disturbs far less than wall time):
  backlog  events queued while no server runs, then one server starts: first to last delivery;
  live     events written (SDK origin, through the storage layer) while the server delivers:
           first write to last delivery.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from storage import Actor, Kind, Store, accounts, objects, services  # noqa: E402
from tests.helpers import ACCOUNT_SID, AUTH_TOKEN, RedisProcess, ServerProcess  # noqa: E402

ACTOR = Actor(identity="bench", origin="sdk", endpoint="ep-bench")
DATA = json.dumps({"text": "hello world", "n": 1, "tags": ["a", "b"], "nested": {"x": 1.5}})


def _receiver(port_q: Any, count: Any, first: Any, last: Any) -> None:
    from tests.webhook_receiver import Receiver

    async def main() -> None:
        r = await Receiver(validate=False).start()
        port_q.put(r.port)
        seen = 0
        while True:
            n = len(r.requests)
            if n != seen:
                now = time.monotonic()
                with count.get_lock():
                    if seen == 0:
                        first.value = now
                    count.value = n
                    last.value = now
                seen = n
            await asyncio.sleep(0.002)

    asyncio.run(main())


async def _write(store: Store, sids: list[str], per_object: int, per_service: int) -> None:
    docs = []
    for sid in sids:
        for _ in range(per_service):
            docs.append((sid, (await objects.create(store, sid, Kind.DOCUMENT, ACTOR, data_json=DATA)).sid))
    sem = asyncio.Semaphore(64)

    async def update(sid: str, doc: str) -> None:
        for _ in range(per_object - 1):
            async with sem:
                await objects.update(store, sid, Kind.DOCUMENT, doc, ACTOR, data_json=DATA)

    await asyncio.gather(*(update(sid, doc) for sid, doc in docs))


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait(count: Any, target: int, pid: int, timeout: float = 300) -> float:
    """Wait for ``target`` deliveries; the server's CPU µs per delivery from the first one on."""
    deadline = time.monotonic() + timeout
    while count.value == 0:
        if time.monotonic() > deadline:
            raise SystemExit(f"no webhook of {target} arrived")
        time.sleep(0.001)
    at, cpu = count.value, _cpu_s(pid)
    while count.value < target:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {count.value} of {target} webhooks arrived")
        time.sleep(0.01)
    return (_cpu_s(pid) - cpu) * 1e6 / max(1, target - at)


async def run(events: int, n_services: int, per_service: int) -> None:
    per_object = max(1, events // (n_services * per_service))
    total = per_object * n_services * per_service
    for mode in ("backlog", "live"):
        redis = RedisProcess()
        count, first, last = mp.Value("i", 0), mp.Value("d", 0.0), mp.Value("d", 0.0)
        port_q: Any = mp.Queue()
        rec = mp.Process(target=_receiver, args=(port_q, count, first, last), daemon=True)
        rec.start()
        url = f"http://127.0.0.1:{port_q.get()}/hook"
        server = None
        store = await Store.connect(redis.url)
        try:
            await accounts.ensure_account(store, ACCOUNT_SID, AUTH_TOKEN)
            sids = [(await services.create(store, ACCOUNT_SID, {"webhook_url": url})).sid for _ in range(n_services)]
            if mode == "backlog":
                await _write(store, sids, per_object, per_service)
                server = await asyncio.to_thread(ServerProcess(redis_url=redis.url).start)
                cpu = await asyncio.to_thread(_wait, count, total, _pid(server))
                elapsed = last.value - first.value
            else:
                server = await asyncio.to_thread(ServerProcess(redis_url=redis.url).start)
                start = time.monotonic()
                waiting = asyncio.create_task(asyncio.to_thread(_wait, count, total, _pid(server)))
                await _write(store, sids, per_object, per_service)
                cpu = await waiting
                elapsed = last.value - start
            print(
                f"{mode:8} services={n_services:<3} objects/service={per_service:<4} webhooks={total:<6} "
                f"{elapsed:6.2f} s  {total / elapsed:8.0f} deliveries/s  server CPU {cpu:5.0f} µs/delivery",
                flush=True,
            )
        finally:
            await store.close()
            if server is not None:
                await asyncio.to_thread(server.stop)
            rec.kill()
            redis.stop()


def _pid(server: ServerProcess) -> int:
    assert server.proc is not None
    return server.proc.pid


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=5000)
    p.add_argument("--services", default="1,10")
    p.add_argument("--objects", type=int, default=100, help="documents in all (order is kept per object)")
    args = p.parse_args()
    for n in (int(x) for x in args.services.split(",")):
        asyncio.run(run(args.events, n, max(1, args.objects // n)))


if __name__ == "__main__":
    main()
