"""What one Python process pays to broadcast a WebSocket frame, without Redis, HTTP or twilsock.

Usage:  python tests/bench/broadcast_micro.py [--subscribers 100,1000] [--messages 300] [--size 600]
        [--variants new-uvloop-bytes,legacy-uvloop-bytes,...] [--pace yield|burst] [--repeat 2]

Why: fanout.py's reference (reference_ws.py) cost several times the 4–7 µs per delivery that issue
10 measured for a ``websockets.broadcast()`` server; this isolates the broadcast itself so the
reference can be compared with what the library honestly costs.

For each variant, a server process accepts N WebSocket connections from one client process (raw
sockets on uvloop that read and count bytes and never answer), then, on a command, broadcasts
--messages frames of --size bytes, one per event-loop iteration (``--pace yield``, as a server fed by
a pub/sub reader does) or all in one go (``--pace burst``). Server CPU per delivery is utime+stime of
the server process from /proc, from the command until the client has every byte, ÷ (messages × N).
Variants are ``IMPL-LOOP-FRAME``: IMPL ``new`` (websockets.asyncio.server, ``broadcast``), ``legacy``
(websockets.legacy.server, its ``broadcast``) or ``raw`` (a minimal asyncio Protocol that writes the
same pre-built frame bytes to each transport: the floor); LOOP ``uvloop`` or ``asyncio``; FRAME
``bytes`` (binary frame) or ``text`` (a str, sent as a text frame). ``--batch B`` (raw only) writes
B frames joined in one call per connection, as a server that coalesces the frames queued for a
socket; ``--gc-freeze`` freezes the server's heap first. Also printed: write/writev calls per
delivery (``syscw``, uvloop variants), i.e. how many frames each system call carries.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import hashlib
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
TICK = os.sysconf("SC_CLK_TCK")
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def write_calls(pid: int) -> int:
    """write/writev system calls so far (uvloop writes to sockets with them; asyncio's loop sends
    with send(), which this does not count)."""
    line = next(x for x in Path(f"/proc/{pid}/io").read_text().splitlines() if x.startswith("syscw:"))
    return int(line.split()[1])


def ws_header(n: int, opcode: int) -> bytes:
    if n < 126:
        return bytes([0x80 | opcode, n])
    if n < 65536:
        return bytes([0x80 | opcode, 126]) + n.to_bytes(2, "big")
    return bytes([0x80 | opcode, 127]) + n.to_bytes(8, "big")


# -- the server ---------------------------------------------------------------------------------------


class RawServer(asyncio.Protocol):
    """The floor: the opening handshake, then nothing but transport.write of pre-built frames."""

    conns: set[asyncio.Transport] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        if self.transport in RawServer.conns:
            return  # the clients never send anything once connected
        self.buf += data
        if b"\r\n\r\n" not in self.buf:
            return
        key = next(
            line.split(b":", 1)[1].strip()
            for line in self.buf.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
        self.transport.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        RawServer.conns.add(self.transport)

    def connection_lost(self, exc: Exception | None) -> None:
        RawServer.conns.discard(self.transport)


async def serve(impl: str, frame: str, port: int, size: int, pace: str, batch: int, freeze: bool) -> None:
    payload_b = b"x" * size
    payload: str | bytes = payload_b.decode() if frame == "text" else payload_b
    conns: set[Any] = set()

    async def handler(ws: Any, *_: Any) -> None:
        conns.add(ws)
        try:
            await ws.wait_closed()
        finally:
            conns.discard(ws)

    if impl == "new":
        from websockets.asyncio.server import broadcast, serve as ws_serve

        server: Any = await ws_serve(handler, "127.0.0.1", port, compression=None, ping_interval=None, backlog=4096)

        def send() -> None:
            broadcast(conns, payload)
    elif impl == "legacy":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            from websockets.legacy.protocol import broadcast as legacy_broadcast
            from websockets.legacy.server import serve as legacy_serve

        server = await legacy_serve(handler, "127.0.0.1", port, compression=None, ping_interval=None, backlog=4096)

        def send() -> None:
            legacy_broadcast(conns, payload)
    else:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(RawServer, "127.0.0.1", port, backlog=4096)
        # --batch B: B frames pending at once, written in one call per connection (coalescing)
        joined = (ws_header(size, 1 if frame == "text" else 2) + payload_b) * batch

        def send() -> None:
            for t in RawServer.conns:
                t.write(joined)

    reader = asyncio.StreamReader()
    await asyncio.get_running_loop().connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print("listening", flush=True)
    while True:
        line = (await reader.readline()).decode().split()
        if not line:
            break
        if line[0] == "go":
            if freeze:
                gc.freeze()
            for _ in range(int(line[1]) // batch):
                send()
                if pace == "yield":
                    await asyncio.sleep(0)
            print("sent", flush=True)
    server.close()


# -- the client process ---------------------------------------------------------------------------------


class RawClient(asyncio.Protocol):
    """Reads and counts; ``done`` is set once ``expected`` bytes have come in over all connections."""

    total = 0
    expected = 0
    done: asyncio.Event | None = None

    def __init__(self, ready: asyncio.Future[None]) -> None:
        self.ready, self.upgraded, self.buf = ready, False, b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(  # type: ignore[attr-defined]
            f"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )

    def data_received(self, data: bytes) -> None:
        if self.upgraded:
            RawClient.total += len(data)
            if RawClient.done is not None and RawClient.total >= RawClient.expected:
                RawClient.done.set()
            return
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end >= 0:
            assert self.buf.startswith(b"HTTP/1.1 101"), self.buf[:100]
            self.upgraded = True
            RawClient.total += len(self.buf) - end - 4
            self.ready.set_result(None)


async def clients(port: int, n: int) -> None:
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(64)

    async def one() -> None:
        async with gate:
            ready = loop.create_future()
            await loop.create_connection(lambda: RawClient(ready), "127.0.0.1", port)
            await ready

    await asyncio.gather(*(one() for _ in range(n)))
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print("ready", flush=True)
    while True:
        line = (await reader.readline()).decode().split()
        if not line:
            return
        RawClient.expected = int(line[1])  # bytes, counted from zero
        RawClient.total, RawClient.done = 0, asyncio.Event()
        print("armed", flush=True)
        await RawClient.done.wait()
        print("got", flush=True)


# -- the driver -------------------------------------------------------------------------------------------


def run_variant(variant: str, n: int, args: argparse.Namespace) -> list[tuple[float, float]]:
    """(server CPU µs per delivery, write calls per delivery) for each of --repeat measurements."""
    impl, loop, frame = variant.split("-")
    port = free_port()
    me = [sys.executable, str(Path(__file__).resolve())]
    server = subprocess.Popen(
        [*me, "--serve", impl, loop, frame, str(port), "--size", str(args.size), "--pace", args.pace,
         "--batch", str(args.batch)] + (["--gc-freeze"] if args.gc_freeze else []),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert server.stdin and server.stdout
    try:
        assert server.stdout.readline().strip() == "listening"
        client = subprocess.Popen(
            [*me, "--client", str(port), str(n)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert client.stdin and client.stdout
        try:
            assert client.stdout.readline().strip() == "ready"
            time.sleep(0.3)
            per: list[tuple[float, float]] = []
            frame_len = len(ws_header(args.size, 2)) + args.size
            for _ in range(args.repeat):
                client.stdin.write(f"expect {args.messages * n * frame_len}\n")
                client.stdin.flush()
                assert client.stdout.readline().strip() == "armed"
                cpu0, calls0 = cpu_s(server.pid), write_calls(server.pid)
                server.stdin.write(f"go {args.messages}\n")
                server.stdin.flush()
                assert server.stdout.readline().strip() == "sent"
                assert client.stdout.readline().strip() == "got"
                deliveries = args.messages * n
                per.append(
                    ((cpu_s(server.pid) - cpu0) * 1e6 / deliveries, (write_calls(server.pid) - calls0) / deliveries)
                )
                time.sleep(0.2)
            return per
        finally:
            client.stdin.close()
            client.wait(30)
    finally:
        server.stdin.close()
        server.wait(30)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subscribers", default="100,1000")
    ap.add_argument("--messages", type=int, default=300, help="frames per measurement")
    ap.add_argument("--size", type=int, default=600, help="payload bytes per frame")
    ap.add_argument("--variants", default="raw-uvloop-bytes,new-uvloop-bytes,new-uvloop-text,new-asyncio-bytes,"
                    "legacy-uvloop-bytes,legacy-uvloop-text,legacy-asyncio-bytes")  # fmt: skip
    ap.add_argument("--pace", choices=["yield", "burst"], default="yield")
    ap.add_argument("--batch", type=int, default=1, help="raw only: frames joined per write (coalescing)")
    ap.add_argument("--gc-freeze", action="store_true", help="the server freezes its heap before broadcasting")
    ap.add_argument("--repeat", type=int, default=2, help="measurements per variant and N (all printed)")
    ap.add_argument("--serve", nargs=4, metavar=("IMPL", "LOOP", "FRAME", "PORT"), help=argparse.SUPPRESS)
    ap.add_argument("--client", nargs=2, metavar=("PORT", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        impl, loop, frame, port = args.serve
        coro = serve(impl, frame, int(port), args.size, args.pace, args.batch if impl == "raw" else 1, args.gc_freeze)
        if loop == "uvloop":
            import uvloop

            uvloop.run(coro)
        else:
            asyncio.run(coro)
        return
    if args.client:
        import uvloop

        uvloop.run(clients(int(args.client[0]), int(args.client[1])))
        return
    ns = [int(x) for x in args.subscribers.split(",")]
    print(f"broadcast microbench: {args.messages} frames of {args.size} bytes, pace {args.pace}, "
          f"load average {os.getloadavg()[0]:.1f}; server CPU µs per delivery, each measurement "
          f"(write calls per delivery, uvloop only)")  # fmt: skip
    for variant in args.variants.split(","):
        cells = []
        for n in ns:
            per = run_variant(variant, n, args)
            cells.append(f"N={n}: " + " ".join(f"{cpu:.2f}" for cpu, _ in per) + f" ({per[-1][1]:.2f} w/d)")
        print(f"  {variant:22s} " + "   ".join(cells), flush=True)


if __name__ == "__main__":
    main()
