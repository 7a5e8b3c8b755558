"""The package's import graph, read from the source (every import, also those inside
functions): no circles, and no arrow from a lower floor to a higher one."""

from __future__ import annotations

import ast
from pathlib import Path

import nbtools

ROOT = Path(nbtools.__file__).parent

#: Floors, lowest first: a module may import its own floor and those below, never above.
#: The top-level package (`nbtools/__init__.py`) and the CLI sit above everything.
FLOORS = [
    ("foundations", ["errors", "files", "version", "shapes", "lru", "stats", "embedded"]),
    ("models", ["models"]),
    ("engine", ["components", "batching", "ablation", "suffix", "effects", "repair",
                "requests", "results", "tracing", "remote", "corpus", "facts", "lab"]),
    ("loading", ["loading"]),
    ("uses", ["sweeps", "figures", "training", "walkthroughs"]),
    ("widgets", ["widgets"]),
]


def modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports(name: str, path: Path, known: dict) -> set[str]:
    """The nbtools modules `name` imports (a name taken from a package counts as that
    package, a submodule taken from it as the submodule)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                out.add(sub if sub in known else target)
        elif isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
    return {m for m in out if m in known and m != name}


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def floor(name: str) -> int:
    top = name.split(".")[1] if "." in name else ""
    for level, (_, members) in enumerate(FLOORS):
        if top in members:
            return level
    return len(FLOORS)  # nbtools itself, nbtools.cli


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in g:
        if v not in index:
            visit(v)
    return found


def test_every_module_has_a_floor():
    unplaced = [m for m in modules() if floor(m) == len(FLOORS) and m not in ("nbtools",
                                                                              "nbtools.cli")]
    assert not unplaced, f"place these in FLOORS: {unplaced}"


def test_no_import_circles():
    assert cycles(graph()) == []


def test_no_upward_imports():
    upward = [(m, t) for m, targets in graph().items() for t in targets if floor(t) > floor(m)]
    assert not upward, upward


def test_the_checks_can_fail():
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(g) == [["a", "b", "c"]]
    assert floor("nbtools.lab") < floor("nbtools.sweeps.heads") < floor("nbtools.widgets.explorer")
