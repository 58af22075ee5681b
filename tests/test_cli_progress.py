"""Long admin work shows a counter line on a terminal and stays quiet otherwise (issue 11):
``sync-server webhooks replay`` of thousands of dead letters and ``sync-server purge`` of a large
deleted Service, run as the real command on a real Valkey, its stderr a pseudo-terminal or a pipe."""

from __future__ import annotations

import asyncio
import os
import pty
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from storage import Kind, Store, accounts, keys, objects, services
from storage.records import SYSTEM
from tests.helpers import ACCOUNT_SID, AUTH_TOKEN, ROOT, SCALE, RedisProcess

DEAD = 3000
DOCS = 400


@pytest.fixture
def valkey() -> Iterator[RedisProcess]:
    """A Valkey of this test alone: no server's webhook worker takes the replayed entries."""
    v = RedisProcess()
    yield v
    v.stop()


def _run(url: str, *args: str, tty: bool) -> tuple[str, str]:
    """``sync-server *args`` (stdout, stderr); stderr a pseudo-terminal when ``tty``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNC_", "TWILIO_", "REDIS_"))}
    env.update(REDIS_URL=url, TWILIO_ACCOUNT_SID=ACCOUNT_SID, TWILIO_AUTH_TOKEN=AUTH_TOKEN)
    cmd = [sys.executable, "-c", "from app.cli import main; main()", *args]
    if not tty:
        done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120 * SCALE)
        assert done.returncode == 0, done.stderr
        return done.stdout, done.stderr
    master, slave = pty.openpty()
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    chunks: list[bytes] = []

    def read() -> None:  # while it runs: a full terminal buffer would block the command
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the command closed the terminal
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read)
    reader.start()
    out, _ = proc.communicate(timeout=120 * SCALE)
    reader.join(10)
    os.close(master)
    assert proc.returncode == 0, b"".join(chunks)
    return out.decode(), b"".join(chunks).decode().replace("\r\n", "\n")  # the terminal's ONLCR


async def _dead_letters(url: str, n: int) -> str:
    store = await Store.connect(url)
    try:
        sid = "IS" + "d" * 32
        async with store.redis.pipeline(transaction=False) as p:
            for i in range(n):
                p.xadd(keys.webhook_dead(sid), {"e": b"event", "u": f"https://hooks.example/{i}", "a": ACCOUNT_SID})
            await p.execute()
        await store.redis.sadd(keys.webhook_failed(keys.bucket(sid)), sid)
        return sid
    finally:
        await store.close()


@pytest.mark.parametrize("tty", [True, False], ids=["terminal", "pipe"])
def test_replaying_thousands_of_dead_letters_shows_a_counter_on_a_terminal_only(
    valkey: RedisProcess, tty: bool
) -> None:
    sid = asyncio.run(_dead_letters(valkey.url, DEAD))
    out, err = _run(valkey.url, "webhooks", "replay", "--service", sid, tty=tty)
    assert out.strip() == f"queued {DEAD} webhook(s) again"
    last = f"\rqueued again: {DEAD} (Service 1/1 {sid}: {DEAD} of {DEAD})\x1b[K\n"
    if tty:
        assert last in err, repr(err[-500:])
        counts = [line for line in err.split("\r") if line.startswith("queued again: ")]
        assert len(counts) >= 1 and len(counts) < DEAD  # rewritten in place, not once per entry
    else:
        assert "queued again" not in err and "\r" not in err, err
    assert asyncio.run(_queued(valkey.url, sid)) == DEAD


async def _queued(url: str, sid: str) -> int:
    store = await Store.connect(url)
    try:
        return int(await store.redis.xlen(keys.webhook_queue(sid)))
    finally:
        await store.close()


async def _deleted_service_with_documents(url: str, n: int) -> None:
    store = await Store.connect(url)
    try:
        await accounts.ensure_account(store, ACCOUNT_SID, AUTH_TOKEN)
        sid = (await services.create(store, ACCOUNT_SID, {})).sid
        await asyncio.gather(*(objects.create(store, sid, Kind.DOCUMENT, SYSTEM) for _ in range(n)))
        await services.delete(store, ACCOUNT_SID, sid)  # no server running: nothing purges it yet
    finally:
        await store.close()


@pytest.mark.parametrize("tty", [True, False], ids=["terminal", "pipe"])
def test_purging_a_large_deleted_service_shows_a_counter_on_a_terminal_only(valkey: RedisProcess, tty: bool) -> None:
    asyncio.run(_deleted_service_with_documents(valkey.url, DOCS))
    out, err = _run(valkey.url, "purge", tty=tty)
    assert out.strip() == f"purged {DOCS} object(s) of deleted Services"
    if tty:
        assert f"\rpurged objects: {DOCS}\x1b[K\n" in err, repr(err[-500:])
    else:
        assert "purged objects" not in err, err
    out, _ = _run(valkey.url, "purge", tty=False)
    assert out.strip() == "purged 0 object(s) of deleted Services"
