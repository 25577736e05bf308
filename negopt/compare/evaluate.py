"""Per-method image metrics: Inception Score (mean and std over splits), mean aesthetic, mean CLIP score,
and the mean of each human-preference score the scorer carries (``hpsv2``, ``pickscore``: the profile names them).

Reads the images and the manifest the generate stage wrote; every score comes from ``negopt.images.scorers``
so the numbers are the ones RL optimised and the paper reports.
"""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from negopt.core.errors import ParamsError, UserError


class NonFiniteMetricError(UserError, ValueError):
    """A metric came out NaN or infinite; writing it would poison eval.json and every comparison after it."""


def check_finite(method: str, row: dict[str, float | int]) -> None:
    """Refuse a metric row with a NaN or infinite value, naming the method, the metric and the likely cause."""
    bad = [f"{k}={v}" for k, v in row.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        raise NonFiniteMetricError(
            f"evaluate: method {method!r} has non-finite metric(s) {', '.join(bad)}; eval.json not written. "
            "A NaN Inception Score usually means the Inception weights overflow at inception_input_size "
            "(e.g. a random Inception calibrated at another size); a NaN aesthetic or CLIP score, NaN pixels "
            "from the diffusion model (half precision overflow): check models.<profile>.inception and the images"
        )


def load_images(images_dir: str | Path, files: list[str]) -> torch.Tensor:
    """PNG files -> uint8 ``[N, 3, H, W]`` (the images-as-tensors convention)."""
    from PIL import Image

    arrays = [np.asarray(Image.open(Path(images_dir) / f).convert("RGB")) for f in files]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def batched_scores(fn, images: torch.Tensor, batch_size: int, *extra: list[str]) -> torch.Tensor:
    """A per-image score ``[N]`` computed in batches (so the paper profile's ViT-L fits in memory)."""
    scores = [
        fn(images[i : i + batch_size], *(e[i : i + batch_size] for e in extra)).float().cpu()
        for i in range(0, len(images), batch_size)
    ]
    return torch.cat(scores)


def evaluate_method(
    scorer,
    images: torch.Tensor,
    prompts: list[str],
    is_splits: int,
    batch_size: int,
    per_image: dict[str, torch.Tensor] | None = None,
    oracle=None,
) -> dict[str, float | int]:
    """The metric row of one method; a ``per_image`` dict receives ``aesthetic``, ``clip_score`` (and each named
    preference score) ``[N]`` and
    the Inception posteriors ``inception_probs [N, C]`` (compare's bootstrap reads them, ``negopt.compare.scores``).
    ``oracle`` (the world profile): ``oracle(images, prompts) -> {name: [N]}``, the truth read back from each
    image (negopt.world.oracle.oracle_scores); its means join the row and its values ``per_image``.

    One Inception pass (the scorer's) gives both the IS and the posteriors: torch-fidelity's IS formula is
    applied to the scorer's logits (``negopt.images.scorers.inception_score_from_logits``)."""
    from negopt.images.scorers import inception_score_from_logits, posteriors

    if len(images) < is_splits:
        raise ParamsError(
            f"evaluate.is_splits={is_splits} exceeds the {len(images)} images of a method: "
            "lower evaluate.is_splits or raise generate.num_prompts / generate.seeds_per_prompt"
        )
    logits = batched_scores(scorer.inception_logits, images, batch_size)
    is_mean, is_std = inception_score_from_logits(logits, is_splits)
    aesthetic = batched_scores(scorer.aesthetic, images, batch_size)
    clip = batched_scores(scorer.clip_score, images, batch_size, prompts)
    row = {
        "inception_score": float(is_mean),
        "inception_score_std": float(is_std),
        "aesthetic": float(aesthetic.mean()),
        "clip_score": float(clip.mean()),
    }
    preference = {name: batched_scores(partial(scorer.preference_score, name), images, batch_size, prompts)
                  for name in getattr(scorer, "preference", {})}  # hpsv2, pickscore: each one the profile names
    truth = {} if oracle is None else {k: torch.from_numpy(v) for k, v in oracle(images.numpy(), prompts).items()}
    if per_image is not None:
        per_image |= {"aesthetic": aesthetic, "clip_score": clip, **preference, **truth,
                      "inception_probs": posteriors(logits)}
    means = {name: float(v.double().mean()) for name, v in (preference | truth).items()}
    return row | means | {"n_images": len(images)}


def evaluate_all(
    manifest: pd.DataFrame,
    images_dir: str | Path,
    scorer,
    is_splits: int,
    batch_size: int,
    per_image: dict[str, dict[str, torch.Tensor]] | None = None,
    oracle=None,
) -> dict[str, dict[str, float | int]]:
    """``{method: metrics}`` in the manifest's method order; a non-finite metric raises NonFiniteMetricError.

    ``per_image``, when given, receives ``{method: per-image values}``; ``oracle``: see ``evaluate_method``."""
    out = {}
    methods = list(dict.fromkeys(manifest["method"]))
    for method in tqdm(methods, desc="evaluate", unit="method"):
        rows = manifest[manifest["method"] == method]
        images = load_images(images_dir, rows["file"].tolist())
        out[method] = evaluate_method(
            scorer,
            images,
            rows["prompt"].astype(str).tolist(),
            is_splits,
            batch_size,
            None if per_image is None else per_image.setdefault(method, {}),
            oracle,
        )
        check_finite(method, out[method])  # before the next method: fail as soon as it is known
    return out
