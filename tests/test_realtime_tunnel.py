"""The twilsock tunnel of one connection: in-flight requests are bounded by back-pressure (issue 9,
item 4), and the ``init`` reply carries the offline storage id the SDK asks for (issue 9, item 15)."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import httpx
from websockets.asyncio.client import connect

from realtime import twilsock
from realtime.client import SyncClient
from storage import StoreConfig, keys
from tests.helpers import ACCOUNT_SID, AUTH_TOKEN, ON_EVERY_BACKEND, Backend, Endpoint
from tests.sdk import JS_DIR, ensure_installed, token

pytestmark = ON_EVERY_BACKEND

# -- in-flight requests per connection (SYNC_WS_MAX_INFLIGHT) -----------------------------------------


async def test_requests_beyond_the_limit_are_not_read_until_a_slot_frees(
    backend: Backend, redis: Any, api_key: Any, service: str
) -> None:
    """Two writes stalled in Valkey (CLIENT PAUSE WRITE) hold both slots of a connection limited to 2:
    reads sent after them are not even read (a read is not paused), then all are answered."""
    # on the Cluster, every master (the Service's among them)
    every_master = {"target_nodes": (await redis.initialize()).get_primaries()} if backend.cluster else {}
    srv = backend.server_process(SYNC_WS_MAX_INFLIGHT="2").start()
    try:
        async with await SyncClient.connect(srv.ws_url, token(api_key.sid, api_key.secret, service, "alice")) as c:
            doc = await c.open("document", "slow")
            assert (await c.request("GET", doc["url"]))[0] == 200  # reads answer while nothing is paused
            await redis.execute_command("CLIENT", "PAUSE", "8000", "WRITE", **every_master)
            try:
                writes = [asyncio.create_task(c.request("POST", doc["url"], {"data": {"n": n}})) for n in range(2)]
                await asyncio.sleep(0.5)  # both writes are in the server, waiting on Valkey
                reads = [asyncio.create_task(c.request("GET", doc["url"])) for _ in range(3)]
                await asyncio.wait(reads, timeout=1.5)
                early = sum(t.done() for t in reads)
                assert early == 0, f"{early} requests beyond SYNC_WS_MAX_INFLIGHT were run"
                assert sum(w.done() for w in writes) == 0
            finally:
                await redis.execute_command("CLIENT", "UNPAUSE", **every_master)
            answers = await asyncio.gather(*writes, *reads)
            assert [status for status, _ in answers] == [200] * 5
    finally:
        srv.stop()


async def test_a_flood_on_one_connection_is_all_answered_and_others_stay_served(
    server: Endpoint, api_key: Any, service: str
) -> None:
    """3,000 requests written at once on one socket (raw frames, as a hostile client would): every one
    is answered, while another client's REST call (from a thread, so that this loop's own work is
    not counted) stays prompt."""
    count = 3000
    tok = token(api_key.sid, api_key.secret, service, "alice")
    async with await SyncClient.connect(server.ws_url, tok) as c:
        doc = await c.open("document", "flooded")
    target = {"host": "x", "path": urlsplit(doc["url"]).path, "method": "GET", "params": {}, "headers": {}}
    frames = [
        twilsock.encode({"method": "message", "id": f"TM{n}", "active_grant": "data_sync", "http_request": target})
        for n in range(count)
    ]
    rest_url = f"{server.base_url}/v1/Services/{service}/Documents/{doc['sid']}"
    stop = threading.Event()

    def rest_waits() -> list[float]:
        waits = []
        with httpx.Client(auth=(ACCOUNT_SID, AUTH_TOKEN), timeout=10) as other:
            while not stop.is_set():
                t0 = time.monotonic()
                assert other.get(rest_url).status_code == 200
                waits.append(time.monotonic() - t0)
                time.sleep(0.05)
        return waits

    async with connect(server.ws_url, max_size=2**24) as ws:
        await ws.send(twilsock.encode({"method": "init", "id": "TMinit", "token": tok, "registrations": []}))
        assert twilsock.decode(await ws.recv()).header["status"]["code"] == 200

        async def statuses() -> list[int]:
            found: list[int] = []
            while len(found) < count:
                frame = twilsock.decode(await asyncio.wait_for(ws.recv(), 30))
                if frame.method == "reply":
                    found.append(int(frame.header["http_status"]["code"]))
            return found

        probe = asyncio.create_task(asyncio.to_thread(rest_waits))
        reading = asyncio.create_task(statuses())
        try:
            for frame in frames:
                await ws.send(frame)
            answered = await reading
        finally:
            stop.set()
            waits = await probe
    assert len(answered) == answered.count(200) == count
    assert waits and max(waits) < 1.0, waits


async def test_subscriptions_hold_their_slot_and_keep_their_order(backend: Backend, api_key: Any, service: str) -> None:
    """With one slot, a subscribe is still confirmed (its work runs after its answer, in its slot)."""
    srv = backend.server_process(SYNC_WS_MAX_INFLIGHT="1").start()
    try:
        async with await SyncClient.connect(srv.ws_url, token(api_key.sid, api_key.secret, service, "alice")) as c:
            docs = [await c.open("document", f"one-slot-{n}") for n in range(3)]
            confirmed = await asyncio.gather(*(c.subscribe(d["sid"], "document") for d in docs))
            assert [e["event_type"] for e in confirmed] == ["subscription_established"] * 3
            await c.unsubscribe(docs[0]["sid"], "document")
            await c.subscribe(docs[0]["sid"], "document")
    finally:
        srv.stop()


# -- offline storage id in the init reply ------------------------------------------------------------


def _storage_id(c: SyncClient) -> str:
    storage = c.init_reply["offline_storage"]["data_sync"]
    assert isinstance(storage["storage_id"], str) and storage["storage_id"]
    return str(storage["storage_id"])


async def test_init_reply_carries_a_storage_id_per_identity_service_and_store(
    server: Endpoint, http: httpx.AsyncClient, redis: Any, api_key: Any, service: str
) -> None:
    other = (await http.post("/v1/Services", data={"FriendlyName": "other"})).json()["sid"]

    async def storage_id(svc: str, identity: str) -> str:
        async with await SyncClient.connect(server.ws_url, token(api_key.sid, api_key.secret, svc, identity)) as c:
            return _storage_id(c)

    alice = await storage_id(service, "alice")
    assert await storage_id(service, "alice") == alice  # stable: the SDK's cache survives a reconnect
    assert await storage_id(service, "bob") != alice
    assert await storage_id(other, "alice") != alice
    await redis.delete(keys.STORE_ID)  # as if the server now served another data store
    await asyncio.sleep(StoreConfig().cache_s)  # each process reads it again after its cache time
    assert await storage_id(service, "alice") != alice


# Twilio's SDK at log level "warn" (to stderr): opens a document and shuts down
_OPEN_ONE = """
const { SyncClient } = require('twilio-sync');
const base = process.env.SYNC_URL;
const options = { twilsock: { uri: base.replace(/^http/, 'ws') + '/v3/wsconnect' }, cdsUri: base, logLevel: 'warn' };
const client = new SyncClient(process.env.SYNC_TOKEN, options);
client.document('cached').then(async (doc) => {
  console.log(doc.sid);
  await client.shutdown();
  process.exit(0);
}, (e) => { console.error(String(e)); process.exit(1); });
"""


async def test_the_sdk_initializes_its_storage(server: Endpoint, api_key: Any, service: str) -> None:
    """Twilio's SDK no longer warns "Failed to initialize storage … No offline storage id"."""
    ensure_installed()
    env = {
        **os.environ,
        "SYNC_URL": server.base_url,
        "SYNC_TOKEN": token(api_key.sid, api_key.secret, service, "alice"),
    }
    node = await asyncio.create_subprocess_exec(
        "node", "-e", _OPEN_ONE, cwd=JS_DIR, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(node.communicate(), 60)
    assert node.returncode == 0, err.decode()
    assert out.decode().startswith("ET")
    assert "storage" not in err.decode().lower(), err.decode()
