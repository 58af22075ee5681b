"""A real browser for the tests: Playwright driving Debian's Chromium (/usr/bin/chromium), never a
downloaded browser build. ``ensure_chromium`` installs the Debian package with apt-get the first time
(as the test set-up of a fresh machine must; root is needed then), and costs one stat afterwards."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

CHROMIUM = "/usr/bin/chromium"
INSTALL_S = 900  # apt-get update + install of chromium on a fresh machine (a few minutes)


def timeout_s(test_s: float) -> int:
    """A browser test's time bound: its own, plus the install when Chromium is not there yet."""
    return int(test_s + (0 if os.path.exists(CHROMIUM) else 2 * INSTALL_S))


def ensure_chromium() -> str:
    """The path of Debian's Chromium, installed with apt-get if missing. A machine where that is
    impossible (not root, no apt-get) fails the test with the reason: the console is tested in a
    real browser or the suite is red, never silently skipped."""
    if os.path.exists(CHROMIUM):
        return CHROMIUM
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.fail(f"{CHROMIUM} is missing and cannot be installed here: run the suite as root on Debian")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["update", "-qq"], ["install", "-y", "-qq", "--no-install-recommends", "chromium"]):
        subprocess.run(["apt-get", *command], check=True, env=env, stdout=subprocess.DEVNULL, timeout=INSTALL_S)
    return CHROMIUM
