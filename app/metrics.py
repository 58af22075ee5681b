"""``/metrics``: what this server is doing, in Prometheus' text format (prometheus-client).

Cheap by construction. Nothing on a hot path touches prometheus-client (its metrics take a lock per
``inc``): REST requests, Redis calls, frames, fan-out deliveries, replays, webhook attempts and
sweeps are counted in plain ints and ``storage.stats.Histogram`` where they happen (the request
middleware below, storage/redis_client.py ``guard``, realtime/hub.py ``RealtimeStats``,
realtime/websocket.py ``SENT``, the webhook worker's ``attempts``, storage/expiry.py). A custom
collector turns them into metric families only when /metrics is read.

Several workers (``SYNC_WORKERS`` > 1): a scrape reaches one of them, so each worker writes a
snapshot of its numbers, once a second, to ``<run dir>/<pid>.json`` (the run dir is a temporary
directory the ``sync-server`` command creates for the run and removes at exit; its path reaches the
workers in ``SYNC_RUN_DIR``), and the worker that answers adds up every snapshot, its own taken
fresh. Counters and histograms of a worker that died are kept (totals never go down); its gauges
are dropped. prometheus-client's own multiprocess mode was not used: it writes an mmap'd file on
every increment and does not support custom collectors, the two things that keep this cheap.

What is the same for every worker (webhook queues, whether Redis answers, embedded Valkey restarts)
is read by the answering worker at scrape time: the queues from Redis, the restarts from the
``valkey-restarts`` file the command's Valkey supervisor writes into the run dir.

Label sets are bounded: a route template, never a path; a Redis command name; a Service SID only for
the webhook queue gauges (bounded by the number of Services with a webhook URL or dead letters).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sized
from pathlib import Path
from typing import Any, Protocol

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from storage import Store, webhooks
from storage.stats import REQUEST_BUCKETS, Histogram, RedisStats, SweepStats
from storage.wire import errors

from .errors import error_response
from .settings import Settings

log = logging.getLogger("sync.metrics")

RUN_DIR_VAR = "SYNC_RUN_DIR"  # set by the sync-server command for its workers (not a setting)
RESTARTS_FILE = "valkey-restarts"
PUBLISH_S = 1.0  # how often a worker writes its snapshot (several workers only)
METHODS = frozenset({"GET", "POST", "DELETE", "PUT", "PATCH", "HEAD", "OPTIONS"})

# name -> (type, help); counters are named without ``_total`` (prometheus-client adds it)
SPEC: dict[str, tuple[str, str]] = {
    "sync_http_request_duration_seconds": ("histogram", "REST requests by route template, method and status"),
    "sync_redis_command_duration_seconds": ("histogram", "Redis calls by command (script: a Lua script)"),
    "sync_redis_errors": ("counter", "Redis calls that could not reach Redis (connection, timeout), by command"),
    "sync_redis_up": ("gauge", "1 if Redis answered a PING at this scrape"),
    "sync_redis_multiplex_connects": ("counter", "connections opened by the shared Redis connections (scripts, reads)"),
    "sync_redis_multiplex_in_flight": ("gauge", "calls sent over the shared Redis connections and not answered yet"),
    "sync_valkey_embedded": ("gauge", "1 if the server runs its embedded Valkey (REDIS_URL unset)"),
    "sync_valkey_restarts": ("counter", "restarts of the embedded Valkey by the server's supervisor"),
    "sync_worker_processes": ("gauge", "server worker processes reporting"),
    "sync_ws_connections": ("gauge", "open WebSocket connections"),
    "sync_ws_subscriptions": ("gauge", "object subscriptions of the open connections"),
    "sync_ws_frames_sent": ("counter", "WebSocket messages sent"),
    "sync_ws_sent_bytes": ("counter", "WebSocket message payload bytes sent"),
    "sync_ws_replays": ("counter", "subscriptions caught up from the event log on (re)subscribe"),
    "sync_ws_replayed_events": ("counter", "events sent while catching up"),
    "sync_ws_state_replays": ("counter", "catch-ups from the current state (the log no longer reached back)"),
    "sync_ws_overflow_closes": ("counter", "connections closed with twilsock 308 (slow consumer)"),
    "sync_ws_conflated_frames": ("counter", "Document frames replaced by a newer one while a socket was backed up"),
    "sync_pubsub_resyncs": (
        "counter",
        "realtime pub/sub lost and regained (or re-routed on a Cluster): each time every feed re-reads its log",
    ),
    "sync_ws_backed_up_connections": ("gauge", "connections whose socket takes no more bytes for now (the send queue)"),
    "sync_ws_behind_connections": (
        "gauge",
        "connections whose client has SYNC_WS_ACK_WINDOW or more events unacknowledged (Documents conflated)",
    ),
    "sync_ws_buffered_bytes": ("gauge", "bytes written to WebSocket connections and not yet taken by the kernel"),
    "sync_fanout_delivery_seconds": ("histogram", "change event time to its frame written, per delivery"),
    "sync_webhook_attempts": ("counter", "webhook attempts by outcome (delivered, retried, dead_lettered)"),
    "sync_webhook_queue_pending": ("gauge", "webhook entries not yet delivered, per Service"),
    "sync_webhook_queue_oldest_seconds": ("gauge", "age of the oldest pending webhook entry, per Service"),
    "sync_webhook_failing": ("gauge", "1 while the Service's webhook receiver is failing"),
    "sync_webhook_dead_letters": ("gauge", "webhook dead letters kept, per Service"),
    "sync_sweeper_expired": ("counter", "objects and items deleted by the expiry sweeper"),
    "sync_sweeper_runs": ("counter", "expiry sweeper ticks"),
}

Labels = tuple[tuple[str, str], ...]
Key = tuple[str, Labels]


class Snapshot:
    """Numbers of one or more processes: counters and gauges by (name, labels), histograms as
    (bounds, counts per bucket, sum)."""

    def __init__(self) -> None:
        self.counters: dict[Key, float] = {}
        self.gauges: dict[Key, float] = {}
        self.histograms: dict[Key, tuple[tuple[float, ...], list[int], float]] = {}

    @staticmethod
    def _key(name: str, labels: dict[str, str]) -> Key:
        return name, tuple(sorted(labels.items()))

    def counter(self, name: str, value: float, **labels: str) -> None:
        key = self._key(name, labels)
        self.counters[key] = self.counters.get(key, 0) + value

    def gauge(self, name: str, value: float, **labels: str) -> None:
        key = self._key(name, labels)
        self.gauges[key] = self.gauges.get(key, 0) + value

    def histogram(self, name: str, h: Histogram, **labels: str) -> None:
        self._add_histogram(self._key(name, labels), h.bounds, h.counts, h.sum)

    def _add_histogram(self, key: Key, bounds: tuple[float, ...], counts: list[int], total: float) -> None:
        have = self.histograms.get(key)
        if have is None or have[0] != bounds:
            self.histograms[key] = (bounds, list(counts), total)
        else:
            self.histograms[key] = (bounds, [a + b for a, b in zip(have[1], counts, strict=True)], have[2] + total)

    def merge(self, other: Snapshot, gauges: bool = True) -> None:
        for key, value in other.counters.items():
            self.counters[key] = self.counters.get(key, 0) + value
        if gauges:
            for key, value in other.gauges.items():
                self.gauges[key] = self.gauges.get(key, 0) + value
        for key, (bounds, counts, total) in other.histograms.items():
            self._add_histogram(key, bounds, counts, total)

    def to_json(self) -> str:
        return json.dumps(
            {
                "counters": [[n, dict(lb), v] for (n, lb), v in self.counters.items()],
                "gauges": [[n, dict(lb), v] for (n, lb), v in self.gauges.items()],
                "histograms": [[n, dict(lb), list(b), c, s] for (n, lb), (b, c, s) in self.histograms.items()],
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Snapshot:
        data = json.loads(text)
        snap = cls()
        for name, labels, value in data["counters"]:
            snap.counter(name, value, **labels)
        for name, labels, value in data["gauges"]:
            snap.gauge(name, value, **labels)
        for name, labels, bounds, counts, total in data["histograms"]:
            snap._add_histogram(cls._key(name, labels), tuple(bounds), counts, total)
        return snap

    def families(self) -> list[Metric]:
        """Prometheus metric families, one per name of SPEC that has samples (sorted by name)."""
        out: dict[str, Metric] = {}

        def family(name: str, labels: Labels) -> Metric:
            fam = out.get(name)
            if fam is None:
                kind, doc = SPEC[name]
                names = [k for k, _ in labels]
                cls = {"counter": CounterMetricFamily, "gauge": GaugeMetricFamily, "histogram": HistogramMetricFamily}
                fam = out[name] = cls[kind](name, doc, labels=names)
            return fam

        for (name, labels), value in sorted(self.counters.items()):
            fam = family(name, labels)
            assert isinstance(fam, CounterMetricFamily)
            fam.add_metric([v for _, v in labels], value)
        for (name, labels), value in sorted(self.gauges.items()):
            fam = family(name, labels)
            assert isinstance(fam, GaugeMetricFamily)
            fam.add_metric([v for _, v in labels], value)
        for (name, labels), (bounds, counts, total) in sorted(self.histograms.items()):
            fam = family(name, labels)
            assert isinstance(fam, HistogramMetricFamily)
            cumulative, running = [], 0
            for bound, n in zip([*map(_le, bounds), "+Inf"], counts, strict=True):
                running += n
                cumulative.append((bound, float(running)))
            fam.add_metric([v for _, v in labels], buckets=cumulative, sum_value=total)
        return [out[name] for name in sorted(out)]


def _le(bound: float) -> str:
    return repr(float(bound))


# --- what the process counts (duck-typed: app imports realtime only in main.py and cli.py) ---------


# read-only members (properties), so that the realtime classes' own types match


class _Stats(Protocol):
    @property
    def fanout(self) -> Histogram: ...
    @property
    def replays(self) -> int: ...
    @property
    def replayed_events(self) -> int: ...
    @property
    def state_replays(self) -> int: ...
    @property
    def overflow_closes(self) -> int: ...
    @property
    def conflated(self) -> int: ...
    @property
    def resyncs(self) -> int: ...


class _Hub(Protocol):
    @property
    def stats(self) -> _Stats: ...
    @property
    def feeds(self) -> Mapping[str, Any]: ...


class _Gateway(Protocol):
    @property
    def connections(self) -> Sized: ...
    @property
    def hub(self) -> _Hub: ...
    def backlog(self) -> tuple[int, int, int]: ...


class _Sent(Protocol):
    @property
    def frames(self) -> int: ...
    @property
    def bytes(self) -> int: ...


class _Worker(Protocol):
    @property
    def attempts(self) -> Mapping[str, int]: ...


class Metrics:
    """The numbers of this process and the /metrics endpoint; ``requests`` is filled by
    ``RequestMetrics`` (the middleware). Built in the lifespan (app/main.py)."""

    def __init__(self, settings: Settings, run_dir: str | None = None) -> None:
        self.settings = settings
        self.requests: dict[tuple[str, str, str], Histogram] = {}
        self.sweep = SweepStats()
        self.run_dir = Path(run_dir) if run_dir else None
        self.shared = self.run_dir is not None and settings.workers > 1  # several workers: snapshots
        self.store: Store | None = None
        self.gateway: _Gateway | None = None
        self.sent: _Sent | None = None
        self.worker: _Worker | None = None
        self._task: asyncio.Task[None] | None = None

    def attach(self, store: Store, gateway: _Gateway, sent: _Sent, worker: _Worker | None) -> None:
        self.store, self.gateway, self.sent, self.worker = store, gateway, sent, worker

    # -- this process --------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """This process's numbers now."""
        s = Snapshot()
        for (route, method, status), h in self.requests.items():
            s.histogram("sync_http_request_duration_seconds", h, route=route, method=method, status=status)
        if self.store is not None:
            redis: RedisStats = self.store.health.stats
            for command, h in redis.latency.items():
                s.histogram("sync_redis_command_duration_seconds", h, command=command)
            for command, n in redis.errors.items():
                s.counter("sync_redis_errors", n, command=command)
            mux = self.store.multiplexer
            if mux is not None:
                s.counter("sync_redis_multiplex_connects", mux.connects)
                s.gauge("sync_redis_multiplex_in_flight", mux.in_flight)
        if self.gateway is not None:
            hub = self.gateway.hub
            s.gauge("sync_ws_connections", len(self.gateway.connections))
            backed_up, buffered, behind = self.gateway.backlog()
            s.gauge("sync_ws_backed_up_connections", backed_up)
            s.gauge("sync_ws_buffered_bytes", buffered)
            s.gauge("sync_ws_behind_connections", behind)
            s.gauge("sync_ws_subscriptions", sum(len(f.subs) for f in hub.feeds.values()))
            st = hub.stats
            s.counter("sync_ws_replays", st.replays)
            s.counter("sync_ws_replayed_events", st.replayed_events)
            s.counter("sync_ws_state_replays", st.state_replays)
            s.counter("sync_ws_overflow_closes", st.overflow_closes)
            s.counter("sync_ws_conflated_frames", st.conflated)
            s.counter("sync_pubsub_resyncs", st.resyncs)
            s.histogram("sync_fanout_delivery_seconds", st.fanout)
        if self.sent is not None:
            s.counter("sync_ws_frames_sent", self.sent.frames)
            s.counter("sync_ws_sent_bytes", self.sent.bytes)
        if self.worker is not None:
            for outcome, n in self.worker.attempts.items():
                s.counter("sync_webhook_attempts", n, outcome=outcome)
        s.counter("sync_sweeper_expired", self.sweep.expired)
        s.counter("sync_sweeper_runs", self.sweep.sweeps)
        s.gauge("sync_worker_processes", 1)
        return s

    def _own_file(self) -> Path:
        assert self.run_dir is not None
        return self.run_dir / f"{os.getpid()}.json"

    def publish(self) -> None:
        """Write this worker's snapshot for the others (atomically: a reader never sees half)."""
        path = self._own_file()
        tmp = path.with_suffix(".tmp")
        tmp.write_text(self.snapshot().to_json())
        os.replace(tmp, path)

    async def start(self) -> None:
        if self.shared:
            self.publish()
            self._task = asyncio.create_task(self._publish_loop())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            with contextlib.suppress(OSError):  # the last numbers stay for the other workers
                self.publish()

    async def _publish_loop(self) -> None:
        while True:
            await asyncio.sleep(PUBLISH_S)
            try:
                self.publish()
            except OSError as exc:  # the run dir removed under us: nothing to share any more
                log.warning("cannot write metrics snapshot: %s", exc)

    def _all_processes(self) -> Snapshot:
        """This process's numbers, plus every other worker's last snapshot when there are several."""
        own = self.snapshot()
        if not self.shared:
            return own
        assert self.run_dir is not None
        total = own
        for path in self.run_dir.glob("*.json"):
            if not path.stem.isdigit() or int(path.stem) == os.getpid():
                continue
            try:
                other = Snapshot.from_json(path.read_text())
            except (OSError, ValueError, KeyError, TypeError):
                continue  # vanished or unreadable: skip it this time
            total.merge(other, gauges=_alive(int(path.stem)))
        return total

    # -- the whole server ------------------------------------------------------------------------

    async def _shared(self, s: Snapshot) -> None:
        """What every worker would say alike: read once, by the worker that answers."""
        store = self.store
        up = False
        if store is not None:
            with contextlib.suppress(Exception):
                up = bool(await asyncio.wait_for(store.redis.ping(), timeout=min(2.0, self.settings.redis_timeout_s)))
        s.gauge("sync_redis_up", 1 if up else 0)
        # the command writes the restarts file (0 at start) only when it runs the embedded Valkey
        restarts = self.run_dir / RESTARTS_FILE if self.run_dir is not None else None
        embedded = restarts is not None and restarts.exists()
        s.gauge("sync_valkey_embedded", 1 if embedded else 0)
        if restarts is not None and embedded:
            s.counter("sync_valkey_restarts", _read_int(restarts))
        if store is not None and up:
            try:
                queues = await webhooks.status(store)
            except Exception:  # Redis trouble: no queue gauges this time
                queues = []
            for q in queues:
                s.gauge("sync_webhook_queue_pending", q.pending, service=q.service_sid)
                s.gauge("sync_webhook_queue_oldest_seconds", q.oldest_age_s or 0.0, service=q.service_sid)
                s.gauge("sync_webhook_failing", 1 if q.failing_since is not None else 0, service=q.service_sid)
                s.gauge("sync_webhook_dead_letters", q.dead_letters, service=q.service_sid)

    async def scrape(self) -> bytes:
        snap = self._all_processes()
        await self._shared(snap)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Fixed(snap.families()))
        return generate_latest(registry)

    def allowed(self, request: Request) -> bool:
        """A bearer token if SYNC_METRICS_TOKEN is set; without one, only a loopback bind is open."""
        token = self.settings.metrics_token
        if token:
            given = request.headers.get("authorization", "")
            return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())
        return is_loopback(self.settings.host)

    async def endpoint(self, request: Request) -> Response:
        if not self.allowed(request):
            why = (
                "a bearer token (SYNC_METRICS_TOKEN) is required"
                if self.settings.metrics_token
                else "set SYNC_METRICS_TOKEN to read /metrics on a non-loopback bind"
            )
            return error_response(errors.UNAUTHENTICATED(why), headers={"WWW-Authenticate": "Bearer"})
        return Response(await self.scrape(), media_type=CONTENT_TYPE_LATEST)


class _Fixed(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_int(path: Path) -> int:
    try:
        return int(path.read_text().strip() or 0)
    except (OSError, ValueError):
        return 0


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def write_restarts(run_dir: str) -> Callable[[int], None]:
    """The embedded Valkey supervisor's ``on_restart``: records the count for /metrics."""

    def record(restarts: int) -> None:
        with contextlib.suppress(OSError):
            (Path(run_dir) / RESTARTS_FILE).write_text(str(restarts))

    return record


class RequestMetrics:
    """ASGI middleware: each HTTP request's latency by route template, method and status, in a
    plain histogram (no lock, no prometheus-client call). WebSockets never come here (the gateway's
    own protocol, realtime/websocket.py)."""

    def __init__(self, app: ASGIApp, requests: dict[tuple[str, str, str], Histogram]) -> None:
        self.app = app
        self.requests = requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # an exception before the answer started: the server's 500
        started = time.perf_counter()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            method = scope["method"] if scope["method"] in METHODS else "other"
            key = (path, method, str(status))
            h = self.requests.get(key)
            if h is None:
                h = self.requests[key] = Histogram(REQUEST_BUCKETS)
            h.observe(time.perf_counter() - started)
