"""What every handler needs: the store, the authenticated account, the Service, the base URL."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from storage import Store, services

from .render import base_url


@dataclass(frozen=True)
class Ctx:
    store: Store
    account: str
    base: str
    service: str = ""


async def context(request: Request, service: bool = True) -> Ctx:
    """Authenticate, and check the Service in the path belongs to the caller's account."""
    store: Store = request.app.state.store
    account = await request.app.state.auth.account_for(request)
    sid = ""
    if service:
        sid = await services.check(store, account, request.path_params["ServiceSid"])
    return Ctx(store, account, base_url(request), sid)
