"""Connecting, side by side: N clients connect, ``init`` with an access token and subscribe to one Document.

Usage:  python tests/bench/connect.py [--subscribers 1000,5000] [--runs 2] [--clients 2]
        [--servers reference-connect,reference,sync] [--py-spy out.svg]

Only the connect phase of fanout.py (its client processes, servers and setup, imported from there):
for each N and run, one after the other, each server fresh:
- ``reference-connect``: the reference (reference_ws.py, a ``websockets`` server) with clients that
  only make the WebSocket handshake: the "reference (connect only)" of the issue's table, the
  baseline its connect goal was set against (0.15 ms per client, 5,000 clients in 1.06 s, when it
  asked for ≤ 0.5 ms and ≤ 2 s: ≤ 3.3× and ≤ 1.9× that baseline);
- ``reference``: the same server, clients that also ``init`` and subscribe (it answers ``init``
  without checking the token and the subscribe without reading anything);
- ``sync``: one sync-server process (checks the token, looks the key and the Service up, reads the
  Document, joins it to live delivery);
- ``sync-connect`` (not by default): sync-server, handshakes only, to see what ``init`` and the
  subscribe cost on top.
Prints server CPU ms per client (utime+stime of the server's process tree, Valkey not counted) and
wall time from the first connect to the last ``subscription_established`` (or 101), then
sync-server's ratios to each reference run beside it.
--py-spy records sync-server's connect phase of the last N with py-spy (if installed): a flame graph
if the file name ends in .svg, else collapsed stacks (one line per stack, for grep and sort).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from realtime.tokens import mint  # noqa: E402
from tests.bench.fanout import Clients, Target, cpu_s, populate, ratio, start_reference, start_sync, tree  # noqa: E402
from tests.helpers import ACCOUNT_SID, RedisProcess, ServerProcess  # noqa: E402


def connect_once(
    target: Target, tokens: list[str], sid: str, clients: int, spy: str | None, connect_only: bool
) -> tuple[float, float]:
    """(server CPU ms per client, wall s for all) for one fresh server."""
    pids = tree(target.pid)
    before = cpu_s(pids)
    recorder = None
    if spy:
        recorder = subprocess.Popen(
            ["py-spy", "record", "-p", str(target.pid), "-o", spy, "-r", "500", "--nonblocking"]
            + (["--format", "raw"] if not spy.endswith(".svg") else []),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(1.0)
        before = cpu_s(pids)
    group = Clients(target.ws_url, tokens, sid, False, clients, connect_only)
    try:
        subscribed, wall = group.ready()
        used = cpu_s(tree(target.pid)) - before
    finally:
        group.stop()
        if recorder is not None:
            recorder.send_signal(2)
            recorder.wait(30)
    if subscribed != len(tokens):
        raise SystemExit(f"FAIL {target.name}: {len(tokens) - subscribed} of {len(tokens)} did not subscribe")
    return used * 1000 / subscribed, wall


SERVERS = ("reference-connect", "reference", "sync", "sync-connect")
# the goal as ratios to its own baseline: ≤ 0.5 ms when the reference connected in 0.15 ms,
# 5,000 in ≤ 2 s when the reference connected them in 1.06 s (this machine drifts; ratios hold)
GOAL_CPU, GOAL_WALL_5000 = 0.5 / 0.15, 2.0 / 1.06


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subscribers", default="1000,5000")
    ap.add_argument("--runs", type=int, default=2, help="fresh servers per N (each figure: every run)")
    ap.add_argument("--clients", type=int, default=2, help="client processes")
    ap.add_argument("--servers", default="reference-connect,reference,sync", help=f"which of {','.join(SERVERS)}")
    ap.add_argument("--py-spy", dest="spy", help="flame graph of sync-server's last connect phase (py-spy)")
    args = ap.parse_args()
    if args.spy and not shutil.which("py-spy"):
        raise SystemExit("--py-spy: py-spy is not installed (pip install py-spy)")
    servers = args.servers.split(",")
    if unknown := set(servers) - set(SERVERS):
        raise SystemExit(f"--servers: unknown {sorted(unknown)}")
    ns = [int(x) for x in args.subscribers.split(",")]
    redis = RedisProcess()
    setup = ServerProcess(redis_url=redis.url).start()
    rows: list[str] = []
    try:
        key, service, docs, _ = populate(redis, setup, ns)
        setup.stop()
        print(f"connect bench: 1 server process each, {os.cpu_count()} cores, {args.clients} client processes")
        for n in ns:
            tokens = [mint(ACCOUNT_SID, key.sid, key.secret, f"user{i}", service, 3600) for i in range(n)]
            got: dict[str, list[tuple[float, float]]] = {which: [] for which in servers}
            for run in range(args.runs):
                for which in servers:
                    sync = which.startswith("sync")
                    target = start_sync(redis, service, docs[n], False) if sync else start_reference(
                        redis, False, False)  # fmt: skip
                    spy = args.spy if which == "sync" and n == ns[-1] and run == args.runs - 1 else None
                    try:
                        ms, wall = connect_once(target, tokens, docs[n], args.clients, spy, which.endswith("-connect"))
                    finally:
                        target.stop()
                    got[which].append((ms, wall))
                    print(f"  {which:17s} N={n:<5d} run {run + 1}: {ms:.3f} ms CPU/client, {wall:.2f} s wall",
                          flush=True)  # fmt: skip
            rows += _rows(n, args.runs, got)
    finally:
        setup.stop()
        redis.stop()
    print("\nserver CPU ms per client / wall s; sync-server's ratio to each reference run beside it")
    print(f"(the issue's goal, as ratios to its connect-only reference: CPU ≤ {GOAL_CPU:.2f}x, "
          f"5,000 clients' wall ≤ {GOAL_WALL_5000:.2f}x)")  # fmt: skip
    for row in rows:
        print(row)


def _rows(n: int, runs: int, got: dict[str, list[tuple[float, float]]]) -> list[str]:
    rows = []
    for i in range(runs):
        cells = [
            f"{which} {ms:.3f} ms / {wall:.2f} s" for which, figures in got.items() for ms, wall in figures[i : i + 1]
        ]
        syn = got.get("sync", [])[i : i + 1]
        for ref in ("reference-connect", "reference"):
            base = got.get(ref, [])[i : i + 1]
            if syn and base:
                cells.append(f"sync ÷ {ref}: CPU{ratio(syn[0][0], base[0][0])}, wall{ratio(syn[0][1], base[0][1])}")
        rows.append(f"N={n:<5d} run {i + 1}: " + "; ".join(cells))
    return rows


if __name__ == "__main__":
    main()
