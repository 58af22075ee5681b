"""The console's revision history in a real browser (Playwright + Debian's Chromium, tests/browser.py),
checked over REST: a Document's history newest first, a page at a time; "Restore" of an old revision
is the ordinary update with If-Match, so it becomes a new revision and a new event; a write made
meanwhile turns the restore into a 412 that is said, overwrites nothing, and reloads the view. For a
Map: the "as of" picker (event id or time) shows the items as they were, and a removed item's
history restores it; a List item's history restores with If-Match."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from tests.browser import ensure_chromium, timeout_s
from tests.helpers import ACCOUNT_SID, AUTH_TOKEN, SCALE, Endpoint

pytestmark = pytest.mark.timeout(timeout_s(60 * SCALE))
STEP_MS = 10_000 * SCALE  # the longest any one step may take


class Page:
    """A signed-in console page, the failed requests it causes on purpose, and the problems seen."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.expected = ""  # a status a step causes on purpose (Chromium logs it as a console error)
        self.problems: list[str] = []

    def on_console(self, msg: Any) -> None:
        if msg.type == "error" and not (self.expected and f"status of {self.expected}" in msg.text):
            self.problems.append(f"console.{msg.type}: {msg.text}")

    async def revisions(self) -> list[str]:
        rows = await self.page.query_selector_all("#history tbody tr")
        return [await r.get_attribute("data-revision") for r in rows]


@asynccontextmanager
async def console(server: Endpoint, service: str) -> AsyncIterator[Page]:
    """The console signed in and opened on ``service``; fails the test on any unexpected error."""
    from playwright.async_api import async_playwright

    chromium = ensure_chromium()
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 800})
            page.set_default_timeout(STEP_MS)
            c = Page(page)
            page.on("console", c.on_console)
            page.on("pageerror", lambda exc: c.problems.append(f"pageerror: {exc}"))
            await page.goto(server.base_url + "/console")
            await page.fill("#sid", ACCOUNT_SID)
            await page.fill("#token", AUTH_TOKEN)
            await page.click("#signin-button")
            await page.wait_for_selector("[data-service]")
            await page.fill("#open-service input", service)
            await page.click("#open-service button")
            await page.wait_for_selector("[data-tab='Documents'].on")
            yield c
        finally:
            await browser.close()
    assert c.problems == [], c.problems


async def _eventually(check: Callable[[], Any]) -> None:
    """Playwright waits for selectors; this waits for a condition on the page's state."""
    for _ in range(int(100 * SCALE)):
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the page never got there")


async def test_document_history_restore_with_one_click_and_a_conflict(
    server: Endpoint, http: httpx.AsyncClient, service: str
) -> None:
    url = f"/v1/Services/{service}/Documents/prefs"
    r = await http.post(f"/v1/Services/{service}/Documents", data={"UniqueName": "prefs", "Data": '{"v": 1}'})
    assert r.status_code == 201, r.text
    for v in (2, 3):
        assert (await http.post(url, data={"Data": json.dumps({"v": v})})).status_code == 200
    first = (await http.get(url + "/Revisions/0")).json()
    assert first["data"] == {"v": 1}

    async with console(server, service) as c:
        page = c.page
        await page.click("[data-object='prefs']")
        await page.click("#history")

        # newest first, with date, updated_by and a data preview; no Restore on the current one
        await page.wait_for_selector("#history tr[data-revision='0']")
        assert await c.revisions() == ["2", "1", "0"]
        assert await page.text_content("#history-current") == "2"
        assert await page.query_selector("[data-restore='2']") is None
        row = await page.text_content("#history tr[data-revision='0']") or ""
        assert '{"v":1}' in row and "system" in row and first["date_updated"] in row

        # a page at a time
        await page.fill("#history-size", "2")
        await page.press("#history-size", "Tab")  # "change" fires when the field is left
        await _eventually(lambda: _is(c.revisions(), ["2", "1"]))
        await page.click("#history-older")
        await _eventually(lambda: _is(c.revisions(), ["0"]))

        # one click restores the first revision: the old data at a new revision, a new history entry
        await page.click("[data-restore='0']")
        await page.wait_for_selector("#history-message.ok:has-text('Restored revision 0')")
        now = (await http.get(url)).json()
        assert now["data"] == {"v": 1}
        assert now["revision"] not in ("0", "1", "2")
        revs = (await http.get(url + "/Revisions")).json()["revisions"]
        assert [x["revision"] for x in revs] == [now["revision"], "2", "1", "0"]
        assert revs[0]["data"] == {"v": 1} and revs[0]["event_id"] > revs[1]["event_id"]  # an event like any other
        # the view was read again: the restore is the current revision, on top
        await page.wait_for_selector(f"#history-current:has-text('{now['revision']}')")
        assert await c.revisions() == [now["revision"], "2"]

        # someone writes meanwhile: the restore is refused (412), said, nothing overwritten, view reloaded
        meanwhile = (await http.post(url, data={"Data": '{"v": "meanwhile"}'})).json()
        c.expected = "412"
        await page.click("[data-restore='2']")
        await page.wait_for_selector("#history-message.error:has-text('412')")
        assert "someone wrote" in (await page.text_content("#history-message") or "")
        await page.wait_for_selector(f"#history-current:has-text('{meanwhile['revision']}')")
        c.expected = ""
        assert await c.revisions() == [meanwhile["revision"], now["revision"]]
        after = (await http.get(url)).json()
        assert after["data"] == {"v": "meanwhile"} and after["revision"] == meanwhile["revision"]
        assert len((await http.get(url + "/Revisions")).json()["revisions"]) == 5  # no entry for the refused one


async def _is(got: Any, want: Any) -> bool:
    return bool(await got == want)


async def test_map_as_of_by_event_id_and_time_restoring_a_removed_item_and_a_list_item(
    server: Endpoint, http: httpx.AsyncClient, service: str
) -> None:
    base = f"/v1/Services/{service}/Maps"
    assert (await http.post(base, data={"UniqueName": "colors"})).status_code == 201
    items = f"{base}/colors/Items"
    red = (await http.post(items, data={"Key": "a", "Data": '{"c": "red"}'})).json()
    await asyncio.sleep(0.05)
    red_time = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    await asyncio.sleep(0.05)
    assert (await http.post(items + "/a", data={"Data": '{"c": "blue"}'})).status_code == 200
    b_made = (await http.post(items, data={"Key": "b", "Data": '{"c": "green"}'})).json()
    green = (await http.get(f"{items}/b/Revisions/{b_made['revision']}")).json()["event_id"]
    assert (await http.delete(items + "/b")).status_code == 204
    assert (await http.post(f"/v1/Services/{service}/Lists", data={"UniqueName": "todo"})).status_code == 201
    todo = f"/v1/Services/{service}/Lists/todo/Items"
    milk = (await http.post(todo, data={"Data": '{"t": "milk"}'})).json()
    oat = (await http.post(f"{todo}/0", data={"Data": '{"t": "oat milk"}'})).json()

    async with console(server, service) as c:
        page = c.page
        await page.click("[data-tab='Maps']")
        await page.click("[data-object='colors']")

        # as of an event id: b as it was before its removal, a already blue
        await page.fill("#as-of", str(green))
        await page.click("#as-of-show")
        await page.wait_for_selector("#as-of-items tr[data-item='b']")
        assert "blue" in (await page.text_content("#as-of-items tr[data-item='a']") or "")
        assert "green" in (await page.text_content("#as-of-items tr[data-item='b']") or "")

        # as of a time: only a, still red; the time picker fills the field in UTC
        await page.fill("#as-of", red_time)
        await page.click("#as-of-show")
        await page.wait_for_selector("#as-of-items tr[data-item='a']:has-text('red')")
        assert await page.query_selector("#as-of-items tr[data-item='b']") is None
        await page.fill("#as-of-time", "2026-01-05T10:00:00")
        assert (await page.input_value("#as-of")).endswith(":00.000Z")

        # b's history from the past view: removed now (the view's read of it is a 404), restorable
        c.expected = "404"
        await page.fill("#as-of", str(green))
        await page.click("#as-of-show")
        await page.click("#as-of-items [data-history='b']")
        await page.wait_for_selector(f"#history tr[data-revision='{b_made['revision']}']")
        assert await page.text_content("#history-current") == "removed"
        assert "(removed)" in (await page.text_content("#history tbody tr:first-child") or "")
        c.expected = ""
        await page.click(f"[data-restore='{b_made['revision']}']")
        await page.wait_for_selector("#history-message.ok")
        b = (await http.get(items + "/b")).json()
        assert b["data"] == {"c": "green"}

        # a's history: restore red over blue, with If-Match
        await page.click("#history-back")
        await page.click("[data-history='a']")
        await page.click(f"[data-restore='{red['revision']}']")
        await page.wait_for_selector("#history-message.ok")
        a = (await http.get(items + "/a")).json()
        assert a["data"] == {"c": "red"} and int(a["revision"], 16) > int(b["revision"], 16)
        assert (await http.get(items + "/a/Revisions")).json()["revisions"][0]["revision"] == a["revision"]

        # a point the server refuses is shown as it says it
        c.expected = "400"
        await page.click("#history-back")
        await page.fill("#as-of", "yesterday")
        await page.click("#as-of-show")
        await page.wait_for_selector("#as-of-message.error:has-text('400')")
        c.expected = ""

        # a List item: its history from the List's items, restored with If-Match
        await page.click("#crumbs a:nth-of-type(2)")
        await page.click("[data-tab='Lists']")
        await page.click("[data-object='todo']")
        await page.click("[data-history='0']")
        await page.click(f"[data-restore='{milk['revision']}']")
        await page.wait_for_selector("#history-message.ok")
        now = (await http.get(f"{todo}/0")).json()
        assert now["data"] == {"t": "milk"} and now["revision"] != oat["revision"]
        assert "(current)" in (await page.text_content(f"#history tr[data-revision='{now['revision']}']") or "")
