"""Where raw pairs come from: ``data.source`` = sample | world | hf | file:<path> | playground.

Every loader returns the 13-column frame (:func:`negopt.data.schema.conform`) and a stats dict that
the scrape stage writes to ``metrics/scrape.json``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from negopt.core.errors import UserError
from negopt.core.params import Data, HfSource
from negopt.data.sample import generate_sample
from negopt.data.schema import conform

REQUIRED = ("prompt", "negative_prompt")


class SourceError(UserError, RuntimeError):
    """A source cannot be read; the message names the param and the fix."""


def hf_fetch_command(cfg: HfSource) -> str:
    """The huggingface_hub 2.x CLI line that puts the dataset in the HF cache."""
    rev = "" if cfg.revision == "main" else f" --revision {cfg.revision}"
    return f"hf download --repo-type dataset {cfg.dataset}{rev}"


def hf_split_files(folder: Path, split: str) -> list[Path]:
    """A snapshot's parquet files of ``split``: ``data/<split>-*.parquet`` (the hub's layout), else any
    ``**/<split>-*.parquet`` / ``**/<split>/*.parquet``; sorted, so shards concatenate in order."""
    files = sorted(folder.glob(f"data/{split}-*.parquet"))
    if not files:
        files = sorted({*folder.glob(f"**/{split}-*.parquet"), *folder.glob(f"**/{split}/*.parquet")})
    return files


def load_hf(cfg: HfSource) -> pd.DataFrame:
    """The original dataset from the HF hub cache: resolve the snapshot, read its parquet with pyarrow.

    Offline (``HF_HUB_OFFLINE=1``) only the cache is read (what ``hf download --repo-type dataset
    <id>`` leaves: ``refs/<revision>`` + ``snapshots/<sha>/data/<split>-*.parquet``); online the
    missing parquet files are downloaded first. ``datasets.load_dataset`` is not used: offline it
    finds only its own prepared cache, not a hub snapshot.
    """
    import pyarrow.parquet as pq
    from huggingface_hub import constants, snapshot_download

    offline = bool(constants.HF_HUB_OFFLINE)
    try:
        folder = Path(
            snapshot_download(
                cfg.dataset,
                repo_type="dataset",
                revision=cfg.revision,
                allow_patterns=[f"*{cfg.split}-*.parquet", f"*{cfg.split}/*.parquet"],
                local_files_only=offline,
            )
        )
    except Exception as err:  # LocalEntryNotFoundError offline, HTTP / connection errors online
        raise SourceError(
            f"data.source=hf: {cfg.dataset!r} (data.hf.revision {cfg.revision!r}) is not in the Hugging Face "
            f"cache{' and this run is offline' if offline else ''} ({type(err).__name__}: {err}).\n"
            f"Fetch it once on a machine with network access:\n  {hf_fetch_command(cfg)}\n"
            f"then copy the cache (HF_HUB_CACHE, default ~/.cache/huggingface/hub) here, or use "
            f"data.source=file:<path to its parquet>"
        ) from None
    files = hf_split_files(folder, cfg.split)
    if not files:
        found = sorted(str(p.relative_to(folder)) for p in folder.rglob("*.parquet"))
        raise SourceError(
            f"data.source=hf: {cfg.dataset!r} snapshot {folder.name} has no parquet for split "
            f"{cfg.split!r} (data.hf.split); it holds {found or 'no parquet files'}"
        )
    return pd.concat([pq.read_table(f).to_pandas() for f in files], ignore_index=True)


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
        try:
            df = pd.read_csv(path, keep_default_na=False, na_values=[""])
        except pd.errors.EmptyDataError:
            raise SourceError(f"{where}: the file is empty (not even a header line)") from None
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
    if df.empty:
        raise SourceError(f"{where}: the file has its columns but no rows")
    return conform(df), bad


def untracked_file_warning(source: str, sources_dir: str | Path) -> str | None:
    """For ``file:<path>`` outside ``paths.sources``: why DVC will not notice an edit, and the fix.

    DVC re-runs scrape when a dep or a param changes; the path is only a param *string*, so an edit to
    the file itself changes nothing DVC hashes. ``paths.sources`` is one of scrape's deps (a folder,
    symlinks followed), so a file under it, or a link to it there, is tracked by content.
    """
    if not source.startswith("file:"):
        return None
    path = Path(source.removeprefix("file:"))
    if Path(os.path.abspath(path)).is_relative_to(os.path.abspath(sources_dir)):  # a link there counts: not resolved
        return None
    link = Path(sources_dir) / path.name
    return (f"data.source={source} is outside paths.sources ({sources_dir}), so DVC does not track its content: "
            f"an edit will not re-run scrape. Link it there and point data.source at the link: "
            f"`ln -s {Path(os.path.relpath(path.absolute(), link.parent.absolute()))} {link}`, then "
            f"`dvc exp run -S data.source=file:{link}`")


def load_source(
    data: Data, checkpoint_dir: str | Path = "checkpoints/scrape", progress: bool = True, session=None
) -> tuple[pd.DataFrame, dict]:
    """Load ``data.source``; returns (13-column frame, stats for metrics/scrape.json)."""
    source = data.source
    stats: dict = {"source": source, "pages": 0, "retries": 0}
    if source == "sample":
        df = generate_sample(data.sample.rows, data.sample.seed)
        stats["synthetic"] = True
    elif source == "world":
        from negopt.world.users import generate_world_pairs  # loaded only by the source that uses it

        df = generate_world_pairs(data.world.rows, data.world.seed)
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
        raise SourceError(f"data.source={source!r}: use sample, world, hf, playground or file:<path>")
    stats["rows_fetched"] = int(len(df))
    return df, stats
