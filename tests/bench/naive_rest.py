"""The REST peer of issue 10: a naive Starlette Document update doing HSET + PUBLISH through redis-py.

Usage:  NAIVE_REDIS_URL=redis://127.0.0.1:6379/0 uvicorn tests.bench.naive_rest:app --http httptools \\
            --loop uvloop --workers 2 --port 9003 --no-access-log
Answers ``POST /v1/Services/{service}/Documents/{document}`` with form body ``Data=<JSON>`` (Basic
auth is accepted, not checked): the data is parsed as JSON, the Document hash gets it (one HSET) and
it is PUBLISHed to the Document's channel (one PUBLISH), then a small JSON body is returned. What
sync-server does on top (authentication, the atomic Lua write with revision, event log and webhook
queue, the Twilio-shaped answer) is what rest_writes.py's ratio prices.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

REDIS: aioredis.Redis | None = None


async def update_document(request: Request) -> JSONResponse:
    assert REDIS is not None
    service, document = request.path_params["service"], request.path_params["document"]
    data = (await request.form())["Data"]
    assert isinstance(data, str)
    parsed = json.loads(data)
    key = f"naive:{service}:{document}"
    await REDIS.hset(key, mapping={"data": data})
    await REDIS.publish(key, data)
    return JSONResponse({"sid": document, "service_sid": service, "data": parsed})


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    global REDIS
    REDIS = aioredis.Redis.from_url(os.environ.get("NAIVE_REDIS_URL", "redis://127.0.0.1:6379/0"))
    yield
    await REDIS.aclose()


app = Starlette(
    routes=[Route("/v1/Services/{service}/Documents/{document}", update_document, methods=["POST"])],
    lifespan=lifespan,
)
