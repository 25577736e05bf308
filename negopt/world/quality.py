"""True quality: what an oracle says an image is worth, computed from its truth record.

``image_quality = 1 - sum_d w_d * severity_d``  (in [0, 1]; :func:`negopt.world.defects.severity`),
with ``w_d = DEFECT_WEIGHTS[d]`` (0.25 each: an image with all four defects at full strength scores 0).
It depends on the image alone, as an aesthetic score does: the aesthetic MLP is trained to predict it.

``true_quality = image_quality - ALIGNMENT_WEIGHT * (1 - alignment)``, where ``alignment`` in [0, 1] is the
share of the prompt's four content attributes (shape, count, foreground, background) the image shows:
a clean image of the wrong scene is worth less than a flawed image of the right one.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from negopt.world.defects import DEFECTS, severity

DEFECT_WEIGHTS: dict[str, float] = {d: 0.25 for d in DEFECTS}
ALIGNMENT_WEIGHT = 1.0
CONTENT_ATTRIBUTES: tuple[str, ...] = ("shape", "count", "fg", "bg")


def severities(truth: pd.DataFrame) -> pd.DataFrame:
    """Each defect's severity in [0, 1] per row of a truth frame (columns named after :data:`DEFECTS`)."""
    return pd.DataFrame({d: [severity(d, s) for s in truth[d]] for d in DEFECTS}, index=truth.index)


def image_quality(truth: pd.DataFrame) -> np.ndarray:
    """``1 - sum_d w_d * severity_d`` per row, float64 ``[N]``."""
    sev = severities(truth)
    return 1.0 - sum(DEFECT_WEIGHTS[d] * sev[d].to_numpy(dtype=float) for d in DEFECTS)


def alignment(truth: pd.DataFrame, asked: pd.DataFrame) -> np.ndarray:
    """Share of the content attributes where ``truth`` (what the image shows) equals ``asked`` (what the
    prompt named), row by row, float64 ``[N]``; both frames carry :data:`CONTENT_ATTRIBUTES`."""
    hits = [truth[a].to_numpy() == asked[a].to_numpy() for a in CONTENT_ATTRIBUTES]
    return np.mean(hits, axis=0).astype(float)


def true_quality(truth: pd.DataFrame, asked: pd.DataFrame | None = None) -> np.ndarray:
    """``image_quality - ALIGNMENT_WEIGHT * (1 - alignment)`` per row; alignment is 1 when ``asked`` is
    None (a rendered image shows exactly what its prompt says)."""
    q = image_quality(truth)
    if asked is None:
        return q
    return q - ALIGNMENT_WEIGHT * (1.0 - alignment(truth, asked))
