"""The package's shape: no import cycle, no two modules of one name, one module per concept's home.

Imports are read statically (``ast``), function-level ones included: a deferred import still ties two
modules together, and a cycle through one is a design knot even when Python tolerates it.
"""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "negopt"


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path) -> set[str]:
    """The negopt modules ``path`` imports (``from negopt.x import y`` counts ``negopt.x.y`` when that is a module)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module
                     for a in node.names]
        else:
            continue
        out |= {n for n in names if n in MODULES}
    return out - {module_name(path)}


def graph() -> dict[str, set[str]]:
    return {name: imports_of(path) for name, path in MODULES.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
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

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle():
    assert cycles(graph()) == [], "modules that import each other (directly or round a loop)"


def test_cycle_finder_sees_a_loop():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_two_modules_share_a_name():
    names = Counter(p.stem for p in PACKAGE.rglob("*.py") if p.name != "__init__.py")
    packages = {p.name for p in PACKAGE.rglob("*") if p.is_dir() and (p / "__init__.py").exists()}
    clashes = {n: c for n, c in names.items() if c > 1 or n in packages}
    assert not clashes, f"module names used twice (or also a package's): {clashes}"


def test_package_init_files_import_nothing_heavy():
    """Importing a submodule runs its package's ``__init__``: they hold docstrings, not imports, so a stage
    pays only for what it uses (``negopt/__init__.py``'s lazy ``NegativePromptGenerator`` aside)."""
    for init in PACKAGE.rglob("__init__.py"):
        tree = ast.parse(init.read_text())
        top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        assert not top, f"{init.relative_to(ROOT)} imports at module level"


def test_every_schema_method_has_its_function_and_no_function_lacks_a_name():
    from negopt.compare.methods import METHODS as REGISTERED
    from negopt.compare.methods import method
    from negopt.core.params import METHODS

    assert tuple(REGISTERED) == METHODS
    import pytest

    with pytest.raises(ValueError, match="not in negopt.core.params.METHODS"):
        method("dalle")
