"""Mean and standard error: the one summary behind every paired gain negopt reports (SFT vs retrieval, the
rerank fit, RL vs SFT on test, checkpoint selection's val gain)."""

from __future__ import annotations

import math


def mean_and_se(x) -> tuple[float, float]:
    """Mean of ``x`` (a 1-d tensor, array or sequence) and its standard error ``std(ddof=1) / sqrt(n)``, in
    float64; for a paired gain pass the differences. ``(mean, nan)`` for one value, ``(nan, nan)`` for none."""
    import torch  # here: the light stages import this module's siblings without paying for torch

    t = torch.as_tensor(x).detach().double().reshape(-1)
    n = t.numel()
    if n < 2:
        return float(t.mean()) if n else float("nan"), float("nan")
    return float(t.mean()), float(t.std(unbiased=True) / math.sqrt(n))


def paired_gain(model, baseline) -> tuple[float, float]:
    """Mean of ``model - baseline`` (same rows, same order) and its standard error, by :func:`mean_and_se`."""
    import numpy as np

    return mean_and_se(np.asarray(model, dtype=np.float64) - np.asarray(baseline, dtype=np.float64))
