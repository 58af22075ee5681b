"""REST writes: sync-server's Document update beside a naive HSET + PUBLISH endpoint, and a table.

Usage:  python tests/bench/rest_writes.py [--workers 1,2] [--connections 64] [--seconds 5] [--rounds 3]
                                          [--loadgen auto|wrk|python] [--idempotency]
        python tests/bench/rest_writes.py --table [--url http://127.0.0.1:8080 --account AC… --token …]
                                          [--seconds 5] [--clients 1,16,64] [--scenarios …]
        python tests/bench/rest_writes.py --history [--history-keep 100] [--clients 16] [--seconds 5]

Default (issue 10's REST goal): starts one Valkey, then for each worker count starts sync-server
(SYNC_WORKERS) and the naive Starlette endpoint of naive_rest.py (uvicorn, httptools + uvloop,
--workers) side by side and loads them in turns, --rounds windows each (``compare``), with Document
updates (form body ``Data=…``, Basic auth, --connections connections over 64 Documents) for
--seconds after a 1 s warm-up. Prints, for each window and as the median of the rounds' ratios,
writes/s and server CPU µs per write (utime+stime of the server's process tree from /proc, and
Valkey's apart) and the server's write system calls per write (``syscw``: sockets, to the clients and
to Valkey), each sync-server figure with its ratio to the naive endpoint's. sync-server runs with
its default settings (not the test helpers' faster background loops), as in fanout.py. The load comes
from wrk when it is installed (``apt-get install -y wrk``), else from the in-repo Python load
generator (loadgen.py) in two processes, which is slower than the servers on 2 cores: its writes/s
are then a floor, the CPU per write still holds.

--idempotency: the same Document updates through sync-server without and with an Idempotency-Key
header (a fresh key per request, so every write claims, writes and stores its answer), the ratio
with ÷ without in place of the naive endpoint's (wrk only).

--history: the revision history's cost. One Valkey; sync-server with SYNC_HISTORY_KEEP=100 (or
--history-keep) then with 0 (off), each loaded with Document updates, List appends and Map writes
(Python load generator, 16 clients); writes/s side by side with their ratio, then Valkey's bytes
per retained revision (MEMORY USAGE of the history hashes and zsets after the run).

--table (or --url): the per-scenario table of sync-server alone: Document updates, List item
appends, Map item writes, one Map with many writers, at 1, 16, 64 clients (Python load generator),
with writes/s, p50/p99 latency and memory; without --url it starts its own sync-server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.bench.fanout import cpu_s, product_defaults, tree, write_calls  # noqa: E402
from tests.bench.loadgen import percentile, run_load  # noqa: E402
from tests.helpers import ACCOUNT_SID, AUTH_TOKEN, RedisProcess, ServerProcess  # noqa: E402

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
        "elapsed": elapsed,
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


def table_main(args: argparse.Namespace) -> None:
    clients = [int(x) for x in args.clients.split(",")]
    names = []
    for s in ["document updates", "list item appends", "map item writes", "one map, many writers"]:
        if s in args.scenarios:
            names.append(s)

    server = None
    if args.url:
        url, auth = args.url, (args.account, args.token)
    else:
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


# -- history on beside history off -----------------------------------------------------------------


def revision_bytes(redis_url: str, service: str) -> tuple[int, float]:
    """(revisions retained, Valkey bytes per retained revision) over the Service's history keys:
    record hashes, revision indexes, item key indexes (MEMORY USAGE of each, SAMPLES 0)."""
    import redis

    r = redis.Redis.from_url(redis_url)
    entries = used = 0
    for key in r.scan_iter(match=f"sync:{{{service}}}:h[vrk]:*", count=1000):
        if b":hr:" in key:
            entries += r.zcard(key)
        used += r.memory_usage(key, samples=0) or 0
    r.close()
    return entries, used / max(entries, 1)


def history_main(args: argparse.Namespace) -> None:
    """--history: each scenario with history on (SYNC_HISTORY_KEEP, default 100) and off (0), one
    server after the other on one fresh Valkey; writes/s side by side and their ratio, then the
    memory each retained revision costs."""
    clients = int(args.clients.split(",")[-1]) if args.clients != "1,16,64" else 16
    names = [s for s in ["document updates", "list item appends", "map item writes"] if s in args.scenarios]
    redis_proc = RedisProcess()
    auth = (ACCOUNT_SID, AUTH_TOKEN)
    results: dict[tuple[str, str], dict] = {}
    memory = (0, 0.0)
    try:
        for keep in (args.history_keep, "0"):
            env = {"SYNC_LOG_LEVEL": "error", "SYNC_HISTORY_KEEP": keep}
            with ServerProcess(redis_url=redis_proc.url, env=env) as server:
                service = prepare(server.base_url, auth, clients)
                for name in names:
                    measure(server.base_url, auth, clients, 1.0, name, service)  # warm-up
                    results[(name, keep)] = measure(server.base_url, auth, clients, args.seconds, name, service)
                if keep != "0":
                    memory = revision_bytes(redis_proc.url, service)
    finally:
        redis_proc.stop()
    print(f"REST writes, history on (SYNC_HISTORY_KEEP={args.history_keep}) vs off (0); {clients} clients, "
          f"{args.seconds:.0f} s per run, data {len(DATA)} bytes, {os.cpu_count()} cores, Python loadgen")  # fmt: skip
    print(f"{'scenario':<20} {'on w/s':>8} {'off w/s':>8} {'on/off':>7} {'on p99':>8} {'off p99':>8}")
    for name in names:
        on, off = results[(name, args.history_keep)], results[(name, "0")]
        print(f"{name:<20} {on['rate']:>8.0f} {off['rate']:>8.0f} {on['rate'] / off['rate']:>7.2f} "
              f"{on['p99']:>8.2f} {off['p99']:>8.2f}")  # fmt: skip
    entries, per = memory
    print(f"memory: {entries} revisions retained, {per:.0f} bytes each (Valkey MEMORY USAGE of the history keys)")


# -- sync-server beside the naive endpoint ----------------------------------------------------------

WRK_SCRIPT = """
local i = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = "%(auth)s"
wrk.body = "%(body)s"
request = function()
  i = i + 1
  if KEYED then wrk.headers["Idempotency-Key"] = RUN .. "-" .. tostring(tid) .. "-" .. i end
  return wrk.format(nil, "%(base)s/Documents/bench-0-" .. (i %% 64))
end
"""
# --idempotency: each wrk thread (its own Lua state) numbers its requests; the thread id and a run
# tag make every key unique
WRK_KEYED = """
KEYED = true
RUN = "%(run)s"
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
"""


def load(
    port: int, service: str, connections: int, seconds: float, how: str, keyed: bool = False
) -> tuple[int, int, float]:
    """Document updates at ``connections`` for ``seconds``: (2xx answers, other answers, elapsed);
    ``keyed``: each with a fresh Idempotency-Key (wrk only)."""
    base = f"/v1/Services/{service}"
    if how == "wrk":
        import base64
        from urllib.parse import urlencode

        auth = "Basic " + base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
            if keyed:
                f.write(WRK_KEYED % {"run": time.time_ns()})
            f.write(WRK_SCRIPT % {"auth": auth, "body": urlencode({"Data": DATA}).replace('"', '\\"'), "base": base})
        cmd = ["wrk", "-t2", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "10s", "-s", f.name,
               f"http://127.0.0.1:{port}"]  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        os.unlink(f.name)
        m = re.search(r"(\d+) requests in ([\d.]+)(m?s)", out)
        assert m, out
        total, elapsed = int(m[1]), float(m[2]) / (1000 if m[3] == "ms" else 1)
        bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        errors = int(bad[1]) if bad else 0
        errors += sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
        return total - (int(bad[1]) if bad else 0), errors, elapsed
    assert not keyed, "--idempotency needs wrk"
    m2 = measure(f"http://127.0.0.1:{port}", (ACCOUNT_SID, AUTH_TOKEN), connections, seconds, "document updates",
                 service)  # fmt: skip
    return int(m2["rate"] * m2["elapsed"]), m2["errors"], m2["elapsed"]


def start_naive(redis: RedisProcess, workers: int) -> tuple[subprocess.Popen[bytes], int]:
    from storage.embedded import free_port

    port = free_port()
    env = {**os.environ, "NAIVE_REDIS_URL": redis.url}
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "tests.bench.naive_rest:app", "--http", "httptools", "--loop", "uvloop",
         "--workers", str(workers), "--port", str(port), "--log-level", "warning", "--no-access-log"],
        cwd=ROOT, env=env,
    )  # fmt: skip
    import httpx

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            r = httpx.post(f"http://127.0.0.1:{port}/v1/Services/IS0/Documents/ready", data={"Data": "{}"}, timeout=1)
            if r.status_code == 200:
                time.sleep(0.5 if workers > 1 else 0)  # the other workers
                return proc, port
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("naive_rest did not start")


@dataclass
class Peer:
    """One server of the comparison, running: its process tree's root, port, Service, and stop."""

    name: str
    pid: int
    port: int
    service: str
    stop: Callable[[], None]


def start_peer(name: str, redis: RedisProcess, workers: int, connections: int) -> Peer:
    """The naive endpoint, or sync-server with its defaults and ``2 * connections`` Documents."""
    if name == "naive":
        proc, port = start_naive(redis, workers)

        def stop(proc: subprocess.Popen[bytes] = proc) -> None:
            proc.terminate()
            proc.wait(20)

        return Peer(name, proc.pid, port, "IS0", stop)
    env = {**product_defaults(), "SYNC_WORKERS": str(workers), "SYNC_LOG_LEVEL": "error"}
    server = ServerProcess(redis_url=redis.url, env=env).start()
    assert server.proc is not None
    import httpx

    with httpx.Client(base_url=server.base_url, auth=(ACCOUNT_SID, AUTH_TOKEN), timeout=30) as c:
        service = c.post("/v1/Services", data={"FriendlyName": "bench"}).json()["sid"]
        for part in range(2):
            for n in range(connections):
                c.post(f"/v1/Services/{service}/Documents", data={"UniqueName": f"bench-{part}-{n}", "Data": DATA})
    return Peer(name, server.proc.pid, server.port, service, server.stop)


def window(peer: Peer, redis: RedisProcess, args: argparse.Namespace, how: str) -> dict[str, float]:
    """One load window of --seconds on ``peer``: writes/s, and per write its server's CPU µs, Valkey's
    CPU µs and its server's write system calls."""
    pids = tree(peer.pid)
    cpu0, rcpu0, calls0 = cpu_s(pids), cpu_s([redis.proc.pid]), write_calls(pids)
    ok, errors, elapsed = load(peer.port, peer.service, args.connections, args.seconds, how, peer.name == "with key")
    cpu, rcpu, calls = cpu_s(pids) - cpu0, cpu_s([redis.proc.pid]) - rcpu0, write_calls(pids) - calls0
    n = max(1, ok)
    return {"rate": ok / elapsed, "cpu_us": cpu * 1e6 / n, "redis_us": rcpu * 1e6 / n, "calls": calls / n,
            "writes": ok, "errors": errors}  # fmt: skip


def compare(args: argparse.Namespace) -> None:
    """Both servers of each worker count run side by side, idle but for the one being loaded, and
    take turns for --rounds load windows each (in the order A B, B A, A B …, so that a drift of the
    shared machine weighs on both alike). Each round gives a ratio; the summary is their median,
    beside the lowest and highest: one window on a busy 2-core box can be 30 % off."""
    how = args.loadgen
    if how == "auto":
        how = "wrk" if shutil.which("wrk") else "python"
    if args.idempotency and how != "wrk":
        raise SystemExit("--idempotency needs wrk (apt-get install -y wrk)")
    if how == "python":
        print("load: the Python load generator (install wrk for writes/s that the servers, not the load, bound:"
              " apt-get install -y wrk)")  # fmt: skip
    base, other = ("sync-server", "with key") if args.idempotency else ("naive", "sync-server")
    redis = RedisProcess()
    rounds: dict[int, list[dict[str, dict[str, float]]]] = {}
    try:
        for workers in [int(x) for x in args.workers.split(",")]:
            peers = {}
            try:
                for name in (base, other):
                    peers[name] = start_peer(name, redis, workers, args.connections)
                for peer in peers.values():
                    load(peer.port, peer.service, args.connections, 1.0, how, peer.name == "with key")  # warm-up
                rounds[workers] = []
                for r in range(args.rounds):
                    order = (base, other) if r % 2 == 0 else (other, base)
                    got = {name: window(peers[name], redis, args, how) for name in order}
                    rounds[workers].append(got)
                    for name in (base, other):
                        res = got[name]
                        print(
                            f"  round {r + 1} {name:11s} workers={workers}  writes={res['writes']:.0f} "
                            f"errors={res['errors']:.0f}  {res['rate']:,.0f}/s  server CPU {res['cpu_us']:.0f} µs/write"
                            f"  Valkey CPU {res['redis_us']:.0f} µs/write  write calls/write {res['calls']:.2f}",
                            flush=True,
                        )
            finally:
                for peer in peers.values():
                    peer.stop()
    finally:
        redis.stop()
    print()
    print(f"Document updates, {args.connections} connections, load: {how}, {os.cpu_count()} cores, "
          f"{args.rounds} rounds of {args.seconds:g} s each")  # fmt: skip
    if args.idempotency:
        print("sync-server without / with Idempotency-Key (ratio with ÷ without", end="")
    else:
        print("naive HSET+PUBLISH / sync-server (ratio sync-server ÷ naive", end="")
    print(": the median of the rounds' ratios [lowest–highest])")
    for workers, rs in rounds.items():

        def summary(figure: str, rs: list[dict[str, dict[str, float]]] = rs) -> str:
            ratios = sorted(r[other][figure] / r[base][figure] for r in rs)
            a, b = statistics.median(r[base][figure] for r in rs), statistics.median(r[other][figure] for r in rs)
            return f"{a:,.0f} / {b:,.0f} ({statistics.median(ratios):.2f}x [{ratios[0]:.2f}–{ratios[-1]:.2f}])"

        calls = statistics.median(r[base]["calls"] for r in rs), statistics.median(r[other]["calls"] for r in rs)
        print(f"  {workers} worker{'s' if workers > 1 else ' '}  writes/s {summary('rate')}   "
              f"server CPU µs/write {summary('cpu_us')}   Valkey CPU µs/write {summary('redis_us')}   "
              f"write calls/write {calls[0]:.2f} / {calls[1]:.2f}")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--table", action="store_true", help="the per-scenario table of sync-server alone")
    ap.add_argument("--url", help="an already running sync-server (implies --table)")
    ap.add_argument("--account")
    ap.add_argument("--token")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--clients", default="1,16,64", help="--table: connection counts")
    ap.add_argument("--scenarios", default="document updates,list item appends,map item writes,one map, many writers")
    ap.add_argument("--workers", default="1,2", help="server worker processes to compare at")
    ap.add_argument("--connections", type=int, default=64, help="connections of the comparison")
    ap.add_argument("--rounds", type=int, default=3, help="load windows per server, taking turns (median ratio)")
    ap.add_argument("--loadgen", choices=["auto", "wrk", "python"], default="auto")
    ap.add_argument("--idempotency", action="store_true", help="sync-server without vs with an Idempotency-Key")
    ap.add_argument("--history", action="store_true", help="history on beside history off, and bytes per revision")
    ap.add_argument("--history-keep", default="100", help="--history: SYNC_HISTORY_KEEP of the 'on' run")
    args = ap.parse_args()
    if args.history:
        history_main(args)
    elif args.table or args.url:
        table_main(args)
    else:
        compare(args)


if __name__ == "__main__":
    main()
