"""Scale-out: REST writes/s and fan-out deliveries/s with 1 and 2 sync-server processes, on a standalone
Valkey and on a Valkey Cluster (3 masters + 3 replicas), side by side as ratios.

Usage:  python tests/bench/cluster.py [--seconds 3] [--connections 32] [--subscribers 500] [--services 6]

For each of the four set-ups (standalone or Cluster × 1 or 2 server processes, each a separate
``sync-server`` with SYNC_WORKERS=1, the test topology of tests/conftest.py):

- REST: Document updates for --seconds from --connections keep-alive connections (the in-repo Python
  load generator, loadgen.py, in two processes) through the test balancer (tests/balancer.py, round
  robin per connection: with 2 processes each gets half), over --services Services so that on the
  Cluster the writes spread over the masters (a Service lives in one slot);
- fan-out: --subscribers raw twilsock subscribers (fanout.py's subscriber processes) to one Document,
  connected straight to the server processes, half on each with 2 (what the balancer does, without
  its Python proxy in the path of every frame), and 4 writers in flight through the balancer; counts
  the deliveries that arrived, and that none was missed, doubled or out of order.

Prints writes/s, deliveries/s and server CPU per write / per delivery (utime+stime of the server
processes and of the Valkey processes, apart), and the ratios 2 processes : 1 and Cluster : standalone.
Everything runs on this machine: the load generators and subscribers share its cores with the servers
and Valkey, so figures are floors and the ratios say more than the absolute numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import uvloop

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from realtime.tokens import mint  # noqa: E402
from tests.balancer import Balancer  # noqa: E402
from tests.bench.fanout import Clients, cpu_s, switches, tree, write_loop  # noqa: E402
from tests.bench.loadgen import run_load  # noqa: E402
from tests.bench.rest_writes import DATA  # noqa: E402
from tests.helpers import ACCOUNT_SID, AUTH_TOKEN, ClusterProcess, RedisProcess, ServerProcess  # noqa: E402

AUTH = (ACCOUNT_SID, AUTH_TOKEN)


def _rest_child(port: int, clients: int, seconds: float, services: list[str], part: int, q: Any) -> None:
    def request(c: int, s: int) -> tuple[str, str, dict[str, str]]:
        service = services[(part * clients + c) % len(services)]
        return "POST", f"/v1/Services/{service}/Documents/bench-{part}-{c}", {"Data": DATA}

    result, elapsed = asyncio.run(run_load("127.0.0.1", port, AUTH, clients, seconds, request))
    q.put((result.ok, result.errors, elapsed))


def rest_phase(port: int, connections: int, seconds: float, services: list[str]) -> tuple[float, int]:
    """(writes/s, errors) of Document updates through ``port`` from two load processes."""
    q: mp.Queue[Any] = mp.Queue()
    procs = [mp.Process(target=_rest_child, args=(port, connections // 2, seconds, services, p, q)) for p in (0, 1)]
    for p in procs:
        p.start()
    got = [q.get(timeout=120) for _ in procs]
    for p in procs:
        p.join()
    return sum(g[0] for g in got) / max(g[2] for g in got), sum(g[1] for g in got)


def prepare(url: str, services: int, connections: int) -> tuple[list[str], str, str]:
    """The Services (with the Documents the REST phase updates) and the fan-out Document: (services,
    its Service, its sid)."""
    sids = []
    with httpx.Client(base_url=url, auth=AUTH, timeout=30) as c:
        for _ in range(services):
            sid = c.post("/v1/Services", data={"FriendlyName": "bench"}).json()["sid"]
            sids.append(sid)
        for part in (0, 1):
            for n in range(connections // 2):
                service = sids[(part * (connections // 2) + n) % len(sids)]
                r = c.post(f"/v1/Services/{service}/Documents", data={"UniqueName": f"bench-{part}-{n}", "Data": DATA})
                assert r.status_code == 201, r.text
        fan = c.post(f"/v1/Services/{sids[0]}/Documents", data={"UniqueName": "fan"}).json()["sid"]
    return sids, sids[0], fan


def make_key(redis_url: str, cluster: bool) -> Any:
    from storage import Store, accounts

    async def go() -> Any:
        store = await Store.connect(redis_url, cluster=cluster)
        try:
            return await accounts.create_key(store, ACCOUNT_SID, "bench")
        finally:
            await store.close()

    return asyncio.run(go())


def run_setup(store: str, processes: int, args: argparse.Namespace) -> dict[str, float]:
    redis: RedisProcess | ClusterProcess = ClusterProcess() if store == "cluster" else RedisProcess()
    valkey_pids = [p.pid for p in (redis.procs.values() if isinstance(redis, ClusterProcess) else [redis.proc])]
    env = {"SYNC_WS_MAX_CONNECTIONS": "20000", "SYNC_WS_QUEUE_FRAMES": "10000", "SYNC_LOG_LEVEL": "warning"}
    if store == "cluster":
        env["REDIS_CLUSTER"] = "true"
    env.update(switches())
    servers = [ServerProcess(redis_url=redis.url, env=env) for _ in range(processes)]
    res: dict[str, float] = {}
    try:
        for s in servers:
            s.start()
        pids = [pid for s in servers if s.proc is not None for pid in tree(s.proc.pid)]
        with Balancer([s.port for s in servers]) as lb:
            services, fan_service, fan = prepare(lb.base_url, args.services, args.connections)
            cpu0, vcpu0 = cpu_s(pids), cpu_s(valkey_pids)
            res["writes"], errors = rest_phase(lb.port, args.connections, args.seconds, services)
            done = res["writes"] * args.seconds
            res["cpu_write"] = (cpu_s(pids) - cpu0) * 1e6 / max(1, done)
            res["vcpu_write"] = (cpu_s(valkey_pids) - vcpu0) * 1e6 / max(1, done)
            if errors:
                print(f"  {store} x{processes}: {errors} REST errors", flush=True)
            key = make_key(redis.url, store == "cluster")
            toks = [
                mint(ACCOUNT_SID, key.sid, key.secret, f"user{i}", fan_service, 3600) for i in range(args.subscribers)
            ]
            groups = [
                Clients(s.ws_url, toks[i :: len(servers)], fan, False, max(1, args.clients // len(servers)))
                for i, s in enumerate(servers)
            ]
            try:
                subscribed = sum(g.ready()[0] for g in groups)
                assert subscribed == args.subscribers, f"{subscribed} of {args.subscribers} subscribed"
                time.sleep(0.5)
                for g in groups:
                    g.start(False)
                time.sleep(0.2)
                cpu0, vcpu0 = cpu_s(pids), cpu_s(valkey_pids)
                path = f"/v1/Services/{fan_service}/Documents/{fan}"
                written, t0 = uvloop.run(write_loop(lb.port, path, args.seconds, None, 4))
                reports = [g.report(written) for g in groups]
                total = sum(r["total"] for r in reports)
                span = max(1e-9, max(r["last"] for r in reports) - t0)
                res["deliveries"] = total / span
                res["cpu_delivery"] = (cpu_s(pids) - cpu0) * 1e6 / max(1, total)
                bad = {k: sum(r[k] for r in reports) for k in ("missed", "dup", "disorder", "lost")}
                res["fanout_ok"] = float(not any(bad.values()))
                if any(bad.values()):
                    print(f"  {store} x{processes}: fan-out problems {bad}", flush=True)
            finally:
                for g in groups:
                    g.stop()
    finally:
        for s in servers:
            s.stop()
        redis.stop()
    print(
        f"  {store:10s} x{processes}: {res.get('writes', 0):7,.0f} writes/s ({res.get('cpu_write', 0):,.0f} µs server "
        f"+ {res.get('vcpu_write', 0):,.0f} µs Valkey CPU each)  {res.get('deliveries', 0):8,.0f} deliveries/s "
        f"({res.get('cpu_delivery', 0):.1f} µs server CPU each)",
        flush=True,
    )
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=3.0, help="length of the REST phase and of the fan-out burst")
    ap.add_argument("--connections", type=int, default=32, help="REST connections (even)")
    ap.add_argument("--services", type=int, default=6, help="Services the REST writes spread over")
    ap.add_argument("--subscribers", type=int, default=500)
    ap.add_argument("--clients", type=int, default=2, help="subscriber processes in all")
    args = ap.parse_args()
    print(
        f"scale-out bench: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}, {args.seconds:g} s phases, "
        f"{args.connections} REST connections over {args.services} Services, {args.subscribers} subscribers",
        flush=True,
    )
    results = {(st, n): run_setup(st, n, args) for st in ("standalone", "cluster") for n in (1, 2)}

    def ratio(a: float, b: float) -> str:
        return f"{a / b:.2f}" if b else "-"

    print(f"\n{'':22s}{'standalone x1':>15s}{'x2':>10s}{'x2:x1':>8s}{'cluster x1':>12s}{'x2':>10s}{'x2:x1':>8s}"
          f"{'cl:st x1':>10s}{'cl:st x2':>10s}")  # fmt: skip
    for label, k, fmt in (
        ("REST writes/s", "writes", "{:,.0f}"),
        ("server µs/write", "cpu_write", "{:,.0f}"),
        ("Valkey µs/write", "vcpu_write", "{:,.0f}"),
        ("deliveries/s", "deliveries", "{:,.0f}"),
        ("server µs/delivery", "cpu_delivery", "{:.1f}"),
    ):
        s1, s2, c1, c2 = (
            results[x].get(k, 0.0) for x in (("standalone", 1), ("standalone", 2), ("cluster", 1), ("cluster", 2))
        )
        print(f"{label:22s}{fmt.format(s1):>15s}{fmt.format(s2):>10s}{ratio(s2, s1):>8s}{fmt.format(c1):>12s}"
              f"{fmt.format(c2):>10s}{ratio(c2, c1):>8s}{ratio(c1, s1):>10s}{ratio(c2, s2):>10s}")  # fmt: skip
    if not all(r.get("fanout_ok") for r in results.values()):
        print("\nFAIL: a fan-out run missed, doubled or reordered deliveries")
        sys.exit(1)
    print("\nnothing lost: every subscriber received every write exactly once (sampled ones in order)")


if __name__ == "__main__":
    main()
