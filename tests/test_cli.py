"""The sync-server command: API key management and the account printout."""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from storage import Store, accounts
from storage.embedded import url_file
from tests.helpers import ACCOUNT_SID, AUTH_TOKEN, ON_EVERY_BACKEND, ROOT, Backend, ServerProcess


def _cli(redis_url: str, *args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``sync-server *args`` on this Redis; ``env``: further settings (a Backend's ``env`` on the Cluster)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith(("SYNC_", "TWILIO_", "REDIS_"))}
    full.update(REDIS_URL=redis_url, TWILIO_ACCOUNT_SID=ACCOUNT_SID, TWILIO_AUTH_TOKEN=AUTH_TOKEN, **(env or {}))
    cmd = [sys.executable, "-c", "from app.cli import main; main()", *args]
    return subprocess.run(cmd, env=full, cwd=ROOT, capture_output=True, text=True, timeout=60)


@ON_EVERY_BACKEND
def test_keys_create_list_delete_and_revoked_key_is_refused(backend: Backend) -> None:
    cli = functools.partial(_cli, backend.redis_url, env=backend.env)
    out = cli("keys", "create", "--name", "deploy-bot")
    assert out.returncode == 0, out.stderr
    fields = dict(line.split(":", 1) for line in out.stdout.splitlines() if ":" in line and "(" not in line)
    sid, secret = fields["sid"].strip(), fields["secret"].strip()
    listed = cli("keys", "list")
    assert f"{sid}  deploy-bot" in listed.stdout and secret not in listed.stdout
    with httpx.Client(base_url=backend.server.base_url, auth=(sid, secret)) as c:
        assert c.get("/v1/Services").status_code == 200
        assert cli("keys", "delete", sid).returncode == 0
        time.sleep(0.6)  # the server trusts checked credentials for SYNC_AUTH_CACHE_S (0.5 s in tests)
        assert c.get("/v1/Services").status_code == 401
    assert sid not in cli("keys", "list").stdout
    missing = cli("keys", "delete", sid)
    assert missing.returncode != 0 and "no API key" in missing.stderr


@ON_EVERY_BACKEND
def test_account_prints_the_configured_credentials(backend: Backend) -> None:
    out = _cli(backend.redis_url, "account", env=backend.env)
    assert out.returncode == 0
    assert f"TWILIO_ACCOUNT_SID={ACCOUNT_SID}" in out.stdout and f"TWILIO_AUTH_TOKEN={AUTH_TOKEN}" in out.stdout


# standalone only: the setting is refused before any Redis is reached, so a backend changes nothing
def test_invalid_setting_is_a_clear_error(redis_server) -> None:
    env_bad = _cli(redis_server.url, "--port", "notaport")
    assert env_bad.returncode != 0 and "invalid int value" in env_bad.stderr


# -- issue 9, item 16: the admin commands act on the running server's store and account ---------------


def _bare(*args: str, cwd: str | Path = ROOT, **env: str) -> subprocess.CompletedProcess[str]:
    """``sync-server *args`` in a shell that has none of the server's settings (no TWILIO_*, REDIS_*, SYNC_*)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith(("SYNC_", "TWILIO_", "REDIS_"))}
    cmd = [sys.executable, "-c", "from app.cli import main; main()", *args]
    return subprocess.run(cmd, env={**full, **env}, cwd=cwd, capture_output=True, text=True, timeout=60)


def _claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


async def _accounts(url: str) -> list[str]:
    store = await Store.connect(url)
    try:
        return await accounts.list_accounts(store)
    finally:
        await store.close()


async def _add_account(url: str, sid: str) -> None:
    store = await Store.connect(url)
    try:
        await accounts.ensure_account(store, sid, "f" * 32)
    finally:
        await store.close()


# standalone only: what the commands must find is the server's embedded Valkey (its SYNC_DATA_DIR)
def test_admin_commands_without_the_servers_env_act_on_its_account_and_create_none() -> None:
    data_dir = tempfile.mkdtemp(prefix="sync-admin-")
    with ServerProcess(data_dir=data_dir) as server:  # started with TWILIO_ACCOUNT_SID/TWILIO_AUTH_TOKEN
        url = url_file(data_dir).read_text().strip()
        other = "AC" + "e" * 32  # another tenant of the same store: the server's account must still win
        asyncio.run(_add_account(url, other))
        with httpx.Client(base_url=server.base_url, auth=(ACCOUNT_SID, AUTH_TOKEN)) as c:
            r = c.post("/v1/Services", data={"FriendlyName": "the server's"})
            assert r.status_code == 201, r.text
            service = r.json()["sid"]
        before = asyncio.run(_accounts(url))
        assert before == sorted([ACCOUNT_SID, other])

        created = _bare("keys", "create", "--name", "ops", SYNC_DATA_DIR=data_dir)
        assert created.returncode == 0, created.stderr
        fields = dict(line.split(":", 1) for line in created.stdout.splitlines() if ":" in line and "(" not in line)
        with httpx.Client(base_url=server.base_url, auth=(fields["sid"].strip(), fields["secret"].strip())) as c:
            listed = c.get("/v1/Services")
            assert listed.status_code == 200 and [s["sid"] for s in listed.json()["services"]] == [service]
        assert f"account {ACCOUNT_SID}" in created.stderr and url in created.stderr

        shown = _bare("account", "--data-dir", data_dir)
        assert shown.returncode == 0, shown.stderr
        assert f"TWILIO_ACCOUNT_SID={ACCOUNT_SID}" in shown.stdout and f"TWILIO_AUTH_TOKEN={AUTH_TOKEN}" in shown.stdout

        minted = _bare("token", "--identity", "alice", SYNC_DATA_DIR=data_dir)
        assert minted.returncode == 0, minted.stderr
        claims = _claims(minted.stdout.strip())
        assert claims["sub"] == ACCOUNT_SID and claims["grants"]["data_sync"]["service_sid"] == service
        assert f"Service {service}" in minted.stderr

        chosen = _bare("account", "--account", other, SYNC_DATA_DIR=data_dir)
        assert chosen.returncode == 0 and f"TWILIO_ACCOUNT_SID={other}" in chosen.stdout, chosen.stderr
        unknown = _bare("keys", "list", "--account", "AC" + "d" * 32, SYNC_DATA_DIR=data_dir)
        assert unknown.returncode != 0 and "no account AC" in unknown.stderr and ACCOUNT_SID in unknown.stderr

        assert asyncio.run(_accounts(url)) == before  # no account was created on the way


# no backend: there is no store to find
def test_admin_commands_elsewhere_fail_clearly_and_create_no_store() -> None:
    elsewhere = Path(tempfile.mkdtemp(prefix="sync-elsewhere-"))
    for args in (("keys", "create"), ("account",), ("token", "--identity", "alice"), ("keys", "list")):
        out = _bare(*args, cwd=elsewhere)
        assert out.returncode != 0, out.stdout
        assert f"no sync-server store in {elsewhere.resolve() / 'data'}" in out.stderr, out.stderr
        assert "--data-dir" in out.stderr and "--redis-url" in out.stderr
    assert list(elsewhere.iterdir()) == []  # no ./data appeared


# standalone only: its empty store is a spare database (/13), and a Cluster has database 0 only
def test_admin_commands_never_create_an_account_and_refuse_to_guess_among_several(redis_server) -> None:
    url = redis_server.url.rsplit("/", 1)[0] + "/13"  # a store of its own: an empty database
    asyncio.run(_flush(url))
    empty = _bare("keys", "create", "--redis-url", url)
    assert empty.returncode != 0 and "no account yet" in empty.stderr, empty.stderr
    assert asyncio.run(_accounts(url)) == []
    first, second = "AC" + "1" * 32, "AC" + "2" * 32
    asyncio.run(_add_account(url, first))
    only = _bare("account", "--redis-url", url)
    assert only.returncode == 0 and f"TWILIO_ACCOUNT_SID={first}" in only.stdout, only.stderr
    asyncio.run(_add_account(url, second))
    several = _bare("token", "--identity", "alice", REDIS_URL=url)
    assert several.returncode != 0 and first in several.stderr and second in several.stderr
    assert "--account" in several.stderr
    picked = _bare("--account", second, "keys", "create", REDIS_URL=url)
    assert picked.returncode == 0 and f"account {second}" in picked.stderr, picked.stderr
    assert asyncio.run(_accounts(url)) == [first, second]


async def _flush(url: str) -> None:
    store = await Store.connect(url)
    try:
        await store.redis.flushdb()
    finally:
        await store.close()
