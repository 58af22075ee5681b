"""Seeing what the server does: request ids, one log format, and the health and readiness probes.

- **Request ids.** ``RequestIds`` is a pure ASGI middleware (no Starlette ``BaseHTTPMiddleware``
  layer, no task): it makes ``Twilio-Request-Id`` (``RQ`` + 32 hex, as Twilio's header) for each
  HTTP request, puts it in a contextvar for the logs, keeps an incoming ``X-Request-Id`` in another,
  and adds the header to the response's start message, errors included (the 500 handler adds it
  too: Starlette sends that one from outside every user middleware). uvicorn runs each request in
  a task of its own, so a contextvar set here belongs to that request alone, and uvicorn's access
  log line, written when the response starts, inside that task, sees it.
- **Logs.** ``log_config(format, level)`` is the ``logging.config.dictConfig`` of everything the
  process logs, ``sync.*`` and uvicorn's error and access logs alike, in one format: ``text`` (one
  readable line) or ``json`` (one object a line: timestamp, level, logger, message, and the request
  id, incoming X-Request-Id, account and Service when known). The server command hands it to
  uvicorn as ``log_config``, which applies it in every worker process too.
- **Probes.** ``/healthz`` answers 200 while the process serves; ``/readyz`` answers 200 only when
  Redis answers, the Lua scripts are loaded (loaded now if Redis lost them) and the server is not
  draining (app/main.py sets ``app.state.draining`` on SIGTERM), 503 otherwise. Neither is
  authenticated and neither touches more than one Redis round trip (two after a Redis restart).
"""

from __future__ import annotations

import json
import logging
import random
import time
from contextvars import ContextVar
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from storage import Store

REQUEST_ID: ContextVar[str] = ContextVar("sync_request_id", default="")
INCOMING_ID: ContextVar[str] = ContextVar("sync_incoming_request_id", default="")
ACCOUNT: ContextVar[str] = ContextVar("sync_account", default="")
SERVICE: ContextVar[str] = ContextVar("sync_service", default="")

HEADER = "Twilio-Request-Id"
_HEADER = HEADER.lower().encode()
_INCOMING = b"x-request-id"
INCOMING_MAX = 128  # longest X-Request-Id kept (longer ones are cut): a log line stays a line


def new_request_id() -> str:
    """``RQ`` and 32 lowercase hex digits, as Twilio's ``Twilio-Request-Id``. Unique, not secret: from
    ``random``'s generator (seeded from the OS, and again in a forked child), not ``secrets``, whose
    system call per request sat on every REST write's path."""
    return f"RQ{random.getrandbits(128):032x}"


def _printable(raw: bytes) -> str:
    text = raw[:INCOMING_MAX].decode("latin-1")
    return "".join(c if " " <= c <= "~" else "?" for c in text)


class RequestIds:
    """The pure ASGI middleware described in the module docstring."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = new_request_id()
        REQUEST_ID.set(rid)
        incoming = ""
        for name, value in scope["headers"]:
            if name == _INCOMING:
                incoming = _printable(value)
                break
        INCOMING_ID.set(incoming)
        ACCOUNT.set("")
        SERVICE.set("")
        header = (_HEADER, rid.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                if not any(name.lower() == _HEADER for name, _ in headers):
                    headers.append(header)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_id)


def request_id_header() -> dict[str, str]:
    """The header of the request being answered (for answers sent outside the middleware)."""
    rid = REQUEST_ID.get()
    return {HEADER: rid} if rid else {}


# --- logs -----------------------------------------------------------------------------------------

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_ACCESS_FIELDS = ("client", "method", "path", "http_version", "status")


def _context() -> dict[str, str]:
    fields = {
        "request_id": REQUEST_ID.get(),
        "x_request_id": INCOMING_ID.get(),
        "account": ACCOUNT.get(),
        "service": SERVICE.get(),
    }
    return {k: v for k, v in fields.items() if v}


class TextFormatter(logging.Formatter):
    """``2026-01-01 12:00:00,123 INFO sync.app: message request_id=RQ… account=AC…`` (context when known)."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = _context()
        if not context:
            return line
        suffix = " ".join(f"{k}={v}" for k, v in context.items())
        head, sep, rest = line.partition("\n")  # a traceback stays after the line it belongs to
        return f"{head} {suffix}{sep}{rest}"


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``timestamp`` (UTC, ISO 8601, ms), ``level``, ``logger``, ``message``,
    the context when known, ``exc_info`` with a traceback; uvicorn's access lines also as fields."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        entry: dict[str, Any] = {
            "timestamp": f"{stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_context(),
        }
        args = record.args
        if record.name == "uvicorn.access" and isinstance(args, tuple) and len(args) == len(_ACCESS_FIELDS):
            entry.update(zip(_ACCESS_FIELDS, args, strict=True))
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc_info"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False, default=str)


def log_config(fmt: str, level: str) -> dict[str, Any]:
    """The dictConfig of every log of the process (``fmt`` text or json), uvicorn's included."""
    formatter = {"()": f"{__name__}.{'JsonFormatter' if fmt == 'json' else 'TextFormatter'}"}
    handler = {"class": "logging.StreamHandler", "formatter": "sync", "stream": "ext://sys.stderr"}
    level = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"sync": formatter},
        "handlers": {"sync": handler},
        "root": {"handlers": ["sync"], "level": level},
        "loggers": {  # uvicorn's own, through the root's handler (no handler of their own: one line each)
            name: {"handlers": [], "level": level, "propagate": True}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
        },
    }


def configure_logging(fmt: str, level: str) -> None:
    import logging.config

    logging.config.dictConfig(log_config(fmt, level))


# --- probes ---------------------------------------------------------------------------------------


async def healthz(request: Request) -> Response:
    """Liveness: the process answers (nothing else is checked: a Redis outage must not restart it)."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Readiness: Redis answers, the scripts are loaded, the server is not draining."""
    if getattr(request.app.state, "draining", False):
        return JSONResponse({"status": "draining"}, status_code=503)
    store: Store | None = getattr(request.app.state, "store", None)
    if store is None:
        return JSONResponse({"status": "starting"}, status_code=503)
    try:
        await store.ensure_scripts()
    except Exception as exc:  # an outage (Store.health logs it once) or anything else: not ready
        return JSONResponse({"status": "unavailable", "reason": type(exc).__name__}, status_code=503)
    return JSONResponse({"status": "ready"})
