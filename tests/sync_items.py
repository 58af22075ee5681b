"""Shared helpers for the List and Map tests: both collections behave alike except for how an item
is addressed (a server-assigned index, or a user key), so tests are written once over ``kind``."""

from __future__ import annotations

import asyncio
import calendar
import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from storage import ChangeEvent, Store, events

KINDS = ("list", "map")
PLURAL = {"list": "Lists", "map": "Maps", "document": "Documents", "stream": "Streams"}
PREFIX = {"list": "ES", "map": "MP", "document": "ET", "stream": "TO"}
# Twilio codes per collection kind: item not found, item revision mismatch, item Data missing
NOT_FOUND = {"list": 54151, "map": 54201}
MISMATCH = {"list": 54155, "map": 54205}
NO_DATA = {"list": 54156, "map": 54206}


def epoch(stamp: str) -> float:
    """A Twilio ``YYYY-MM-DDTHH:MM:SSZ`` timestamp as seconds since the epoch."""
    return float(calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")))


def expires_in(body: dict[str, Any]) -> float:
    """Seconds from now until the resource's ``date_expires``."""
    return epoch(body["date_expires"]) - time.time()


def item_id(body: dict[str, Any]) -> str:
    """How an item is addressed in its URL: the list index (as text) or the map key."""
    return str(body["index"]) if "index" in body else str(body["key"])


def order_key(kind: str, ident: str) -> Any:
    """Lists order by index (a number), Maps by key (UTF-8 bytes)."""
    return int(ident) if kind == "list" else ident.encode()


@dataclass
class Collection:
    """A List or Map created for one test, with shortcuts to its item URLs."""

    http: httpx.AsyncClient
    service: str
    kind: str
    body: dict[str, Any]

    @property
    def sid(self) -> str:
        return str(self.body["sid"])

    @property
    def path(self) -> str:
        return f"/v1/Services/{self.service}/{PLURAL[self.kind]}/{self.sid}"

    def item_path(self, ident: str | int) -> str:
        """The item's URL path, its key percent-encoded ("." and ".." too: clients drop dot segments)."""
        seg = quote(str(ident), safe="")
        return f"{self.path}/Items/{seg.replace('.', '%2E') if seg in ('.', '..') else seg}"

    async def add(self, key: str = "", data: Any = None, **form: str) -> httpx.Response:
        """Append (list) or create (map, under ``key``) one item; ``data=None`` sends no Data."""
        body = dict(form)
        if data is not None:
            body["Data"] = data if isinstance(data, str) else json.dumps(data)
        if self.kind == "map":
            body["Key"] = key
        return await self.http.post(f"{self.path}/Items", data=body)

    async def added(self, key: str = "", data: Any = None, **form: str) -> dict[str, Any]:
        r = await self.add(key, {} if data is None else data, **form)
        assert r.status_code == 201, r.text
        return dict(r.json())

    async def fill(self, n: int) -> list[str]:
        """Add ``n`` items (map keys k00, k01, …) and return their ids in creation order."""
        return [item_id(await self.added(f"k{i:02d}", {"n": i})) for i in range(n)]

    async def items(self, **query: str) -> list[str]:
        """Every item id the collection lists (one big page)."""
        r = await self.http.get(f"{self.path}/Items", params={"PageSize": "1000", **query})
        assert r.status_code == 200, r.text
        return [item_id(i) for i in r.json()["items"]]


async def create(http: httpx.AsyncClient, service: str, kind: str, **form: str) -> Collection:
    r = await http.post(f"/v1/Services/{service}/{PLURAL[kind]}", data=form)
    assert r.status_code == 201, r.text
    return Collection(http, service, kind, r.json())


async def wait_for_event(store: Store, service: str, sid: str, event_type: str) -> list[ChangeEvent]:
    """The object's event log once it holds ``event_type`` (the sweeper runs every 0.2 s in tests)."""
    log: list[ChangeEvent] = []
    for _ in range(100):
        log = await events.read_since(store, service, sid)
        if any(e.type == event_type for e in log):
            return log
        await asyncio.sleep(0.1)
    raise AssertionError(f"no {event_type} event for {sid}: {[e.type for e in log]}")


async def walk(http: httpx.AsyncClient, url: str, key: str) -> tuple[list[list[str]], dict[str, Any]]:
    """Follow ``next_page_url`` verbatim from ``url``; the pages of item ids and the last page's meta."""
    pages: list[list[str]] = []
    meta: dict[str, Any] = {}
    next_url: str | None = url
    while next_url:
        r = await http.get(next_url)
        assert r.status_code == 200, r.text
        body = r.json()
        pages.append([item_id(i) if key == "items" else i["sid"] for i in body[key]])
        meta = body["meta"]
        next_url = meta["next_page_url"]
    return pages, meta


async def walk_back(http: httpx.AsyncClient, meta: dict[str, Any]) -> list[list[str]]:
    """Follow ``previous_page_url`` verbatim from a page's meta down to page 0; pages, newest first."""
    pages: list[list[str]] = []
    prev_url: str | None = meta["previous_page_url"]
    while prev_url:
        r = await http.get(prev_url)
        assert r.status_code == 200, r.text
        pages.append([item_id(i) for i in r.json()["items"]])
        prev_url = r.json()["meta"]["previous_page_url"]
    return pages
