"""The per-image score table ``evaluate`` keeps (``paths.scores``), so any later statistic needs no re-rendering.

- ``per_image.parquet``: one row per image (method x prompt x seed): method, prompt_idx, prompt, seed,
  file, aesthetic, clip_score; within a method, rows in manifest order.
- ``inception_probs.safetensors``: per method, the Inception class posteriors ``[N, C]`` (float32) of that
  method's rows in the same order (the features the Inception Score is computed from; compare bootstraps
  the IS over images from them).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from negopt.core.errors import require_input
from negopt.core.io import atomic_path, write_parquet

if TYPE_CHECKING:
    import torch  # annotations only: compare reads the scores without importing torch

PER_IMAGE = "per_image.parquet"
PROBS = "inception_probs.safetensors"
KEY_COLUMNS = ["method", "prompt_idx", "prompt", "seed", "file"]


def score_frame(manifest: pd.DataFrame, per_image: dict[str, dict[str, torch.Tensor]]) -> pd.DataFrame:
    """Manifest rows of the scored methods, in method order, with their ``aesthetic``, ``clip_score`` (and
    ``hpsv2`` / ``pickscore`` when evaluated)."""
    parts = []
    for method, values in per_image.items():
        rows = manifest.loc[manifest["method"] == method, KEY_COLUMNS].reset_index(drop=True)
        for name, v in values.items():  # aesthetic, clip_score and each named preference score: [N] each
            if name != "inception_probs":
                rows[name] = v.double().numpy()
        parts.append(rows)
    return pd.concat(parts, ignore_index=True)


def write_scores(scores_dir: str | Path, manifest: pd.DataFrame, per_image: dict[str, dict[str, torch.Tensor]]) -> None:
    from safetensors.torch import save_file

    scores_dir = Path(scores_dir)
    write_parquet(scores_dir / PER_IMAGE, score_frame(manifest, per_image))
    with atomic_path(scores_dir / PROBS, suffix=".safetensors") as tmp:
        save_file({m: v["inception_probs"].float().contiguous() for m, v in per_image.items()}, str(tmp))


def read_scores(scores_dir: str | Path) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """(per-image frame, ``{method: posteriors [N, C]}``)."""
    from safetensors.numpy import load_file

    scores_dir = Path(scores_dir)
    frame = pd.read_parquet(require_input(scores_dir / PER_IMAGE, "evaluate"))
    return frame, load_file(str(require_input(scores_dir / PROBS, "evaluate")))
