"""A real, tiny HTTP/1.1 webhook receiver on a free port (asyncio, keep-alive), for tests and the bench.

It records every POST with its form parameters, answers with programmable statuses, can hold
requests unanswered (a slow receiver), go down (stop listening) and come back on the same port, and
checks X-Twilio-Signature with the official helper's ``RequestValidator``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from dataclasses import dataclass
from urllib.parse import parse_qsl

from tests.helpers import AUTH_TOKEN, SCALE


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    form: dict[str, str]
    status: int
    signature_valid: bool


class Receiver:
    def __init__(
        self,
        path: str = "/hook",
        validate: bool = True,
        auth_token: str = AUTH_TOKEN,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.path = path
        self.tls = tls
        self.port = 0
        self.requests: list[Received] = []
        self.statuses: list[int] = []  # answers for the next requests; 200 once empty
        self.fail_all = False  # answer 500 to everything
        self.hold: asyncio.Event | None = None  # if set to an unset Event, requests wait for it
        self.held = 0  # requests currently waiting on ``hold``
        self._validator = None
        if validate:
            from twilio.request_validator import RequestValidator

            self._validator = RequestValidator(auth_token)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}{self.path}"

    @property
    def delivered(self) -> list[Received]:
        """Requests answered with a 2xx, in arrival order."""
        return [r for r in self.requests if 200 <= r.status < 300]

    async def start(self) -> Receiver:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        """Go down: stop listening and drop open connections (the port stays ours to restart)."""
        if self._server is None:
            return
        self._server.close()
        for w in list(self._writers):
            w.close()
        with contextlib.suppress(Exception):
            await self._server.wait_closed()
        self._server = None

    async def wait_for(self, count: int, within: float = 20.0) -> list[Received]:
        """Wait until ``count`` requests were delivered (2xx); return them."""
        deadline = time.monotonic() + within * SCALE
        while len(self.delivered) < count:
            if time.monotonic() > deadline:
                got = [(r.form.get("EventType"), r.status) for r in self.requests]
                raise AssertionError(f"expected {count} deliveries, got {len(self.delivered)}: {got[-20:]}")
            await asyncio.sleep(0.02)
        return self.delivered

    async def wait_held(self, count: int = 1, within: float = 20.0) -> None:
        deadline = time.monotonic() + within * SCALE
        while self.held < count:
            assert time.monotonic() < deadline, f"expected {count} held requests, got {self.held}"
            await asyncio.sleep(0.02)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                _method, target, _ = lines[0].split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ln)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                if self.hold is not None and not self.hold.is_set():
                    self.held += 1
                    try:
                        await self.hold.wait()
                    finally:
                        self.held -= 1
                status = 500 if self.fail_all else (self.statuses.pop(0) if self.statuses else 200)
                form = dict(parse_qsl(body.decode(), keep_blank_values=True))
                valid = self._check(target, form, headers.get("x-twilio-signature", ""))
                self.requests.append(Received(target, headers, form, status, valid))
                writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n".encode())
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, asyncio.CancelledError):
            pass  # the client went away, or the receiver is shutting down
        finally:
            self._writers.discard(writer)
            writer.close()

    def _check(self, target: str, form: dict[str, str], sig: str) -> bool:
        if self._validator is None:
            return True
        scheme = "https" if self.tls else "http"
        return bool(self._validator.validate(f"{scheme}://127.0.0.1:{self.port}{target}", form, sig))
