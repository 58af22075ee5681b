"""Debian packages a test needs, installed by the test set-up itself (apt-get, as root), never by hand.

``ensure_package`` costs one stat once the program is there. A machine where the install is
impossible (not root, no apt-get) fails the test with the reason: never a silent skip."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

INSTALL_S = 600  # apt-get update + install of a package on a fresh machine


def ensure_package(program: str, package: str) -> str:
    """The path of ``program`` (an absolute path), installing Debian's ``package`` if it is missing."""
    if os.path.exists(program):
        return program
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.fail(f"{program} is missing and cannot be installed here: run the suite as root on Debian")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["update", "-qq"], ["install", "-y", "-qq", "--no-install-recommends", package]):
        subprocess.run(["apt-get", *command], check=True, env=env, stdout=subprocess.DEVNULL, timeout=INSTALL_S)
    return program
