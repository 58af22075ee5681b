"""The composition root: create_app(settings) wires the store, auth, sweeper and routes."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from types import FrameType
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.routing import Route

from realtime.cluster_broker import shard_broker
from realtime.gateway import PATH as GATEWAY_PATH, Gateway, GatewayConfig
from realtime.session import Limits
from realtime.webhooks import WebhookOptions, WebhookWorker
from realtime.websocket import ENDPOINTS as WEBSOCKET_ENDPOINTS, SENT
from storage import Store, StoreError, StoreUnavailableError, accounts, expiry, services
from storage.startup import when_reachable
from storage.wire.errors import TwilioError

from . import console, errors, observe, openapi, routes
from .auth import Authenticator
from .idempotency import Idempotency
from .metrics import RUN_DIR_VAR, Metrics, RequestMetrics
from .router import IndexedRouter
from .settings import Settings

log = logging.getLogger("sync.app")


# The young generation's threshold counts tracked objects allocated and not yet freed. At Python's
# 700, the objects of requests in flight (64 concurrent Document updates hold several thousand)
# crossed it every few requests: 2,700 young and 250 middle collections in 30,000 writes, which
# scanned those live objects and moved them to the middle generation to be scanned again, 0.55 s
# of CPU, 5 % of a REST write's. At 10,000 the same load ran none (only start-up's). A fan-out
# allocates and frees in step the same way; a crowd connecting at once (about 26 long-lived
# objects per WebSocket) runs a young collection every 10,000 of them and a middle one every
# 100,000, each a pause of milliseconds. The full collection: Python runs one after every 10 middle
# collections once the old generation has grown by a quarter, so with the defaults 5,000 connects
# ran 4 full collections of 40 ms each (a pause for every subscriber, ~4 % of the connects' CPU);
# after every 100, they run none (tests/unit/test_gc_policy.py). Garbage that is a cycle waits
# longer for the full collection: the server makes few (connections and sessions are freed by
# reference counting), and a full collection still runs when it is due.
GC_THRESHOLDS = (10000, 10, 100)


def settle_heap() -> None:
    """Start-up done: everything made so far (modules, the app, the store) lives as long as the
    process. Moved out of the collector's reach (``gc.freeze``), so a full collection walks only
    what connections and requests made, and its pauses (which delay every subscriber's next frame)
    stay short; and full collections made rare (``GC_THRESHOLDS``)."""
    gc.collect()
    gc.set_threshold(*GC_THRESHOLDS)
    gc.freeze()


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or Settings.from_env()
    metrics = Metrics(settings, os.environ.get(RUN_DIR_VAR)) if settings.metrics else None

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        if not settings.redis_url:
            raise RuntimeError("REDIS_URL is not set: start the server with the sync-server command")
        config = settings.store_config()
        redis_url = settings.redis_url

        async def connect() -> Store:
            store = await Store.connect(
                redis_url, config, cluster=settings.redis_cluster, timeout_s=settings.redis_timeout_s
            )
            try:
                if settings.account_sid and settings.auth_token:
                    await accounts.ensure_account(store, settings.account_sid, settings.auth_token)
            except BaseException:
                await store.close()
                raise
            return store

        # a worker starts once serve has reached Redis, but a Cluster master may die in between
        store = await when_reachable(connect, redis_url, settings.redis_startup_wait_s, log)
        stop = asyncio.Event()
        purge_wake = asyncio.Event()
        app.state.store = store
        app.state.settings = settings
        app.state.auth = Authenticator(store, settings.auth_cache_s)
        app.state.purge_now = purge_wake.set
        tasks = [
            asyncio.create_task(
                expiry.run_sweeper(
                    store,
                    settings.sweep_interval_s,
                    stop,
                    metrics.sweep if metrics else None,
                    lease_ms=settings.webhook_lease_ms,
                )
            ),
            asyncio.create_task(_purger(store, stop, purge_wake)),
        ]
        gateway = Gateway(store, settings.redis_url, gateway_config(settings))
        await gateway.start()
        app.state.gateway = gateway
        brokers = partial(shard_broker, settings.redis_url, store.cluster) if settings.redis_url else None
        worker = WebhookWorker(store, webhook_options(settings), brokers) if settings.webhooks else None
        if worker is not None:
            await worker.start()
        if metrics is not None:
            metrics.attach(store, gateway, SENT, worker)
            await metrics.start()
        app.state.draining = False

        async def drain(sig: int) -> None:
            # /readyz answers 503 from now on, so a load balancer stops sending; the gateway
            # refuses new WebSockets and tells open ones to reconnect (308); REST is served on
            # for SYNC_DRAIN_S (the balancer's reaction time) on SIGTERM (Ctrl-C: no wait)
            app.state.draining = True
            console.end_streams()  # the console's event streams first: none may hold up the shutdown
            window = settings.drain_s if sig == signal.SIGTERM else 0.0
            log.info("draining (signal %d): /readyz 503, shutting down in %.1f s", sig, window)
            await asyncio.gather(gateway.drain(), asyncio.sleep(window))

        restore = _drain_on_signal(drain)
        settle_heap()
        try:
            # the lifespan state is where the server's WebSocket protocol (realtime/websocket.py,
            # given to uvicorn as ws=) finds the endpoint of each path
            yield {WEBSOCKET_ENDPOINTS: {GATEWAY_PATH: gateway}}
        finally:
            restore()
            stop.set()
            purge_wake.set()
            await gateway.close()
            if worker is not None:
                await worker.close()
            if metrics is not None:
                await metrics.close()
            await asyncio.gather(*tasks, return_exceptions=True)
            await store.close()

    probes = [
        Route("/healthz", observe.healthz, methods=["GET"]),
        Route("/readyz", observe.readyz, methods=["GET"]),
        Route("/openapi.json", openapi.openapi_json, methods=["GET"]),
    ]
    table = probes + routes.build() + console.routes()  # the admin console at /console (app/console)
    middleware = [Middleware(observe.RequestIds)]
    if metrics is not None:
        table.append(Route("/metrics", metrics.endpoint, methods=["GET"]))
        middleware.append(Middleware(RequestMetrics, requests=metrics.requests))
    middleware.append(Middleware(Idempotency, ttl_s=settings.idempotency_ttl_s))  # innermost: sees the handler's answer
    app = Starlette(
        routes=table,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={
            StoreError: errors.store_error_handler,
            TwilioError: errors.twilio_error_handler,
            HTTPException: errors.http_error_handler,
            Exception: errors.server_error_handler,
        },
    )
    # the same table, dispatched by segment count (app/router.py); built before the first request
    app.router = IndexedRouter(routes=table, lifespan=lifespan)
    app.router.redirect_slashes = False  # a trailing slash is a 404 in Twilio's JSON, never a bare 307
    return app


# The realtime options classes have no defaults for what is a setting: they are built here, and
# only here, from Settings, so each default is declared once (app/settings.py).


def gateway_config(settings: Settings) -> GatewayConfig:
    """The realtime gateway's knobs from the SYNC_WS_* settings."""
    limits = Limits(
        queue_frames=settings.ws_queue_frames,
        ack_window=settings.ws_ack_window,
        max_inflight=settings.ws_max_inflight,
        subscriptions=settings.ws_subscriptions,
        token_warn_s=settings.ws_token_warn_s,
    )
    return GatewayConfig(
        max_connections=settings.ws_max_connections,
        max_frame_bytes=settings.ws_max_frame_bytes,
        public_url=settings.public_url,
        limits=limits,
    )


def webhook_options(settings: Settings) -> WebhookOptions:
    """The delivery worker's knobs from the SYNC_WEBHOOK_* settings."""
    return WebhookOptions(
        connect_timeout_s=settings.webhook_connect_timeout_s,
        read_timeout_s=settings.webhook_read_timeout_s,
        max_retries=settings.webhook_max_retries,
        backoff_base_s=settings.webhook_backoff_base_s,
        backoff_max_s=settings.webhook_backoff_max_s,
        concurrency=settings.webhook_concurrency,
        service_concurrency=settings.webhook_service_concurrency,
        lease_ms=settings.webhook_lease_ms,
        scan_interval_s=settings.webhook_scan_interval_s,
        dead_letter_max=settings.webhook_dead_letter_max,
        allow_networks=settings.webhook_allow_networks,
        deny_networks=settings.webhook_deny_networks,
    )


async def _purger(store: Store, stop: asyncio.Event, wake: asyncio.Event) -> None:
    """Purge deleted Services now when told, and at start (a crash may have left some behind)."""
    while not stop.is_set():
        try:
            n = await services.purge_pending(store)
            if n:
                log.info("purged %d objects of deleted services", n)
        except StoreUnavailableError:  # an outage: Store.health logged it once
            pass
        except Exception:  # keep purging after any other error
            log.exception("purge failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout=30)
        wake.clear()


SHUTDOWN_SIGNALS = (signal.SIGINT, signal.SIGTERM)
Handler = Callable[[int, FrameType | None], object] | int | signal.Handlers | None


def _drain_on_signal(drain: Callable[[int], Awaitable[None]]) -> Callable[[], None]:
    """Order the shutdown: on SIGINT/SIGTERM, first ``drain(signal)`` (readiness goes false, the
    gateway tells every WebSocket client to reconnect, twilsock close 308, and ends its connection;
    REST is served on for SYNC_DRAIN_S after a SIGTERM; bounded), and only then hand
    the signal to uvicorn, whose graceful shutdown stops accepting, lets in-flight requests finish
    (``timeout_graceful_shutdown``) and runs the lifespan's shutdown; the server command stops the
    embedded Valkey after that (app/cli.py). Returns what puts the previous handlers back.

    Why here: uvicorn has no hook before its shutdown closes every WebSocket (with 1012), and a
    uvicorn Server subclass would not reach the workers that ``SYNC_WORKERS`` > 1 spawns (uvicorn's
    Multiprocess builds its own Server in each). The lifespan starts inside every worker, after
    uvicorn installed its signal handlers (main thread), so it wraps them the same way everywhere.
    Signals that come while draining are held and passed on, in order, once it is done.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None  # signals are only delivered to the main thread's handlers
    loop = asyncio.get_running_loop()
    previous: dict[int, Handler] = {sig: signal.getsignal(sig) for sig in SHUTDOWN_SIGNALS}
    held: list[int] = []
    drained = False
    tasks: set[asyncio.Task[None]] = set()

    def pass_on(sig: int) -> None:
        handler = previous[sig]
        if callable(handler):
            handler(sig, None)
        elif handler == signal.SIG_DFL:  # pragma: no cover - uvicorn always installs its own
            signal.signal(sig, signal.SIG_DFL)
            signal.raise_signal(sig)

    async def drain_then_pass_on(sig: int) -> None:
        nonlocal drained
        try:
            await drain(sig)
        except Exception:
            log.exception("draining failed")
        drained = True
        while held:
            pass_on(held.pop(0))

    def start(sig: int) -> None:  # in the event loop
        if not tasks:
            tasks.add(loop.create_task(drain_then_pass_on(sig)))

    def on_signal(sig: int, frame: FrameType | None) -> None:
        if drained:
            pass_on(sig)
            return
        held.append(sig)
        if not tasks:
            loop.call_soon_threadsafe(start, sig)  # a signal handler may interrupt the loop anywhere

    for sig in SHUTDOWN_SIGNALS:
        signal.signal(sig, on_signal)
    # a worker of several is born with SIGINT blocked (app/cli.py): a Ctrl-C held since is delivered now
    signal.pthread_sigmask(signal.SIG_UNBLOCK, SHUTDOWN_SIGNALS)

    def restore() -> None:
        for sig, handler in previous.items():
            if handler is not None:
                signal.signal(sig, handler)

    return restore
