"""One ``sync-server check``: run the workload (against a URL, or a spawned server with faults),
optionally save the recording, verify, print the verdict; or verify a saved recording again."""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from typing import Any

from .record import Recording
from .spawn import Faults, Spawned
from .verify import verify
from .workload import Plan, Target, run


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


def main(opts: Options) -> int:
    """The exit status: 0 when every check holds, 1 otherwise."""
    if opts.verify:
        rec = Recording.load(opts.verify)
    else:
        rec = Recording(meta={"seed": opts.plan.seed, "duration_s": opts.plan.duration_s,
                              "writers": opts.plan.writers, "subscribers": opts.plan.subscribers,
                              "event_log_max": opts.event_log_max})  # fmt: skip
        spawned = Spawned(opts.event_log_max, opts.durability) if opts.spawn else None
        try:
            faults: Any = None
            if spawned is not None:
                spawned.start()
                target = spawned.target()
                faults = Faults(spawned, opts.plan.seed, rec.faults) if opts.faults else None
            else:
                assert opts.target is not None
                target = opts.target
            rec.meta["url"] = target.url
            print(f"sync-server check: {opts.plan.duration_s:g} s on {target.url}, {opts.plan.writers} writers, "
                  f"{opts.plan.subscribers} subscribers, seed {opts.plan.seed}"
                  + (", faults" if faults else ""), file=sys.stderr)  # fmt: skip
            asyncio.run(run(target, opts.plan, rec, faults))
        finally:
            if spawned is not None:
                spawned.stop()
        if opts.record:
            rec.save(opts.record)
    verdict = verify(rec)
    print(verdict.report())
    return 0 if verdict.ok else 1
