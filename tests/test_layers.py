"""The import rule: connectors ← operators ← flows ← api ← tools; imports only go down, no cycles.

Every import of our packages is read from the source (AST), wherever it is: at module level,
inside a function (a lazy import), under ``TYPE_CHECKING``, or as ``importlib.import_module`` /
``__import__`` of a string. A module may import its own layer or a lower one; an import that
climbs fails, and so does a cycle between modules (at any level). The one allowed upward import
is the Bytewax entry module ``flows.signal``: ``python -m bytewax.run flows.signal`` is fixed by
the project's design, so that module asks the composition root (``api.runtime``) for the flow,
and nothing imports it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAYERS = ("connectors", "operators", "flows", "api", "tools")
RANK = {name: i for i, name in enumerate(LAYERS)}

ALLOWED_UPWARD = {("flows.signal", "api.runtime")}
"""(importer, imported): the Bytewax entry module asks the composition root for its flow."""


@dataclass(frozen=True)
class Edge:
    """One import of one of our modules: where it is and what it names."""

    src: str
    dst: str
    line: int
    how: str


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(root: Path) -> dict[str, Path]:
    """Every module of the layered packages under ``root``, by dotted name."""
    out: dict[str, Path] = {}
    for layer in LAYERS:
        for path in sorted((root / layer).rglob("*.py")):
            out[module_name(root, path)] = path
    return out


def _resolve(name: str, known: set[str]) -> str | None:
    """The longest known module ``name`` is, or lies in (``a.b.c`` → ``a.b`` if only that)."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def _absolute(src: str, is_pkg: bool, level: int, module: str | None) -> str:
    base = src.split(".") if is_pkg else src.split(".")[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join([*base, module] if module else base)


def _dynamic(node: ast.Call) -> tuple[str, ast.expr] | None:
    """``importlib.import_module(X)``, ``import_module(X)`` or ``__import__(X)``: (how, X)."""
    f = node.func
    name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None
    if name in {"import_module", "__import__"} and node.args:
        return name, node.args[0]
    return None


def imports(root: Path) -> Iterator[Edge]:
    """Every import of one of our modules by one of our modules, at any depth of the code."""
    mods = modules(root)
    known = set(mods)
    for src, path in mods.items():
        is_pkg = path.name == "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            targets: list[tuple[str, str]] = []
            if isinstance(node, ast.Import):
                targets = [(a.name, "import") for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = (
                    _absolute(src, is_pkg, node.level, node.module)
                    if node.level
                    else (node.module or "")
                )
                # `from pkg import mod` imports the submodule `pkg.mod` when there is one
                targets = [
                    (f"{base}.{a.name}" if f"{base}.{a.name}" in known else base, "from")
                    for a in node.names
                ]
            elif isinstance(node, ast.Call) and (dyn := _dynamic(node)) is not None:
                how, arg = dyn
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    targets = [(arg.value, how)]
                else:  # a computed module name: cannot be checked, so not allowed
                    yield Edge(src, "<computed>", node.lineno, how)
                    continue
            for name, how in targets:
                dst = _resolve(name, known)
                if dst is not None and dst != src:
                    yield Edge(src, dst, node.lineno, how)


def climbing(edges: list[Edge]) -> list[Edge]:
    """Imports from a higher layer (or computed ones), less the allowed entry-module import."""
    out = []
    for e in edges:
        if e.dst == "<computed>":
            out.append(e)
            continue
        up = RANK[e.dst.split(".")[0]] > RANK[e.src.split(".")[0]]
        if up and (e.src, e.dst) not in ALLOWED_UPWARD:
            out.append(e)
    return out


def cycles(edges: list[Edge]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), each sorted."""
    graph: dict[str, set[str]] = {}
    for e in edges:
        if e.dst != "<computed>":
            graph.setdefault(e.src, set()).add(e.dst)
            graph.setdefault(e.dst, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _show(edges: list[Edge]) -> str:
    return "\n".join(f"  {e.src} (line {e.line}, {e.how}) -> {e.dst}" for e in edges)


def test_imports_only_go_down() -> None:
    edges = list(imports(REPO))
    assert edges, "no imports found: the checker is not reading the code"
    bad = climbing(edges)
    assert not bad, (
        "imports that climb a layer (connectors < operators < flows < api < tools):\n"
        + (_show(bad))
    )


def test_no_import_cycles() -> None:
    found = cycles(list(imports(REPO)))
    assert not found, "import cycles:\n" + "\n".join("  " + " -> ".join(c) for c in found)


def test_the_entry_module_is_the_one_exception_and_nothing_imports_it() -> None:
    edges = list(imports(REPO))
    used = {(e.src, e.dst) for e in edges if (e.src, e.dst) in ALLOWED_UPWARD}
    assert used == ALLOWED_UPWARD, "the allowed upward import is stale: remove it from the list"
    importers = sorted({e.src for e in edges if e.dst == "flows.signal"})
    assert importers == [], f"flows.signal is an entry module; imported by {importers}"


# -- the checker itself fails on what it must catch ---------------------------------------------


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for layer in LAYERS:
        (tmp_path / layer).mkdir()
        (tmp_path / layer / "__init__.py").write_text("")
    for rel, text in files.items():
        (tmp_path / rel).write_text(text)
    return tmp_path


@pytest.mark.parametrize(
    "code",
    [
        "from api.store import X\n",
        "import api.store\n",
        "def f():\n    from api.store import X\n",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from api import store\n",
        "import importlib\nm = importlib.import_module('api.store')\n",
        "m = __import__('api.store')\n",
        "import importlib\nname = 'api'\nm = importlib.import_module(name + '.store')\n",
    ],
    ids=["from", "import", "lazy", "type-checking", "importlib", "dunder", "computed"],
)
def test_checker_catches_a_climbing_import(tmp_path: Path, code: str) -> None:
    root = _tree(tmp_path, {"api/store.py": "X = 1\n", "connectors/sinks.py": code})
    bad = climbing(list(imports(root)))
    assert [e.src for e in bad] == ["connectors.sinks"]


def test_checker_allows_going_down_and_relative_imports(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "connectors/events.py": "X = 1\n",
            "operators/bars.py": "from connectors.events import X\nfrom . import steps\n",
            "operators/steps.py": "from .bars import X\n",
        },
    )
    edges = list(imports(root))
    assert ("operators.steps", "operators.bars") in {(e.src, e.dst) for e in edges}
    assert climbing(edges) == []


def test_checker_catches_a_cycle_through_a_lazy_import(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "api/server.py": "from flows.signal import run\n",
            "flows/signal.py": "def run():\n    from api.server import serve\n",
        },
    )
    edges = list(imports(root))
    assert cycles(edges) == [["api.server", "flows.signal"]]
