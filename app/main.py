"""The composition root: create_app(settings) wires the store, auth, sweeper and routes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException

from storage import Store, StoreConfig, StoreError, accounts, expiry, services

from . import errors, routes
from .auth import Authenticator
from .settings import Settings

log = logging.getLogger("sync.app")


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or Settings.from_env()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if not settings.redis_url:
            raise RuntimeError("REDIS_URL is not set: start the server with the sync-server command")
        config = StoreConfig(settings.event_log_max, settings.event_log_keep_s)
        store = await Store.connect(settings.redis_url, config, cluster=settings.redis_cluster)
        if settings.account_sid and settings.auth_token:
            await accounts.ensure_account(store, settings.account_sid, settings.auth_token)
        stop = asyncio.Event()
        purge_wake = asyncio.Event()
        app.state.store = store
        app.state.settings = settings
        app.state.auth = Authenticator(store, settings.auth_cache_s)
        app.state.purge_now = purge_wake.set
        tasks = [
            asyncio.create_task(expiry.run_sweeper(store, settings.sweep_interval_s, stop)),
            asyncio.create_task(_purger(store, stop, purge_wake)),
        ]
        try:
            yield
        finally:
            stop.set()
            purge_wake.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            await store.close()

    app = Starlette(
        routes=routes.build(),
        lifespan=lifespan,
        exception_handlers={
            StoreError: errors.store_error_handler,
            errors.TwilioError: errors.twilio_error_handler,
            HTTPException: errors.http_error_handler,
            Exception: errors.server_error_handler,
        },
    )
    return app


async def _purger(store: Store, stop: asyncio.Event, wake: asyncio.Event) -> None:
    """Purge deleted Services now when told, and at start (a crash may have left some behind)."""
    while not stop.is_set():
        try:
            n = await services.purge_pending(store)
            if n:
                log.info("purged %d objects of deleted services", n)
        except StoreError:
            log.exception("purge failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout=30)
        wake.clear()
