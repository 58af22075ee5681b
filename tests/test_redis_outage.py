"""A Redis outage, end to end: every request answers Twilio's 503/20503 (never a 500), over REST and
over the SDK tunnel, the server logs one line when the outage starts and one when it ends (no
traceback per request or per background tick), and the same requests answer 2xx once Redis is back.

The server runs on its own Valkey behind a proxy that cuts it off (tests/test_redis_outage.py
``Outage``); the data of before the outage is there after it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis import asyncio as aioredis

from realtime import broker, pubsub
from realtime.client import SyncClient, SyncClientError
from storage import Store, accounts
from tests.helpers import ACCOUNT_SID, AUTH_TOKEN, SCALE, RedisProcess, ServerProcess
from tests.sdk import token
from tests.test_metrics import scrape, value


class Outage:
    """A TCP proxy between the server and its Valkey that can cut Redis off: while cut, it drops
    every connection and closes each new one at once (redis-py: "Connection closed by server").
    It keeps its port throughout, so no other process can take it over meanwhile (as a stopped
    Valkey's port could be, on a machine running other tests)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.cut = False
        self.lose_replies = False  # while set, a reply ends its connection instead of reaching the server
        self.port = 0
        self._links: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._link, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        self.begin()
        if self._server is not None:
            self._server.close()

    def begin(self) -> None:
        self.cut = True
        for w in list(self._links):
            w.transport.abort()
        self._links.clear()

    def end(self) -> None:
        self.cut = False

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut:
            writer.transport.abort()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._links |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, replies: bool) -> None:
            with contextlib.suppress(OSError, ConnectionError):
                while data := await src.read(65536):
                    if replies and self.lose_replies:
                        break  # Redis did the work; the server never hears of it
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()
            if replies:
                up_writer.transport.abort()

        await asyncio.gather(pipe(reader, up_writer, False), pipe(up_reader, writer, True))
        self._links -= {writer, up_writer}


@pytest.fixture
async def outage(own_redis: RedisProcess) -> AsyncIterator[Outage]:
    proxy = Outage(own_redis.port)
    await proxy.start()
    yield proxy
    await proxy.close()


@pytest.fixture
async def own_server(outage: Outage) -> AsyncIterator[ServerProcess]:
    server = await asyncio.to_thread(ServerProcess(redis_url=outage.url).start)
    yield server
    await asyncio.to_thread(server.stop)


async def test_an_outage_answers_503_and_logs_one_line_until_redis_is_back(
    own_redis: RedisProcess, outage: Outage, own_server: ServerProcess
) -> None:
    base = own_server.base_url
    log = Path(own_server.log_path)

    async def server_log() -> str:
        return await asyncio.to_thread(log.read_text)

    async with httpx.AsyncClient(base_url=base, auth=(ACCOUNT_SID, AUTH_TOKEN), timeout=20 * SCALE) as http:
        service = (await http.post("/v1/Services", data={"FriendlyName": "outage"})).json()["sid"]
        doc_path = f"/v1/Services/{service}/Documents/doc"
        r = await http.post(f"/v1/Services/{service}/Documents", data={"UniqueName": "doc", "Data": '{"n":1}'})
        assert r.status_code == 201, r.text
        store = await Store.connect(own_redis.url)
        try:
            fresh = await accounts.create_key(store, ACCOUNT_SID, "first used during the outage")
            signer = await accounts.create_key(store, ACCOUNT_SID, "signs tokens")
        finally:
            await store.close()
        tok = token(signer.sid, signer.secret, service, "alice")
        rest: list[tuple[str, Callable[[], Awaitable[httpx.Response]]]] = [
            ("GET document", lambda: http.get(doc_path)),
            ("list services", lambda: http.get("/v1/Services")),
            ("fetch service", lambda: http.get(f"/v1/Services/{service}")),
            ("update document", lambda: http.post(doc_path, data={"Data": '{"n":2}'})),
            ("create document", lambda: http.post(f"/v1/Services/{service}/Documents", data={"Data": "{}"})),
            ("new API key", lambda: http.get("/v1/Services", auth=(fresh.sid, fresh.secret))),
        ]
        async with await SyncClient.connect(own_server.ws_url, tok) as sdk:
            doc = await sdk.open("document", "doc")
            assert doc["data"] == {"n": 1}
            before = len(await server_log())

            outage.begin()
            for _ in range(3):  # repeated: still one log line for the whole outage
                answers = [(what, *(lambda r: (r.status_code, r.json()))(await call())) for what, call in rest]
                answers.append(("CDS GET document", *await sdk.request("GET", doc["url"])))
                answers.append(("CDS update document", *await sdk.request("POST", doc["url"], {"data": {"n": 3}})))
                for what, status, body in answers:
                    assert (what, status, body.get("code")) == (what, 503, 20503), (await server_log())[before:]
                    assert set(body) >= {"code", "message", "more_info", "status"}, body
            with pytest.raises(SyncClientError) as refused:
                await SyncClient.connect(own_server.ws_url, tok)
            assert (refused.value.status, refused.value.code) == (503, 20503)
            await asyncio.sleep(1.0)  # the sweeper and the webhook worker tick several times meanwhile

            during = (await server_log())[before:]
            assert "Traceback" not in during and " ERROR " not in during, during
            assert during.count("Redis unavailable") == 1, during
            # besides it, at most the pub/sub users' own one line each (broker, webhook wake-ups)
            assert len(during.splitlines()) <= 3, during

            outage.end()
            r = await http.get(doc_path)  # at once: the next request reconnects
            assert r.status_code == 200 and r.json()["data"] == {"n": 1}, r.text
            for what, call in rest:
                r = await call()
                assert (what, r.status_code) in {(what, 200), (what, 201)}, r.text
            status, body = await sdk.request("GET", doc["url"])
            assert status == 200 and body["data"] == {"n": 2}, body
            async with await SyncClient.connect(own_server.ws_url, tok) as again:
                assert (await again.open("document", "doc"))["data"] == {"n": 2}

            after = (await server_log())[before:]
            assert "Traceback" not in after, after
            assert after.count("Redis unavailable") == 1 and after.count("Redis reachable again") == 1, after


async def test_token_update_and_disconnects_during_an_outage_answer_and_log_nothing(
    own_redis: RedisProcess, outage: Outage, own_server: ServerProcess
) -> None:
    """A token ``update`` during an outage gets a 503/20503 error reply and the connection stays
    usable; sockets that drop meanwhile (their reachability record fails) log no traceback."""
    log = Path(own_server.log_path)
    async with httpx.AsyncClient(base_url=own_server.base_url, auth=(ACCOUNT_SID, AUTH_TOKEN), timeout=20) as http:
        service = (await http.post("/v1/Services", data={"FriendlyName": "update"})).json()["sid"]
        new_token = await _token_maker(own_redis.url, service)
        tok = new_token()
        async with await SyncClient.connect(own_server.ws_url, tok) as sdk:
            doc = await sdk.open("document", "doc")
            leaving = [await SyncClient.connect(own_server.ws_url, tok) for _ in range(3)]
            before = len(await asyncio.to_thread(log.read_text))

            outage.begin()
            with pytest.raises(SyncClientError) as refused:
                await sdk.update_token(new_token())
            assert (refused.value.status, refused.value.code) == (503, 20503)
            for c in leaving:  # their disconnect records fail: an outage, already logged once
                await c.close()
            status, body = await sdk.request("GET", doc["url"])  # the connection is still served
            assert (status, body["code"]) == (503, 20503), body
            await asyncio.sleep(0.5)
            during = (await asyncio.to_thread(log.read_text))[before:]
            assert "Traceback" not in during and "could not record reachability" not in during, during

            outage.end()
            await sdk.update_token(new_token())  # the same connection
            status, body = await sdk.request("GET", doc["url"])
            assert status == 200, body
    after = (await asyncio.to_thread(log.read_text))[before:]
    assert "Traceback" not in after and after.count("Redis unavailable") == 1, after


FROZEN_TIMEOUT_S = 1.5  # SYNC_REDIS_TIMEOUT_S of the server below


async def test_a_frozen_redis_answers_503_within_the_timeout_and_everything_resumes_after(
    own_redis: RedisProcess,
) -> None:
    """Valkey stopped with SIGSTOP (alive, connections open, nothing answered): REST and CDS requests
    answer 503/20503 within SYNC_REDIS_TIMEOUT_S (plus slack), not never; one outage line in the log;
    after SIGCONT the same requests answer 2xx and a subscription made before it receives events."""
    server = await asyncio.to_thread(
        ServerProcess(redis_url=own_redis.url, env={"SYNC_REDIS_TIMEOUT_S": str(FROZEN_TIMEOUT_S)}).start
    )
    log = Path(server.log_path)
    bound = FROZEN_TIMEOUT_S + 3.0 * SCALE
    frozen = False

    def freeze(stop: bool) -> None:
        nonlocal frozen
        os.kill(own_redis.proc.pid, signal.SIGSTOP if stop else signal.SIGCONT)
        frozen = stop

    try:
        async with httpx.AsyncClient(base_url=server.base_url, auth=(ACCOUNT_SID, AUTH_TOKEN), timeout=30) as http:
            service = (await http.post("/v1/Services", data={"FriendlyName": "frozen"})).json()["sid"]
            doc_path = f"/v1/Services/{service}/Documents/doc"
            r = await http.post(f"/v1/Services/{service}/Documents", data={"UniqueName": "doc", "Data": '{"n":1}'})
            assert r.status_code == 201, r.text
            tok = (await _token_maker(own_redis.url, service))()
            async with await SyncClient.connect(server.ws_url, tok) as sdk:
                doc = await sdk.open("document", "doc")
                await sdk.subscribe(doc["sid"], "document", doc["last_event_id"])
                before = len(await asyncio.to_thread(log.read_text))

                freeze(True)
                calls: list[tuple[str, Callable[[], Awaitable[tuple[int, Any]]]]] = [
                    ("REST GET", lambda: _answer(http.get(doc_path))),
                    ("REST POST", lambda: _answer(http.post(doc_path, data={"Data": '{"n":2}'}))),
                    ("CDS GET", lambda: sdk.request("GET", doc["url"])),
                ]
                for what, call in calls:
                    started = time.monotonic()
                    try:
                        status, body = await asyncio.wait_for(call(), bound)
                    except TimeoutError:
                        raise AssertionError(f"{what}: no answer within {bound:.1f} s while Redis is frozen") from None
                    assert (what, status, body.get("code")) == (what, 503, 20503), body
                    assert time.monotonic() - started < bound
                during = (await asyncio.to_thread(log.read_text))[before:]
                assert during.count("Redis unavailable") == 1 and "Traceback" not in during, during

                freeze(False)
                r = await http.get(doc_path)
                assert r.status_code == 200, r.text
                r = await http.post(doc_path, data={"Data": '{"n":3}'})
                assert r.status_code == 200, r.text
                # pub/sub works again: the update reaches the subscription (the POST that answered 503
                # may still have been applied once Redis resumed: a timeout says nothing about it)
                seen = [(await sdk.next_event(15 * SCALE))["event"]["document_data"]]
                if seen[0] == {"n": 2}:
                    seen.append((await sdk.next_event(15 * SCALE))["event"]["document_data"])
                assert seen[-1] == {"n": 3}, seen
                status, body = await sdk.request("GET", doc["url"])
                assert status == 200 and body["data"] == {"n": 3}, body
            after = (await asyncio.to_thread(log.read_text))[before:]
            assert "Traceback" not in after, after
            assert after.count("Redis unavailable") == 1 and after.count("Redis reachable again") == 1, after
    finally:
        if frozen:
            freeze(False)
        await asyncio.to_thread(server.stop)


async def _answer(pending: Awaitable[httpx.Response]) -> tuple[int, Any]:
    r = await pending
    return r.status_code, r.json()


async def _token_maker(redis_url: str, service: str) -> Callable[[], str]:
    """What makes SDK tokens for alice on ``service``, signed by a new API key (made while Redis is up)."""
    store = await Store.connect(redis_url)
    try:
        signer = await accounts.create_key(store, ACCOUNT_SID, "signs tokens")
    finally:
        await store.close()
    return lambda: token(signer.sid, signer.secret, service, "alice")


@pytest.mark.parametrize("over", ["tcp", "unix"])  # realtime/pubsub.py's subscriber; redis-py's
async def test_the_broker_notices_a_silent_pubsub_connection_and_subscribes_again(
    own_redis: RedisProcess, monkeypatch: pytest.MonkeyPatch, over: str
) -> None:
    """A frozen Valkey leaves the pub/sub connection open and silent: the broker's PING goes
    unanswered, it drops the connection, reconnects once Valkey answers, subscribes again and
    runs ``on_reconnect`` (the hub re-reads its feeds); wake-ups flow again."""
    monkeypatch.setattr(pubsub, "PING_S", 0.5)
    monkeypatch.setattr(pubsub, "REPLY_S", 1.0)
    wakes: list[tuple[str, bytes]] = []
    reconnects: list[bool] = []
    b = broker.RedisBroker(
        own_redis.url if over == "tcp" else own_redis.unix_url,
        lambda channel, data: wakes.append((channel, data)),
        lambda: reconnects.append(True),
    )
    publisher = aioredis.Redis.from_url(own_redis.url)
    await b.start()
    try:
        await b.subscribe("wake")
        os.kill(own_redis.proc.pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(3.0)  # silence, a PING, no answer within REPLY_S: dropped
        finally:
            os.kill(own_redis.proc.pid, signal.SIGCONT)
        for _ in range(int(10 * SCALE / 0.1)):
            if reconnects:
                break
            await asyncio.sleep(0.1)
        assert reconnects, "the silent pub/sub connection was not replaced"
        await publisher.publish("wake", b"after")
        for _ in range(int(5 * SCALE / 0.05)):
            if wakes:
                break
            await asyncio.sleep(0.05)
        assert wakes == [("wake", b"after")]
    finally:
        await b.close()
        await publisher.aclose()


async def test_a_write_whose_reply_is_lost_is_applied_once(outage: Outage, own_server: ServerProcess) -> None:
    """Valkey runs a write script and its reply is lost on the way back (a master killed right after,
    a network cut): the server answers 503/20503, and never sends the script again by itself, which
    would apply it twice or more (redis-py retries a command after a lost connection by default)."""
    async with httpx.AsyncClient(
        base_url=own_server.base_url, auth=(ACCOUNT_SID, AUTH_TOKEN), timeout=30 * SCALE
    ) as http:
        service = (await http.post("/v1/Services", data={"FriendlyName": "lost reply"})).json()["sid"]
        items = f"/v1/Services/{service}/Lists/l/Items"
        assert (await http.post(f"/v1/Services/{service}/Lists", data={"UniqueName": "l"})).status_code == 201
        assert (await http.get(items)).status_code == 200  # credentials and Service read: only the write is left
        outage.lose_replies = True
        try:
            lost = await http.post(items, data={"Data": '{"n": 1}'})
        finally:
            outage.lose_replies = False
        assert lost.status_code == 503 and lost.json()["code"] == 20503, lost.text
        for _ in range(int(100 * SCALE)):
            listed = await http.get(items)
            if listed.status_code == 200:
                break
            await asyncio.sleep(0.1)
        assert [item["data"] for item in listed.json()["items"]] == [{"n": 1}], listed.text  # applied once


async def test_a_dropped_pubsub_connection_is_counted_and_wake_ups_flow_again(own_redis: RedisProcess) -> None:
    """Redis drops the server's pub/sub connection (as ``client-output-buffer-limit pubsub`` does):
    the subscriber reconnects, /metrics counts the resync, and a later write reaches the SDK."""
    server = await asyncio.to_thread(ServerProcess(redis_url=own_redis.url).start)
    admin = aioredis.Redis.from_url(own_redis.url)
    try:
        async with httpx.AsyncClient(base_url=server.base_url, auth=(ACCOUNT_SID, AUTH_TOKEN), timeout=10) as http:
            service = (await http.post("/v1/Services", data={"FriendlyName": "resync"})).json()["sid"]
            doc = (await http.post(f"/v1/Services/{service}/Documents", data={"Data": '{"n":0}'})).json()
            make = await _token_maker(own_redis.url, service)
            async with await SyncClient.connect(server.ws_url, make()) as sdk:
                await sdk.subscribe(doc["sid"], "document", 0)
                assert value(await scrape(server.base_url), "sync_pubsub_resyncs_total") == 0
                assert await admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub") >= 1
                deadline = time.monotonic() + 10 * SCALE
                while value(await scrape(server.base_url), "sync_pubsub_resyncs_total") < 1:
                    assert time.monotonic() < deadline, "the pub/sub connection did not come back"
                    await asyncio.sleep(0.1)
                r = await http.post(f"/v1/Services/{service}/Documents/{doc['sid']}", data={"Data": '{"n":1}'})
                assert r.status_code == 200, r.text
                ev = await sdk.next_event(15 * SCALE)
                assert ev["event"]["document_data"] == {"n": 1}, ev
    finally:
        await admin.aclose()
        await asyncio.to_thread(server.stop)
