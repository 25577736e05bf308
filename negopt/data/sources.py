"""Where raw pairs come from: ``data.source`` = sample | hf | file:<path> | playground.

Every loader returns the 13-column frame (:func:`negopt.data.schema.conform`) and a stats dict that
the scrape stage writes to ``metrics/scrape.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from negopt.data.sample import generate_sample
from negopt.data.schema import conform
from negopt.errors import UserError
from negopt.params import Data, HfSource

REQUIRED = ("prompt", "negative_prompt")


class SourceError(UserError, RuntimeError):
    """A source cannot be read; the message names the param and the fix."""


def load_hf(cfg: HfSource) -> pd.DataFrame:
    """The original dataset via the HF cache; offline and uncached fails saying how to fetch it."""
    try:
        import datasets

        ds = datasets.load_dataset(cfg.dataset, revision=cfg.revision, split=cfg.split)
    except Exception as err:  # datasets raises many types offline (ConnectionError, FileNotFound, ...)
        raise SourceError(
            f"data.source=hf: cannot load {cfg.dataset!r} (revision {cfg.revision!r}, split {cfg.split!r}): "
            f"{type(err).__name__}: {err}\n"
            f"It is not in the Hugging Face cache and this run is offline. Fetch it once on a machine with "
            f"network access:\n  HF_HUB_OFFLINE=0 HF_DATASETS_OFFLINE=0 python -c \"import datasets; "
            f"datasets.load_dataset('{cfg.dataset}', revision='{cfg.revision}', split='{cfg.split}')\"\n"
            f"(or copy its parquet file here and use data.source=file:<path>)"
        ) from None
    return ds.to_pandas()


def _read_jsonl_tolerant(path: Path) -> tuple[pd.DataFrame, int]:
    """Line by line, skipping lines that are not JSON objects (counted) instead of failing."""
    records, bad = [], 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                bad += 1
                continue
            if isinstance(obj, dict):
                records.append(obj)
            else:
                bad += 1
    return pd.DataFrame.from_records(records), bad


def load_file(path: str | Path) -> tuple[pd.DataFrame, int]:
    """csv, jsonl (ndjson) or parquet with at least prompt and negative_prompt; returns (frame, bad lines)."""
    path = Path(path)
    where = f"data.source=file:{path}"
    if not path.is_file():
        raise SourceError(f"{where}: no such file (paths are relative to the project root)")
    suffix = path.suffix.lower()
    bad = 0
    if suffix == ".csv":
        df = pd.read_csv(path, keep_default_na=False, na_values=[""])
    elif suffix in (".jsonl", ".ndjson", ".json"):
        try:
            df = pd.read_json(path, lines=suffix != ".json")
        except ValueError:
            df, bad = _read_jsonl_tolerant(path)
    elif suffix in (".parquet", ".pq"):
        df = pd.read_parquet(path)
    else:
        raise SourceError(f"{where}: unsupported file type {suffix!r}; use .csv, .jsonl or .parquet")
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise SourceError(
            f"{where}: missing required column(s) {', '.join(missing)}; the file has "
            f"{', '.join(map(str, df.columns)) or 'no columns'}. Rename its columns to prompt and negative_prompt.")
    return conform(df), bad


def load_source(
    data: Data, checkpoint_dir: str | Path = "checkpoints/scrape", progress: bool = True, session=None
) -> tuple[pd.DataFrame, dict]:
    """Load ``data.source``; returns (13-column frame, stats for metrics/scrape.json)."""
    source = data.source
    stats: dict = {"source": source, "pages": 0, "retries": 0}
    if source == "sample":
        df = generate_sample(data.sample.rows, data.sample.seed)
        stats["synthetic"] = True
    elif source == "hf":
        df = conform(load_hf(data.hf))
    elif source.startswith("file:"):
        df, bad = load_file(source.removeprefix("file:"))
        stats["bad_lines"] = bad
    elif source == "playground":
        from negopt.data.playground import PlaygroundClient  # needs requests; only this source does

        client = PlaygroundClient(data.playground, checkpoint_dir, session=session, progress=progress)
        df = client.scrape()
        stats.update(client.stats_dict())
    else:  # the params schema already rejects this; kept for direct callers
        raise SourceError(f"data.source={source!r}: use sample, hf, playground or file:<path>")
    stats["rows_fetched"] = int(len(df))
    return df, stats
