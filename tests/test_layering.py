"""Imports flow app -> storage, realtime -> storage, app -> realtime only where the app is assembled."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ASSEMBLY = {"app/main.py", "app/cli.py"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def test_packages_import_only_downwards() -> None:
    allowed = {"storage": set(), "realtime": {"storage"}, "app": {"storage"}}
    problems = []
    for package, ok in allowed.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            used = _imports(path) & {"app", "storage", "realtime"} - {package}
            extra = used - ok - ({"realtime"} if rel in ASSEMBLY else set())
            if extra:
                problems.append(f"{rel} imports {sorted(extra)}")
    assert problems == []
