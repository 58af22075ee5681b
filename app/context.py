"""What every handler needs: the store, the authenticated account, the Service, the base URL."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from storage import Kind, Store, services

from .observe import ACCOUNT, SERVICE
from .render import base_url

Handler = Callable[[Request], Awaitable[Response]]


def sid_param(kind: Kind) -> str:
    """The path parameter naming an object of ``kind`` under which items or permissions live
    (``ListSid``), as Twilio's API names it."""
    return f"{kind.label}Sid"


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
    ACCOUNT.set(account)  # for the log lines of this request (app/observe.py)
    sid = ""
    if service:
        sid = await services.check(store, account, request.path_params["ServiceSid"])
        SERVICE.set(sid)
    return Ctx(store, account, base_url(request), sid)
