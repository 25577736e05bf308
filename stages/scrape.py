"""Stage scrape: load pairs from ``data.source`` into ``<paths.raw>/pairs.parquet`` (13 columns).

Writes ``<paths.metrics>/scrape.json`` (source, rows fetched, pages, retries). The playground source
keeps its resumable state under ``<paths.checkpoints>/scrape`` (a DVC ``persist`` output). A ``file:``
source is tracked by content when it lies (or is linked) under ``paths.sources``, one of this stage's deps.
"""

from __future__ import annotations

from pathlib import Path

from negopt.core.errors import UserError, run_stage
from negopt.core.io import write_json, write_parquet
from negopt.core.runtime import start_stage
from negopt.data.sources import load_source, untracked_file_warning


def main() -> None:
    params = start_stage(uses_torch=False)
    paths = params.paths
    checkpoint_dir = Path(paths.checkpoints) / "scrape"
    checkpoint_dir.mkdir(parents=True, exist_ok=True)  # a declared DVC output, even when unused
    if warning := untracked_file_warning(params.data.source, paths.sources):
        print(f"scrape: WARNING: {warning}")
    df, stats = load_source(params.data, checkpoint_dir=checkpoint_dir)
    if df.empty:
        raise UserError(f"scrape: data.source={params.data.source} gave no rows; nothing to clean")
    write_parquet(Path(paths.raw) / "pairs.parquet", df)
    write_json(Path(paths.metrics) / "scrape.json", stats)
    print(f"scrape: {len(df)} rows from {params.data.source} -> {paths.raw}/pairs.parquet")


if __name__ == "__main__":
    run_stage(main)
