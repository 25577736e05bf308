"""Prompt files, and the prompts ``generate`` renders: ``generate.prompts`` = ``test`` (the clean held-out split)
or ``file:<path>``; ``negopt suggest --file`` reads the same files.

A file lets users evaluate on the benchmark prompts they have (DrawBench, PartiPrompts, the HPSv2
benchmark): ``.txt`` one prompt per line (blank lines skipped), or ``.csv`` / ``.jsonl`` / ``.parquet``
with a ``prompt`` column and optionally ``negative_prompt`` (human negatives, for ``ground_truth``).
Put the file under ``paths.sources`` (a dep of generate, so editing it re-renders).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from negopt.core.errors import ParamsError, require_input


def read_prompt_file(path: str | Path, where: str = "") -> pd.DataFrame:
    """``prompt`` and ``negative_prompt`` (empty where the file has none) of every row, in file order; errors
    name the file as ``where`` says it was given (``generate.prompts=file:<path>`` by default)."""
    path = Path(path)
    where = where or f"generate.prompts=file:{path}"
    if not path.is_file():
        raise ParamsError(f"{where}: no such file (paths are relative to the project root)")
    suffix = path.suffix.lower()
    if suffix == ".txt":
        df = pd.DataFrame({"prompt": [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]})
    elif suffix == ".csv":
        df = pd.read_csv(path, keep_default_na=False)
    elif suffix in (".jsonl", ".ndjson"):
        df = pd.read_json(path, lines=True)
    elif suffix in (".parquet", ".pq"):
        df = pd.read_parquet(path)
    else:
        raise ParamsError(f"{where}: unsupported file type {suffix!r}; use .txt, .csv, .jsonl or .parquet")
    if "prompt" not in df.columns:
        raise ParamsError(f"{where}: no `prompt` column (the file has {', '.join(map(str, df.columns)) or 'none'})")
    df = df[df["prompt"].astype(str).str.strip() != ""]  # blank lines / empty cells are no prompts
    negatives = df["negative_prompt"] if "negative_prompt" in df.columns else ""
    out = pd.DataFrame({"prompt": df["prompt"].astype(str), "negative_prompt": negatives})
    out["negative_prompt"] = out["negative_prompt"].fillna("").astype(str)
    return out.reset_index(drop=True)


def load_prompts(source: str, clean_dir: str | Path, num_prompts: int) -> pd.DataFrame:
    """The first ``num_prompts`` rows (prompt, negative_prompt) of ``generate.prompts``, in file order."""
    if source == "test":
        path = require_input(Path(clean_dir) / "test.parquet", "clean")
        df, where = pd.read_parquet(path, columns=["prompt", "negative_prompt"]), str(path)
    else:
        df, where = read_prompt_file(source.removeprefix("file:")), source
    if len(df) < num_prompts:
        raise ParamsError(
            f"generate.num_prompts={num_prompts} but {where} has only {len(df)} prompts: lower generate.num_prompts"
        )
    return df.iloc[:num_prompts].reset_index(drop=True)


def has_negatives(prompts: pd.DataFrame) -> bool:
    """Whether the prompts carry human negatives (what the ``ground_truth`` method renders)."""
    return bool(prompts["negative_prompt"].fillna("").astype(str).str.strip().ne("").any())
