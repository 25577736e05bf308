"""Paired bootstrap intervals for the gains of ``compare``: how far a gain could move on other prompts.

Every method renders the same prompts on the same seeds, so one resample of *prompt indices* is drawn
and applied to all methods at once (a paired bootstrap): the prompt-to-prompt spread, which all methods
share, cancels in the difference. A resample is a count vector ``w [P]`` (how often each prompt was
drawn, ``sum w = P``); the ``R`` resamples form ``W [R, P]``.

- Mean metrics (aesthetic, CLIP score): the per-prompt mean over its seeds ``m [P]``; a resample's
  method mean is ``W @ m / P`` ``[R]``.
- Inception Score (a statistic of the whole image set): from the stored class posteriors ``p [P, S, C]``
  (S seeds per prompt), no new Inception pass. A resample's IS is the whole-set IS of the drawn images,
  ``exp(mean_i KL(p_i || q))`` with ``q`` their mean posterior, i.e. torch-fidelity's IS with one split,
  computed as ``exp(H(q) - mean_i H(p_i))`` from per-prompt sums so all R resamples are two matrix
  products. (The table's point IS is torch-fidelity's mean over ``evaluate.is_splits`` splits; the
  interval's own estimate on the original sample, ``estimate``, is stored beside it.)

Gain of a resample: ``100 (c - b) / |b|`` (as ``negopt.compare.gains.relative_gain``) and ``diff = c - b``; the
interval is the percentile interval of the R resampled values at ``compare.confidence``.
"""

from __future__ import annotations

import numpy as np


def resample_counts(num_prompts: int, resamples: int, seed: int) -> np.ndarray:
    """``W [R, P]``: row r counts how often each prompt is drawn in resample r (P draws with replacement)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, num_prompts, size=(resamples, num_prompts))
    counts = np.zeros((resamples, num_prompts), dtype=np.float64)
    np.add.at(counts, (np.arange(resamples)[:, None], idx), 1.0)
    return counts


def resampled_mean(per_image: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """per_image ``[P, S]`` (prompt x seed) -> the method mean of each resample ``[R]`` (``W @ m / P``)."""
    per_prompt = np.asarray(per_image, dtype=np.float64).mean(axis=1)
    return counts @ per_prompt / counts.shape[1]


def _plogp(x: np.ndarray) -> np.ndarray:
    """``x log x`` with ``0 log 0 = 0``."""
    return np.where(x > 0, x * np.log(np.where(x > 0, x, 1.0)), 0.0)


def resampled_inception_score(probs: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """probs ``[P, S, C]`` class posteriors -> whole-set IS of each resample ``[R]``.

    ``IS = exp(H(q) - mean_i H(p_i))``, ``q = mean_i p_i``, over the ``n = P S`` drawn images.
    """
    p = np.asarray(probs, dtype=np.float64)
    num_prompts, seeds = p.shape[:2]
    summed = p.sum(axis=1)  # [P, C]
    neg_entropy = _plogp(p).sum(axis=(1, 2))  # [P]: sum over seeds of sum_y p log p
    n = num_prompts * seeds
    q = counts @ summed / n  # [R, C]
    return np.exp(-_plogp(q).sum(axis=1) + counts @ neg_entropy / n)


def percent_gain(candidate: np.ndarray, baseline: np.ndarray) -> np.ndarray:
    """``100 (c - b) / |b|`` elementwise; NaN where ``b == 0`` (undefined, as ``relative_gain``'s None)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(baseline != 0, 100.0 * (candidate - baseline) / np.abs(baseline), np.nan)


def interval(values: np.ndarray, confidence: float) -> tuple[float, float] | None:
    """The percentile interval of bootstrap values; None if any is undefined (a zero baseline)."""
    if np.isnan(values).any():
        return None
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return float(low), float(high)


def excludes_zero(bounds: tuple[float, float] | None) -> bool:
    return bounds is not None and (bounds[0] > 0 or bounds[1] < 0)


def gain_interval(candidate: np.ndarray, baseline: np.ndarray, estimate_c: float, estimate_b: float,
                  confidence: float) -> dict[str, float | bool | None]:
    """One pair's interval record: resampled values ``[R]`` of each method and their full-sample values.

    ``low`` / ``high`` bound the percent gain, ``diff_low`` / ``diff_high`` the difference ``c - b``;
    ``estimate`` is the gain of the full sample under the same statistic and ``diff`` its difference;
    ``excludes_zero`` whether the gain interval lies on one side of 0 (``diff_excludes_zero``: the difference's,
    the one that answers for rates whose baseline may be 0).
    """
    gain = interval(percent_gain(candidate, baseline), confidence)
    diff = interval(candidate - baseline, confidence)
    est = percent_gain(np.array([estimate_c]), np.array([estimate_b]))[0]
    return {
        "estimate": None if np.isnan(est) else float(est),
        "low": None if gain is None else gain[0],
        "high": None if gain is None else gain[1],
        "diff": float(estimate_c - estimate_b),
        "diff_low": diff[0] if diff else None,
        "diff_high": diff[1] if diff else None,
        "excludes_zero": excludes_zero(gain),
        "diff_excludes_zero": excludes_zero(diff),
    }
