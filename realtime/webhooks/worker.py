"""The webhook delivery worker: drains the durable per-Service queues (storage/webhooks.py).

Every server process runs one. Per Service, one delivery task at a time (the Service's lease, so
order holds across processes); inside a task, deliveries with the same order key (object, or
identity for reachability) go out one after another, different objects concurrently (at most
``service_concurrency``), and all Services share ``concurrency`` requests in flight. A slow or dead
receiver therefore holds only its own Service's slots and never delays another Service.

Retries: a failed attempt (not 2xx, connect/read error or timeout) is retried after an exponential
backoff with jitter (``backoff_base_s`` doubling, at most ``backoff_max_s``), ``max_retries`` times;
then the entry goes to the dead letters. While a Service's receiver keeps failing (an entry was
dead-lettered and nothing has succeeded since) its next entries get one attempt each, so a long
outage drains to the dead letters instead of taking ``max_retries`` backoffs per entry; the first
success ends that. Entries are acknowledged only after a 2xx, so a crash re-delivers (at least once);
``I-Twilio-Idempotency-Token`` lets receivers drop duplicates.

Stopping (``close``, at shutdown): no new attempt starts (no new entry, no retry), the attempts in
flight finish and their outcome is recorded (acknowledged, or a failure and its dead letter) for at
most ``close_grace_s`` (or an attempt's own time limit, if shorter); whatever still runs then is
cancelled and stays queued for the next start. So a receiver that answers in time is not sent the
same request again after a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from urllib.parse import urlencode

from storage import Store, accounts, buckets, invalidation, reachability, webhooks
from storage.errors import StoreUnavailableError
from storage.keys import WEBHOOK_WAKE
from storage.redis_client import text

from .client import DeliveryError, WebhookClient
from .params import form_params
from .policy import DestinationBlockedError, NetworkPolicy
from .signing import signature
from .wakeups import BrokerFactory, ShardWakeUps

log = logging.getLogger("sync.webhooks")

_START_S = 10.0  # at start, the longest wait for the first buckets and wake-up subscriptions
_CLOSE_SLACK_S = 2.0  # at close, after the grace: time to acknowledge and release the leases


@dataclass(frozen=True, kw_only=True)  # no defaults for settings (SYNC_WEBHOOK_*): the app declares them
class WebhookOptions:
    connect_timeout_s: float  # per delivery: DNS + TCP + TLS
    read_timeout_s: float  # the receiver's whole response
    max_retries: int  # after the first attempt (Twilio allows up to 5 retries per URL)
    backoff_base_s: float
    backoff_max_s: float
    concurrency: int  # requests in flight, all Services of this process
    service_concurrency: int  # requests in flight for one Service
    batch: int = 200  # entries of one Service read ahead (in memory) at most
    close_grace_s: float = 5.0  # at close, how long attempts in flight may take to finish at most
    lease_ms: int  # a crashed worker's Services are taken over after this
    scan_interval_s: float  # safety net for missed wake-ups and crashed workers
    dead_letter_max: int  # dead letters kept per Service
    allow_networks: tuple[str, ...]
    deny_networks: tuple[str, ...]


@dataclass
class _Run:
    """One delivery session of one Service (while this process holds its lease)."""

    limit: asyncio.Semaphore  # requests in flight for this Service
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    queues: dict[str, deque[webhooks.Delivery]] = field(default_factory=dict)  # order key -> waiting
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    inflight: int = 0  # entries read and not yet delivered or dead-lettered
    delivered: list[str] = field(default_factory=list)  # delivered, acknowledged at the next flush
    failing: bool = False  # an entry was dead-lettered and nothing succeeded since
    failing_recorded: bool | None = None  # failing-since is in Redis (webhooks.status); None: not known yet
    error: Exception | None = None  # a chain failed outside the delivery attempts (e.g. Redis): start over


@dataclass
class _Outcome:
    ok: bool
    error: str = ""
    retry: bool = True


@dataclass
class WebhookWorker:
    """Start with ``await start()``; ``await close()`` stops it (unacknowledged entries stay queued)."""

    store: Store
    options: WebhookOptions
    # makes the broker of the wake-up subscriptions on 7+ (realtime/webhooks/wakeups.py); None: the scan only
    brokers: BrokerFactory | None = None

    def __post_init__(self) -> None:
        self.owner = uuid.uuid4().hex  # lease owner and consumer name of this process
        self._stop = asyncio.Event()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._dirty: set[str] = set()
        self._runs: dict[str, _Run] = {}
        self._elsewhere: dict[str, float] = {}  # Service -> until when another process holds its lease
        self._slots = asyncio.Semaphore(self.options.concurrency)
        self._tokens: dict[str, tuple[str | None, float]] = {}
        self.buckets = buckets.BucketLeases(self.store, "webhooks", self.options.lease_ms, self.owner)
        self._loops: list[asyncio.Task[None]] = []
        self._http: WebhookClient | None = None
        self._finish_by = 0.0  # when closing: until when attempts in flight may run (monotonic)
        self._rescan = asyncio.Event()  # wake-ups may have been missed: scan the queues now
        self.wakeups: ShardWakeUps | None = None  # shard subscriptions (7+), see _wake_ups
        # attempts of this process by outcome (/metrics): "delivered" (2xx), "retried" (failed, tried
        # again later), "dead_lettered" (failed, moved to the dead letters)
        self.attempts: dict[str, int] = {"delivered": 0, "retried": 0, "dead_lettered": 0}

    async def start(self) -> None:
        self.store.invalidations.listen(self._forget_token)
        with contextlib.suppress(StoreUnavailableError):  # an outage: the next start moves them
            await buckets.migrate(self.store)
        policy = NetworkPolicy(self.options.allow_networks, self.options.deny_networks)
        o = self.options
        self._http = WebhookClient(policy, o.connect_timeout_s, o.read_timeout_s, max_connections=o.concurrency)
        await self._http.start()
        if self.store.sharded and self.brokers is not None:
            self.wakeups = ShardWakeUps(
                self.store,
                self.brokers,
                lambda: self.buckets.held,
                self.kick,
                self._rescan.set,
                self.options.scan_interval_s,
            )
            try:  # before the process is ready: a Service made right after is heard (bounded: an outage)
                await asyncio.wait_for(self._first_wake_ups(self.wakeups), timeout=_START_S)
            except Exception as exc:  # the loop below tries again
                log.warning("webhook wake-ups not subscribed at start (%s)", exc)
        self._loops = [
            asyncio.create_task(self._wake_ups()),
            asyncio.create_task(self._scan()),
            asyncio.create_task(self.buckets.run(self._stop)),
        ]

    async def close(self) -> None:
        """Stop taking work, let the attempts in flight finish and be recorded (bounded, see the
        module docstring), then stop; each Service's session acknowledges what it delivered and
        releases its lease on the way out."""
        o = self.options
        grace = min(o.close_grace_s, o.connect_timeout_s + o.read_timeout_s)
        self._finish_by = time.monotonic() + grace
        self._stop.set()
        for t in self._loops:
            t.cancel()
        for run in self._runs.values():
            run.wake.set()  # its queue loop sees the stop and waits for its chains
        serving = list(self._tasks.values())
        if serving:  # beyond the grace: the acknowledgements and lease releases (Redis round trips)
            _, late = await asyncio.wait(serving, timeout=grace + _CLOSE_SLACK_S)
            for t in late:
                t.cancel()
        await asyncio.gather(*self._loops, *serving, return_exceptions=True)
        if self.wakeups is not None:
            await self.wakeups.close()
        with contextlib.suppress(Exception):  # the others take our buckets on their next tick, not after the lease
            await self.buckets.release_all()
        if self._http is not None:
            await self._http.aclose()

    # --- discovery -------------------------------------------------------------------------------

    def kick(self, service_sid: str) -> None:
        """Make sure this Service's queue gets drained (by this process, or by the lease holder)."""
        if self._stop.is_set() or self._elsewhere.get(service_sid, 0.0) > time.monotonic():
            return  # the lease holder was woken too; the scan retries if it has died
        if service_sid in self._tasks:
            self._dirty.add(service_sid)
            run = self._runs.get(service_sid)
            if run is not None:
                run.wake.set()
        else:
            self._tasks[service_sid] = asyncio.create_task(self._serve(service_sid))

    async def _wake_ups(self) -> None:
        """Wake-ups published by the write scripts: on 7+ the shard channels of this process's
        Services only (realtime/webhooks/wakeups.py), else the global channel. Without them the
        periodic scan still finds every queue, only later."""
        if not self.store.sharded:
            await self._listen()
        elif self.wakeups is None:
            log.warning("no broker for webhook wake-ups; relying on the periodic scan")
        else:
            await self.wakeups.run(self._stop)

    async def _first_wake_ups(self, wakeups: ShardWakeUps) -> None:
        await self.buckets.tick()  # this process's buckets (the lease loop renews them from now on)
        await wakeups.update()

    async def _listen(self) -> None:
        """Wake-ups on the global channel (servers without sharded pub/sub, < 7); reconnects after
        a Redis hiccup."""
        pause = 1.0
        while not self._stop.is_set():
            try:
                pubsub = self.store.redis.pubsub()
                await pubsub.subscribe(WEBHOOK_WAKE)
                pause = 1.0
                try:
                    async for message in pubsub.listen():
                        if message.get("type") == "message" and self.buckets.holds(sid := text(message["data"])):
                            self.kick(sid)  # the other buckets' holders were woken too
                finally:
                    await pubsub.aclose()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if pause == 1.0:  # the first failure since the subscription last worked: once per outage
                    log.warning("webhook wake-ups unavailable (%s); relying on the periodic scan", exc)
                await self._sleep(pause)
                pause = min(30.0, pause * 2)

    async def _scan(self) -> None:
        """Debounced reachability webhooks that are due, and queues nobody is draining."""
        try:  # at start, in the background: repairs a crash between a Service write and its copy
            await webhooks.resync_all(self.store)
        except StoreUnavailableError:  # an outage: Store.health logged it once (the next start repairs)
            pass
        except Exception:
            log.exception("webhook config re-sync failed")
        last = 0.0
        while not self._stop.is_set():
            try:
                held = set(self.buckets.held)
                wait = await reachability.fire_due(self.store, held)  # until the next is due, at most POLL_S
                if self._rescan.is_set() or time.monotonic() - last >= self.options.scan_interval_s:
                    self._rescan.clear()
                    last = time.monotonic()
                    for sid in await webhooks.services_with_work(self.store, held):
                        self.kick(sid)
                wait = min(wait, last + self.options.scan_interval_s - time.monotonic())
            except StoreUnavailableError:  # an outage: Store.health logged it once
                await self._sleep(reachability.POLL_S)
                continue
            except Exception:
                log.exception("webhook scan failed")
                await self._sleep(reachability.POLL_S)
                continue
            with contextlib.suppress(TimeoutError):  # a rescan asked for meanwhile cuts the wait short
                await asyncio.wait_for(self._rescan.wait(), timeout=max(0.0, wait))

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)

    # --- one Service -----------------------------------------------------------------------------

    async def _serve(self, sid: str) -> None:
        try:
            while True:
                self._dirty.discard(sid)
                try:
                    if not await self._drain(sid):
                        self._elsewhere[sid] = time.monotonic() + self.options.lease_ms / 2000
                        return  # another process holds the lease; it was woken too
                except StoreUnavailableError:  # an outage: Store.health logged it once; retry
                    await self._sleep(1.0)
                except Exception:
                    log.exception("webhook delivery for %s failed; will retry", sid)
                    await self._sleep(1.0)
                # no await between this check and the removal: a wake-up is never lost
                if sid not in self._dirty or self._stop.is_set():
                    self._elsewhere.pop(sid, None)
                    return
        finally:
            if self._tasks.get(sid) is asyncio.current_task():
                del self._tasks[sid]

    async def _drain(self, sid: str) -> bool:
        """Deliver the Service's queue while holding its lease; False if another process holds it."""
        o = self.options
        if not await webhooks.take_lease(self.store, sid, self.owner, o.lease_ms):
            return False
        keeper = asyncio.create_task(self._keep_lease(sid))
        work = asyncio.create_task(self._deliver_queue(sid))
        try:
            await asyncio.wait([keeper, work], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (keeper, work):
                t.cancel()
            await asyncio.gather(keeper, work, return_exceptions=True)
            await webhooks.release_lease(self.store, sid, self.owner)
        error = work.exception() if work.done() and not work.cancelled() else None
        if error is not None:
            raise error
        return True

    async def _keep_lease(self, sid: str) -> None:
        """Renew the lease; returning (lease lost) stops the delivery task."""
        while True:
            await asyncio.sleep(self.options.lease_ms / 3000)
            if not await webhooks.take_lease(self.store, sid, self.owner, self.options.lease_ms):
                log.warning("lost the webhook lease of %s", sid)
                return

    async def _deliver_queue(self, sid: str) -> None:
        """Read the queue continuously and hand each entry to its order key's chain; at most ``batch``
        entries in memory. Returns when the queue is empty and everything read is done."""
        if not await webhooks.claim(self.store, sid, self.owner):
            return
        run = _Run(asyncio.Semaphore(self.options.service_concurrency))
        self._runs[sid] = run
        after = "0"  # first what this consumer holds unacknowledged (claimed from a crashed one), then new
        try:
            while not self._stop.is_set():
                run.wake.clear()  # before looking: what happens from here on wakes the wait below
                if run.error is not None:  # unacknowledged entries stay pending: the next session reads them
                    raise run.error
                await self._flush_acks(sid, run)
                room = self.options.batch - run.inflight
                if room > 0:
                    self._dirty.discard(sid)
                    rows = await webhooks.read(self.store, sid, self.owner, room, after)
                    paging = after != ">"
                    if paging:
                        after = rows[-1].id if rows else ">"
                    for d in rows:
                        self._dispatch(run, d)
                    if rows or paging:
                        continue
                if run.inflight == 0:
                    return
                await run.wake.wait()  # a chain finished an entry, or new entries were queued
        finally:
            del self._runs[sid]
            if run.tasks and self._stop.is_set():  # closing: attempts in flight finish (bounded)
                await asyncio.wait(run.tasks, timeout=max(0.0, self._finish_by - time.monotonic()))
            for t in run.tasks:
                t.cancel()
            await asyncio.gather(*run.tasks, return_exceptions=True)
            with contextlib.suppress(Exception):  # not acknowledged: delivered again (at least once)
                await self._flush_acks(sid, run)

    async def _flush_acks(self, sid: str, run: _Run) -> None:
        """Acknowledge every delivery done since the last flush in one round trip. Chains finish
        entries while this loop awaits Redis, so under load one XACK + XDEL covers many entries."""
        if run.delivered:
            ids, run.delivered = run.delivered, []
            await webhooks.ack(self.store, sid, ids)

    def _dispatch(self, run: _Run, d: webhooks.Delivery) -> None:
        queue = run.queues.get(d.order_key)
        if queue is None:
            queue = run.queues[d.order_key] = deque()
            task = asyncio.create_task(self._chain(run, d.order_key, queue))
            run.tasks.add(task)
            task.add_done_callback(run.tasks.discard)
        queue.append(d)
        run.inflight += 1

    async def _chain(self, run: _Run, key: str, queue: deque[webhooks.Delivery]) -> None:
        """One order key's deliveries, strictly in order: the next waits until this one is done."""
        try:
            while queue and not self._stop.is_set():
                if not await self._deliver_one(queue[0], run):
                    break  # closing: not attempted (again); it stays queued for the next start
                queue.popleft()
                run.inflight -= 1
                run.wake.set()
        except Exception as exc:  # never a silent dead chain: its entries would hold the session forever
            run.error = exc
            run.wake.set()
        finally:
            del run.queues[key]  # no await since the emptiness check: a new entry starts a new chain

    async def _deliver_one(self, d: webhooks.Delivery, run: _Run) -> bool:
        """Deliver or dead-letter ``d``; False if the worker is closing before that (the entry stays
        queued). An attempt already sent when closing begins is finished and recorded."""
        o = self.options
        attempts = 0
        while True:
            attempts += 1
            async with run.limit:
                outcome = None if self._stop.is_set() else await self._post(d)
            if outcome is None:
                return False
            if outcome.ok:
                self.attempts["delivered"] += 1
                run.failing = False
                if run.failing_recorded is not False:  # once per session, or after a failure
                    run.failing_recorded = False
                    await webhooks.clear_failing(self.store, d.service_sid)
                run.delivered.append(d.id)  # the queue loop acknowledges it (it is woken next)
                return True
            if not run.failing_recorded:  # the first failure since a success (an earlier time is kept)
                run.failing_recorded = True
                await webhooks.mark_failing(self.store, d.service_sid, int(time.time() * 1000))
            last = attempts > o.max_retries or run.failing or not outcome.retry
            log.info("webhook %s of %s attempt %d failed: %s", d.id, d.service_sid, attempts, outcome.error)
            self.attempts["dead_lettered" if last else "retried"] += 1
            if last:
                await webhooks.dead_letter(self.store, d, outcome.error, attempts, o.dead_letter_max)
                run.failing = True
                log.warning("webhook %s of %s moved to the dead letters: %s", d.id, d.service_sid, outcome.error)
                return True
            delay = min(o.backoff_max_s, o.backoff_base_s * 2 ** (attempts - 1))
            await self._sleep(delay * random.uniform(0.5, 1.0))  # cut short by close()

    async def _post(self, d: webhooks.Delivery) -> _Outcome | None:
        """One attempt. Whatever fails while building or sending the request is a failed attempt
        (retried, then dead-lettered): an exception escaping here would leave the entry pending
        forever and, once ``batch`` such entries are read, stall the Service's queue. None: not
        sent, the worker is closing."""
        token = await self._auth_token(d.account_sid)
        if token is None:
            return _Outcome(False, f"unknown account {d.account_sid}", retry=False)
        assert self._http is not None
        try:
            params = form_params(d.account_sid, d.service_sid, d.event)
            headers = [
                ("Content-Type", "application/x-www-form-urlencoded; charset=utf-8"),
                ("X-Twilio-Signature", signature(token, d.url, params)),
                ("I-Twilio-Idempotency-Token", f"{d.service_sid}-{d.id}"),
                ("User-Agent", "TwilioProxy/1.1"),
            ]
            body = urlencode(params).encode()
            async with self._slots:
                if self._stop.is_set():  # waited for a slot until closing began: not sent
                    return None
                status = await self._http.post(d.url, body, headers)
        except DestinationBlockedError as exc:
            return _Outcome(False, str(exc), retry=False)
        except DeliveryError as exc:
            return _Outcome(False, str(exc))
        except Exception as exc:  # e.g. an encoding error: still an attempt that failed
            log.warning("webhook %s of %s: the request could not be made", d.id, d.service_sid, exc_info=True)
            return _Outcome(False, f"{type(exc).__name__}: {exc}")
        if 200 <= status < 300:
            return _Outcome(True)
        return _Outcome(False, f"HTTP {status}")

    def _forget_token(self, kind: str, ids: tuple[str, ...]) -> None:
        """A token set on any process signs the next request (storage/invalidation.py)."""
        if kind == invalidation.EVERYTHING:
            self._tokens.clear()
        elif kind == invalidation.ACCOUNT and ids:
            self._tokens.pop(ids[0], None)

    async def _auth_token(self, account_sid: str) -> str | None:
        """The account's auth token, cached for a few seconds (it signs every request)."""
        hit = self._tokens.get(account_sid)
        if hit is not None and hit[1] > time.monotonic():
            return hit[0]
        token = await accounts.auth_token(self.store, account_sid)
        self._tokens[account_sid] = (token, time.monotonic() + 5.0)
        return token
