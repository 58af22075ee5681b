"""Realtime fan-out, side by side: the reference (reference_ws.py) and sync-server, in one run.

Usage:  python tests/bench/fanout.py [--subscribers 100,1000,5000 | --quick] [--seconds 4]
        [--paced-seconds 5] [--rate 2000] [--writers 4] [--clients 2] [--servers reference,sync]
        [--no-deflate] [--no-acks] [--kind document|map] [--compression] [--server-compression]
        [--reference-coalesce] [--latency-rounds K]

Starts its own Valkey, then for each N runs the reference server and one sync-server process one
after the other, with the same client code, N, payload (~200-byte Document data) and writer (REST
POSTs, --writers in flight; for the reference its tiny publish endpoint, see reference_ws.py).
Subscribers are raw twilsock-over-WebSocket clients on uvloop in --clients separate processes: a
hand-rolled asyncio Protocol (handshake, unmasked frame parsing, zero-key masked sends), so that a
delivery costs the load generator a few µs; in a burst only one connection in 10 parses JSON
(latency, order), in a paced phase every connection does.
Each server gets, per N:
  * connect: N clients open a WebSocket, send ``init`` with an access token, subscribe to one
    Document; server CPU ms per client and wall time for all N;
  * idle memory per connection: server RSS growth / N once all are subscribed;
  * burst: --seconds of writes with --writers in flight; deliveries/s (deliveries over the time from
    the first write to the last receipt) and server CPU µs per delivery, first with subscribers that
    never answer, then with subscribers that ack every notification as twilio-sync 4.0.1 does (a
    binary twilsock ``reply`` frame with the notification's id, header in the SDK's key order);
  * paced: --rate deliveries/s offered (--rate/N writes/s, at least 6 writes); publish→receipt
    p50/p99 (each write carries its wall-clock send time), and when a write reached its first and
    its last subscriber (``receipts first–last``, medians over the writes: whether a server is late
    to start its fan-out or slow to finish it); run before the acking burst (once a client
    acknowledges, sync-server holds it to SYNC_WS_ACK_WINDOW unacknowledged events);
  * idle memory again with a fresh server and clients that offer permessage-deflate (as Node's ws
    under the SDK and browsers do; --compression: offered in every phase; --server-compression:
    both servers accept it, sync-server with SYNC_WS_COMPRESSION, the reference with websockets'
    defaults; by default both decline it).
--kind map subscribes to a Map and updates its items (100 keys) instead of a Document.
Server CPU is utime+stime of the server's process tree from /proc (Valkey and the clients not
counted), from just before the phase's first write until every subscriber has every write (or
nothing moved for 3 s); connection setup is outside it. Write calls per delivery (``syscw`` from
/proc, the write/writev calls uvloop makes on sockets) show how many frames each system call
carries: on this box a socket write costs 5–10 µs whatever its size (broadcast_micro.py), so this
decides most of the CPU per delivery. The reference ``broadcast()``s each message (one write per
message and connection, as the issue's reference); --reference-coalesce has it write all the frames
of one pub/sub read at once per connection, as sync-server does when several events are queued.
sync-server runs with its default settings (not the test helpers' faster background loops).
Nothing lost: after each write phase every subscriber must have received every write exactly once
(and in order: every one in a paced phase, one in 10 in a burst); otherwise the run prints FAIL
and exits 1.
The table prints each sync-server figure followed by its ratio to the reference's.

--latency-rounds K: the paced phase alone, in turns. Both servers run at once, each with its own N
subscribers, and after a 2 s window each that is not counted (a server's first writes after the
connects are slower) take K rounds of paced windows each (--paced-seconds long; reference then
sync-server, then the other way round, and so on); the figure is the median of the rounds' p50,
p99, first-receipt and last-receipt ratios, with the lowest and highest. This machine's latency
drifts by more than a tenth of a millisecond from one minute to the next, as much as a change to
the write path may save; the ratio of windows a few seconds apart, taken in turns, drifts far less
than that of two runs made minutes apart (the rest of the run is skipped).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing as mp
import os
import re
import statistics
import subprocess
import sys
import time
import uuid
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import uvloop  # noqa: E402

from realtime.tokens import mint  # noqa: E402
from storage.embedded import free_port  # noqa: E402
from tests.bench.loadgen import Conn  # noqa: E402
from tests.helpers import ACCOUNT_SID, AUTH_TOKEN, RedisProcess, ServerProcess  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
KIND = "document"  # or "map" (--kind): set before the subscriber processes fork
PAD = "x" * 150  # Data = {"t": …, "n": …, "pad": PAD}: ~200 bytes
_T = re.compile(rb'"t":\s*([0-9.eE+-]+)')
_EVENT_ID = re.compile(rb'"event":\s*\{\s*"id":\s*(\d+)')
_ID = re.compile(rb'"id":"([^"]*)"')


# -- /proc ------------------------------------------------------------------------------------------


def tree(pid: int) -> list[int]:
    out = [pid]
    kids = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    for k in kids:
        out += tree(int(k))
    return out


def cpu_s(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / TICK


def proc_sum(pids: list[int], name: str, key: str) -> int:
    """The sum over ``pids`` of the first number on the line starting with ``key`` in /proc/PID/name."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/{name}").read_text().splitlines():
                if line.startswith(key):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def write_calls(pids: list[int]) -> int:
    """write/writev system calls (``syscw``): uvloop writes to sockets with them, so per delivery
    this says how many frames go out per system call (1.0: one write per frame)."""
    return proc_sum(pids, "io", "syscw:")


def rss_kb(pids: list[int]) -> int:
    return proc_sum(pids, "status", "VmRSS:")


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


# -- subscriber processes: a raw WebSocket client ---------------------------------------------------


def widen(spread: dict[bytes, tuple[float, float]], write: bytes, first: float, last: float) -> None:
    """Widen ``write``'s (first, last) receipt times to take in ``first`` and ``last``."""
    was = spread.get(write)
    spread[write] = (first, last) if was is None else (min(was[0], first), max(was[1], last))


def ws_frame(payload: bytes, opcode: int = 2) -> bytes:
    """A client frame, masked with the all-zero key (legal, and the payload stays as it is)."""
    n = len(payload)
    if n < 126:
        head = bytes([0x80 | opcode, 0x80 | n])
    elif n < 65536:
        head = bytes([0x80 | opcode, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, 0x80 | 127]) + n.to_bytes(8, "big")
    return head + b"\0\0\0\0" + payload


def twilsock_frame(head: bytes, payload: bytes = b"") -> bytes:
    """As twilsock's Parser.createPacket: the header is JSON.stringify of the message object."""
    return b"TWILSOCK V3.0 %d\r\n%s\r\n%s" % (len(head), head, payload)


def sdk_ack(msg_id: bytes) -> bytes:
    """twilio-sync 4.0.1's ack (twilsock Reply: id, method, payload_type, status, then payload_size)."""
    return ws_frame(
        twilsock_frame(
            b'{"id":"' + msg_id + b'","method":"reply","payload_type":"application/json",'
            b'"status":{"code":200,"status":"OK"},"payload_size":0}'
        )
    )


class Sub(asyncio.Protocol):
    """One subscriber: handshake, init, subscribe, then count (and maybe ack) notifications."""

    def __init__(self, child: Child, host: str, path: str, token: str, sid: str, sample: bool) -> None:
        self.child, self.host, self.path, self.token, self.sid, self.sample = child, host, path, token, sid, sample
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.upgraded = False
        self.inflate: Any = None
        self.stage = "init"
        self.count = 0
        self.last_n = -1
        self.disorder = 0
        self.last: bytes = b""  # the last event received (its id is read once, at the report)
        self.done = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's TCPTransport
        key = base64.b64encode(os.urandom(16)).decode()
        ext = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n" if self.child.deflate else ""
        transport.write(
            f"GET {self.path} HTTP/1.1\r\nHost: {self.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{ext}\r\n".encode()
        )

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(ConnectionError(f"closed in stage {self.stage}: {exc!r}"))
        elif self.stage == "ready" and not self.child.stopping:
            self.child.lost += 1

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buf = buf
                return
            head, buf = buf[:end], buf[end + 4 :]
            if not head.startswith(b"HTTP/1.1 101"):
                self.done.set_exception(ConnectionError(head.split(b"\r\n")[0].decode()))
                return
            self.upgraded = True
            if b"permessage-deflate" in head.lower():
                self.inflate = zlib.decompressobj(-15)
            if self.child.connect_only:  # the "reference (connect only)": the handshake and no more
                self.stage = "ready"
                self.done.set_result(None)
                return
            self.send_init()
        pos, size = 0, len(buf)
        while size - pos >= 2:
            b0, n = buf[pos], buf[pos + 1] & 0x7F
            start = pos + 2
            if n == 126:
                if size - pos < 4:
                    break
                n, start = int.from_bytes(buf[pos + 2 : pos + 4], "big"), pos + 4
            elif n == 127:
                if size - pos < 10:
                    break
                n, start = int.from_bytes(buf[pos + 2 : pos + 10], "big"), pos + 10
            if size - start < n:
                break
            payload = buf[start : start + n]
            pos = start + n
            opcode = b0 & 0x0F
            if opcode == 9:
                assert self.transport is not None
                self.transport.write(ws_frame(payload, 10))
            elif opcode in (1, 2):
                if b0 & 0x40:
                    payload = self.inflate.decompress(payload + b"\x00\x00\xff\xff")
                self.on_message(payload)
        self.buf = buf[pos:]

    def send_init(self) -> None:
        assert self.transport is not None
        init = {"id": f"TM{uuid.uuid4()}", "method": "init", "token": self.token, "continuation_token": None,
                "metadata": {}, "registrations": None, "tweaks": None,
                "capabilities": ["client_update", "offline_storage", "telemetry.v1"]}  # fmt: skip
        self.transport.write(ws_frame(twilsock_frame(json.dumps(init, separators=(",", ":")).encode())))

    def on_message(self, raw: bytes) -> None:
        child = self.child
        if self.stage == "ready":
            if child.acking and raw.startswith(b"TWILSOCK V3.0 ") and b'"method":"notification"' in raw[:300]:
                m = _ID.search(raw, 0, 400)
                if m and self.transport is not None:
                    self.transport.write(sdk_ack(m[1]))
            if child.recording and b'"t":' in raw:
                self.count += 1
                self.last = raw
                child.last_recv = time.monotonic()
                if self.sample or child.sample_all:
                    m = _T.search(raw)
                    if m:
                        ms = (time.time() - float(m[1])) * 1000
                        child.lat.append(ms)
                        if child.sample_all:  # the write's first and last receipt here (its send time names it)
                            widen(child.spread, m[1], ms, ms)
                    m = _EVENT_ID.search(raw)
                    n = int(m[1]) if m else -1
                    if n <= self.last_n:
                        self.disorder += 1  # the server's event ids: out of order, or none
                    self.last_n = n
            return
        assert self.transport is not None
        if self.stage == "init":
            if b'"code":200' not in raw:
                self.done.set_exception(ConnectionError(f"init refused: {raw[:300]!r}"))
                return
            self.stage = "subscribe"
            poke = json.dumps(
                {
                    "event_protocol_version": 4,
                    "action": "establish",
                    "correlation_id": 1,
                    "ttl_in_s": -1,
                    "requests": [{"object_sid": self.sid, "object_type": KIND, "last_event_id": 0}],
                }  # fmt: skip
            ).encode()
            header = json.dumps(
                {
                    "method": "message",
                    "active_grant": "data_sync",
                    "payload_type": "application/json",
                    "http_request": {
                        "host": "cds.twilio.com",
                        "path": "/v4/Subscriptions",
                        "method": "POST",
                        "params": {},
                        "headers": {"Content-Type": "application/json"},
                    },
                    "id": f"TM{uuid.uuid4()}",
                    "payload_size": len(poke),
                },
                separators=(",", ":"),  # fmt: skip
            ).encode()
            self.transport.write(ws_frame(twilsock_frame(header, poke)))
        elif self.stage == "subscribe" and b"subscription_established" in raw:
            self.stage = "ready"
            self.done.set_result(None)
        elif self.stage == "subscribe" and b"subscription_failed" in raw:
            self.done.set_exception(ConnectionError(f"subscription failed: {raw[:300]!r}"))


@dataclass
class Child:
    deflate: bool
    connect_only: bool = False
    acking: bool = False
    recording: bool = False
    sample_all: bool = False  # every subscriber times and orders its receipts (a paced phase)
    stopping: bool = False
    last_recv: float = 0.0
    lost: int = 0
    lat: list[float] = field(default_factory=list)
    spread: dict[bytes, tuple[float, float]] = field(default_factory=dict)  # paced: write -> (first, last) ms


def _child(
    url: str, tokens: list[str], sid: str, deflate: bool, index: int, cmd: Any, out: Any, connect_only: bool
) -> None:
    async def main() -> None:
        child = Child(deflate, connect_only)
        host, port_path = url.removeprefix("ws://").split(":", 1)
        port, path = port_path.split("/", 1)
        loop = asyncio.get_running_loop()
        gate = asyncio.Semaphore(32)  # handshakes in flight per process: stay under the accept backlog
        subs: list[Sub] = []

        async def connect(i: int, tok: str) -> Sub | None:
            async with gate:
                try:
                    sub = Sub(child, f"{host}:{port}", "/" + path, tok, sid, (index + i) % 10 == 0)
                    await loop.create_connection(lambda: sub, host, int(port))
                    await asyncio.wait_for(sub.done, 120)
                    return sub
                except Exception as exc:
                    print(f"subscriber failed: {exc!r}", file=sys.stderr, flush=True)
                    return None

        t0 = time.monotonic()
        got = await asyncio.gather(*(connect(i, tok) for i, tok in enumerate(tokens)))
        subs = [s for s in got if s is not None]
        out.put(("ready", len(subs), t0, time.monotonic()))
        while True:
            op, *rest = await loop.run_in_executor(None, cmd.get)
            if op == "start":
                for s in subs:
                    s.count, s.last_n, s.disorder, s.last = 0, -1, 0, b""
                child.lat, child.acking, child.sample_all, child.recording = [], rest[0], rest[1], True
                child.spread = {}
                child.last_recv = 0.0
            elif op == "report":  # wait until every subscriber has every write, or nothing moves for 3 s
                expected = rest[0]
                total, moved = -1, time.monotonic()
                while True:
                    now_total = sum(s.count for s in subs)
                    if now_total != total:
                        total, moved = now_total, time.monotonic()
                    if all(s.count >= expected for s in subs) or time.monotonic() - moved > 3.0:
                        break
                    await asyncio.sleep(0.05)
                await asyncio.sleep(0.2)  # a duplicate arriving late still counts
                child.recording = False
                ends = [(s.count, _last_event_id(s.last)) for s in subs]  # where each subscriber ended
                disorder = sum(s.disorder for s in subs)
                spread = list(child.spread.items())
                out.put(("report", total, child.last_recv, child.lat, ends, disorder, child.lost, spread))
            elif op == "stop":
                child.stopping = True
                for s in subs:
                    if s.transport is not None:
                        s.transport.close()
                await asyncio.sleep(0.2)
                return

    uvloop.run(main())


class Clients:
    """--clients processes holding N subscribers between them (``connect_only``: WebSocket handshakes
    only, no ``init`` and no subscribe: how the issue measured the reference's connect)."""

    def __init__(
        self, url: str, tokens: list[str], sid: str, deflate: bool, parts: int, connect_only: bool = False
    ) -> None:
        parts = min(parts, len(tokens))
        self.cmds = [mp.Queue() for _ in range(parts)]
        self.outs = [mp.Queue() for _ in range(parts)]
        self.procs = [
            mp.Process(
                target=_child,
                args=(url, tokens[p::parts], sid, deflate, p, self.cmds[p], self.outs[p], connect_only),
            )
            for p in range(parts)
        ]
        for proc in self.procs:
            proc.daemon = True
            proc.start()

    def ready(self) -> tuple[int, float]:
        """(subscribed, wall seconds from the first connect to the last subscription)."""
        got = [out.get(timeout=900) for out in self.outs]
        return sum(g[1] for g in got), max(g[3] for g in got) - min(g[2] for g in got)

    def start(self, acking: bool, sample_all: bool = False) -> None:
        for q in self.cmds:
            q.put(("start", acking, sample_all))

    def report(self, expected: int) -> dict[str, Any]:
        for q in self.cmds:
            q.put(("report", expected))
        agg: dict[str, Any] = {"total": 0, "last": 0.0, "lat": [], "disorder": 0, "lost": 0}
        ends: list[tuple[int, int]] = []
        spread: dict[bytes, tuple[float, float]] = {}
        for out in self.outs:
            _, total, last, lat, child_ends, disorder, lost, child_spread = out.get(timeout=600)
            for t, (first, final) in child_spread:  # the write's receipts over every client process
                widen(spread, t, first, final)
            agg["total"] += total
            agg["last"] = max(agg["last"], last)
            agg["lat"] += lat
            ends += child_ends
            agg["disorder"] += disorder
            agg["lost"] += lost
        if spread:
            agg["first"] = statistics.median(v[0] for v in spread.values())
            agg["final"] = statistics.median(v[1] for v in spread.values())
        return agg | endings(ends, expected)

    def stop(self) -> None:
        for q in self.cmds:
            q.put(("stop",))
        for proc in self.procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()


def _last_event_id(raw: bytes) -> int:
    m = _EVENT_ID.search(raw)
    return int(m[1]) if m else -1


def endings(ends: list[tuple[int, int]], expected: int) -> dict[str, int]:
    """From each subscriber's (events received, id of the last one): ``missed``, subscribers that did
    not end at the last write (the newest event any of them got); ``dup``, subscribers with more
    events than writes; ``skipped``, the states the others did not see although they ended at the
    last write: Document states the server conflated for a client behind (a socket backed up, or
    SYNC_WS_ACK_WINDOW events unacknowledged), which ``write_phase`` checks against the server's
    own count of conflated frames."""
    final = max((last for _, last in ends), default=-1)
    return {
        "missed": sum(1 for count, last in ends if count < expected and last < final),
        "dup": sum(1 for count, _ in ends if count > expected),
        "skipped": sum(expected - count for count, last in ends if count < expected and last == final),
    }


def conflated_frames(target: Target) -> int | None:
    """sync-server's count of conflated Document frames (/metrics, read with the Prometheus client's
    parser, as ``sync-server status`` reads it), or None (the reference, which has none)."""
    if target.name != "sync-server":
        return None
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"http://127.0.0.1:{target.http_port}/metrics", timeout=10).text
    names = ("sync_ws_conflated_frames", "sync_ws_conflated_frames_total")
    values = [s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name in names]
    if not values:
        raise SystemExit("sync-server's /metrics has no sync_ws_conflated_frames: conflation and loss look alike")
    return int(sum(values))


# -- the writer -------------------------------------------------------------------------------------


async def write_loop(port: int, path: str, seconds: float, rate: float | None, concurrency: int) -> tuple[int, float]:
    """POST Document updates for ``seconds`` (``concurrency`` in flight, or ``rate`` per second).
    Returns (writes that succeeded, monotonic time of the first write)."""
    written, failed = 0, 0
    conns = [Conn("127.0.0.1", port, (ACCOUNT_SID, AUTH_TOKEN)) for _ in range(1 if rate else concurrency)]
    await asyncio.gather(*(c.open() for c in conns))
    t0 = time.monotonic()
    deadline = t0 + seconds
    seq = 0

    async def one(conn: Conn) -> None:
        nonlocal written, failed, seq
        seq += 1
        data = json.dumps({"t": time.time(), "n": seq, "pad": PAD}, separators=(",", ":"))
        status, body = await conn.request("POST", path.format(k=seq % 100), {"Data": data})
        if status < 300:
            written += 1
        else:
            failed += 1
            if failed == 1:
                print(f"  write failed: {status} {body[:200]!r}", file=sys.stderr)

    if rate:
        n = 0
        while time.monotonic() < deadline or n < 6:
            await one(conns[0])
            n += 1
            await asyncio.sleep(max(0.0, t0 + n / rate - time.monotonic()))
    else:

        async def worker(conn: Conn) -> None:
            while time.monotonic() < deadline:
                await one(conn)

        await asyncio.gather(*(worker(c) for c in conns))
    await asyncio.gather(*(c.close() for c in conns))
    return written, t0


# -- one server, one N ------------------------------------------------------------------------------


@dataclass
class Target:
    """A running server: where clients connect, where writes go, which processes to measure."""

    name: str
    ws_url: str
    http_port: int
    write_path: str
    pid: int
    stop: Any


def start_reference(redis: RedisProcess, compression: bool, coalesce: bool) -> Target:
    port, http_port = free_port(), free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "tests/bench/reference_ws.py"),
            "--port",
            str(port),
            "--http-port",
            str(http_port),
            "--redis-url",
            redis.url,
        ]
        + (["--compression"] if compression else [])
        + (["--coalesce"] if coalesce else [])
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.1)

    def stop() -> None:
        proc.terminate()
        proc.wait(10)

    return Target("reference", f"ws://127.0.0.1:{port}/v3/wsconnect", http_port, "/publish", proc.pid, stop)


def product_defaults() -> dict[str, str]:
    """The environment that undoes what the test helpers speed up (ServerProcess: the sweeper, the
    webhook worker's scans, leases and retries, the credentials cache), so that a bench measures the
    server as it runs by default: those background loops cost CPU per second, not per operation."""
    from app.settings import Settings, env_name, render

    names = ("sweep_interval_s", "auth_cache_s", "webhook_backoff_base_s", "webhook_backoff_max_s")
    names += ("webhook_max_retries", "webhook_lease_ms", "webhook_scan_interval_s")
    return {env_name(name): render(Settings.model_fields[name].default) or "" for name in names} | switches()


# Settings a bench run may compare on and off: taken from the bench's own environment (ServerProcess
# passes no SYNC_ variable through), e.g. SYNC_REDIS_MULTIPLEX=false python tests/bench/rest_writes.py
SWITCHES = ("SYNC_METRICS", "SYNC_REDIS_MULTIPLEX", "SYNC_WS_ACK_WINDOW")


def switches() -> dict[str, str]:
    return {name: os.environ[name] for name in SWITCHES if name in os.environ}


def start_sync(redis: RedisProcess, service: str, sid: str, compression: bool) -> Target:
    env = {"SYNC_WS_MAX_CONNECTIONS": "20000", "SYNC_WS_QUEUE_FRAMES": "10000", "SYNC_LOG_LEVEL": "warning"}
    env.update(product_defaults())
    if compression:
        env["SYNC_WS_COMPRESSION"] = "true"
    server = ServerProcess(redis_url=redis.url, env=env).start()
    assert server.proc is not None
    path = f"/v1/Services/{service}/Documents/{sid}"
    if KIND == "map":
        path = f"/v1/Services/{service}/Maps/{sid}/Items/k{{k}}"  # the writer fills in k
    return Target("sync-server", server.ws_url, server.port, path, server.proc.pid, server.stop)


class Subscribers(Protocol):
    """What a write phase needs of its subscribers: ``Clients`` here, sdk_fanout.py's SDK clients."""

    def start(self, acking: bool, sample_all: bool = False) -> None: ...

    def report(self, expected: int) -> dict[str, Any]: ...


def write_phase(
    target: Target,
    clients: Subscribers,
    pids: list[int],
    n: int,
    label: str,
    acking: bool,
    rate: float | None,
    seconds: float,
    writers: int,
) -> tuple[dict[str, Any], list[str]]:
    """One write phase (a burst with ``writers`` in flight, or ``rate`` writes/s) and its figures,
    printed; returns them and what was lost (missed, duplicated, out of order, closed, or skipped
    without the server having conflated it)."""
    clients.start(acking, sample_all=rate is not None)
    time.sleep(0.2)
    conflated0 = conflated_frames(target)
    cpu0, calls0 = cpu_s(pids), write_calls(pids)
    written, t0 = uvloop.run(write_loop(target.http_port, target.write_path, seconds, rate, writers))
    agg = clients.report(written)
    cpu, calls = cpu_s(pids) - cpu0, write_calls(pids) - calls0
    conflated1 = conflated_frames(target)
    conflated = None if conflated0 is None or conflated1 is None else conflated1 - conflated0
    total = agg["total"]
    span = max(1e-9, agg["last"] - t0)
    fig = {
        "rate": total / span,
        "cpu_us": cpu * 1e6 / max(1, total),
        "writes_per_delivery": calls / max(1, total),
        "p50": percentile(agg["lat"], 50),
        "p99": percentile(agg["lat"], 99),
        "writes": written,
        "total": total,
    }
    spread = ""
    if "first" in agg:  # paced: when a write's first and last subscriber had it (medians over the writes)
        fig["first"], fig["final"] = agg["first"], agg["final"]
        spread = f" receipts {fig['first']:.1f}–{fig['final']:.1f} ms"
    skipped = f" skipped={agg['skipped']}" if "skipped" in agg else ""  # states never seen (conflated)
    if conflated is not None:
        skipped += f" conflated={conflated}"  # what the server says it conflated meanwhile
    print(
        f"  {target.name:11s} N={n:<5d} {label:9s} writes={written:<6d} deliveries={total}/{written * n}{skipped} "
        f"({fig['rate']:,.0f}/s)  cpu/delivery={fig['cpu_us']:.1f} µs  "
        f"write calls/delivery={fig['writes_per_delivery']:.2f}  p50={fig['p50']:.1f} ms p99={fig['p99']:.1f} ms"
        + spread,
        flush=True,
    )
    problems = []
    if agg["missed"]:
        problems.append(f"{agg['missed']} subscribers missed messages")
    if agg["dup"]:
        problems.append(f"{agg['dup']} subscribers got duplicates")
    if agg["disorder"]:
        problems.append(f"{agg['disorder']} out-of-order receipts")
    if agg.get("lost"):
        problems.append(f"{agg['lost']} connections closed")
    if isinstance(clients, Clients) and agg["skipped"] != (conflated or 0):  # raw clients count exactly
        problems.append(f"{agg['skipped']} states skipped, {conflated or 0} conflated by the server")
    return fig, problems


def run_target(target: Target, tokens: list[str], sid: str, n: int, args: argparse.Namespace) -> dict[str, Any]:
    """Connect N subscribers to ``target`` and run the write phases; returns the figures."""
    res: dict[str, Any] = {}
    time.sleep(1.0)  # settled: what a server allocates as it starts (its first background passes) is not per connection
    pids = tree(target.pid)
    before_rss, before_cpu = rss_kb(pids), cpu_s(pids)
    clients = Clients(target.ws_url, tokens, sid, args.compression, args.clients)
    try:
        subscribed, wall = clients.ready()
        pids = tree(target.pid)
        res["connect_ms"] = (cpu_s(pids) - before_cpu) * 1000 / max(1, subscribed)
        res["connect_wall"] = wall
        time.sleep(1.0)
        res["idle_kb"] = (rss_kb(pids) - before_rss) / max(1, subscribed)
        if subscribed != n:
            res["fail"] = f"{n - subscribed} of {n} subscribers did not subscribe"
            return res
        # the acking burst last: a client that has acknowledged is held to SYNC_WS_ACK_WINDOW, and
        # one that then stops (the never-answering paced phase) would be conflated, as it should be
        phases: list[tuple[str, bool, float | None]] = [("burst", False, None), ("paced", False, args.rate / n)]
        if not args.no_acks:
            phases.append(("burst_ack", True, None))
        for label, acking, rate in phases:
            seconds = args.paced_seconds if rate else args.seconds
            res[label], problems = write_phase(target, clients, pids, n, label, acking, rate, seconds, args.writers)
            if problems:
                res["fail"] = f"{label}: " + ", ".join(problems)
                print(f"  FAIL {target.name} N={n} {res['fail']}", flush=True)
    finally:
        clients.stop()
    return res


def idle_deflate(target: Target, tokens: list[str], sid: str, args: argparse.Namespace) -> float:
    pids = tree(target.pid)
    before = rss_kb(pids)
    clients = Clients(target.ws_url, tokens, sid, True, args.clients)
    try:
        subscribed, _ = clients.ready()
        time.sleep(1.0)
        return (rss_kb(pids) - before) / max(1, subscribed)
    finally:
        clients.stop()


def latency_rounds(
    n: int, tokens: list[str], service: str, sid: str, redis: RedisProcess, args: argparse.Namespace
) -> list[str]:
    """--latency-rounds for one N: prints each round's windows and ratios, then their medians;
    returns what was lost (as run_target's ``fail``)."""
    targets = [
        start_reference(redis, args.server_compression, args.reference_coalesce),
        start_sync(redis, service, sid, args.server_compression),
    ]
    groups: list[Clients] = []
    failures: list[str] = []
    # p50, p99 of every receipt; first, final: of a write's first and last receipt (median over writes)
    ratios: dict[str, list[float]] = {"p50": [], "p99": [], "first": [], "final": []}
    try:
        time.sleep(1.0)
        for target in targets:
            group = Clients(target.ws_url, tokens, sid, args.compression, args.clients)
            groups.append(group)
            subscribed, _ = group.ready()
            if subscribed != n:
                return [f"{target.name} N={n}: {n - subscribed} of {n} subscribers did not subscribe"]
        for i, target in enumerate(targets):  # not timed: a server's first writes after the connects are slower
            _, problems = write_phase(target, groups[i], tree(target.pid), n, "warm-up", False, args.rate / n, 2.0, 1)
            if problems:  # but checked, as every window
                failures.append(f"{target.name} N={n} warm-up: " + ", ".join(problems))
        for r in range(args.latency_rounds):
            figs: dict[int, dict[str, Any]] = {}
            for i in (0, 1) if r % 2 == 0 else (1, 0):
                target = targets[i]
                figs[i], problems = write_phase(
                    target, groups[i], tree(target.pid), n, f"paced {r + 1}", False, args.rate / n,
                    args.paced_seconds, args.writers,
                )  # fmt: skip
                if problems:
                    failures.append(f"{target.name} N={n} round {r + 1}: " + ", ".join(problems))
            for key in ratios:
                if key in figs[0] and key in figs[1]:
                    ratios[key].append(figs[1][key] / figs[0][key])
            last = ", ".join(f"{key} {v[-1]:.2f}x" for key, v in ratios.items() if v)
            print(f"  round {r + 1}: sync-server ÷ reference {last}", flush=True)
    finally:
        for group in groups:
            group.stop()
        for target in targets:
            target.stop()
    print(
        f"N={n:,}: sync-server ÷ reference over {args.latency_rounds} rounds, median [lowest–highest]: "
        + ", ".join(f"{key} {statistics.median(v):.2f}x [{min(v):.2f}–{max(v):.2f}]" for key, v in ratios.items() if v),
        flush=True,
    )
    return failures


# -- the table --------------------------------------------------------------------------------------


def fmt_rate(x: float) -> str:
    return f"{x / 1000:.0f}k" if x >= 10000 else f"{x / 1000:.1f}k"


def ratio(sync: float | None, ref: float | None) -> str:
    if not sync or not ref or sync != sync or ref != ref:
        return ""
    return f" ({sync / ref:.2f}x)"


def table(ns: list[int], results: dict[int, dict[str, dict[str, Any]]]) -> None:
    def get(n: int, server: str, *keys: str) -> float | None:
        v: Any = results.get(n, {}).get(server, {})
        for k in keys:
            if not isinstance(v, dict) or k not in v:
                return None
            v = v[k]
        return float(v)

    rows: list[tuple[str, list[str]]] = []

    def row(title: str, fmt: Any, *keys: str, ref_keys: tuple[str, ...] | None = None) -> None:
        cells = []
        for n in ns:
            r = get(n, "reference", *(ref_keys or keys))
            s = get(n, "sync-server", *keys)
            cells.append(f"{fmt(r) if r is not None else '-'} / {fmt(s) if s is not None else '-'}{ratio(s, r)}")
        rows.append((title, cells))

    row("deliveries/s, burst, clients that never answer", fmt_rate, "burst", "rate")
    row("deliveries/s, burst, clients that ack as the SDK (vs ref never answering)", fmt_rate, "burst_ack", "rate",
        ref_keys=("burst", "rate"))  # fmt: skip
    row("deliveries/s, burst, clients that ack (both acked)", fmt_rate, "burst_ack", "rate")
    row("server CPU µs/delivery, never answer", lambda x: f"{x:.1f}", "burst", "cpu_us")
    row("server CPU µs/delivery, acking (vs ref never answering)", lambda x: f"{x:.1f}", "burst_ack", "cpu_us",
        ref_keys=("burst", "cpu_us"))  # fmt: skip
    row("server write calls per delivery, never answer", lambda x: f"{x:.2f}", "burst", "writes_per_delivery")
    row("publish→receipt p50 ms at 2,000 deliveries/s", lambda x: f"{x:.1f}", "paced", "p50")
    row("publish→receipt p99 ms at 2,000 deliveries/s", lambda x: f"{x:.1f}", "paced", "p99")
    row("idle KB/connection, no deflate offered", lambda x: f"{x:.1f}", "idle_kb")
    row("idle KB/connection, deflate offered", lambda x: f"{x:.1f}", "idle_kb_deflate")
    row("connect+init+subscribe, server CPU ms/client", lambda x: f"{x:.2f}", "connect_ms")
    row("connect+init+subscribe, wall s for all N", lambda x: f"{x:.2f}", "connect_wall")
    width = max(len(t) for t, _ in rows)
    colw = [max(len(f"N={n:,}"), *(len(c[i]) for _, c in rows)) for i, n in enumerate(ns)]
    print()
    print("reference / sync-server (ratio sync-server ÷ reference)")
    print(f"{'':{width}}  " + "  ".join(f"{f'N={n:,}':>{w}}" for n, w in zip(ns, colw, strict=True)))
    for title, cells in rows:
        print(f"{title:{width}}  " + "  ".join(f"{c:>{w}}" for c, w in zip(cells, colw, strict=True)))


# -- main -------------------------------------------------------------------------------------------


def populate(
    redis: RedisProcess, setup: ServerProcess, ns: list[int]
) -> tuple[Any, str, dict[int, str], dict[int, str]]:
    """An API key, a Service, and per N one object to fan out from and one with no events (the
    deflate pass's): (key, service SID, {N: object SID}, {N: idle object SID})."""
    from storage import Store, accounts

    async def make_key() -> Any:
        store = await Store.connect(redis.url)
        try:
            return await accounts.create_key(store, ACCOUNT_SID, "bench")
        finally:
            await store.close()

    key = asyncio.run(make_key())
    with httpx.Client(base_url=setup.base_url, auth=(ACCOUNT_SID, AUTH_TOKEN)) as http:
        service = http.post("/v1/Services", data={"FriendlyName": "bench"}).json()["sid"]
        docs, idle_docs = {}, {}
        coll = "Documents" if KIND == "document" else "Maps"
        for n in ns:
            for name, into in ((f"fan-{n}", docs), (f"idle-{n}", idle_docs)):
                into[n] = http.post(f"/v1/Services/{service}/{coll}", data={"UniqueName": name}).json()["sid"]
            for k in range(100 if KIND == "map" else 0):  # the items the writes update
                http.post(f"/v1/Services/{service}/Maps/{docs[n]}/Items", data={"Key": f"k{k}", "Data": "{}"})
    return key, service, docs, idle_docs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subscribers", default="100,1000,5000")
    ap.add_argument("--quick", action="store_true", help="N = 100,1000")
    ap.add_argument("--seconds", type=float, default=4.0, help="length of each burst phase")
    ap.add_argument("--paced-seconds", type=float, default=4.0, help="length of the paced phase (at least 6 writes)")
    ap.add_argument("--rate", type=float, default=2000.0, help="deliveries/s offered in the paced phase")
    ap.add_argument("--writers", type=int, default=4, help="writes in flight in the burst phases")
    ap.add_argument("--clients", type=int, default=2, help="subscriber processes")
    ap.add_argument("--servers", default="reference,sync", help="which of reference,sync to run")
    ap.add_argument("--no-deflate", action="store_true", help="skip the idle memory with deflate offered")
    ap.add_argument("--no-acks", action="store_true", help="skip the acking burst phase")
    ap.add_argument("--kind", choices=["document", "map"], default="document", help="subscribe to and update this")
    ap.add_argument("--compression", action="store_true", help="subscribers offer permessage-deflate in every phase")
    ap.add_argument(
        "--reference-coalesce",
        action="store_true",
        help="the reference writes the frames of one pub/sub read in one write per connection",
    )
    ap.add_argument("--server-compression", action="store_true", help="the servers accept it (SYNC_WS_COMPRESSION)")
    ap.add_argument(
        "--latency-rounds", type=int, default=0, help="only the paced phase: K rounds in turns, both servers up"
    )
    args = ap.parse_args()
    global KIND
    KIND = args.kind
    ns = [100, 1000] if args.quick else [int(x) for x in args.subscribers.split(",")]
    servers = args.servers.split(",")
    redis = RedisProcess()
    setup = ServerProcess(redis_url=redis.url).start()
    failures: list[str] = []
    results: dict[int, dict[str, dict[str, Any]]] = {}
    try:
        key, service, docs, idle_docs = populate(redis, setup, ns)
        setup.stop()
        mode = "frames of one pub/sub read coalesced" if args.reference_coalesce else "broadcast() per message"
        print(
            f"fan-out bench: 1 server process each, {os.cpu_count()} cores, {args.clients} client processes, "
            f"{args.seconds:g} s bursts with {args.writers} writes in flight, paced {args.rate:g} deliveries/s; "
            f"reference: {mode}; "
            f"load average {os.getloadavg()[0]:.1f}",
            flush=True,
        )
        for n in ns:
            toks = [mint(ACCOUNT_SID, key.sid, key.secret, f"user{i}", service, 3600) for i in range(n)]
            if args.latency_rounds:
                failures += latency_rounds(n, toks, service, docs[n], redis, args)
                continue
            results[n] = {}
            for which in servers:
                start = (
                    (lambda: start_reference(redis, args.server_compression, args.reference_coalesce))
                    if which == "reference"
                    else (lambda n=n: start_sync(redis, service, docs[n], args.server_compression))
                )
                target = start()
                try:
                    res = run_target(target, toks, docs[n], n, args)
                finally:
                    target.stop()
                if not args.no_deflate:
                    target = start()
                    try:
                        res["idle_kb_deflate"] = idle_deflate(target, toks, idle_docs[n], args)
                    finally:
                        target.stop()
                print(
                    f"  {target.name:11s} N={n:<5d} idle KB/conn={res.get('idle_kb', 0):.1f} "
                    f"(deflate offered: {res.get('idle_kb_deflate', float('nan')):.1f})  "
                    f"connect: {res.get('connect_ms', 0):.2f} ms CPU/client, {res.get('connect_wall', 0):.2f} s wall",
                    flush=True,
                )
                if "fail" in res:
                    failures.append(f"{target.name} N={n}: {res['fail']}")
                results[n][target.name] = res
        if results:
            table(ns, results)
    finally:
        setup.stop()
        redis.stop()
    if failures:
        print("\nFAIL: " + "; ".join(failures))
        sys.exit(1)
    print(
        "\nnothing lost: every subscriber ended at the last write and got each write at most once (in order:"
        " all in the paced phases, one in 10 in the bursts); every state one did not see was a Document state"
        " the server conflated (skipped = conflated)"
    )


if __name__ == "__main__":
    main()
