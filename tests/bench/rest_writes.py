"""REST write throughput and latency: Document updates, List item appends, Map item writes.

Usage:  python tests/bench/rest_writes.py [--url http://127.0.0.1:8080 --account AC… --token …]
        [--seconds 5] [--clients 1,16,64]
Without --url it starts its own `sync-server` (one process, embedded Valkey, temp data dir).
Load comes from two client processes, each with half the connections, so the load generator is
not the bottleneck. Prints writes/s, p50/p99 latency and the server's and Valkey's memory.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.bench.loadgen import percentile, run_load  # noqa: E402

DATA = json.dumps({"text": "hello world", "n": 1, "tags": ["a", "b"], "nested": {"x": 1.5}})


def scenario_request(name: str, service: str, part: int):  # -> callable(client, seq)
    base = f"/v1/Services/{service}"
    if name == "document updates":
        return lambda c, s: ("POST", f"{base}/Documents/bench-{part}-{c}", {"Data": DATA})
    if name == "list item appends":
        return lambda c, s: ("POST", f"{base}/Lists/bench-{part}-{c}/Items", {"Data": DATA})
    if name == "map item writes":  # each client its own map, overwriting 100 keys
        return lambda c, s: ("POST", f"{base}/Maps/bench-{part}-{c}/Items/k{s % 100}", {"Data": DATA})
    if name == "one map, many writers":
        return lambda c, s: ("POST", f"{base}/Maps/shared/Items/k{part}-{c}-{s % 100}", {"Data": DATA})
    raise ValueError(name)


def _child(url: str, auth: tuple[str, str], clients: int, seconds: float, name: str, service: str, part: int, q):
    parts = urlsplit(url)
    result, elapsed = asyncio.run(
        run_load(parts.hostname, parts.port, auth, clients, seconds, scenario_request(name, service, part))
    )
    q.put((result.ok, result.errors, result.latencies_ms, elapsed, result.statuses))


def measure(url: str, auth: tuple[str, str], clients: int, seconds: float, name: str, service: str) -> dict:
    procs = 2 if clients > 1 else 1
    q: mp.Queue = mp.Queue()
    ps = []
    for part in range(procs):
        n = clients // procs + (1 if part < clients % procs else 0)
        p = mp.Process(target=_child, args=(url, auth, n, seconds, name, service, part, q))
        p.start()
        ps.append(p)
    ok = errors = 0
    lat: list[float] = []
    elapsed = 0.0
    statuses: dict[int, int] = {}
    for _ in ps:
        o, e, lt, el, st = q.get()
        ok, errors, elapsed = ok + o, errors + e, max(elapsed, el)
        lat += lt
        for k, v in st.items():
            statuses[k] = statuses.get(k, 0) + v
    for p in ps:
        p.join()
    return {
        "rate": ok / elapsed,
        "p50": percentile(lat, 50),
        "p99": percentile(lat, 99),
        "errors": errors,
        "statuses": statuses,
    }


def prepare(url: str, auth: tuple[str, str], max_clients: int) -> str:
    import httpx

    with httpx.Client(base_url=url, auth=auth, timeout=30) as c:
        service = c.post("/v1/Services", data={"FriendlyName": "bench"}).json()["sid"]
        base = f"/v1/Services/{service}"
        c.post(f"{base}/Maps", data={"UniqueName": "shared"})
        for part in range(2):
            for n in range(max_clients):
                c.post(f"{base}/Documents", data={"UniqueName": f"bench-{part}-{n}", "Data": DATA})
                c.post(f"{base}/Lists", data={"UniqueName": f"bench-{part}-{n}"})
                c.post(f"{base}/Maps", data={"UniqueName": f"bench-{part}-{n}"})
                for k in range(100):
                    c.post(f"{base}/Maps/bench-{part}-{n}/Items", data={"Key": f"k{k}", "Data": DATA})
                for k in range(100):
                    c.post(f"{base}/Maps/shared/Items", data={"Key": f"k{part}-{n}-{k}", "Data": DATA})
    return service


def rss_mb(pid: int) -> float:
    total = 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total = int(line.split()[1])
    except OSError:
        return float("nan")
    return total / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url")
    ap.add_argument("--account")
    ap.add_argument("--token")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--clients", default="1,16,64")
    ap.add_argument("--scenarios", default="document updates,list item appends,map item writes,one map, many writers")
    args = ap.parse_args()
    clients = [int(x) for x in args.clients.split(",")]
    names = []
    for s in ["document updates", "list item appends", "map item writes", "one map, many writers"]:
        if s in args.scenarios:
            names.append(s)

    server = None
    if args.url:
        url, auth = args.url, (args.account, args.token)
    else:
        from tests.helpers import ACCOUNT_SID, AUTH_TOKEN, ServerProcess

        server = ServerProcess(data_dir=tempfile.mkdtemp(prefix="sync-bench-"), env={"SYNC_LOG_LEVEL": "error"}).start()
        url, auth = server.base_url, (ACCOUNT_SID, AUTH_TOKEN)
    try:
        service = prepare(url, auth, max(clients))
        print(f"sync-server at {url}; {args.seconds:.0f} s per run; data {len(DATA)} bytes; cores: {os.cpu_count()}")
        print(f"{'scenario':<24} {'clients':>7} {'writes/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
        for name in names:
            for n in clients:
                m = measure(url, auth, n, args.seconds, name, service)
                print(f"{name:<24} {n:>7} {m['rate']:>10.0f} {m['p50']:>8.2f} {m['p99']:>8.2f} {m['errors']:>7}")
                if m["errors"]:
                    print(f"   statuses: {m['statuses']}")
        if server is not None and server.proc is not None:
            import subprocess

            children = subprocess.run(
                ["pgrep", "-P", str(server.proc.pid)], capture_output=True, text=True
            ).stdout.split()
            print(f"memory: sync-server RSS {rss_mb(server.proc.pid):.0f} MB", end="")
            for pid in children:
                print(f", child {pid} RSS {rss_mb(int(pid)):.0f} MB", end="")
            print()
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
