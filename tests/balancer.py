"""A tiny TCP load balancer for the tests and benches: a stand-in for nginx/HAProxy, not part of the product.

Each accepted connection goes to the next node in turn (round robin) and its bytes are piped both
ways untouched, so HTTP keep-alive and WebSocket upgrades pass through as they would behind a layer-4
balancer: one client connection stays on one node, the next one goes to the other. It runs as its own
process (``python -m tests.balancer LISTEN_PORT HOST:PORT ...``) so it costs the test process no
GIL; SIGUSR1 makes it drop every open connection (what a balancer restart does to clients: they
reconnect, to the next node in turn).

Why not nginx: it is not installed here, and a layer-4 proxy shows the one property that matters
(no stickiness: any request or WebSocket may land on any node) in 60 lines.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import socket
import subprocess
import sys
import time
from types import TracebackType
from typing import Any

from storage.embedded import free_port
from tests.helpers import ROOT, SCALE, Endpoint


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


async def serve(port: int, nodes: list[tuple[str, int]]) -> None:
    turn = itertools.cycle(nodes)
    open_pipes: set[asyncio.Future[Any]] = set()

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        host, node_port = next(turn)
        try:
            node_r, node_w = await asyncio.open_connection(host, node_port)
        except OSError:
            client_w.close()
            return
        for sock in (client_w, node_w):
            raw = sock.get_extra_info("socket")
            if raw is not None:
                raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        both = asyncio.gather(_pipe(client_r, node_w), _pipe(node_r, client_w))
        open_pipes.add(both)
        try:
            await both
        except asyncio.CancelledError:
            pass
        finally:
            open_pipes.discard(both)
            client_w.close()
            node_w.close()

    def drop_all() -> None:
        for pipes in list(open_pipes):
            pipes.cancel()

    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, drop_all)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
    async with server:
        await stop.wait()


class Balancer(Endpoint):
    """The balancer as a subprocess on a free port, in front of the servers on ``ports``: an Endpoint
    like ServerProcess, so a test aims at it exactly as it would at one server."""

    def __init__(self, ports: list[int], host: str = "127.0.0.1") -> None:
        self.port = free_port()
        targets = [f"{host}:{p}" for p in ports]
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.balancer", str(self.port), *targets], cwd=ROOT)
        deadline = time.monotonic() + 10 * SCALE
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("test balancer exited")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("test balancer did not start")

    def drop_connections(self) -> None:
        """Close every connection it carries (the clients reconnect through it, to the next node in turn)."""
        self.proc.send_signal(signal.SIGUSR1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> Balancer:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()


def main() -> None:
    port, *targets = sys.argv[1:]
    nodes = [(t.rsplit(":", 1)[0], int(t.rsplit(":", 1)[1])) for t in targets]
    asyncio.run(serve(int(port), nodes))


if __name__ == "__main__":
    main()
