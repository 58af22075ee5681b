"""Twilio's own twilio-sync SDK in Node, driven from Python tests (tests/js/driver.js).

The SDK is installed from the npm registry by ``ensure_installed`` (``npm ci`` from the lock file)
the first time a test needs it, so a fresh clone needs nothing installed by hand but Node 20.
Tokens are minted with the official ``twilio`` helper (``AccessToken`` + ``SyncGrant``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
from collections.abc import Callable
from typing import Any

from twilio.jwt.access_token import AccessToken
from twilio.jwt.access_token.grants import SyncGrant

from tests.helpers import ACCOUNT_SID, ROOT, SCALE

JS_DIR = ROOT / "tests" / "js"
TIMEOUT = 15 * SCALE


def ensure_installed() -> None:
    """``npm ci`` in tests/js when the pinned SDK is not installed yet."""
    if (JS_DIR / "node_modules" / "twilio-sync" / "package.json").exists():
        return
    subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=JS_DIR, check=True, stdout=subprocess.DEVNULL)


def token(key_sid: str, secret: str, service_sid: str | None, identity: str, ttl: int = 3600) -> str:
    """An access token exactly as Twilio's Python helper library mints it."""
    t = AccessToken(ACCOUNT_SID, key_sid, secret, identity=identity, ttl=ttl)
    t.add_grant(SyncGrant(service_sid=service_sid))
    return str(t.to_jwt())


class SdkError(Exception):
    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(f"{error.get('status')}/{error.get('code')}: {error.get('message')}")
        self.status = error.get("status")
        self.code = error.get("code")
        self.message = error.get("message")


class Sdk:
    """One Node process holding any number of SyncClients and their objects."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.events: list[dict[str, Any]] = []
        self._used: set[int] = set()
        self._proc: asyncio.subprocess.Process | None = None
        self._replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._next = 0
        self._changed = asyncio.Condition()
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> Sdk:
        ensure_installed()
        env = {**os.environ, "SYNC_URL": self.base_url}
        self._proc = await asyncio.create_subprocess_exec(
            "node", str(JS_DIR / "driver.js"), cwd=JS_DIR, env=env,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=2**24,
        )  # fmt: skip
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        while line := await self._proc.stdout.readline():
            msg = json.loads(line)
            if "id" in msg and msg["id"] in self._replies:
                self._replies.pop(msg["id"]).set_result(msg)
            else:
                async with self._changed:
                    self.events.append(msg)
                    self._changed.notify_all()

    async def cmd(self, op: str, **fields: Any) -> Any:
        """Run one driver command; return its result or raise SdkError with the SDK's error."""
        assert self._proc is not None and self._proc.stdin is not None
        self._next += 1
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._replies[self._next] = fut
        self._proc.stdin.write(json.dumps({"id": self._next, "op": op, **fields}).encode() + b"\n")
        await self._proc.stdin.drain()
        msg = await asyncio.wait_for(fut, TIMEOUT)
        if not msg["ok"]:
            raise SdkError(msg["error"])
        return msg["result"]

    async def client(self, name: str, tok: str, **options: Any) -> None:
        await self.cmd("client", name=name, token=tok, options=options)

    async def open(self, client: str, kind: str, arg: Any, name: str) -> Any:
        return await self.cmd("open", client=client, kind=kind, arg=arg, **{"as": name})

    async def open_both(self, kind: str, arg: Any, name: str, arg_b: Any = None) -> tuple[str, str]:
        """Open one object on client "a" (as name + "a") and client "b" (as name + "b")."""
        await self.open("a", kind, arg, name + "a")
        await self.open("b", kind, arg if arg_b is None else arg_b, name + "b")
        return name + "a", name + "b"

    async def call(self, obj: str, method: str, *args: Any, fn: str | None = None) -> Any:
        extra = {"fn": fn} if fn is not None else {}
        return await self.cmd("call", obj=obj, method=method, args=list(args), **extra)

    def matching(self, event: str, source: str) -> list[dict[str, Any]]:
        """Every event of that name from that source so far (for exactly-once assertions)."""
        return [e for e in self.events if e.get("event") == event and e.get("source") == source]

    async def expect(
        self, event: str, source: str, match: Callable[[list[Any]], bool] | None = None, wait_s: float = TIMEOUT
    ) -> list[Any]:
        """The args of the first not yet expected event of that name and source (waits for it)."""

        def find() -> list[Any] | None:
            for i, e in enumerate(self.events):
                if i in self._used or e.get("event") != event or e.get("source") != source:
                    continue
                if match is None or match(e["args"]):
                    self._used.add(i)
                    return list(e["args"])
            return None

        async def wait() -> list[Any]:
            async with self._changed:
                while (found := find()) is None:
                    await self._changed.wait()
                return found

        try:
            return await asyncio.wait_for(wait(), wait_s)
        except TimeoutError:
            seen = [e for e in self.events if e.get("source") == source]
            raise AssertionError(f"no {event!r} from {source!r} within {wait_s}s; saw {seen}") from None

    async def connected(self, client: str) -> None:
        await self.expect("connectionStateChanged", client, lambda a: a[0] == "connected")

    async def close(self) -> None:
        if self._proc is None:
            return
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        try:
            await asyncio.wait_for(self._proc.wait(), 5)
        except TimeoutError:
            self._proc.kill()
            await self._proc.wait()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
