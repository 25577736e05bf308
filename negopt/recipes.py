"""Named recipes: settings that belong to one data set, kept in ``recipes/<name>.yaml`` (a nested overlay of
params.yaml) and applied as one DVC experiment, so a data set's settings travel together and stay documented.

``negopt recipe recipes/real-pairs.yaml`` checks the overlay against the schema (merged onto params.yaml, so a
misspelt key or a bad value fails naming it, before anything runs), then runs ``dvc exp run -S key=value ...``
with one ``-S`` per setting: the recipe is an experiment on top of the project's params, never an edit of them.
"""

from __future__ import annotations

import json
from pathlib import Path

from negopt.core.errors import ParamsError
from negopt.core.params import read_yaml, validate_params


def leaves(tree: dict, prefix: str = "") -> list[tuple[str, object]]:
    """``(dotted key, value)`` of every leaf of a nested mapping, in file order."""
    out = []
    for key, value in tree.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        out += leaves(value, name) if isinstance(value, dict) else [(name, value)]
    return out


def merged(base: dict, overlay: dict) -> dict:
    """``base`` with ``overlay``'s leaves written over it (a new copy)."""
    out = dict(base)
    for key, value in overlay.items():
        out[key] = merged(out.get(key) or {}, value) if isinstance(value, dict) else value
    return out


def load_recipe(path: str | Path, params_path: str | Path = "params.yaml") -> list[tuple[str, object]]:
    """The recipe's settings, validated against params.yaml merged with them; errors name the recipe's key."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: no such recipe (recipes/*.yaml)")
    overlay = read_yaml(path.read_text()) or {}
    if not isinstance(overlay, dict):
        raise ParamsError(f"{path}: expected a mapping of params.yaml's sections")
    base = read_yaml(Path(params_path).read_text()) or {}
    validate_params(merged(base, overlay), source=f"{params_path} with {path}")
    return leaves(overlay)


def exp_run_command(settings: list[tuple[str, object]], name: str | None = None, queue: bool = False) -> list[str]:
    """``dvc exp run`` with one ``-S key=value`` per setting (values as YAML/JSON scalars, DVC's reading)."""
    cmd = ["dvc", "exp", "run"] + (["--name", name] if name else []) + (["--queue"] if queue else [])
    for key, value in settings:
        text = value if isinstance(value, str) else json.dumps(value)
        cmd += ["-S", f"{key}={text}"]
    return cmd
