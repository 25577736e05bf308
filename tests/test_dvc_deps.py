"""dvc.yaml's code deps are exactly what each stage imports: `dvc repro` re-runs a stage when code it
runs changes, and only then.

The import graph is read statically (``ast``), function-level imports included (they run too), from
``stages/<stage>.py`` through every ``negopt`` module it reaches; a package's ``__init__.py`` counts,
since importing a submodule executes it. A declared folder must consist of imported modules only.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _module_file(name: str) -> Path | None:
    base = ROOT.joinpath(*name.split("."))
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.is_file():
            return cand
    return None


def _lazy_attribute_bodies(tree: ast.Module) -> set[int]:
    """Nodes inside a module-level ``__getattr__`` (PEP 562): they run only when that attribute is read,
    which stages never do (they import submodules), so ``negopt/__init__.py``'s lazy API is no dep."""
    return {id(n) for f in tree.body if isinstance(f, ast.FunctionDef) and f.name == "__getattr__"
            for n in ast.walk(f)}


def _imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    tree = ast.parse(path.read_text(), str(path))
    lazy = _lazy_attribute_bodies(tree)
    for node in ast.walk(tree):
        if id(node) in lazy:
            continue
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}  # `from negopt.core import io`
    return {n for n in names if n == "negopt" or n.startswith("negopt.")}


def code_closure(script: Path) -> set[str]:
    """Repo-relative paths of the stage script and every negopt file it imports, transitively."""
    seen: set[Path] = set()
    todo = [script]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in _imported_modules(path):
            parts = name.split(".")
            for i in range(1, len(parts) + 1):  # parent packages' __init__ run first
                f = _module_file(".".join(parts[:i]))
                if f is not None and f not in seen:
                    todo.append(f)
    return {p.relative_to(ROOT).as_posix() for p in seen}


def declared_code_deps(stage: dict) -> set[str]:
    """Code files a stage's deps cover (folders expanded to their .py files)."""
    out: set[str] = set()
    for dep in stage.get("deps", []):
        dep = str(dep)
        if not dep.startswith(("negopt", "stages")):
            continue
        p = ROOT / dep
        assert p.exists(), f"dvc.yaml dep {dep} does not exist"
        out |= {f.relative_to(ROOT).as_posix() for f in p.rglob("*.py")} if p.is_dir() else {dep}
    return out


STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_deps_are_exactly_its_imports(name):
    stage = STAGES[name]
    script = stage["cmd"].split()[-1]
    assert script == f"stages/{name}.py", stage["cmd"]
    needed = code_closure(ROOT / script)
    declared = declared_code_deps(stage)
    missing, extra = sorted(needed - declared), sorted(declared - needed)
    assert not missing, (f"{name}: imported but not in deps (edits would not re-run it): {', '.join(missing)}; "
                         "`python tests/test_dvc_deps.py` rewrites dvc.yaml")
    assert not extra, f"{name}: in deps but never imported (edits would re-run it): {', '.join(extra)}"


def test_closure_follows_function_level_and_from_imports(tmp_path):
    """The reader itself: lazy imports and `from negopt.core import io` count, other packages do not."""
    mods = _imported_modules(ROOT / "negopt" / "models" / "loader.py")
    assert "negopt.images.scorers" in mods  # imported inside a function (load_scorer)
    closure = code_closure(ROOT / "stages" / "compare.py")
    assert {"stages/compare.py", "negopt/__init__.py", "negopt/compare/gains.py", "negopt/core/io.py"} <= closure
    assert not any(p.startswith("negopt/rl") for p in closure)


def sync_dvc_yaml(path: Path = ROOT / "dvc.yaml") -> None:
    """Rewrite each stage's code deps in dvc.yaml to its import closure (comments and data deps kept)."""
    import re

    lines, out, stage, i = path.read_text().splitlines(), [], None, 0
    while i < len(lines):
        line = lines[i]
        m = re.match(r"^  (\w+):$", line)
        stage = m.group(1) if m and m.group(1) in STAGES else stage
        out.append(line)
        i += 1
        if stage and line.strip() == "deps:":
            item = line[: len(line) - len(line.lstrip())] + "  - "
            rest = []
            while i < len(lines) and lines[i].startswith(item):
                if not lines[i][len(item):].startswith(("negopt", "stages")):
                    rest.append(lines[i])
                i += 1
            closure = code_closure(ROOT / f"stages/{stage}.py")
            out += [f"{item}{p}" for p in sorted(closure, key=lambda p: (not p.startswith("stages"), p))] + rest
            stage = None
    path.write_text("\n".join(out) + "\n")


if __name__ == "__main__":  # `python tests/test_dvc_deps.py`: fix dvc.yaml after adding an import
    sync_dvc_yaml()
