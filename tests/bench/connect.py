"""Connecting, side by side: N clients connect, ``init`` with an access token and subscribe to one Document.

Usage:  python tests/bench/connect.py [--subscribers 1000,5000] [--runs 2] [--clients 2]
        [--servers reference,sync] [--py-spy out.svg]

Only the connect phase of fanout.py (its client processes, servers and setup, imported from there):
for each N and run, the reference (reference_ws.py: accepts the WebSocket, answers ``init`` without
checking the token, answers the subscribe without reading anything) and one sync-server process
(checks the token, looks the key and the Service up, reads the Document, joins it to live delivery)
one after the other, each fresh. Prints server CPU ms per client (utime+stime of the server's
process tree, Valkey not counted) and wall time from the first connect to the last
``subscription_established``, sync-server's followed by its ratio to the reference's.
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


def connect_once(target: Target, tokens: list[str], sid: str, clients: int, spy: str | None) -> tuple[float, float]:
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
    group = Clients(target.ws_url, tokens, sid, False, clients)
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subscribers", default="1000,5000")
    ap.add_argument("--runs", type=int, default=2, help="fresh servers per N (each figure: every run)")
    ap.add_argument("--clients", type=int, default=2, help="client processes")
    ap.add_argument("--servers", default="reference,sync", help="which of reference,sync to run")
    ap.add_argument("--py-spy", dest="spy", help="flame graph of sync-server's last connect phase (py-spy)")
    args = ap.parse_args()
    if args.spy and not shutil.which("py-spy"):
        raise SystemExit("--py-spy: py-spy is not installed (pip install py-spy)")
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
            got: dict[str, list[tuple[float, float]]] = {"reference": [], "sync": []}
            for run in range(args.runs):
                for which in args.servers.split(","):
                    target = start_reference(redis, False, False) if which == "reference" else start_sync(
                        redis, service, docs[n], False)  # fmt: skip
                    spy = args.spy if which == "sync" and n == ns[-1] and run == args.runs - 1 else None
                    try:
                        ms, wall = connect_once(target, tokens, docs[n], args.clients, spy)
                    finally:
                        target.stop()
                    got[which].append((ms, wall))
                    print(f"  {target.name:11s} N={n:<5d} run {run + 1}: {ms:.3f} ms CPU/client, {wall:.2f} s wall",
                          flush=True)  # fmt: skip
            for i in range(args.runs):
                ref = got["reference"][i] if i < len(got["reference"]) else None
                syn = got["sync"][i] if i < len(got["sync"]) else None
                cells = []
                for k, unit in ((0, "ms CPU/client"), (1, "s wall")):
                    r, s = (ref[k] if ref else None), (syn[k] if syn else None)
                    shown = f"{r:.3f}" if r is not None else "-", f"{s:.3f}" if s is not None else "-"
                    cells.append(f"{shown[0]} / {shown[1]}{ratio(s, r)} {unit}")
                rows.append(f"N={n:<5d} run {i + 1}: " + ", ".join(cells))
    finally:
        setup.stop()
        redis.stop()
    print("\nreference / sync-server (ratio sync-server ÷ reference)")
    for row in rows:
        print(row)


if __name__ == "__main__":
    main()
