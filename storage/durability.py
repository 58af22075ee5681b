"""How durable a write is before it is acknowledged: ``SYNC_DURABILITY`` = local, fsync or replica.

* ``local``: the reply follows the primary's execution of the script, and Redis appends it to its
  AOF (when AOF is on) before it replies; a crash of the process loses nothing, a power loss up to
  ``appendfsync`` (everysec: about a second), and a failover whatever the replica had not received.
* ``fsync``: ``WAITAOF 1 0 <timeout>`` after the script: acknowledged once the primary's AOF is
  fsynced (survives a power loss of the primary; a failover can still lose it). Needs AOF on, and
  is meant for ``appendfsync always`` (the embedded Valkey's default; EVERYSEC_WARNING says why).
* ``replica``: ``WAIT 1 <timeout>`` after the script: acknowledged once at least one replica has the
  write (in its memory: what a failover promotes). A primary with no replica answers every write 503.

Why the wait travels in the same round trip as the script, on the same connection: WAIT and WAITAOF
wait for the offset of *this connection's* last write, and Redis refuses them inside a script. So
both are sent as one pipeline on the slot's primary (a Cluster pipeline with both commands pinned to
the node that owns the key). A wait that times out (``SYNC_DURABILITY_TIMEOUT_MS``) answers
StoreUnavailableError (503/20503): the write *was applied* on the primary and may or may not survive
a failover; a retry with the same Idempotency-Key (issue 13) is what makes retrying safe.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from redis.exceptions import AskError, MovedError, NoScriptError, TryAgainError

from .errors import StoreUnavailableError
from .redis_client import SORTED, UNREACHABLE, Health, LuaReply, raise_unavailable

log = logging.getLogger("sync.store")

Level = Literal["local", "fsync", "replica"]


@dataclass(frozen=True)
class Durability:
    level: Level = "local"
    timeout_ms: int = 1000

    def wait_command(self) -> tuple[str | int, ...] | None:
        """The command sent after the script on the same connection (None for ``local``)."""
        if self.level == "fsync":
            return ("WAITAOF", 1, 0, self.timeout_ms)
        if self.level == "replica":
            return ("WAIT", 1, self.timeout_ms)
        return None

    def satisfied(self, reply: Any) -> bool:
        """Did the wait's reply reach the level? (WAITAOF: [local fsynced, replicas]; WAIT: replicas)."""
        if self.level == "fsync":
            return isinstance(reply, list) and int(reply[0]) >= 1
        if self.level == "replica":
            return isinstance(reply, int) and reply >= 1
        return True


NOT_DURABLE = "the write was applied on the primary but not confirmed {what} within {ms} ms; it may be lost"


async def run_script(
    raw: Any, health: Health, durability: Durability, sha: str, text: str, declared: Sequence[str], arg: bytes
) -> LuaReply:
    """EVALSHA ``sha`` on the ``declared`` keys (one slot) followed by the durability wait, in one
    pipeline on their primary.

    ``raw`` is the unguarded redis-py client (asyncio ``Redis`` or ``RedisCluster``); unreachable
    Redis becomes StoreUnavailableError as through ``guard``. NOSCRIPT (a primary new to the script,
    e.g. a promoted replica after a SCRIPT FLUSH) loads it and sends again: the script did not run."""
    wait = durability.wait_command()
    assert wait is not None, "local needs no wait: Store.run calls the script directly"
    for _ in range(3):
        try:
            reply, acked = await _pipeline(raw, wait, sha, declared, arg)
        except SORTED as exc:
            raise_unavailable(health, "script", exc)
        lost = next((r for r in (reply, acked) if isinstance(r, UNREACHABLE)), None)
        if lost is not None:  # the reply was lost on the way back: the write may have been applied
            if hasattr(raw, "get_node_from_key"):
                raw._initialize = True  # refresh the slot map before the next call, as redis-py does
            raise_unavailable(health, "script", lost)
        if isinstance(reply, NoScriptError):
            await raw.script_load(text)
            continue
        if isinstance(reply, MovedError | AskError | TryAgainError):  # the slot moved: nothing ran
            await raw.nodes_manager.initialize()
            continue
        for answer in (reply, acked):
            if isinstance(answer, Exception):
                raise_unavailable(health, "script", answer)  # e.g. OOM, as through ``guard``
        if not durability.satisfied(acked):
            what = "fsynced" if durability.level == "fsync" else "on a replica"
            raise StoreUnavailableError("durability", message=NOT_DURABLE.format(what=what, ms=durability.timeout_ms))
        return reply  # type: ignore[no-any-return]
    raise_unavailable(health, "script", TryAgainError("the write's slot kept moving; try again"))


async def _pipeline(raw: Any, wait: tuple[str | int, ...], sha: str, declared: Sequence[str], arg: bytes) -> list[Any]:
    if hasattr(raw, "get_node_from_key"):  # Cluster: both commands pinned to the keys' primary
        node = raw.get_node_from_key(declared[0])
        pipe = raw.pipeline()
        pipe.execute_command("EVALSHA", sha, len(declared), *declared, arg, target_nodes=node)
        pipe.execute_command(*wait, target_nodes=node)
        return list(await pipe.execute(raise_on_error=False, allow_redirections=False))
    pipe = raw.pipeline(transaction=False)
    pipe.execute_command("EVALSHA", sha, len(declared), *declared, arg)
    pipe.execute_command(*wait)
    return list(await pipe.execute(raise_on_error=False))


async def check_durability(raw: Any, durability: Durability) -> None:
    """Refuse to start (ValueError) where ``fsync`` cannot work: a primary with AOF off answers
    WAITAOF with an error (a 1 ms wait on a connection that wrote nothing returns at once). Warn
    where it works less well than it could (``appendfsync`` other than ``always``: EVERYSEC_WARNING)."""
    if durability.level != "fsync":
        return
    kwargs: dict[str, Any] = {}
    if hasattr(raw, "get_node_from_key"):
        kwargs["target_nodes"] = raw.PRIMARIES
    try:
        await raw.execute_command("WAITAOF", 1, 0, 1, **kwargs)
    except UNREACHABLE:
        raise
    except Exception as exc:
        raise ValueError(f"SYNC_DURABILITY=fsync needs appendonly yes on every primary: {exc}") from exc
    try:
        policies = _config_values(await raw.execute_command("CONFIG", "GET", "appendfsync", **kwargs))
    except UNREACHABLE:
        raise
    except Exception as exc:  # CONFIG renamed or refused (a managed Redis): nothing to say
        log.info("SYNC_DURABILITY=fsync: could not read appendfsync (%s); appendfsync always is advised", exc)
        return
    if policies - {"always"}:
        log.warning(EVERYSEC_WARNING, ", ".join(sorted(policies)))


# At appendfsync everysec (or no) WAITAOF waits for Valkey's next background fsync: when writes are
# few (one every 20 ms), that took 26-58 ms at p50 on this box, against 3.2-3.7 ms with always;
# back to back the two come out alike (tests/bench/durability.py measures both). And Valkey sends
# each reply and pub/sub message before that fsync (while an earlier fsync runs it even postpones the
# AOF write, up to 2 s), so a subscriber or a read can see a write that a kill -9 of Valkey then
# takes back, its event id later reused (never an acknowledged write: that one waited). With always,
# Valkey writes and fsyncs before it sends anything, so what any client has seen survives the crash.
EVERYSEC_WARNING = (
    "SYNC_DURABILITY=fsync on appendfsync %s: each write waits for Valkey's next background fsync "
    "(tens of ms when writes are few), and subscribers may see a write that a crash of Redis then takes "
    "back; set appendfsync always on every primary (the embedded Valkey's default)"
)


def _config_values(reply: dict[Any, Any]) -> set[str]:
    """The values of one CONFIG GET of one parameter: redis-py answers ``{name: value}`` for one node
    and, on a Cluster, ``{node: {name: value}}``."""
    if reply and all(isinstance(v, dict) for v in reply.values()):
        return set().union(*(_config_values(by_node) for by_node in reply.values()))
    return {v.decode() if isinstance(v, bytes) else str(v) for v in reply.values()}
