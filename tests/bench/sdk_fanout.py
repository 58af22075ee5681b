"""Fan-out to Twilio's own twilio-sync SDK, beside fanout.py's raw clients that ack as the SDK does.

Usage:  python tests/bench/sdk_fanout.py [--subscribers 100] [--seconds 4] [--paced-seconds 10]
        [--rate 2000] [--writers 4]

fanout.py measures sync-server with hand-rolled subscribers that answer every notification with
the SDK's acknowledgement, byte for byte, so that the load generator costs a few µs per delivery.
This checks what that stands for: N real SyncClients (twilio-sync, pinned in tests/js/package.json,
in one Node process: tests/js/crowd.js) subscribe to one Document of one sync-server process, then
the same two write phases as fanout.py (REST Document updates: a burst with --writers in flight,
then --rate deliveries/s offered); then, on a fresh server, the same with fanout.py's raw acking
subscribers. For each it prints deliveries/s, the server's CPU µs per delivery (utime+stime of its
process tree, Valkey and clients not counted), publish→receipt p50/p99 (the SDK's ``updated``
event), and the SDK figure's ratio to the raw one.

One Node process does the SDK's work for all N clients (~0.4 ms per update on this box), so in a
burst it falls far behind the server. It still reads every frame off its sockets as it arrives, so
the sockets never back up: what holds its backlog down is the server's acknowledgement window
(SYNC_WS_ACK_WINDOW, README "Slow consumers"), which conflates a client's Documents once it has that
many events unacknowledged; the SDK then sees fewer states (``skipped``), and its deliveries/s are
the SDK's, not the server's. ``SYNC_WS_ACK_WINDOW=0 python tests/bench/sdk_fanout.py`` shows the
burst without it. Nothing lost: every client must end at the last write, each state at most once and
in order; otherwise the run prints FAIL and exits 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from realtime.tokens import mint  # noqa: E402
from tests.bench.fanout import Clients, Target, populate, ratio, start_sync, tree, write_phase  # noqa: E402
from tests.helpers import ACCOUNT_SID, RedisProcess, ServerProcess  # noqa: E402
from tests.sdk import JS_DIR, ensure_installed  # noqa: E402


class SdkClients:
    """tests/js/crowd.js: N SyncClients in one Node process, with fanout.Clients' interface."""

    def __init__(self, base_url: str, tokens: list[str], sid: str) -> None:
        ensure_installed()
        env = {**os.environ, "SYNC_URL": base_url}
        self.proc = subprocess.Popen(
            ["node", str(JS_DIR / "crowd.js")], cwd=JS_DIR, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        self._send({"sid": sid, "tokens": tokens})

    def _send(self, msg: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(msg).encode() + b"\n")
        self.proc.stdin.flush()

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit("FAIL: the SDK process ended")
        return json.loads(line)  # type: ignore[no-any-return]

    def ready(self) -> tuple[int, float]:
        msg = self._read()
        return msg["ready"], msg["last"] - msg["first"]

    def start(self, acking: bool, sample_all: bool = False) -> None:
        self._send({"op": "start"})

    def report(self, expected: int) -> dict[str, Any]:
        self._send({"op": "report", "expected": expected})
        return self._read()

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def phases(target: Target, clients: Clients | SdkClients, n: int, args: argparse.Namespace) -> dict[str, Any]:
    """The burst and the paced phase (fanout.write_phase): {phase: figures}, and "fail" if anything was lost."""
    pids = tree(target.pid)
    res: dict[str, Any] = {}
    for label, rate in (("burst", None), ("paced", args.rate / n)):
        seconds = args.paced_seconds if rate else args.seconds
        res[label], problems = write_phase(target, clients, pids, n, label, True, rate, seconds, args.writers)
        if problems:
            res["fail"] = f"{target.name} {label}: " + ", ".join(problems)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subscribers", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=4.0, help="length of the burst")
    ap.add_argument("--paced-seconds", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=2000.0, help="deliveries/s offered in the paced phase")
    ap.add_argument("--writers", type=int, default=4, help="writes in flight in the burst")
    args = ap.parse_args()
    n = args.subscribers
    redis = RedisProcess()
    setup = ServerProcess(redis_url=redis.url).start()
    results: dict[str, dict[str, Any]] = {}
    try:
        key, args.service, docs, _ = populate(redis, setup, [n])
        setup.stop()
        args.sid = docs[n]
        tokens = [mint(ACCOUNT_SID, key.sid, key.secret, f"user{i}", args.service, 3600) for i in range(n)]
        window = os.environ.get("SYNC_WS_ACK_WINDOW", "the default")
        print(
            f"SDK fan-out bench: 1 server process, N = {n}, SYNC_WS_ACK_WINDOW {window}, "
            f"load average {os.getloadavg()[0]:.1f}",
            flush=True,
        )
        for which in ("sdk", "raw"):
            target = dataclasses.replace(start_sync(redis, args.service, args.sid, False), name=which)
            clients: Clients | SdkClients = (
                SdkClients(f"http://127.0.0.1:{target.http_port}", tokens, args.sid)
                if which == "sdk"
                else Clients(target.ws_url, tokens, args.sid, False, 2)
            )
            try:
                subscribed, wall = clients.ready()
                if subscribed != n:
                    raise SystemExit(f"FAIL {which}: {n - subscribed} of {n} did not subscribe")
                print(f"  {which}: {n} subscribed in {wall:.2f} s", flush=True)
                results[which] = phases(target, clients, n, args)
            finally:
                clients.stop()
                target.stop()
    finally:
        setup.stop()
        redis.stop()
    print(f"\nN = {n}: SDK subscribers / raw acking subscribers (ratio SDK ÷ raw)")
    for label in ("burst", "paced"):
        sdk, raw = results["sdk"][label], results["raw"][label]
        print(
            f"  {label:5s} deliveries/s {sdk['rate']:,.0f} / {raw['rate']:,.0f}{ratio(sdk['rate'], raw['rate'])}"
            f"   server CPU µs/delivery {sdk['cpu_us']:.1f} / {raw['cpu_us']:.1f}{ratio(sdk['cpu_us'], raw['cpu_us'])}"
            f"   p50 ms {sdk['p50']:.1f} / {raw['p50']:.1f}   p99 ms {sdk['p99']:.1f} / {raw['p99']:.1f}"
        )
    failures = [r["fail"] for r in results.values() if "fail" in r]
    for failure in failures:
        print(f"FAIL {failure}")
    if failures:
        raise SystemExit(1)
    print("nothing lost: every subscriber ended at the last write, each state at most once, in order")


if __name__ == "__main__":
    main()
