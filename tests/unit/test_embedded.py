"""The embedded Valkey's data-dir lock (issue 9, item 17): one live owner per data dir."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from storage.embedded import DataDirInUse, EmbeddedRedis


def test_a_locked_data_dir_is_refused_until_its_owner_lets_go(tmp_path: Path) -> None:
    first, second = EmbeddedRedis(tmp_path), EmbeddedRedis(tmp_path)
    first.dir.mkdir(parents=True)
    first._lock()
    with pytest.raises(DataDirInUse, match=rf"{tmp_path} is in use by a running sync-server \(pid {os.getpid()}\)"):
        second._lock()
    first._unlock()
    second._lock()  # the lock goes with its holder; the lock file staying behind does not matter
    second._unlock()
    assert (first.dir / "lock").exists()
