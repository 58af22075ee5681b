"""checker.linearizable on hand-made histories: linearizable ones are accepted, and each classic
anomaly (stale read, lost update, two CAS winners on one revision) is rejected."""

from __future__ import annotations

import random

from checker.linearizable import Op, check

INIT = (0, "init")


def read(t0: float, t1: float, rev: int, value: str, p: int = 0) -> Op:
    return Op("read", "ok", t0, t1, value=value, revision=rev, process=p)


def cas(t0: float, t1: float | None, expect: int, value: str, outcome: str = "ok", p: int = 0) -> Op:
    rev = expect + 1 if outcome == "ok" else None
    return Op(
        "cas", outcome, t0, t1 if outcome != "unknown" else None, value=value, revision=rev, expect=expect, process=p
    )


def test_sequential_history_is_linearizable() -> None:
    ops = [read(0, 1, 0, "init"), cas(2, 3, 0, "a"), read(4, 5, 1, "a"), cas(6, 7, 1, "b"), read(8, 9, 2, "b")]
    result = check(ops, INIT)
    assert result.ok is True and result.ops == 5 and result.longest == 5


def test_concurrent_ops_may_be_reordered() -> None:
    """A read overlapping a write may see either side of it; a 412 overlapping the winner is fine."""
    ops = [
        cas(0, 10, 0, "a", p=1),
        read(1, 2, 1, "a", p=2),  # the write took effect before this read, though it answered later
        cas(3, 4, 0, "b", outcome="fail", p=3),
        read(11, 12, 1, "a", p=2),
    ]
    assert check(ops, INIT).ok is True


def test_stale_read_is_rejected() -> None:
    """A read that starts after a write was acknowledged must not see the old value."""
    ops = [cas(0, 1, 0, "a"), read(2, 3, 0, "init", p=1)]
    result = check(ops, INIT)
    assert result.ok is False and result.stuck is not None and result.stuck.kind == "read"


def test_lost_update_is_rejected() -> None:
    """An acknowledged write later reads as never having happened (the value went back)."""
    ops = [cas(0, 1, 0, "a"), cas(2, 3, 1, "b"), read(4, 5, 1, "a", p=1)]
    assert check(ops, INIT).ok is False


def test_two_cas_winners_on_one_revision_are_rejected() -> None:
    """Two writers both told "ok" with If-Match on the same revision: at most one may win."""
    ops = [cas(0, 5, 0, "a", p=1), cas(1, 4, 0, "b", p=2)]
    assert check(ops, INIT).ok is False


def test_a_412_on_the_current_revision_is_rejected() -> None:
    """A refusal while nobody else wrote: the revision did match, so the refusal was wrong."""
    ops = [read(0, 1, 0, "init"), cas(2, 3, 0, "a", outcome="fail")]
    assert check(ops, INIT).ok is False


def test_answered_revision_must_follow_the_expected_one() -> None:
    ops = [Op("cas", "ok", 0, 1, value="a", revision=5, expect=0)]
    assert check(ops, INIT).ok is False


def test_unknown_write_may_or_may_not_have_taken_effect() -> None:
    applied = [cas(0, None, 0, "a", outcome="unknown"), read(5, 6, 1, "a", p=1)]
    assert check(applied, INIT).ok is True
    not_applied = [cas(0, None, 0, "a", outcome="unknown"), read(5, 6, 0, "init", p=1), cas(7, 8, 0, "b", p=1)]
    assert check(not_applied, INIT).ok is True
    # but it cannot have applied before it was sent
    early = [read(0, 1, 1, "a", p=1), cas(2, None, 0, "a", outcome="unknown")]
    assert check(early, INIT).ok is False


def test_a_value_no_one_wrote_is_rejected() -> None:
    ops = [cas(0, 1, 0, "a"), read(2, 3, 1, "z", p=1)]
    assert check(ops, INIT).ok is False


def test_budget_exhaustion_is_inconclusive_not_a_pass() -> None:
    """Thirty overlapping reads can be ordered 2^30 ways before the impossible last read is reached."""
    ops = [read(0, 100, 0, "init", p=i) for i in range(30)] + [read(200, 201, 1, "x")]
    result = check(ops, INIT, budget=50)
    assert result.ok is None


def test_many_concurrent_writers_stay_fast() -> None:
    """A simulated register with 8 clients and random latencies: linearizable, found quickly."""
    rng = random.Random(7)
    state = [0, "init"]
    ops: list[Op] = []
    clock = 0.0
    pending: list[tuple[float, int, str, int]] = []  # (effect time, process, kind, expect)
    for n in range(300):
        clock += rng.random()
        p = n % 8
        invoke = clock
        effect = invoke + rng.random() * 3
        complete = effect + rng.random() * 3
        pending.append((effect, p, "x", 0))
        ops.append(Op("read", "ok", invoke, complete, process=p))  # placeholder, replaced below
    # apply effects in effect order to produce answers consistent with some linearization
    order = sorted(range(len(ops)), key=lambda i: pending[i][0])
    final: dict[int, Op] = {}
    for i in order:
        op = ops[i]
        if rng.random() < 0.5:
            final[i] = Op(
                "read", "ok", op.invoke, op.complete, value=state[1], revision=int(state[0]), process=op.process
            )
        else:
            expect = int(state[0]) if rng.random() < 0.6 else int(state[0]) + 7
            if expect == state[0]:
                state = [expect + 1, f"v{i}"]
                final[i] = Op("cas", "ok", op.invoke, op.complete, value=f"v{i}", revision=expect + 1, expect=expect)
            else:
                final[i] = Op("cas", "fail", op.invoke, op.complete, value=f"v{i}", expect=expect)
    history = [final[i] for i in range(len(ops))]
    result = check(history, INIT)
    assert result.ok is True and result.explored < 20_000
    # and the same history with one acknowledged write's answer turned into another value is not
    victim = next(i for i, op in enumerate(history) if op.kind == "read" and op.revision and op.revision > 3)
    history[victim] = Op("read", "ok", history[victim].invoke, history[victim].complete, value="tampered",
                         revision=history[victim].revision)  # fmt: skip
    assert check(history, INIT).ok is False
