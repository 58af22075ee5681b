"""One ``sync-server check``: run the workload (against a URL, or a spawned server with faults),
optionally save the recording, verify, print the verdict; or verify a saved recording again."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from .record import Recording
from .spawn import Faults, Spawned
from .verify import verify
from .workload import Plan, Target, run, say


@dataclass
class Options:
    plan: Plan
    target: Target | None = None  # None with spawn
    spawn: bool = False
    faults: bool = False
    record: str | None = None
    verify: str | None = None
    event_log_max: int = 1000  # the server's SYNC_EVENT_LOG_MAX: a log shorter than this was not trimmed
    durability: str = "local"  # SYNC_DURABILITY of a spawned server (--durability)
    cluster: bool = False  # with spawn: a Valkey Cluster and two servers (--cluster)


def main(opts: Options) -> int:
    """The exit status: 0 when every check holds, 1 otherwise."""
    if opts.verify:
        rec = Recording.load(opts.verify)
    else:
        rec = Recording(meta={"seed": opts.plan.seed, "duration_s": opts.plan.duration_s,
                              "writers": opts.plan.writers, "subscribers": opts.plan.subscribers,
                              "event_log_max": opts.event_log_max})  # fmt: skip
        spawned = Spawned(opts.event_log_max, opts.durability, opts.cluster) if opts.spawn else None
        try:
            faults: Any = None
            if spawned is not None:
                if opts.cluster:
                    say("starting a Valkey Cluster (3 masters + 3 replicas) and two servers on it")
                spawned.start()
                target = spawned.target()
                faults = Faults(spawned, opts.plan.seed, rec.faults, rec.errors) if opts.faults else None
            else:
                assert opts.target is not None
                target = opts.target
            urls = [target.url, *target.more_urls]
            rec.meta.update(url=target.url, urls=urls, cluster=opts.cluster, durability=opts.durability)
            say(f"{opts.plan.duration_s:g} s on {', '.join(urls)}" + (" (Valkey Cluster)" if opts.cluster else "")
                + f", {opts.plan.writers} writers, {opts.plan.subscribers} subscribers, seed {opts.plan.seed}"
                + (", faults" if faults else ""))  # fmt: skip
            if faults and opts.cluster and opts.durability != "replica":
                say(f"at --durability {opts.durability} a failover may lose the writes its replica had not received "
                    "(asynchronous replication): only --durability replica promises none is lost")  # fmt: skip
            asyncio.run(run(target, opts.plan, rec, faults))
        finally:
            if spawned is not None:
                spawned.stop()
        if opts.record:
            rec.save(opts.record)
    verdict = verify(rec)
    print(verdict.report())
    return 0 if verdict.ok else 1
