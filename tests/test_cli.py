"""The sync-server command: API key management and the account printout."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping

import httpx

from tests.helpers import ACCOUNT_SID, AUTH_TOKEN, ROOT


def _cli(redis_url: str, *args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``sync-server *args`` on this Redis; ``env``: further settings (a Backend's ``env`` on the Cluster)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith(("SYNC_", "TWILIO_", "REDIS_"))}
    full.update(REDIS_URL=redis_url, TWILIO_ACCOUNT_SID=ACCOUNT_SID, TWILIO_AUTH_TOKEN=AUTH_TOKEN, **(env or {}))
    cmd = [sys.executable, "-c", "from app.cli import main; main()", *args]
    return subprocess.run(cmd, env=full, cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_keys_create_list_delete_and_revoked_key_is_refused(server, redis_server) -> None:
    out = _cli(redis_server.url, "keys", "create", "--name", "deploy-bot")
    assert out.returncode == 0, out.stderr
    fields = dict(line.split(":", 1) for line in out.stdout.splitlines() if ":" in line and "(" not in line)
    sid, secret = fields["sid"].strip(), fields["secret"].strip()
    listed = _cli(redis_server.url, "keys", "list")
    assert f"{sid}  deploy-bot" in listed.stdout and secret not in listed.stdout
    with httpx.Client(base_url=server.base_url, auth=(sid, secret)) as c:
        assert c.get("/v1/Services").status_code == 200
        assert _cli(redis_server.url, "keys", "delete", sid).returncode == 0
        time.sleep(0.6)  # the server trusts checked credentials for SYNC_AUTH_CACHE_S (0.5 s in tests)
        assert c.get("/v1/Services").status_code == 401
    assert sid not in _cli(redis_server.url, "keys", "list").stdout
    missing = _cli(redis_server.url, "keys", "delete", sid)
    assert missing.returncode != 0 and "no API key" in missing.stderr


def test_account_prints_the_configured_credentials(redis_server) -> None:
    out = _cli(redis_server.url, "account")
    assert out.returncode == 0
    assert f"TWILIO_ACCOUNT_SID={ACCOUNT_SID}" in out.stdout and f"TWILIO_AUTH_TOKEN={AUTH_TOKEN}" in out.stdout


def test_invalid_setting_is_a_clear_error(redis_server) -> None:
    env_bad = _cli(redis_server.url, "--port", "notaport")
    assert env_bad.returncode != 0 and "invalid int value" in env_bad.stderr
