"""Reading the clean stage's splits: the one place that says which stage to run when one is missing."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from negopt.core.errors import MissingInputError, require_input

COLUMNS = ("prompt", "negative_prompt")


def read_split(clean_dir: str | Path, name: str, columns: tuple[str, ...] = COLUMNS) -> pd.DataFrame:
    """``<clean_dir>/<name>.parquet`` (only ``columns``); missing or empty is a :class:`MissingInputError`."""
    path = require_input(Path(clean_dir) / f"{name}.parquet", "clean")
    df = pd.read_parquet(path, columns=list(columns))
    if df.empty:
        raise MissingInputError(f"{path} has no rows: loosen data.clean rules or change data.split, then "
                                "`dvc repro clean`")
    return df
