"""`negopt suggest`: negative prompts from the newest trained policy, through the deployed decode."""

from __future__ import annotations

from pathlib import Path

from negopt.core.errors import UserError
from negopt.core.params import Params, load_params


class NoModelError(UserError, FileNotFoundError):
    """No trained policy where one was expected; the message says how to train one."""


def is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file()


def newest_model(candidates: list[Path]) -> Path:
    """The most recently written model folder among `candidates` (by config.json mtime)."""
    found = [p for p in candidates if is_model_dir(p)]
    if not found:
        names = ", ".join(str(p) for p in candidates)
        raise NoModelError(f"no trained model in {names}: train one with `dvc repro sft`, or pass --model PATH")
    return max(found, key=lambda p: (p / "config.json").stat().st_mtime)


def read_params(path: str | Path = "params.yaml") -> Params | None:
    """params.yaml if present (model paths, input format, decode); None outside a project folder."""
    return load_params(path) if Path(path).exists() else None


def read_prompts(path: str | Path) -> list[str]:
    """The prompts of a prompt file (``negopt.data.prompt_files``: .txt one per line, or a table's ``prompt``
    column), surrounding whitespace dropped."""
    from negopt.data.prompt_files import read_prompt_file

    prompts = [p.strip() for p in read_prompt_file(path, where=f"--file {path}")["prompt"]]
    if not prompts:
        raise UserError(f"--file {path}: no prompts (one per line, or a prompt column)")
    return prompts


def suggest(prompts: str | list[str], model_path: str | Path, num: int = 1, params: Params | None = None,
            seed: int = 0) -> list[str]:
    """``num`` negatives per prompt (prompt-major) from ``model_path`` under the deployed decode.

    Inside a project the ``decode`` and ``sft`` params define the decode and input format (as for
    generate and the rl test); elsewhere the model's own ``negopt.json`` does.
    """
    from negopt.policy.decode import (
        NegativePromptGenerator,  # deferred: torch/transformers load only when needed
    )

    if num < 1:
        raise UserError(f"--num must be >= 1, got {num}")
    gen = (NegativePromptGenerator.from_params(model_path, params) if params is not None
           else NegativePromptGenerator.from_pretrained(model_path))
    return gen(prompts, num=num, seed=seed)
