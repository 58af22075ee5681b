"""Imports flow app -> storage, realtime -> storage, app -> realtime only where the app is assembled;
and no module of the product imports itself back, through any chain, even only for type checking.

Both rules are checked on one graph of module imports built from the source (nothing is imported):
``import a.b``, ``from a.b import c`` and relative imports, wherever they stand (inside functions and
``if TYPE_CHECKING:`` blocks too: a cycle that only type checking sees still ties two modules together
and becomes a real one the day the import is needed at run time). ``from p import x`` means the module
``p.x`` when there is one, else the module ``p``. A package's own ``__init__`` imported implicitly by
its submodules is not an edge: Python runs it first and it never waits for them.
"""

from __future__ import annotations

import ast
from collections import deque
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("app", "checker", "realtime", "storage")
ASSEMBLY = {"app.main", "app.cli"}


def _module_files(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the packages (a package is its ``__init__``)."""
    found = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imported(name: str, modules: dict[str, Path]) -> str | None:
    """The product module an import of ``name`` loads (its longest known prefix), or None."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    """Module -> the modules of ``packages`` it imports."""
    modules = _module_files(root, packages)
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        targets: set[str | None] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets |= {_imported(alias.name, modules) for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                source = node.module or ""
                if node.level:
                    anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    source = f"{anchor}.{source}" if source else anchor
                for alias in node.names:
                    submodule = f"{source}.{alias.name}"
                    targets.add(submodule if submodule in modules else _imported(source, modules))
        graph[module] = {t for t in targets if t is not None and t != module}
    return graph


def _shortest_cycle(graph: dict[str, set[str]], start: str) -> list[str] | None:
    """The shortest import chain from ``start`` back to itself (breadth first), or None."""
    came_from: dict[str, str] = {}
    queue = deque([start])
    while queue:
        module = queue.popleft()
        for target in sorted(graph[module]):
            if target == start:
                chain = [module]
                while chain[-1] != start:
                    chain.append(came_from[chain[-1]])
                return [*reversed(chain), start]
            if target not in came_from:
                came_from[target] = module
                queue.append(target)
    return None


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One shortest cycle per group of modules that import each other, each as ``[a, b, …, a]``."""
    cycles: list[list[str]] = []
    seen: set[str] = set()
    for module in sorted(graph):
        if module in seen:
            continue
        cycle = _shortest_cycle(graph, module)
        if cycle is not None:
            cycles.append(cycle)
            seen |= set(cycle)
    return cycles


def test_packages_import_only_downwards() -> None:
    # checker/ (``sync-server check``) drives a server from the outside: realtime's client, never app
    allowed = {"storage": set(), "realtime": {"storage"}, "app": {"storage"}, "checker": {"realtime", "storage"}}
    problems = []
    for module, targets in sorted(import_graph().items()):
        package = module.split(".")[0]
        used = {t.split(".")[0] for t in targets} - {package}
        extra = used - allowed[package] - ({"realtime", "checker"} if module in ASSEMBLY else set())
        if extra:
            problems.append(f"{module} imports {sorted(extra)}")
    assert problems == []


def test_no_import_cycles() -> None:
    cycles = [" -> ".join(cycle) for cycle in import_cycles(import_graph())]
    assert not cycles, "import cycles: " + "; ".join(cycles)


def test_cycle_finder_names_the_cycle() -> None:
    """The finder itself, on a small graph: a cycle is named as a chain, an acyclic part is not."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}}
    assert import_cycles(graph) == [["a", "b", "c", "a"], ["e", "e"]]


def test_graph_reads_relative_and_type_checking_imports(tmp_path: Path) -> None:
    """``from . import b`` is the module b; an import under ``if TYPE_CHECKING:`` is an edge."""
    pkg = tmp_path / "p"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from .a import A\n")
    (pkg / "a.py").write_text("from . import b\nA = 1\n")
    (pkg / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from p.a import A\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "c.py").write_text("from .. import b\nfrom ..a import A\nimport p.sub\n")
    graph = import_graph(tmp_path, ("p",))
    assert graph == {"p": {"p.a"}, "p.a": {"p.b"}, "p.b": {"p.a"}, "p.sub": set(), "p.sub.c": {"p.b", "p.a", "p.sub"}}
    assert import_cycles(graph) == [["p.a", "p.b", "p.a"]]


def test_webhooks_and_the_gateway_do_not_import_each_other() -> None:
    """realtime/webhooks/ (delivery, its HTTP client) never touches the WebSocket gateway's modules, and
    the gateway never reaches into webhooks: only app/ wires the two."""
    room = "realtime.webhooks"
    problems = []
    for module, targets in sorted(import_graph().items()):
        if not module.startswith("realtime"):
            continue
        inside = module == room or module.startswith(room + ".")
        for target in sorted(t for t in targets if t.startswith("realtime")):
            if inside != (target == room or target.startswith(room + ".")):
                problems.append(f"{module} imports {target}")
    assert problems == []
