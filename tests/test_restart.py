"""Durability: the embedded Valkey keeps every acknowledged write across a server restart."""

from __future__ import annotations

import signal
import tempfile
from pathlib import Path

import httpx

from tests.helpers import ACCOUNT_SID, AUTH_TOKEN, ServerProcess

AUTH = (ACCOUNT_SID, AUTH_TOKEN)


def _write_everything(base: str) -> tuple[str, dict[str, int]]:
    with httpx.Client(base_url=base, auth=AUTH, timeout=10) as c:
        sid = c.post("/v1/Services", data={"FriendlyName": "durable"}).json()["sid"]
        for n in range(20):
            c.post(f"/v1/Services/{sid}/Documents", data={"UniqueName": f"doc{n}", "Data": f'{{"n": {n}}}'})
        for n in range(5):
            c.post(f"/v1/Services/{sid}/Documents/doc0", data={"Data": f'{{"n": {100 + n}}}'})
        c.post(f"/v1/Services/{sid}/Maps", data={"UniqueName": "m"})
        c.post(f"/v1/Services/{sid}/Maps/m/Items", data={"Key": "k", "Data": '{"v": 1}'})
        c.post(f"/v1/Services/{sid}/Lists", data={"UniqueName": "l"})
        c.post(f"/v1/Services/{sid}/Lists/l/Items", data={"Data": '{"v": 2}'})
    return sid, {"doc0": 104, "doc19": 19}


def _read_back(base: str, sid: str, expected: dict[str, int]) -> None:
    with httpx.Client(base_url=base, auth=AUTH, timeout=10) as c:
        docs = c.get(f"/v1/Services/{sid}/Documents?PageSize=100").json()["documents"]
        assert len(docs) == 20
        for name, n in expected.items():
            d = c.get(f"/v1/Services/{sid}/Documents/{name}").json()
            assert d["data"] == {"n": n}
        assert c.get(f"/v1/Services/{sid}/Documents/doc0").json()["revision"] == "5"
        assert c.get(f"/v1/Services/{sid}/Maps/m/Items/k").json()["data"] == {"v": 1}
        assert c.get(f"/v1/Services/{sid}/Lists/l/Items/0").json()["data"] == {"v": 2}


def _write_stop_start_read(data_dir: str, cwd: str | None = None, stop: int = signal.SIGTERM) -> None:
    """Write through a server on its own embedded Valkey, stop it with ``stop``, start a new one on
    the same data dir and read everything back."""
    server = ServerProcess(data_dir=data_dir, cwd=cwd).start()  # no REDIS_URL: it starts its own Valkey
    try:
        sid, expected = _write_everything(server.base_url)
    finally:
        server.stop(stop)  # on SIGKILL its Valkey child is told to stop by PR_SET_PDEATHSIG
    assert (Path(cwd or "/", data_dir) / "redis" / "appendonlydir").is_dir()
    with ServerProcess(data_dir=data_dir, cwd=cwd) as again:  # a leftover Valkey is stopped first
        _read_back(again.base_url, sid, expected)


def test_restart_with_embedded_valkey_keeps_every_write() -> None:
    _write_stop_start_read(tempfile.mkdtemp(prefix="sync-restart-"))


def test_default_relative_data_dir_works_from_any_directory() -> None:
    """`make run` uses SYNC_DATA_DIR=./data: the embedded Valkey must cope with a relative path."""
    _write_stop_start_read("data", cwd=tempfile.mkdtemp(prefix="sync-cwd-"))


def test_server_killed_with_sigkill_loses_no_acknowledged_write() -> None:
    _write_stop_start_read(tempfile.mkdtemp(prefix="sync-kill-"), stop=signal.SIGKILL)
