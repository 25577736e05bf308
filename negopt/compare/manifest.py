"""What ``generate`` writes for the stages after it: the image manifest (``<paths.images>/manifest.parquet``,
one row per image) and the cost metrics file. Kept free of torch so that ``compare``, which only reads
them, starts without importing it: that import is most of a light stage's start-up (bench/RESULTS.md,
"scrape, clean and compare start without importing torch").
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from negopt.core.errors import require_input

MANIFEST = "manifest.parquet"
GENERATE_METRICS = "generate.json"  # under paths.metrics: what each method's images cost


def read_manifest(images_dir: str | Path) -> pd.DataFrame:
    return pd.read_parquet(require_input(Path(images_dir) / MANIFEST, "generate"))
