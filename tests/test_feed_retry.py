"""A feed whose read of the event log fails reads it again by itself (realtime/hub.py RETRY_S).

The wake-up that triggered the failed read is the last one when the writes stop: nothing else
would read the log again, and the subscriber would miss the event until the object's next write.
Here the read fails for real: the server's Redis user loses XRANGE (ACL) for a moment, while the
write itself (a Lua script, no XRANGE) goes through. Its own Valkey, so the ACL touches no other test.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from redis import Redis

from realtime.client import SyncClient
from storage import Store, accounts
from tests.helpers import ACCOUNT_SID, AUTH_TOKEN, RedisProcess, ServerProcess
from tests.sdk import token

BIG = "x" * 3000  # beyond scripts/lib.lua WAKE_INLINE_MAX: the event is read from the log, not the wake-up


@pytest.fixture
def own_redis() -> Iterator[RedisProcess]:
    redis = RedisProcess()
    try:
        yield redis
    finally:
        redis.stop()


@dataclass
class Setup:
    server: ServerProcess
    admin: Redis  # the Valkey itself, to take XRANGE from the server's user and give it back
    http: httpx.AsyncClient
    client: SyncClient  # subscribed to the Document at ``url``
    url: str


@asynccontextmanager
async def subscribed(redis: RedisProcess) -> AsyncIterator[Setup]:
    with ServerProcess(redis_url=redis.url) as server, Redis.from_url(redis.url) as admin:
        async with httpx.AsyncClient(base_url=server.base_url, auth=(ACCOUNT_SID, AUTH_TOKEN), timeout=10) as http:
            service = (await http.post("/v1/Services", data={"FriendlyName": "retry"})).json()["sid"]
            store = await Store.connect(redis.url)
            key = await accounts.create_key(store, ACCOUNT_SID, "retry")
            await store.close()
            async with await SyncClient.connect(server.ws_url, token(key.sid, key.secret, service, "w")) as client:
                doc = await client.open("document", "d")
                await client.subscribe(doc["sid"], "document", doc["last_event_id"])
                try:
                    yield Setup(server, admin, http, client, f"/v1/Services/{service}/Documents/{doc['sid']}")
                finally:
                    admin.execute_command("ACL", "SETUSER", "default", "+xrange")


async def test_a_failed_read_of_the_log_is_retried_without_another_wake_up(own_redis: RedisProcess) -> None:
    async with subscribed(own_redis) as s:
        r = await s.http.post(s.url, data={"Data": '{"n": 1}'})
        assert r.status_code == 200, r.text
        assert (await s.client.next_event())["event"]["document_data"] == {"n": 1}
        s.admin.execute_command("ACL", "SETUSER", "default", "-xrange")
        r = await s.http.post(s.url, data={"Data": f'{{"n": 2, "pad": "{BIG}"}}'})
        assert r.status_code == 200, r.text  # applied: only the feed's read of the log fails
        with pytest.raises(TimeoutError):
            await s.client.next_event(0.6)  # the read and its first retries are refused
        s.admin.execute_command("ACL", "SETUSER", "default", "+xrange")
        ev = await s.client.next_event(5)  # no new write, no new wake-up: the retry reads it
        assert ev["event"]["document_data"] == {"n": 2, "pad": BIG}
    log = await asyncio.to_thread(Path(s.server.log_path).read_text)
    assert "reading the event log of" in log  # the failure was logged


def _refused_xranges(admin: Redis) -> int:
    stats = admin.info("commandstats").get("cmdstat_xrange", {})
    return int(stats.get("rejected_calls", 0)) + int(stats.get("failed_calls", 0))


async def test_no_read_again_for_a_feed_nobody_reads(own_redis: RedisProcess) -> None:
    """The retry timer goes with the feed's last reader (hub.Feed.stop_retrying): once the subscriber is
    gone, nothing reads the log for it any more."""
    async with subscribed(own_redis) as s:
        s.admin.execute_command("ACL", "SETUSER", "default", "-xrange")
        r = await s.http.post(s.url, data={"Data": f'{{"pad": "{BIG}"}}'})
        assert r.status_code == 200, r.text
        await asyncio.sleep(0.6)  # the read and its first retry were refused; more are due
        assert _refused_xranges(s.admin) >= 2
        await s.client.close()
        await asyncio.sleep(0.3)  # the server saw the connection close
        refused = _refused_xranges(s.admin)
        await asyncio.sleep(2.0)  # longer than the next retries' waits (0.5, 1 s)
        assert _refused_xranges(s.admin) == refused
