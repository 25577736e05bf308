"""Analytic defect detectors and the content checker: the truth read back from pixels.

The watermark is measured first and taken out: its amplitude ``a`` is the largest, over the stripes'
``WATERMARK_OFFSETS`` phases, least-squares coefficient of the zero-mean stripe pattern in the grey
(channel-mean) image, and ``x <- (x - a s) / (1 - a)`` undoes it at that phase (``a`` clipped to
[0, 0.9]). Every other statistic works on that image, float ``[N, 3, H, W]`` in [0, 1], after a 5x5 median filter per channel (``med``; it removes the 2x2-block grain but keeps edges), inside
the 1 px border, except where noted. Each score grows with its defect:

- ``blur``: edge width ``range_c / max|grad med_c|`` in px, on the channel ``c`` with the largest range
  (``max - min``); central differences. A sharp anti-aliased edge is ~1.5 px wide, sigma 1 blur ~3 px.
- ``washed``: pull towards grey, ``1 - 2 * max |med - 0.5|`` over pixels and channels (washing by ``f``
  moves every value into ``0.5 +- (1 - f) / 2``).
- ``watermark``: the stripes' amplitude ``a`` above (:func:`watermark_amplitude`); shapes are not
  correlated with the stripes, so an image without them scores ~0 and one with alpha ``a`` ~``a``.
- ``grain``: robust noise sigma on the image averaged over 2x2 blocks (``p``, one value per grain
  block), ``1.4826 * median |p - median3x3(p)| / GRAIN_GAIN`` (the median absolute deviation of the
  median-filter residual; edges are too few to move the median). The residual of pure Gaussian noise
  of sigma s has a MAD-sigma of ``GRAIN_GAIN * s`` (the median shares the centre value), so the score
  estimates s where nothing clips at 0 or 1.

A :class:`Calibration` holds, per defect, the threshold that maximises Youden's J (TPR - FPR) on
renderer images, its AUC there, and an isotonic map from score to strength fitted on the images that
have the defect, so generated images get estimated strengths and hence an estimated true quality.

The content checker (:func:`read_content`, on a 3x3 median that keeps small shapes' corners) fits the
background as the palette colour (possibly washed) nearest the border's median, marks foreground where a
pixel is far from it, and reads the count (connected components of >= ``MIN_COMPONENT`` px), the shape
(from the moments of each component, :func:`_shape_of`; the most common wins) and the foreground colour
(the palette colour, possibly washed, nearest the median of the component cores).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from negopt.world.defects import DEFECTS, GRAIN_BLOCK, SPECS, WATERMARK_OFFSETS, watermark_pattern
from negopt.world.grammar import BACKGROUND, FOREGROUND

WASH_LEVELS = np.array([0.0, 0.5, 0.55, 0.6, 0.65, 0.7])  # the checker's grid of washing fractions
GRAIN_GAIN = 0.8625  # MAD-sigma of x - median3x3(x) for unit Gaussian noise (simulated, 8e6 pixels)
MIN_COMPONENT = 10  # px: smaller foreground blobs are grain, not shapes (the smallest shape covers ~20)
SKEW_TRIANGLE, SKEW_MAYBE_TRIANGLE, TOP_TRIANGLE = -0.2, -0.15, 0.42  # triangle rules (:func:`_shape_of`)
SEPARABLE_SQUARE = 0.77  # square vs circle (:func:`_shape_of`)


def as_float(images) -> np.ndarray:
    """uint8 ``[N, 3, H, W]`` (numpy or torch) -> float32 numpy in [0, 1]."""
    arr = images.cpu().numpy() if hasattr(images, "cpu") else np.asarray(images)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[1] != 3:
        raise ValueError(f"expected uint8 images [N, 3, H, W], got {arr.shape} {arr.dtype}")
    return arr.astype(np.float32) / 255.0


def _interior(size: int) -> np.ndarray:
    """Boolean ``[H, W]``: every pixel but the 1 px border (where filters see padding)."""
    interior = np.ones((size, size), dtype=bool)
    interior[[0, -1], :] = False
    interior[:, [0, -1]] = False
    return interior


def watermark_amplitude(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(amplitude ``[N]``, phase ``[N]``): the largest least-squares amplitude of the zero-mean stripe
    pattern over its phases in the grey image of float ``x``, and that phase."""
    grey = x.mean(axis=1).reshape(len(x), -1)
    grey = grey - grey.mean(axis=1, keepdims=True)
    patterns = np.stack([watermark_pattern(x.shape[-1], k).reshape(-1) for k in range(WATERMARK_OFFSETS)])
    patterns = patterns - patterns.mean(axis=1, keepdims=True)  # [K, H*W]
    amplitude = grey @ patterns.T / (patterns * patterns).sum(axis=1)  # [N, K]
    phase = amplitude.argmax(axis=1)
    return amplitude[np.arange(len(x)), phase], phase


def remove_watermark(x: np.ndarray, amplitude: np.ndarray, phase: np.ndarray) -> np.ndarray:
    """Undo ``x <- (1 - a) x + a s`` with ``a = clip(amplitude, 0, 0.9)`` and the stripes at ``phase``, per
    image (clipped to [0, 1])."""
    a = np.clip(amplitude, 0.0, 0.9)[:, None, None, None]
    s = np.stack([watermark_pattern(x.shape[-1], int(k)) for k in phase])[:, None]
    return np.clip((x - a * s) / (1 - a), 0.0, 1.0).astype(np.float32)


def _median(x: np.ndarray, k: int) -> np.ndarray:
    """``k`` x ``k`` median filter of each channel of ``[N, C, H, W]``."""
    from scipy.ndimage import median_filter

    return median_filter(x, size=(1, 1, k, k), mode="nearest")


def defect_scores(images) -> pd.DataFrame:
    """One score per defect (columns :data:`DEFECTS`) per image, each growing with its defect."""
    x = as_float(images)
    n, _, size, _ = x.shape
    stripes, phase = watermark_amplitude(x)
    x = remove_watermark(x, stripes, phase)
    interior = _interior(size)
    med = _median(x, 5)
    inner = med[:, :, interior]  # [N, 3, P]

    gx = np.zeros_like(med)
    gy = np.zeros_like(med)
    gx[..., 1:-1] = (med[..., 2:] - med[..., :-2]) / 2
    gy[..., 1:-1, :] = (med[..., 2:, :] - med[..., :-2, :]) / 2
    grad = np.sqrt(gx**2 + gy**2)[:, :, interior].max(axis=2)  # [N, 3]
    span = inner.max(axis=2) - inner.min(axis=2)  # [N, 3]
    c = span.argmax(axis=1)[:, None]
    edge_width = np.take_along_axis(span, c, 1)[:, 0] / np.maximum(np.take_along_axis(grad, c, 1)[:, 0], 1e-6)

    grey_pull = 1.0 - 2.0 * np.abs(inner - 0.5).max(axis=(1, 2))

    b = GRAIN_BLOCK
    pooled = x.reshape(n, 3, size // b, b, size // b, b).mean(axis=(3, 5))
    pooled_interior = interior.reshape(size // b, b, size // b, b).all(axis=(1, 3))
    residual = (pooled - _median(pooled, 3))[:, :, pooled_interior]
    noise = 1.4826 * np.median(np.abs(residual), axis=(1, 2)) / GRAIN_GAIN
    return pd.DataFrame({"blur": edge_width, "washed": grey_pull, "watermark": stripes, "grain": noise})


def auc(scores, labels) -> float:
    """Area under the ROC curve: ``P(score of a positive > score of a negative)``, ties counting 1/2
    (the Mann-Whitney U statistic over ``n_pos * n_neg``). NaN when one class is empty."""
    from scipy.stats import rankdata

    s, y = np.asarray(scores, dtype=float), np.asarray(labels, dtype=bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def youden_threshold(scores, labels) -> float:
    """The threshold ``t`` (score >= t means present) maximising TPR - FPR; midway between two scores."""
    s, y = np.asarray(scores, dtype=float), np.asarray(labels, dtype=bool)
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    tpr = np.cumsum(y) / max(y.sum(), 1)
    fpr = np.cumsum(~y) / max((~y).sum(), 1)
    distinct = np.r_[s[1:] != s[:-1], True]  # cut only between different scores
    j = np.where(distinct, tpr - fpr, -np.inf)
    i = int(np.argmax(j))
    return float((s[i] + s[i + 1]) / 2) if i + 1 < len(s) else float(s[i])


@dataclass
class Calibration:
    """Per defect: ``threshold`` (score >= threshold: present), ``auc`` on the calibration renders, and
    the isotonic map ``strength_knots`` (score knots -> strength knots) fitted on the present ones."""

    threshold: dict[str, float]
    auc: dict[str, float]
    strength_knots: dict[str, tuple[list[float], list[float]]]
    n_images: int
    seed: int

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        data = json.loads(Path(path).read_text())
        data["strength_knots"] = {d: (list(a), list(b)) for d, (a, b) in data["strength_knots"].items()}
        return cls(**data)


def calibrate(images, truth: pd.DataFrame, seed: int = -1) -> Calibration:
    """Fit thresholds and strength maps on renderer ``images`` with their ``truth`` (defect strength
    columns); ``seed`` is recorded only. Use :func:`calibrate_on_renders` to render the images too."""
    from sklearn.isotonic import IsotonicRegression

    scores = defect_scores(images)
    threshold, aucs, knots = {}, {}, {}
    for d in DEFECTS:
        present = truth[d].to_numpy() > 0
        threshold[d] = youden_threshold(scores[d], present)
        aucs[d] = auc(scores[d], present)
        iso = IsotonicRegression(y_min=SPECS[d].low, y_max=SPECS[d].high, out_of_bounds="clip")
        iso.fit(scores[d].to_numpy()[present], truth[d].to_numpy()[present])
        knots[d] = (iso.X_thresholds_.tolist(), iso.y_thresholds_.tolist())
    return Calibration(threshold, aucs, knots, len(truth), seed)


def calibrate_on_renders(n: int = 4000, seed: int = 12345) -> Calibration:
    """:func:`calibrate` on ``n`` fresh renderer images (:func:`negopt.world.scenes.sample_scenes`)."""
    from negopt.world.scenes import render, sample_scenes, truth_frame

    scenes = sample_scenes(n, seed)
    return calibrate(render(scenes), truth_frame(scenes), seed)


def detect(images, calibration: Calibration, scores: pd.DataFrame | None = None) -> pd.DataFrame:
    """Boolean presence per defect (score >= the calibrated threshold)."""
    scores = defect_scores(images) if scores is None else scores
    return pd.DataFrame({d: scores[d].to_numpy() >= calibration.threshold[d] for d in DEFECTS})


def estimate_strengths(images, calibration: Calibration, scores: pd.DataFrame | None = None) -> pd.DataFrame:
    """Estimated strength per defect: the isotonic map of the score where detected, 0.0 elsewhere
    (the same columns as a truth frame's defect columns, so :mod:`negopt.world.quality` applies)."""
    scores = defect_scores(images) if scores is None else scores
    found = detect(images, calibration, scores)
    out = {}
    for d in DEFECTS:
        xs, ys = calibration.strength_knots[d]
        out[d] = np.where(found[d], np.interp(scores[d].to_numpy(), xs, ys), 0.0)
    return pd.DataFrame(out)


def _nearest_washed(colour: np.ndarray, palette: dict[str, tuple[float, float, float]],
                    levels: np.ndarray) -> tuple[str, float, float]:
    """(name, wash level, distance) of the palette colour, washed by one of ``levels``, nearest ``colour``."""
    base = np.asarray(list(palette.values()))  # [C, 3]
    cand = base[None] * (1 - levels[:, None, None]) + 0.5 * levels[:, None, None]  # [L, C, 3]
    dist = np.linalg.norm(cand - colour, axis=2)
    li, ci = np.unravel_index(int(dist.argmin()), dist.shape)
    return list(palette)[ci], float(levels[li]), float(dist[li, ci])


def _shape_of(component: np.ndarray, weight: np.ndarray) -> str:
    """circle / square / triangle from one component (boolean ``[H, W]``) and the soft foreground weight
    ``w`` in [0, 1] around it (the component grown by 2 px), by central moments of ``w``:

    - skewness ``mu_03 / mu_02^1.5`` in y: ~0 for circles and squares, ~ -0.35 for an upward triangle
      (blur shrinks it but keeps its sign), together with the share ``top`` of the component's pixels in
      the upper half of its bounding box (~0.47 vs ~0.32);
    - separability ``mu_22 / (mu_20 mu_02)``: 1 for a square (its indicator is a product in x and y, and
      blurring with a Gaussian keeps it one), 2/3 for a disk.
    """
    from scipy.ndimage import binary_dilation

    w = np.where(binary_dilation(component, iterations=2), weight, 0.0)
    yy, xx = np.mgrid[0:w.shape[0], 0:w.shape[1]]
    total = w.sum()
    dy, dx = yy - (w * yy).sum() / total, xx - (w * xx).sum() / total
    m20, m02 = (w * dx**2).sum() / total, (w * dy**2).sum() / total
    skew_y = (w * dy**3).sum() / total / m02**1.5
    separability = (w * dx**2 * dy**2).sum() / total / (m20 * m02)
    ys, _ = np.nonzero(component)
    top = float((ys < (ys.min() + ys.max()) / 2).mean())
    if skew_y < SKEW_TRIANGLE or (skew_y < SKEW_MAYBE_TRIANGLE and top < TOP_TRIANGLE):
        return "triangle"
    return "square" if separability > SEPARABLE_SQUARE else "circle"


def read_content(images) -> pd.DataFrame:
    """What each image shows: ``shape`` (the most common over its components; "" if none), ``count``
    (components of >= ``MIN_COMPONENT`` px), ``fg`` ("" if no component), ``bg`` and the fitted ``wash``."""
    from scipy.ndimage import label

    x = as_float(images)
    x = _median(remove_watermark(x, *watermark_amplitude(x)), 3)  # 3x3 keeps small shapes' corners
    _, _, size, _ = x.shape
    border = np.zeros((size, size), dtype=bool)
    border[:2], border[-2:], border[:, :2], border[:, -2:] = True, True, True, True
    rows = []
    for img in x:
        bg_colour = np.median(img[:, border], axis=1)
        bg, wash, _ = _nearest_washed(bg_colour, BACKGROUND, WASH_LEVELS)
        dist = np.linalg.norm(img - bg_colour[:, None, None], axis=0)
        peak = float(np.percentile(dist, 99.5))
        labels, k = label(dist > max(0.5 * peak, 0.05))
        sizes = np.bincount(labels.ravel(), minlength=k + 1)[1:]
        comps = [labels == j + 1 for j in range(k) if sizes[j] >= MIN_COMPONENT]
        if comps:
            core = dist > 0.8 * dist.max()
            fg, _, _ = _nearest_washed(np.median(img[:, core], axis=1), FOREGROUND,
                                       WASH_LEVELS if bg == "grey" else np.array([wash]))
            weight = np.clip(dist / max(peak, 1e-6), 0.0, 1.0)
            shapes = [_shape_of(c, weight) for c in comps]
            shape = max(set(shapes), key=lambda s: (shapes.count(s), s))
        else:
            fg, shape = "", ""
        rows.append({"shape": shape, "count": len(comps), "fg": fg,
                     "bg": bg, "wash": wash})
    return pd.DataFrame(rows)
