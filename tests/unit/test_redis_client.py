"""storage/redis_client.py: the typed seam must describe what redis-py's clients really offer.

``Store.connect`` casts redis-py's asyncio ``Redis`` or ``RedisCluster`` to ``RedisClient``, so mypy
cannot check that the Protocol matches them: this does, by signature, with no server."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import Any

import pytest
from redis.asyncio.client import Pipeline, PubSub, Redis
from redis.asyncio.cluster import ClusterPipeline, ClusterPubSub, RedisCluster

from storage.redis_client import RedisClient, RedisPipeline, RedisPubSub, text

SEAMS = [
    (RedisClient, Redis),
    (RedisClient, RedisCluster),
    (RedisPipeline, Pipeline),
    (RedisPipeline, ClusterPipeline),
    (RedisPubSub, PubSub),
    (RedisPubSub, ClusterPubSub),
]


def _members(protocol: type) -> dict[str, Any]:
    skip = {"__init__", "__subclasshook__", "__parameters__", "__protocol_attrs__", "__non_callable_proto_members__"}
    return {
        name: value
        for name, value in vars(protocol).items()
        if callable(value) and name not in skip and (not name.startswith("_") or name in ("__aenter__", "__aexit__"))
    }


def _variants(func: Callable[..., Any]) -> list[Callable[..., Any]]:
    return list(typing.get_overloads(func)) or [func]


@pytest.mark.parametrize(("protocol", "real"), SEAMS, ids=lambda x: x.__name__)
def test_every_member_exists_and_takes_the_parameters_used(protocol: type, real: type) -> None:
    problems = []
    for name, declared in _members(protocol).items():
        actual = getattr(real, name, None)
        if actual is None:
            problems.append(f"{real.__name__} has no {name}")
            continue
        accepted = inspect.signature(actual).parameters
        takes_any = any(p.kind is p.VAR_KEYWORD for p in accepted.values())
        for variant in _variants(declared):
            for param in inspect.signature(variant).parameters.values():
                if param.name == "self" or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                    continue
                if param.name not in accepted and not takes_any:
                    problems.append(f"{real.__name__}.{name} takes no {param.name}")
    assert problems == []


def test_pipeline_commands_mirror_client_commands() -> None:
    """A command declared for both takes the same arguments queued on a pipeline as sent directly."""
    client, pipeline = _members(RedisClient), _members(RedisPipeline)
    for name in pipeline.keys() & client.keys():
        queued = inspect.signature(pipeline[name]).parameters
        direct = inspect.signature(_variants(client[name])[0]).parameters
        assert list(queued) == list(direct), name


def test_text_decodes_replies() -> None:
    assert text(b"IS\xc3\xa9") == "ISé"
    assert text("already") == "already"
    assert text(42) == "42"
