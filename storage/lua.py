"""The Lua scripts: one registry for all of them, and their calling convention by name.

Every script is a file in storage/scripts/ (none lives in a Python string), of one of two sorts:

* **write scripts** (``WriteScript``) get the shared prelude scripts/lib.lua prepended and are run
  with ``Store.run``, which adds the common context (Service key prefix, clock, actor, log cap);
* **plain scripts** (``PlainScript``) have no prelude and are run with ``Store.call``;

and scripts/probe.lua, never run: loaded once at connect (``check_shebang``) to refuse a server
older than Redis/Valkey 7.0 in one line.

Arguments go by name: all of a call's arguments travel as ONE msgpack map in ``ARGV[1]``, which the
script unpacks into the table ``A`` (``A.ttl``, ``A.if_match``…). Adding an argument (an idempotency
key, a durability level) touches the scripts that read it and their callers, never the numbering of
the others. Values keep their Lua meaning: a str arrives as a string ("" stays "", which the scripts
give meanings such as "keep the TTL"), an int as a number, a list as an array, None as nil (absent).
``KEYS`` still carries the keys, so each call is routed to its slot (Redis Cluster).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Literal, get_args

import msgpack
from redis.exceptions import ResponseError

from .redis_client import LuaReply, RedisClient, RedisScript, text

WriteScript = Literal[
    "object_create",
    "object_update",
    "object_delete",
    "item_write",
    "item_delete",
    "stream_publish",
    "permission_write",
    "reachability",
    "object_rebase",
]
PlainScript = Literal[
    "service_update",
    "webhook_config",
    "webhook_dead",
    "webhook_failing",
    "webhook_lease",
    "idempotency_claim",
    "idempotency_finish",
]
PRELUDE = "lib"
EPILOGUE = "idempotency"  # runs each write script as a function, recording an Idempotency-Key with it
PROBE = "probe"  # no prelude, never called: loaded at connect to see that the server knows shebangs

# what a named argument may be (msgpack turns it into the Lua value described above)
LuaArg = str | bytes | int | float | None | Sequence["LuaArg"] | Mapping[str, "LuaArg"]


def source(name: str) -> str:
    """The text of storage/scripts/<name>.lua (package data, so it ships with the wheel)."""
    return resources.files("storage").joinpath("scripts", f"{name}.lua").read_text()


def pack(args: Mapping[str, LuaArg]) -> bytes:
    """The one structured argument (``ARGV[1]``) a script unpacks with ``cmsgpack.unpack``.

    ``use_bin_type=False``: Redis's cmsgpack predates msgpack's bin types and refuses them, so bytes
    go as msgpack raw strings, which it reads as Lua strings like any str."""
    packed: bytes = _PACKER.pack(args)
    return packed


# one packer for every write (msgpack.packb makes one, and its buffer, per call: half its cost here);
# the event loop's thread is the only one that writes
_PACKER = msgpack.Packer(use_bin_type=False)


def field_pairs(fields: Mapping[str, LuaArg]) -> list[LuaArg]:
    """A mapping as the flat ``field, value, …`` array HSET and XADD take (``unpack(A.fields)``);
    an array, not a map, so the order is kept."""
    return [x for kv in fields.items() for x in kv]


# A write script starts with a shebang (Redis/Valkey 7+), which makes the server refuse it whole,
# before its first command, when a write could not be kept: memory past ``maxmemory`` (OOM), AOF or
# RDB writes failing (MISCONF), a read-only replica (READONLY), too few replicas (NOREPLICAS).
# Without it each command is checked as it comes, and a script refused half-way leaves what it
# already wrote (an object without its event, say). Deletes only free memory, so they may run past
# maxmemory (``allow-oom``): an operator can delete to make room.
SHEBANG = "#!lua"
MAY_RUN_OUT_OF_MEMORY: frozenset[str] = frozenset({"object_delete", "item_delete"})


async def check_shebang(redis: RedisClient) -> None:
    """Refuse to start (ValueError) on a server older than Redis/Valkey 7.0, which would refuse every
    write script for its shebang: scripts/probe.lua, loaded at connect, says it first."""
    try:
        await redis.script_load(source(PROBE))
    except ResponseError as exc:
        raise ValueError(f"sync-server needs Redis or Valkey 7.0 or later (scripts with a shebang): {exc}") from exc


def write_text(name: WriteScript) -> str:
    """The text Redis runs for a write script: its shebang, the prelude, the script as a function,
    the epilogue (scripts/idempotency.lua, which records an Idempotency-Key with the write's reply)."""
    shebang = f"{SHEBANG} flags=allow-oom" if name in MAY_RUN_OUT_OF_MEMORY else SHEBANG
    return f"{shebang}\n{source(PRELUDE)}\nlocal function body()\n{source(name)}\nend\n{source(EPILOGUE)}"


class Scripts:
    """Every script registered once on one client. Calls are EVALSHA; the client (redis-py, or the
    multiplexer) loads the script again when a server answers NOSCRIPT (after a restart, or on a
    Cluster node new to it)."""

    def __init__(self, redis: RedisClient, calls: RedisClient | None = None) -> None:
        """``calls``: the client that sends the scripts (the multiplexer, storage/multiplex.py);
        ``redis`` by default. SCRIPT EXISTS and LOAD of ``ensure_loaded`` go through ``redis``."""
        calls = calls or redis
        texts = {name: write_text(name) for name in get_args(WriteScript)}
        texts |= {name: source(name) for name in get_args(PlainScript)}
        self._redis = redis
        self._by_sha = {hashlib.sha1(t.encode()).hexdigest(): t for t in texts.values()}
        self._write = {name: calls.register_script(texts[name]) for name in get_args(WriteScript)}
        self._write_text = {name: texts[name] for name in get_args(WriteScript)}  # storage/durability.py
        self._plain = {name: calls.register_script(texts[name]) for name in get_args(PlainScript)}

    async def ensure_loaded(self) -> int:
        """Load every script Redis does not have (after a restart or a SCRIPT FLUSH) in one round
        trip when all are there (SCRIPT EXISTS). Calls would load them on NOSCRIPT anyway; this is
        what the readiness probe checks. Returns how many were loaded."""
        shas = list(self._by_sha)
        present = await self._redis.script_exists(*shas)
        missing = [sha for sha, there in zip(shas, present, strict=True) if not there]
        for sha in missing:
            await self._redis.script_load(self._by_sha[sha])
        return len(missing)

    def write(self, name: WriteScript) -> RedisScript:
        return self._write[name]

    def write_source(self, name: WriteScript) -> tuple[str, str]:
        """(SHA1, text) of a write script, for callers that pipeline its EVALSHA themselves."""
        text = self._write_text[name]
        return hashlib.sha1(text.encode()).hexdigest(), text

    def plain(self, name: PlainScript) -> RedisScript:
        return self._plain[name]


class ScriptReply:
    """A write script's ``{"OK", …}`` answer (error answers become exceptions before this), read by
    position (0 is "OK") with the type each script's header documents; a wrong type raises
    TypeError, so a script and its caller cannot silently disagree."""

    __slots__ = ("_values",)

    def __init__(self, values: list[LuaReply]) -> None:
        self._values = values

    def raw(self, i: int) -> bytes:
        """A Lua string, as bytes (e.g. a packed item)."""
        value = self._values[i]
        if not isinstance(value, bytes):
            raise TypeError(f"script reply [{i}] is {type(value).__name__}, not a string")
        return value

    def text(self, i: int) -> str:
        """A Lua string, decoded."""
        return text(self.raw(i))

    def number(self, i: int) -> int:
        """A Lua number (Redis truncates it to an integer)."""
        value = self._values[i]
        if not isinstance(value, int):
            raise TypeError(f"script reply [{i}] is {type(value).__name__}, not a number")
        return value

    def strings(self, i: int) -> list[bytes]:
        """An array of Lua strings (e.g. a hash as HGETALL answers it: field, value, …)."""
        value = self._values[i]
        if isinstance(value, list):
            strings = [x for x in value if isinstance(x, bytes)]
            if len(strings) == len(value):
                return strings
        raise TypeError(f"script reply [{i}] is not an array of strings")
