"""The REST side of the checker: Basic-authenticated Sync v1 calls that tell a definite answer from
an unknown one. A write whose request may have reached the server but got no answer (a timeout, a
dropped connection, a 5xx) is *unknown*: it may or may not have taken effect, and the verifier treats
it so. A refused connection never reached the server: the write certainly did nothing."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp


class Unknown(Exception):
    """The request may have been applied: no answer, or a 5xx."""


class NotSent(Exception):
    """The request certainly never reached the server (connection refused)."""


class Rest:
    def __init__(self, url: str, account_sid: str, auth_token: str, timeout_s: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.session = aiohttp.ClientSession(auth=aiohttp.BasicAuth(account_sid, auth_token))

    async def close(self) -> None:
        await self.session.close()

    async def call(
        self, method: str, path: str, data: dict[str, str] | None = None, if_match: str | None = None
    ) -> tuple[int, Any]:
        """(status, JSON body) of a 2xx or 4xx; raises Unknown or NotSent otherwise."""
        headers = {"If-Match": if_match} if if_match is not None else {}
        url = path if path.startswith("http") else self.url + path
        try:
            async with self.session.request(method, url, data=data, headers=headers, timeout=self.timeout) as r:
                if r.status >= 500:
                    raise Unknown(f"{r.status}")
                return r.status, await r.json(content_type=None)
        except aiohttp.ClientConnectorError as exc:
            raise NotSent(str(exc)) from None
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            raise Unknown(type(exc).__name__) from None

    async def ok(self, method: str, path: str, data: dict[str, str] | None = None) -> Any:
        """A call that must succeed (set-up, final reads): retried through outages for up to a minute."""
        for attempt in range(120):
            try:
                status, body = await self.call(method, path, data)
            except (Unknown, NotSent):
                await asyncio.sleep(min(0.5, 0.05 * (attempt + 1)))
                continue
            if status >= 300:
                raise RuntimeError(f"{method} {path}: {status} {body}")
            return body
        raise RuntimeError(f"{method} {path}: no answer for a minute")

    async def items(self, path: str) -> list[dict[str, Any]]:
        """Every item of a List or Map, page after page."""
        found: list[dict[str, Any]] = []
        page: str | None = path + "?PageSize=1000"
        while page:
            body = await self.ok("GET", page)
            found += body["items"]
            page = body["meta"].get("next_page_url")
        return found

    async def event_log(
        self, service: str, sid: str, until: int, wait_s: float = 30.0
    ) -> tuple[list[dict[str, Any]], bool]:
        """An object's event log as the server keeps it (the console's event stream, which sends the
        log and then live changes), read until the event ``until``: (events, complete)."""
        url = f"{self.url}/console/api/Services/{service}/events?object={sid}"
        found: list[dict[str, Any]] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while loop.time() < deadline:
            after = found[-1]["id"] if found else None
            headers = {"Last-Event-ID": str(after)} if after is not None else {}
            try:
                async with self.session.get(url, headers=headers, timeout=aiohttp.ClientTimeout(sock_read=wait_s)) as r:
                    if r.status != 200:
                        raise Unknown(str(r.status))
                    data = ""
                    while loop.time() < deadline:
                        line = (await asyncio.wait_for(r.content.readline(), deadline - loop.time())).decode()
                        if line.startswith("data:"):
                            data = line[5:].strip()
                        elif line.strip() == "" and data:
                            ev = json.loads(data)
                            data = ""
                            if isinstance(ev, dict) and "id" in ev:
                                found.append({k: ev.get(k) for k in ("id", "type", "key", "data")})
                                if ev["id"] >= until:
                                    return found, True
                        elif line == "":
                            break  # the stream ended: connect again from the last id
            except (aiohttp.ClientError, Unknown, TimeoutError):
                await asyncio.sleep(0.2)
        return found, bool(found) and found[-1]["id"] >= until
