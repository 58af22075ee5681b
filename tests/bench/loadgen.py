"""A lean HTTP/1.1 keep-alive load generator (httpx would be the bottleneck on 2 cores)."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlencode


@dataclass
class Result:
    ok: int = 0
    errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)


class Conn:
    def __init__(self, host: str, port: int, auth: tuple[str, str]) -> None:
        self.host, self.port = host, port
        self.auth = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def request(self, method: str, path: str, form: dict[str, str] | None = None) -> tuple[int, bytes]:
        assert self.reader and self.writer
        body = urlencode(form).encode() if form else b""
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nAuthorization: {self.auth}\r\n"
            f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode() + body)
        status_line = await self.reader.readline()
        status = int(status_line.split()[1])
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)

    async def close(self) -> None:
        if self.writer:
            self.writer.close()


async def run_load(
    host: str,
    port: int,
    auth: tuple[str, str],
    clients: int,
    seconds: float,
    make_request: Callable[[int, int], tuple[str, str, dict[str, str] | None]],
) -> tuple[Result, float]:
    """``clients`` connections each sending requests back to back for ``seconds``.

    make_request(client_no, seq) -> (method, path, form)."""
    result = Result()
    conns = [Conn(host, port, auth) for _ in range(clients)]
    await asyncio.gather(*(c.open() for c in conns))
    deadline = time.perf_counter() + seconds

    async def worker(n: int, conn: Conn) -> None:
        seq = 0
        while time.perf_counter() < deadline:
            method, path, form = make_request(n, seq)
            seq += 1
            t0 = time.perf_counter()
            status, _ = await conn.request(method, path, form)
            result.latencies_ms.append((time.perf_counter() - t0) * 1000)
            result.statuses[status] = result.statuses.get(status, 0) + 1
            if 200 <= status < 300:
                result.ok += 1
            else:
                result.errors += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(i, c) for i, c in enumerate(conns)))
    elapsed = time.perf_counter() - t0
    await asyncio.gather(*(c.close() for c in conns))
    return result, elapsed


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]
