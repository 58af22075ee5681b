"""app/cli.py's Progress: a counter line on a terminal, rewritten in place and throttled; silent elsewhere."""

from __future__ import annotations

import io

from app.cli import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_one_line_rewritten_and_the_last_count_at_the_end() -> None:
    term = Terminal()
    p = Progress("done", term, every_s=3600)  # only the first update is shown before close
    for i in range(1, 1001):
        p.update(i, f"{i} of 1000")
    p.close()
    assert term.getvalue() == "\rdone: 1 (1 of 1000)\x1b[K\rdone: 1000 (1000 of 1000)\x1b[K\n"


def test_parts_count_on_from_what_came_before() -> None:
    term = Terminal()
    p = Progress("queued", term, every_s=0)
    p.part(10, "Service 2/2 ISx")(3, 5)
    p.close()
    assert term.getvalue() == "\rqueued: 13 (Service 2/2 ISx: 3 of 5)\x1b[K\n"


def test_a_file_or_pipe_gets_nothing_and_no_work_nothing() -> None:
    quiet = io.StringIO()
    p = Progress("done", quiet, every_s=0)
    p.update(5)
    p.close()
    assert quiet.getvalue() == ""
    term = Terminal()
    Progress("done", term).close()
    assert term.getvalue() == ""
