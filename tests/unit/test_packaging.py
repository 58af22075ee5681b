"""The wheel ships every product package: setuptools lists them by hand in pyproject.toml."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_product_package_is_listed() -> None:
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        init.parent.relative_to(ROOT).as_posix().replace("/", ".")
        for package in ("app", "checker", "realtime", "storage")
        for init in (ROOT / package).rglob("__init__.py")
    }
    assert found == listed
