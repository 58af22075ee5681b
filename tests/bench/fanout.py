"""Realtime fan-out: one writer, N subscribers to one Document and to one Map.

Usage:  python tests/bench/fanout.py [--subscribers 100,1000,5000] [--seconds 5] [--rate 20]
Starts its own Valkey and one `sync-server` process. Subscribers are raw twilsock clients (the same
frames twilio-sync sends) in two child processes, so the load generator is not the bottleneck of
one core. For each N and object kind it prints:
  * idle memory per connection: server RSS growth / N after every subscriber is established;
  * saturated: the writer sends as fast as the server takes writes for --seconds; deliveries/s and
    write-to-receive p50/p99 (each write carries its send time);
  * paced: --rate writes/s (deliveries/s = rate x N); write-to-receive p50/p99.
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

import httpx  # noqa: E402
from websockets.asyncio.client import connect  # noqa: E402

from realtime import twilsock  # noqa: E402
from realtime.tokens import mint  # noqa: E402
from tests.helpers import ACCOUNT_SID, AUTH_TOKEN, RedisProcess, ServerProcess  # noqa: E402

COMPRESSION: str | None = None  # "deflate" offers permessage-deflate, as the SDK's ws and browsers do


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


# -- subscriber processes ---------------------------------------------------------------------------


async def _subscriber(
    url: str, tok: str, sid: str, kind: str, state: dict[str, Any], ready: asyncio.Event, sample: bool
) -> None:
    try:
        await _subscribe(url, tok, sid, kind, state, ready, sample)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        print(f"subscriber failed: {exc!r}", file=sys.stderr, flush=True)


async def _subscribe(
    url: str, tok: str, sid: str, kind: str, state: dict[str, Any], ready: asyncio.Event, sample: bool
) -> None:
    """One subscriber. Only ``sample`` connections parse payloads for latency; the others count
    frames, so that the load generator's CPU (shared with the server on this machine) stays low."""
    async with connect(url, compression=COMPRESSION, max_size=2**22, open_timeout=60, ping_interval=None) as ws:
        await ws.send(twilsock.encode({"method": "init", "id": twilsock.new_id(), "token": tok}))
        reply = twilsock.decode(await ws.recv())
        if reply.header["status"]["code"] != 200:
            raise RuntimeError(f"init refused: {reply.header['status']}")
        poke = {"event_protocol_version": 4, "action": "establish", "correlation_id": 1, "ttl_in_s": -1,
                "requests": [{"object_sid": sid, "object_type": kind, "last_event_id": 0}]}  # fmt: skip
        request = {"host": "bench", "path": "/v4/Subscriptions", "method": "POST", "headers": {}}
        await ws.send(twilsock.encode({"method": "message", "id": twilsock.new_id(), "http_request": request}, poke))
        field = "document_data" if kind == "document" else "item_data"
        async for data in ws:
            raw = data if isinstance(data, bytes) else data.encode()
            if b"subscription_established" in raw:
                state["established"] += 1
                if state["established"] == state["expected"]:
                    ready.set()
                continue
            if not state["recording"] or b'"t":' not in raw:
                continue
            state["count"] += 1
            if sample:
                body = json.loads(twilsock.decode(raw).payload)
                state["lat"].append((time.time() - body["event"][field]["t"]) * 1000)


def _child(url: str, tokens: list[str], sid: str, kind: str, cmd: Any, out: Any) -> None:
    async def main() -> None:
        state: dict[str, Any] = {"established": 0, "expected": len(tokens), "count": 0, "lat": [], "recording": False}
        ready = asyncio.Event()
        tasks = []
        for i, tok in enumerate(tokens):
            tasks.append(asyncio.create_task(_subscriber(url, tok, sid, kind, state, ready, i % 10 == 0)))
            if i % 100 == 99:
                await asyncio.sleep(0.05)  # do not stampede the accept queue
        await ready.wait()
        out.put(("ready", state["established"]))
        loop = asyncio.get_running_loop()
        while True:
            op = await loop.run_in_executor(None, cmd.get)
            if op == "start":
                state.update(count=0, lat=[], recording=True)
            elif op == "report":
                state["recording"] = False
                out.put(("report", state["count"], state["lat"]))
            elif op == "stop":
                for t in tasks:
                    t.cancel()
                return

    asyncio.run(main())


# -- the writer -------------------------------------------------------------------------------------


async def write_loop(base: str, path: str, kind: str, seconds: float, rate: float | None, concurrency: int) -> int:
    """Write for ``seconds`` (as fast as possible, or ``rate`` per second); return the write count."""
    written = 0
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=base, auth=(ACCOUNT_SID, AUTH_TOKEN), timeout=30) as http:

        async def one(n: int) -> None:
            nonlocal written
            data = json.dumps({"t": time.time(), "n": n})
            url = path if kind == "document" else f"{path}/Items/k{n % 100}"
            r = await http.post(url, data={"Data": data})
            if r.status_code == 404 and kind == "map":
                r = await http.post(f"{path}/Items", data={"Key": f"k{n % 100}", "Data": data})
            if r.status_code < 300:
                written += 1

        n = 0
        if rate:
            start = time.monotonic()
            while time.monotonic() < deadline:
                await one(n)
                n += 1
                await asyncio.sleep(max(0.0, start + n / rate - time.monotonic()))
        else:

            async def worker(k: int) -> None:
                i = k
                while time.monotonic() < deadline:
                    await one(i)
                    i += concurrency

            await asyncio.gather(*[worker(k) for k in range(concurrency)])
    return written


def collect(outs: list[Any], cmds: list[Any], settle_s: float) -> tuple[int, list[float]]:
    """Let deliveries in flight arrive, then gather counts and latency samples from the children."""
    time.sleep(settle_s)
    for q in cmds:
        q.put("report")
    total, lat = 0, []
    for out in outs:
        _, count, samples = out.get()
        total += count
        lat += samples
    return total, lat


def scenario(redis: RedisProcess, key: Any, service: str, kind: str, n: int, args: argparse.Namespace) -> None:
    """One server process per scenario, so its memory growth is this scenario's alone."""
    env = {"SYNC_WS_MAX_CONNECTIONS": "20000", "SYNC_WS_QUEUE_FRAMES": "10000", "SYNC_LOG_LEVEL": "warning"}
    if args.server_compression:
        env["SYNC_WS_COMPRESSION"] = "true"
    server = ServerProcess(redis_url=redis.url, env=env).start()
    try:
        _scenario(server, key, service, kind, n, args)
    finally:
        server.stop()


def _scenario(server: ServerProcess, key: Any, service: str, kind: str, n: int, args: argparse.Namespace) -> None:
    base = server.base_url
    svc = f"/v1/Services/{service}"
    with httpx.Client(base_url=base, auth=(ACCOUNT_SID, AUTH_TOKEN)) as http:
        coll = "Documents" if kind == "document" else "Maps"
        body = {"UniqueName": f"fan-{kind}-{n}"}
        sid = http.post(f"{svc}/{coll}", data=body).json()["sid"]
    path = f"{svc}/{coll}/{sid}"
    url = f"ws://127.0.0.1:{server.port}/v3/wsconnect"
    toks = [mint(ACCOUNT_SID, key.sid, key.secret, f"user{i}", service, 3600) for i in range(n)]
    assert server.proc is not None
    before = rss_kb(server.proc.pid)
    procs, cmds, outs = [], [], []
    parts = 2 if n >= 100 else 1
    for p in range(parts):
        cmd, out = mp.Queue(), mp.Queue()
        proc = mp.Process(target=_child, args=(url, toks[p::parts], sid, kind, cmd, out), daemon=True)
        proc.start()
        procs.append(proc)
        cmds.append(cmd)
        outs.append(out)
    established = sum(out.get(timeout=600)[1] for out in outs)
    time.sleep(1.0)
    idle_kb = (rss_kb(server.proc.pid) - before) / max(1, established)
    print(f"  {kind:8s} N={n:5d}  established={established}  idle memory/connection={idle_kb:.1f} KB")

    for label, rate in (("saturated", None), ("paced", args.rate)):
        for q in cmds:
            q.put("start")
        time.sleep(0.2)
        t0 = time.monotonic()
        written = asyncio.run(write_loop(base, path, kind, args.seconds, rate, args.writers))
        elapsed = time.monotonic() - t0
        total, lat = collect(outs, cmds, settle_s=3.0)
        rate_txt = "max" if rate is None else f"{rate:g}/s"
        print(
            f"  {kind:8s} N={n:5d}  {label:9s} writes={written} ({written / elapsed:.0f}/s, {rate_txt})"
            f"  deliveries={total}/{written * n} ({total / elapsed:.0f}/s)"
            f"  p50={percentile(lat, 50):.1f} ms  p99={percentile(lat, 99):.1f} ms"
        )
    for q in cmds:
        q.put("stop")
    for proc in procs:
        proc.join(10)
        if proc.is_alive():
            proc.kill()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subscribers", default="100,1000,5000")
    ap.add_argument("--kinds", default="document,map")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rate", type=float, default=20.0, help="writes/s of the paced phase")
    ap.add_argument("--writers", type=int, default=4, help="concurrent writes in the saturated phase")
    ap.add_argument(
        "--compression", action="store_true", help="subscribers offer permessage-deflate (as real SDK clients do)"
    )
    ap.add_argument("--server-compression", action="store_true", help="the server accepts it (SYNC_WS_COMPRESSION)")
    args = ap.parse_args()
    global COMPRESSION
    COMPRESSION = "deflate" if args.compression else None  # forked subscriber processes inherit it
    redis = RedisProcess()
    server = ServerProcess(redis_url=redis.url).start()  # for the set-up only
    try:
        from storage import Store, accounts

        async def setup() -> tuple[Any, str]:
            store = await Store.connect(redis.url)
            try:
                key = await accounts.create_key(store, ACCOUNT_SID, "bench")
            finally:
                await store.close()
            async with httpx.AsyncClient(base_url=server.base_url, auth=(ACCOUNT_SID, AUTH_TOKEN)) as http:
                service = (await http.post("/v1/Services", data={"FriendlyName": "bench"})).json()["sid"]
            return key, service

        key, service = asyncio.run(setup())
        server.stop()
        print(f"fan-out bench: 1 sync-server process, {os.cpu_count()} cores, {args.seconds:g} s per phase")
        for n in [int(x) for x in args.subscribers.split(",")]:
            for kind in args.kinds.split(","):
                scenario(redis, key, service, kind, n, args)
    finally:
        server.stop()
        redis.stop()


if __name__ == "__main__":
    main()
