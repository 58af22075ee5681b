"""The README's first steps, run as printed: its `watch.js` subscriber (Twilio's twilio-sync SDK in
Node) sees the Document change made by its curl step and by its Python helper-library example."""

from __future__ import annotations

import asyncio
import json
import os
import re
import uuid
from typing import Any

import httpx
import pytest

from tests.helpers import ACCOUNT_SID, AUTH_TOKEN, ROOT, SCALE, ServerProcess
from tests.sdk import JS_DIR, ensure_installed
from tests.test_cli import _cli

README = (ROOT / "README.md").read_text()
DEFAULT = "127.0.0.1:8080"


def _block(language: str, first_line: str) -> str:
    """The README's fenced ``language`` block that contains ``first_line``."""
    for body in re.findall(rf"```{language}\n(.*?)```", README, re.S):
        if first_line in body:
            return str(body)
    raise AssertionError(f"no {language} block with {first_line!r} in the README")


async def _line(proc: asyncio.subprocess.Process, prefix: str) -> str:
    assert proc.stdout is not None
    while True:
        raw = await asyncio.wait_for(proc.stdout.readline(), 20 * SCALE)
        if not raw:
            raise AssertionError(f"watch.js ended before printing {prefix!r}")
        line = raw.decode().strip()
        if line.startswith(prefix):
            return line


async def test_the_readme_subscriber_sees_the_readme_writes(
    server: ServerProcess, redis_server: Any, http: httpx.AsyncClient, service: str
) -> None:
    host = f"127.0.0.1:{server.port}"
    created = await http.post(
        f"/v1/Services/{service}/Documents", data={"UniqueName": "settings", "Data": '{"theme":"dark"}'}
    )
    assert created.status_code == 201, created.text
    minted = await asyncio.to_thread(_cli, redis_server.url, "token", "--identity", "alice", "--service", service)
    assert minted.returncode == 0, minted.stderr

    await asyncio.to_thread(ensure_installed)
    script = JS_DIR / f".readme-watch-{uuid.uuid4().hex}.js"  # beside node_modules, as demo/watch.js is
    script.write_text(_block("js", "// watch.js").replace(DEFAULT, host))
    env = {**os.environ, "SYNC_TOKEN": minted.stdout.strip()}
    proc = await asyncio.create_subprocess_exec("node", str(script), env=env, stdout=asyncio.subprocess.PIPE)
    try:
        assert json.loads((await _line(proc, "watching")).split(" ", 2)[2]) == {"theme": "dark"}
        r = await http.post(f"/v1/Services/{service}/Documents/settings", data={"Data": '{"theme":"light"}'})
        assert r.status_code == 200, r.text
        assert await _line(proc, "updated") == 'updated {"theme":"light"}'

        example = _block("python", "from twilio.rest import Client").replace(DEFAULT, host)
        example_env = {"TWILIO_ACCOUNT_SID": ACCOUNT_SID, "TWILIO_AUTH_TOKEN": AUTH_TOKEN, "SERVICE": service}
        with pytest.MonkeyPatch.context() as mp:
            for name, value in example_env.items():
                mp.setenv(name, value)
            await asyncio.to_thread(exec, compile(example, "README.md", "exec"), {})
        assert await _line(proc, "updated") == 'updated {"theme":"blue"}'
    finally:
        proc.kill()
        await proc.wait()
        script.unlink()
