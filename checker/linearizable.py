"""Is a Document's recorded history linearizable as a compare-and-set register?

The Wing-Gong algorithm with Lowe's memoisation (what Porcupine and Knossos do): walk the history's
call and return entries in time order, linearize a pending call whenever the model accepts it,
backtrack when a return is reached whose call could not be placed, and never revisit a (set of
linearized ops, model state) pair. Why our own ~100 lines rather than a library: the Python ports
of Porcupine are unmaintained, and the model (a register whose version is the server's revision,
one more per write) is what makes the check sharp.

The model. State: (revision, value). A Document's revision is the hex of its last event id, and
every write is one event, so a successful ``If-Match`` write at revision r leaves revision r + 1.

- ``read`` (ok) returning (r, v): legal iff the state is (r, v).
- ``cas`` ok (expect e, value v, answered revision r): legal iff the state's revision is e and
  r == e + 1; the state becomes (e + 1, v).
- ``cas`` fail (412): legal iff the state's revision is not e; nothing changes.
- ``cas`` unknown (timeout, 5xx, connection lost): it returns at infinity and, when placed, applies
  iff the revision is e. A write that had no effect can always be placed last, where its effect is
  seen by nothing, so this one deterministic step covers "may or may not have taken effect".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

State = tuple[int, Any]


@dataclass(frozen=True)
class Op:
    """One operation on one Document as a client saw it. Times are seconds on one clock."""

    kind: str  # "read" | "cas"
    outcome: str  # "ok" | "fail" | "unknown"
    invoke: float
    complete: float | None  # None for unknown: it may take effect any time after invoke
    value: Any = None  # read: the value seen; cas: the value written
    revision: int | None = None  # read: the revision seen; cas ok: the revision answered
    expect: int | None = None  # cas: the If-Match revision
    process: int = 0  # which client (for messages)


@dataclass(frozen=True)
class Result:
    ok: bool | None  # None: search budget exhausted (inconclusive)
    ops: int  # ops checked
    explored: int  # (linearized set, state) pairs visited
    longest: int  # the longest linearizable prefix found (ops placed)
    stuck: Op | None = None  # on failure: the earliest-returning op no linearization could place


def step(state: State, op: Op) -> tuple[bool, State]:
    """The model: may ``op`` take effect in ``state``, and the state after it."""
    rev, value = state
    if op.kind == "read":
        return (op.revision, op.value) == state, state
    if op.outcome == "ok":
        if rev == op.expect and op.revision == rev + 1:
            return True, (rev + 1, op.value)
        return False, state
    if op.outcome == "fail":
        return rev != op.expect, state
    if rev == op.expect:  # unknown
        return True, (rev + 1, op.value)
    return True, state


class _Entry:
    __slots__ = ("time", "is_call", "op", "match", "prev", "next")

    def __init__(self, time: float, is_call: bool, op: int) -> None:
        self.time, self.is_call, self.op = time, is_call, op
        self.match: _Entry | None = None
        self.prev: _Entry | None = None
        self.next: _Entry | None = None


def _entries(ops: Sequence[Op]) -> _Entry:
    """A doubly linked list of call/return entries in time order (calls first on ties: touching
    ops count as concurrent), behind a sentinel head."""
    items: list[_Entry] = []
    for i, op in enumerate(ops):
        call = _Entry(op.invoke, True, i)
        ret = _Entry(math.inf if op.complete is None else op.complete, False, i)
        call.match = ret
        items += [call, ret]
    items.sort(key=lambda e: (e.time, not e.is_call))
    head = _Entry(-math.inf, True, -1)
    prev = head
    for e in items:
        prev.next, e.prev = e, prev
        prev = e
    return head


def _lift(e: _Entry) -> None:
    for x in (e, e.match):
        assert x is not None and x.prev is not None
        x.prev.next = x.next
        if x.next is not None:
            x.next.prev = x.prev


def _unlift(e: _Entry) -> None:
    for x in (e.match, e):
        assert x is not None and x.prev is not None
        x.prev.next = x
        if x.next is not None:
            x.next.prev = x


def check(ops: Sequence[Op], initial: State, budget: int = 2_000_000) -> Result:
    """Search for a linearization of ``ops`` from ``initial``. Reads and writes that failed without
    effect (errors other than 412) must not be passed: they constrain nothing."""
    head = _entries(ops)
    state = initial
    linearized = 0
    seen: set[tuple[int, State]] = set()
    stack: list[tuple[_Entry, State]] = []
    longest = 0
    stuck: Op | None = None
    entry = head.next
    while head.next is not None:
        if len(seen) > budget:
            return Result(None, len(ops), len(seen), longest)
        assert entry is not None
        if entry.is_call:
            legal, after = step(state, ops[entry.op])
            if legal:
                key = (linearized | 1 << entry.op, after)
                if key not in seen:
                    seen.add(key)
                    stack.append((entry, state))
                    state, linearized = after, key[0]
                    _lift(entry)
                    if len(stack) > longest:
                        longest, stuck = len(stack), None
                    entry = head.next
                    continue
            entry = entry.next
        else:  # a return whose call is not linearized yet: undo the last choice
            if len(stack) == longest and stuck is None:
                stuck = ops[entry.op]
            if not stack:
                return Result(False, len(ops), len(seen), longest, stuck)
            top, state = stack.pop()
            linearized &= ~(1 << top.op)
            _unlift(top)
            entry = top.next
    return Result(True, len(ops), len(seen), len(ops))
