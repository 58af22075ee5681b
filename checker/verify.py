"""The verdict: every check over a Recording, each anomaly one line, and the figures.

- No acknowledged write lost: every write answered 2xx is in its object's event log at the event
  id its answer named (revision = hex of the event id), and in the final state unless a later write
  replaced it; every event in a log comes from a write some client issued, once (no phantom or
  doubled write); the final state is what the log's last events say.
- Event ids gapless and in order: each log runs 0, 1, 2 … (from its first retained event when
  trimmed) up to the object's final revision.
- Delivery: each subscriber got each object's events in strictly increasing id order, none twice,
  each as the log recorded it, up to the last one; for Lists and Maps with no id skipped, but for
  a state replay (``_state_replay``); for a Document skips are allowed (after a reconnect, or to a
  slow reader, only its latest state is sent).
- Linearizability: each Document's reads and If-Match writes (checker.linearizable).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .linearizable import check
from .record import Obj, Recording

MAX_LISTED = 50


CHECKS = ("acknowledged writes kept", "event ids gapless", "delivered once, in order", "linearizable")


@dataclass
class Verdict:
    anomalies: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    failed: Counter[str] = field(default_factory=Counter)  # check -> anomalies

    def add(self, check: str, message: str) -> None:
        self.failed[check] += 1
        self.anomalies.append(f"[{check}] {message}")

    def extend(self, check: str, messages: list[str]) -> None:
        for m in messages:
            self.add(check, m)

    @property
    def ok(self) -> bool:
        return not self.anomalies

    def report(self) -> str:
        lines = ["sync-server check: " + ("OK" if self.ok else f"FAILED, {len(self.anomalies)} anomalies")]
        lines += [f"  check {c}: " + (f"FAILED ({self.failed[c]})" if self.failed[c] else "ok") for c in CHECKS]
        lines += [f"  {k}: {v}" for k, v in self.figures.items()]
        lines += [f"  ANOMALY {a}" for a in self.anomalies[:MAX_LISTED]]
        if len(self.anomalies) > MAX_LISTED:
            lines.append(f"  … and {len(self.anomalies) - MAX_LISTED} more")
        return "\n".join(lines)


def _token(data: Any, field_name: str) -> Any:
    return data.get(field_name) if isinstance(data, dict) else data


def verify(rec: Recording, budget: int = 2_000_000) -> Verdict:
    v = Verdict()
    outcomes: Counter[str] = Counter()
    for o in rec.objects.values():
        _log_gapless(o, v, int(rec.meta.get("event_log_max", 1000)))
        if o.kind == "document":
            _document(o, v, budget, outcomes)
        else:
            _collection(o, v, outcomes)
    delivered, state_replays = _deliveries(rec, v, int(rec.meta.get("event_log_max", 1000)))
    f = v.figures
    f["operations"] = sum(outcomes.values())
    f["outcomes"] = ", ".join(f"{k}={n}" for k, n in sorted(outcomes.items()))
    f["events in logs"] = sum(len(o.log) for o in rec.objects.values())
    f["events delivered"] = delivered
    f["state replays"] = state_replays  # List/Map subscribers sent the current state (their cursor trimmed away)
    f["subscriber connections"] = sum(rec.sessions.values())
    f["faults injected"] = len(rec.faults)
    if rec.faults:
        f["faults"] = ", ".join(f"{k}={n}" for k, n in sorted(Counter(x["what"] for x in rec.faults).items()))
        _fault_figures(rec.faults, f)
    v.extend("run", rec.errors)
    f["anomalies"] = len(v.anomalies)
    return v


def _fault_figures(faults: list[dict[str, Any]], f: dict[str, Any]) -> None:
    """How the deployment took its faults: failover times of the Cluster masters killed, and the
    servers that exited when started again before one came up (a Cluster without a master for some
    slots: the start-up's first writes fail, and ``serve`` exits 1 for systemd's ``Restart=``)."""
    failovers = [x for x in faults if "failover_s" in x]
    if failovers:
        promoted = sorted(x["failover_s"] for x in failovers)
        whole = sorted(x["whole_again_s"] for x in failovers if "whole_again_s" in x)
        f["failovers"] = f"{len(failovers)}, replica promoted after {promoted[0]}–{promoted[-1]} s" + (
            f", old master back in sync as a replica after {whole[0]}–{whole[-1]} s" if whole else ""
        )
    exited = sum(x.get("starts", 1) - 1 for x in faults)
    if exited:
        f["sync-server starts that exited before ready (started again)"] = exited


def _log_gapless(o: Obj, v: Verdict, log_max: int) -> None:
    ids = [e["id"] for e in o.log]
    if not o.log_complete:
        v.add(
            "event ids gapless",
            f"{o.sid}: event log read up to {ids[-1] if ids else None}, not to its revision {o.final_revision}",
        )
    if ids and ids[0] != 0 and len(ids) < log_max:  # the server trims a log to its last log_max events
        v.add("event ids gapless", f"{o.sid}: event log starts at {ids[0]}, not 0, yet holds fewer than {log_max}")
    for a, b in zip(ids, ids[1:], strict=False):
        if b != a + 1:
            v.add("event ids gapless", f"{o.sid}: event ids jump from {a} to {b}")
    if ids and o.final_revision is not None and ids[-1] != o.final_revision:
        v.add("event ids gapless", f"{o.sid}: last event {ids[-1]} but revision {o.final_revision}")


def _document(o: Obj, v: Verdict, budget: int, outcomes: Counter[str]) -> None:
    by_value: dict[Any, list[Any]] = {}
    for op in o.ops:
        outcomes[f"{op.kind}_{op.outcome}"] += 1
        if op.kind == "cas":
            by_value.setdefault(op.value, []).append(op)
    log = {e["id"]: e for e in o.log}
    first = o.log[0]["id"] if o.log else 0
    for op in o.ops:
        if op.kind == "cas" and op.outcome == "ok" and op.revision is not None and op.revision >= first:
            e = log.get(op.revision)
            if e is None or _token(e["data"], "w") != op.value:
                v.add(
                    "acknowledged writes kept",
                    f"{o.sid}: acknowledged write {op.value!r} (revision {op.revision}) lost: the log has {e}",
                )
    seen: Counter[Any] = Counter()
    for e in o.log:
        if e["id"] == 0:
            continue
        value = _token(e["data"], "w")
        seen[value] += 1
        writes = by_value.get(value, [])
        if not writes:
            v.add("acknowledged writes kept", f"{o.sid}: event {e['id']} holds {value!r}, which no client wrote")
        elif all(w.expect != e["id"] - 1 for w in writes):
            v.add(
                "acknowledged writes kept",
                f"{o.sid}: event {e['id']} applied {value!r}, written with If-Match {writes[0].expect}",
            )
    v.extend(
        "acknowledged writes kept", [f"{o.sid}: write {val!r} applied {n} times" for val, n in seen.items() if n > 1]
    )
    if o.log and _token(o.final.get(""), "w") != _token(o.log[-1]["data"], "w"):
        v.add(
            "acknowledged writes kept",
            f"{o.sid}: final data {o.final.get('')} is not the last event's {o.log[-1]['data']}",
        )
    started = time.monotonic()
    result = check(o.ops, (0, o.initial), budget)
    f = v.figures
    f["documents checked for linearizability"] = f.get("documents checked for linearizability", 0) + 1
    f["linearizability: ops"] = f.get("linearizability: ops", 0) + result.ops
    f["linearizability: states explored"] = f.get("linearizability: states explored", 0) + result.explored
    f["linearizability: seconds"] = round(f.get("linearizability: seconds", 0) + time.monotonic() - started, 2)
    if result.ok is None:
        v.add("linearizable", f"{o.sid}: linearizability not decided within {budget} states (inconclusive)")
    elif not result.ok:
        v.add(
            "linearizable",
            f"{o.sid}: history not linearizable as a compare-and-set register ({result.ops} ops; the longest "
            f"linearizable prefix places {result.longest}; stuck at {result.stuck})",
        )


def _collection(o: Obj, v: Verdict, outcomes: Counter[str]) -> None:
    field_name = "a" if o.kind == "list" else "m"
    by_value = {w["value"]: w for w in o.writes}
    for w in o.writes:
        outcomes[f"{o.kind}_{w['outcome']}"] += 1
    log = {e["id"]: e for e in o.log}
    first = o.log[0]["id"] if o.log else 0
    for w in o.writes:
        if w["outcome"] != "ok" or w["revision"] < first:
            continue
        e = log.get(w["revision"])
        if e is None or _token(e["data"], field_name) != w["value"] or ("key" in w and str(e["key"]) != w["key"]):
            v.add(
                "acknowledged writes kept",
                f"{o.sid}: acknowledged {o.kind} write {w['value']!r} (event {w['revision']}) lost: the log has {e}",
            )
    seen: Counter[Any] = Counter()
    last: dict[str, Any] = {}
    for e in o.log:
        if e["id"] == 0:
            continue
        value = _token(e["data"], field_name)
        seen[value] += 1
        last[str(e["key"])] = e["data"]
        if value not in by_value:
            v.add("acknowledged writes kept", f"{o.sid}: event {e['id']} holds {value!r}, which no client wrote")
    v.extend(
        "acknowledged writes kept", [f"{o.sid}: write {val!r} applied {n} times" for val, n in seen.items() if n > 1]
    )
    if first == 0 and last != o.final:
        missing = sorted(set(last) ^ set(o.final))[:5]
        differ = sorted(k for k in set(last) & set(o.final) if last[k] != o.final[k])[:5]
        v.add(
            "acknowledged writes kept",
            f"{o.sid}: final items differ from the log (keys only in one: {missing}; differing: {differ})",
        )
    if o.kind == "map":  # one writer per key: the final value is its last acknowledged write or a later one
        for key, data in o.final.items():
            writes = [w for w in o.writes if w.get("key") == key]
            acked = [i for i, w in enumerate(writes) if w["outcome"] == "ok"]
            final_at = next((i for i, w in enumerate(writes) if w["value"] == _token(data, "m")), -1)
            if acked and final_at < acked[-1]:
                v.add(
                    "acknowledged writes kept",
                    f"{o.sid}: key {key} ends at {data}, older than its acknowledged {writes[acked[-1]]['value']!r}",
                )


def _deliveries(rec: Recording, v: Verdict, log_max: int) -> tuple[int, int]:
    """(events delivered, List/Map state replays) of every subscriber, checking each object's."""
    total = replays = 0
    for name, per_object in rec.deliveries.items():
        for sid, events in per_object.items():
            o = rec.objects[sid]
            log = {e["id"]: e for e in o.log}
            first = o.log[0]["id"] if o.log else 0
            prev = 0
            replayed = -1  # deliveries up to this index are a state replay: their skips are allowed
            total += len(events)
            for i, ev in enumerate(events):
                eid = ev["id"]
                if eid <= prev:
                    v.add(
                        "delivered once, in order",
                        f"{name} {sid}: event {eid} delivered after {prev} (twice or out of order)",
                    )
                    continue
                if o.kind != "document" and eid != prev + 1:
                    if i > replayed and (i == 0 or events[i - 1]["session"] != ev["session"]):
                        replayed = _state_replay(events, i, prev, log, first, log_max)
                        replays += replayed >= 0
                    if i > replayed and prev + 1 >= first:
                        v.add(
                            "delivered once, in order",
                            f"{name} {sid}: events {prev + 1}..{eid - 1} never delivered (the log holds them)",
                        )
                e = log.get(eid)
                if e is not None and (e["data"] != ev["data"] or (o.kind != "document" and str(e["key"]) != ev["key"])):
                    got, logged = f"{ev['key']}={ev['data']}", f"{e['key']}={e['data']}"
                    v.add(
                        "delivered once, in order", f"{name} {sid}: event {eid} delivered as {got}, logged as {logged}"
                    )
                prev = eid
            if o.final_revision is not None and prev != o.final_revision:
                v.add(
                    "delivered once, in order",
                    f"{name} {sid}: delivered up to event {prev}, the object is at {o.final_revision}",
                )
    return total, replays


def _state_replay(
    events: list[dict[str, Any]], start: int, prev: int, log: dict[int, dict[str, Any]], first: int, log_max: int
) -> int:
    """The index of the last delivery of a state replay that begins at ``events[start]``, or -1.

    A List/Map subscriber whose cursor (``prev``) the server's log no longer reaches gets, on
    subscribing, the collection's current state instead of the events (realtime/replay.py): each
    item changed since the cursor once, as its latest event, in id order, and then live events
    from there. So the deliveries of that connection from ``start`` on must be, up to some event
    ``t``, exactly the latest event of each item in (``prev``, ``t``] (as far as the final log
    still shows them: ids below ``first`` are not checked), and the state replay is allowed only
    if the server could have trimmed the event after the cursor: it keeps ``log_max`` events at
    least, so only once the object reached ``prev`` + ``log_max`` + 1."""
    session = events[start]["session"]
    latest: dict[str, int] = {}  # item key -> its last event id in (prev, t], of the logged ones
    # ids delivered or latest but not both (kept as each changes, not recomputed: a List's items are
    # as many as its events); empty when the deliveries are exactly the latest events
    differ: set[int] = set()
    t = prev
    for k in range(start, len(events)):
        ev = events[k]
        eid = ev["id"]
        if ev["session"] != session or eid <= t:
            break
        for x in range(max(t + 1, first), eid + 1):
            if (e := log.get(x)) is not None:
                key = str(e["key"])
                if key in latest:
                    differ ^= {latest[key]}
                latest[key] = x
                differ ^= {x}
        t = eid
        if eid >= first:
            differ ^= {eid}
        if t > prev + log_max and not differ:
            return k
    return -1
