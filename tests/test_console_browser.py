"""The console in a real browser (Playwright + Debian's Chromium, tests/browser.py): sign in, browse to
a Document, edit it with a conflict (another client wrote meanwhile: the 412 is shown, nothing is
overwritten), and watch a REST write arrive in the live view within a second; no console errors.
It also takes a screenshot of the live view: into docs/console.png (the README's) with
SYNC_UPDATE_SCREENSHOT=1, else into the test's temporary directory, so a test run changes no file."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser import ensure_chromium, timeout_s
from tests.helpers import ACCOUNT_SID, AUTH_TOKEN, ROOT, SCALE, ServerProcess

pytestmark = pytest.mark.timeout(timeout_s(120 * SCALE))
SCREENSHOT = ROOT / "docs" / "console.png"
STEP_MS = 10_000 * SCALE  # the longest any one step may take


async def test_sign_in_browse_edit_with_a_conflict_and_watch_live(
    server: ServerProcess, http: httpx.AsyncClient, service: str, tmp_path: Path
) -> None:
    from playwright.async_api import async_playwright

    chromium = ensure_chromium()
    created = {"UniqueName": "settings", "Data": '{"theme": "dark"}', "Ttl": "3600"}
    doc = (await http.post(f"/v1/Services/{service}/Documents", data=created)).json()
    problems: list[str] = []
    expected = ""  # the failed request a step causes on purpose (Chromium reports it as a console error)

    def on_console(msg: Any) -> None:
        if msg.type == "error" and not (expected and f"status of {expected}" in msg.text):
            problems.append(f"console.{msg.type}: {msg.text}")

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 800})
            page.set_default_timeout(STEP_MS)
            page.on("console", on_console)
            page.on("pageerror", lambda exc: problems.append(f"pageerror: {exc}"))
            await page.goto(server.base_url + "/console")

            # sign in: a wrong token is refused, the right one opens the Services list
            await page.fill("#sid", ACCOUNT_SID)
            await page.fill("#token", "wrong")
            expected = "401"
            await page.click("#signin-button")
            await page.wait_for_selector("#signin-error:has-text('Wrong SID or token')")
            expected = ""
            await page.fill("#token", AUTH_TOKEN)
            await page.click("#signin-button")
            # the Services, a page at a time (the session's server holds every test's Services), or by SID
            await page.wait_for_selector("[data-service]")
            if await page.query_selector(f"[data-service='{service}']") is None:
                await page.fill("#open-service input", service)
                await page.click("#open-service button")
            else:
                await page.click(f"[data-service='{service}']")

            # browse to the Document: data, revision, TTL as time left
            await page.click("[data-object='settings']")
            await page.wait_for_selector("#data")
            assert json.loads(await page.input_value("#data")) == {"theme": "dark"}
            assert await page.text_content("#revision") == doc["revision"]
            assert "left" in (await page.text_content("#view") or "")

            # open the live view, then write through REST: it shows up within a second
            await page.click("#watch")
            await page.wait_for_selector("#live-events tr[data-event-id='0']")
            assert await page.text_content("#live-state") == "live"
            started = time.monotonic()
            r = await http.post(f"/v1/Services/{service}/Documents/settings", data={"Data": '{"theme": "light"}'})
            assert r.status_code == 200
            row = await page.wait_for_selector("#live-events tr[data-event-id='1']", timeout=STEP_MS)
            took = time.monotonic() - started
            print(f"REST write to the live view: {took * 1000:.0f} ms")
            assert took < 1.0 * SCALE, f"the REST write took {took:.2f} s to appear"
            text = await row.text_content() or ""
            assert "document_updated" in text and "REST" in text and "light" in text and r.json()["revision"] in text

            # edit with the stale revision: the 412 conflict is shown and nothing is overwritten
            expected = "412"
            await page.fill("#data", '{"theme": "stale"}')
            await page.click("#save")
            await page.wait_for_selector("#object-message.error:has-text('412')")
            expected = ""
            now = (await http.get(f"/v1/Services/{service}/Documents/settings")).json()
            assert now["data"] == {"theme": "light"}

            # reload, edit again: saved, and the live view shows the console's own write
            await page.click("#reload")
            await page.wait_for_selector(f"#revision:has-text('{now['revision']}')")
            await page.fill("#data", '{"theme": "blue"}')
            await page.click("#save")
            await page.wait_for_selector("#object-message.ok")
            await page.wait_for_selector("#live-events tr[data-event-id='2']")
            assert (await http.get(f"/v1/Services/{service}/Documents/settings")).json()["data"] == {"theme": "blue"}

            # pause holds events back, resume shows them
            await page.click("#live-pause")
            await http.post(f"/v1/Services/{service}/Documents/settings", data={"Data": '{"theme": "paused"}'})
            await page.wait_for_selector("#live-state:has-text('1 waiting')")
            assert await page.query_selector("#live-events tr[data-event-id='3']") is None
            await page.click("#live-pause")
            await page.wait_for_selector("#live-events tr[data-event-id='3']")

            shot = SCREENSHOT if os.environ.get("SYNC_UPDATE_SCREENSHOT") == "1" else tmp_path / "console.png"
            await page.screenshot(path=str(shot))

            # the Service's other tabs: every event of the Service, webhooks, connections
            await page.click("#crumbs a:nth-of-type(2)")
            await page.click("[data-tab='Events']")
            await page.wait_for_selector("#live-state:has-text('live')")
            await http.post(f"/v1/Services/{service}/Lists", data={"UniqueName": "todo"})
            row = await page.wait_for_selector("#live-events tr:has-text('list_created')")
            assert "todo" in (await row.text_content() or "")
            await page.click("[data-tab='Webhooks']")
            await page.wait_for_selector("#webhook-queue")
            await page.click("[data-tab='Connections']")
            await page.wait_for_selector("#connection-count:has-text('0 SDK connection')")
        finally:
            await browser.close()
    assert problems == [], problems
