"""The bounded workload: REST writers and SDK-protocol subscribers, run together, each outcome
recorded with its invoke and complete times on one monotonic clock.

Writers (``--writers``) each loop until the deadline over three kinds of work, chosen at random:
a Document read followed by an ``If-Match`` write of a fresh value on the revision just read (a
compare-and-set that loses to concurrent writers with 412), a List append, or a Map write to one of
the writer's own keys (one writer per key, so a key's writes are sequential). A Document stops
taking operations at ``max_ops`` so its linearizability search stays bounded.

Subscribers (``--subscribers``) connect over the twilsock protocol (realtime.client.SyncClient),
subscribe to every object from their cursor (the last event id delivered), stay a random 0.2–2 s,
disconnect and reconnect, recording every event delivered.

A deployment of several processes (``Target.more_urls``: the two servers of ``--spawn --cluster``)
has its clients spread over them, writer ``n`` on the ``n``-th and subscriber ``n`` on the next, so
subscribers also receive what was written through another process.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from realtime.client import SyncClient, SyncClientError
from realtime.tokens import mint

from .linearizable import Op
from .record import Obj, Recording
from .rest import NotSent, Rest, Unknown

DOCUMENTS = 3
MAP_KEYS_PER_WRITER = 3
SID_FIELD = {"document": "document_sid", "list": "list_sid", "map": "map_sid"}


@dataclass
class Target:
    """A server to check: base URL, account credentials, and an API key to sign access tokens."""

    url: str
    account_sid: str
    auth_token: str
    key_sid: str
    key_secret: str
    more_urls: tuple[str, ...] = ()  # other processes of the same deployment: clients are spread over all

    def url_for(self, n: int) -> str:
        """The base URL client ``n`` talks to (writers and subscribers each counted from 0)."""
        urls = (self.url, *self.more_urls)
        return urls[n % len(urls)]


@dataclass
class Plan:
    duration_s: float = 10.0
    writers: int = 4
    subscribers: int = 2
    seed: int = 0
    max_ops: int = 600  # per Document
    timeout_s: float = 5.0
    counts: dict[str, int] = field(default_factory=dict)


def say(message: str) -> None:
    print(f"sync-server check: {message}", file=sys.stderr)


def now() -> float:
    return time.monotonic()


async def setup(rest: Rest, rec: Recording, tag: str) -> str:
    """A fresh Service with the workload's Documents, List and Map (each at event 0)."""
    service = (await rest.ok("POST", "/v1/Services", {"FriendlyName": f"sync-server check {tag}"}))["sid"]
    base = f"/v1/Services/{service}"
    for n in range(DOCUMENTS):
        body = await rest.ok("POST", f"{base}/Documents", {"UniqueName": f"doc{n}", "Data": '{"w":"init"}'})
        rec.objects[body["sid"]] = Obj(body["sid"], "document", initial="init")
    for kind, coll in (("list", "Lists"), ("map", "Maps")):
        body = await rest.ok("POST", f"{base}/{coll}", {"UniqueName": kind})
        rec.objects[body["sid"]] = Obj(body["sid"], kind)
    return str(service)


async def writer(rest: Rest, rec: Recording, service: str, p: int, plan: Plan, deadline: float) -> None:
    rng = random.Random(f"{plan.seed}-writer-{p}")
    base = f"/v1/Services/{service}"
    docs = [o for o in rec.objects.values() if o.kind == "document"]
    lst = next(o for o in rec.objects.values() if o.kind == "list")
    mp = next(o for o in rec.objects.values() if o.kind == "map")
    created: set[str] = set()
    n = 0
    while now() < deadline:
        n += 1
        token = f"w{p}-{n}"
        r = rng.random()
        try:
            if r < 0.6:
                open_docs = [d for d in docs if len(d.ops) < plan.max_ops - 1]
                if open_docs:
                    await _cas(rest, f"{base}/Documents", rng.choice(open_docs), p, token)
            elif r < 0.8:
                await _append(rest, f"{base}/Lists/{lst.sid}/Items", lst, p, token)
            else:
                key = f"w{p}-k{rng.randrange(MAP_KEYS_PER_WRITER)}"
                await _map_write(rest, f"{base}/Maps/{mp.sid}/Items", mp, p, key, token, created)
        except NotSent:
            await asyncio.sleep(0.05)  # the server is down: nothing was sent, try again shortly


async def _cas(rest: Rest, coll: str, doc: Obj, p: int, token: str) -> None:
    """A read, then a compare-and-set on the revision read. Each is one operation of the history."""
    t0 = now()
    try:
        status, body = await rest.call("GET", f"{coll}/{doc.sid}")
    except Unknown:
        return  # a read without an answer constrains nothing
    if status != 200:
        return
    rev, value = int(body["revision"], 16), (body.get("data") or {}).get("w")
    doc.ops.append(Op("read", "ok", t0, now(), value=value, revision=rev, process=p))
    t0 = now()
    try:
        status, body = await rest.call(
            "POST", f"{coll}/{doc.sid}", {"Data": f'{{"w":"{token}"}}'}, if_match=format(rev, "x")
        )
    except Unknown:
        doc.ops.append(Op("cas", "unknown", t0, None, value=token, expect=rev, process=p))
        return
    except NotSent:
        return
    if status == 200:
        doc.ops.append(
            Op("cas", "ok", t0, now(), value=token, revision=int(body["revision"], 16), expect=rev, process=p)
        )
    elif status == 412:
        doc.ops.append(Op("cas", "fail", t0, now(), value=token, expect=rev, process=p))
    # another 4xx changed nothing (every write script checks before it writes): not part of the history


async def _append(rest: Rest, path: str, lst: Obj, p: int, token: str) -> None:
    t0 = now()
    write: dict[str, Any] = {"value": token, "process": p, "invoke": t0}
    try:
        status, body = await rest.call("POST", path, {"Data": f'{{"a":"{token}"}}'})
    except Unknown:
        lst.writes.append({**write, "outcome": "unknown"})
        return
    if status == 201:
        lst.writes.append({**write, "outcome": "ok", "key": str(body["index"]), "revision": int(body["revision"], 16)})


async def _map_write(rest: Rest, path: str, mp: Obj, p: int, key: str, token: str, created: set[str]) -> None:
    """Create the key the first time, update it afterwards (a 404 or 409 says which it needs)."""
    write: dict[str, Any] = {"value": token, "process": p, "key": key, "invoke": now()}
    data = f'{{"m":"{token}"}}'
    try:
        if key in created:
            status, body = await rest.call("POST", f"{path}/{key}", {"Data": data})
            if status == 404:
                created.discard(key)
        else:
            status, body = await rest.call("POST", path, {"Key": key, "Data": data})
            if status == 409:
                created.add(key)
    except Unknown:
        mp.writes.append({**write, "outcome": "unknown"})
        created.add(key)  # maybe created: the next write finds out
        return
    if status in (200, 201):
        created.add(key)
        mp.writes.append({**write, "outcome": "ok", "revision": int(body["revision"], 16)})


class Subscriber:
    """One SDK-protocol client that reconnects at random and resumes every object from its cursor."""

    def __init__(self, target: Target, url: str, rec: Recording, service: str, name: str, seed: int) -> None:
        self.target, self.url, self.rec, self.service, self.name = target, url, rec, service, name
        self.rng = random.Random(f"{seed}-{name}")
        self.objects = {sid: o.kind for sid, o in rec.objects.items()}
        self.cursor = dict.fromkeys(self.objects, 0)  # every object starts at its creation event
        self.delivered: dict[str, list[dict[str, Any]]] = {sid: [] for sid in self.objects}
        rec.deliveries[name] = self.delivered
        rec.sessions[name] = 0
        self.stopping = False
        self.targets: dict[str, int] | None = None  # set at the end: the last event id of each object
        self.caught_up = asyncio.Event()

    def _done(self) -> bool:
        return self.targets is not None and all(self.cursor[s] >= t for s, t in self.targets.items())

    async def run(self) -> None:
        ws = self.url.replace("http", "ws", 1).rstrip("/") + "/v3/wsconnect"
        while not self.stopping:
            token = mint(self.target.account_sid, self.target.key_sid, self.target.key_secret, self.name, self.service)
            try:
                async with await SyncClient.connect(ws, token) as client:
                    self.rec.sessions[self.name] += 1
                    session = self.rec.sessions[self.name]
                    for sid, kind in self.objects.items():
                        est = await client.subscribe(sid, kind, self.cursor[sid])
                        if est["event_type"] != "subscription_established":
                            raise SyncClientError(0, None, f"subscription {est}")
                    stay = self.rng.uniform(0.2, 2.0)
                    until = asyncio.get_running_loop().time() + stay
                    while not self.stopping:
                        if self._done():
                            self.caught_up.set()
                            await asyncio.sleep(0.05)
                            continue
                        left = until - asyncio.get_running_loop().time()
                        if left <= 0 and self.targets is None:
                            break  # disconnect at random, reconnect from the cursor
                        with contextlib.suppress(TimeoutError):
                            body = await client.next_event(max(left, 0.1) if self.targets is None else 0.2)
                            self._record(body, session)
                        if not client.control.empty():
                            break  # disconnected by the server (closed, 308): reconnect
            except (SyncClientError, OSError, TimeoutError, ConnectionError) as exc:
                if not self.stopping:
                    await asyncio.sleep(0.2)
                del exc
            except Exception:  # websockets' own errors on a killed server: reconnect as the SDK does
                await asyncio.sleep(0.2)

    def _record(self, body: dict[str, Any], session: int) -> None:
        ev = body.get("event") or {}
        kind = str(body.get("event_type", "")).split("_")[0]
        sid = ev.get(SID_FIELD.get(kind, ""))
        if sid not in self.delivered:
            return
        if kind == "document":
            key, data = None, ev.get("document_data")
        else:
            key = str(ev["item_index"]) if "item_index" in ev else ev.get("item_key")
            data = ev.get("item_data")
        self.delivered[sid].append({"id": ev.get("id"), "key": key, "data": data, "session": session})
        if isinstance(ev.get("id"), int):
            self.cursor[sid] = ev["id"]


async def run(target: Target, plan: Plan, rec: Recording, faults: Any = None) -> str:
    """Set up, run writers and subscribers (and ``faults``, an object with ``async run(deadline)``)
    until the deadline, then read every object's log and final state and let subscribers catch up."""
    rests = {u: Rest(u, target.account_sid, target.auth_token, plan.timeout_s) for u in (target.url, *target.more_urls)}
    rest = rests[target.url]  # set-up and reading back
    subs: list[Subscriber] = []
    sub_tasks: list[asyncio.Task[None]] = []
    try:
        service = await setup(rest, rec, f"seed {plan.seed}")
        rec.meta.update(service=service)
        # subscriber i on another process than writer i, when there are several
        subs = [
            Subscriber(target, target.url_for(i + 1), rec, service, f"checker-sub-{i}", plan.seed)
            for i in range(plan.subscribers)
        ]
        sub_tasks = [asyncio.create_task(s.run()) for s in subs]
        deadline = now() + plan.duration_s
        work = [writer(rests[target.url_for(p)], rec, service, p, plan, deadline) for p in range(plan.writers)]
        if faults is not None:
            work.append(faults.run(deadline))
        await asyncio.gather(*work)
        say(f"workload done; reading back {len(rec.objects)} objects and their event logs")
        await read_back(rest, rec, service)
        say("waiting for subscribers to catch up")
        targets = {sid: o.final_revision or 0 for sid, o in rec.objects.items()}
        for s in subs:
            s.targets = targets
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(s.caught_up.wait() for s in subs)), 30)
        say("verifying")
        return service
    finally:  # also when the run failed: a subscriber stops at its next turn, not at a cancellation
        for s in subs:
            s.stopping = True
        await asyncio.gather(*sub_tasks, return_exceptions=True)
        for r in rests.values():
            await r.close()


async def read_back(rest: Rest, rec: Recording, service: str) -> None:
    """Each object's final state and revision (its last event id), then its event log up to there."""
    base = f"/v1/Services/{service}"
    for sid, o in rec.objects.items():
        coll = {"document": "Documents", "list": "Lists", "map": "Maps"}[o.kind]
        body = await rest.ok("GET", f"{base}/{coll}/{sid}")
        o.final_revision = int(body["revision"], 16)
        if o.kind == "document":
            o.final = {"": body.get("data")}
        else:
            key = "index" if o.kind == "list" else "key"
            o.final = {str(it[key]): it.get("data") for it in await rest.items(f"{base}/{coll}/{sid}/Items")}
        o.log, o.log_complete = await rest.event_log(service, sid, o.final_revision)
