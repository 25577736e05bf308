"""`negopt suggest`: negative prompts for a prompt from the newest trained policy."""

from __future__ import annotations

from pathlib import Path

from negopt.errors import UserError
from negopt.params import Params, Sft, load_params
from negopt.sft import decode_negatives, generate_negatives

# Sampling settings for --num > 1: diverse but still close to the model's preferred outputs.
SAMPLE_TOP_P = 0.95


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
    """params.yaml if present (model paths, task prefix); None outside a project folder."""
    return load_params(path) if Path(path).exists() else None


def suggest(prompt: str, model_path: str | Path, num: int = 1, sft: Sft | None = None,
            seed: int = 0) -> list[str]:
    """`num` negative prompts for `prompt`: the deployed decode (``decode_negatives``) for 1, nucleus samples for more."""
    from negopt.models.policy import load_policy  # deferred: torch/transformers load only when needed

    if num < 1:
        raise ValueError(f"--num must be >= 1, got {num}")
    sft = sft or Sft()
    model, tokenizer = load_policy(str(model_path))
    if num == 1:
        return decode_negatives(model, tokenizer, [prompt], sft, seed=seed)
    return generate_negatives(model, tokenizer, [prompt] * num, sft.task_prefix, sft.max_source_length,
                              sft.max_new_tokens, num_beams=1, do_sample=True, seed=seed,
                              repetition_penalty=sft.repetition_penalty, top_p=SAMPLE_TOP_P)
