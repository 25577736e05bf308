"""The oracle: what is true about a generated image, read back from its pixels, and paired comparisons.

A generated image has no truth record, so the oracle estimates one: defects and strengths from the
calibrated detectors (:mod:`negopt.world.detectors`), content from the checker, then true quality from
those as :mod:`negopt.world.quality` computes it from a real truth record.

Comparisons between two negatives are *paired*: the same prompts and the same seeds, so the seed's
effect (far larger than a negative's on a single image) cancels. For per-image values ``a_i``, ``b_i``::

    d_i = a_i - b_i,   mean = sum d_i / n,   se = std(d, ddof=1) / sqrt(n),   z = mean / se
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from negopt.core.stats import paired_gain
from negopt.world.defects import DEFECTS, DRAW_RATES, SPECS
from negopt.world.detectors import Calibration, defect_scores, detect, estimate_strengths, read_content
from negopt.world.grammar import BACKGROUND_GROUP, Content
from negopt.world.quality import CONTENT_ATTRIBUTES, alignment, image_quality, true_quality
from negopt.world.scenes import sample_content


def judge(images, calibration: Calibration, asked: list[Content] | None = None) -> pd.DataFrame:
    """One row per image: the content read (``shape``, ``count``, ``fg``, ``bg``), each defect's estimated
    strength (0 = not detected) under the defect's name and its presence as ``<defect>_found``,
    ``image_quality``, and when ``asked`` (the prompts' contents) is given, ``alignment``,
    ``<attribute>_ok`` per content attribute and ``true_quality``."""
    scores = defect_scores(images)
    found = detect(images, calibration, scores)
    out = pd.concat([read_content(images), estimate_strengths(images, calibration, scores)], axis=1)
    for d in DEFECTS:
        out[f"{d}_found"] = found[d].to_numpy()
    out["image_quality"] = image_quality(out)
    if asked is not None:
        want = pd.DataFrame([{"shape": c.shape, "count": c.count, "fg": c.fg, "bg": c.bg} for c in asked])
        for a in CONTENT_ATTRIBUTES:
            out[f"{a}_ok"] = out[a].to_numpy() == want[a].to_numpy()
        out["alignment"] = alignment(out, want)
        out["true_quality"] = true_quality(out, want)
    return out


#: the oracle's per-image values that evaluate stores and compare bootstraps (negopt.compare.gains.ORACLE labels them):
#: the true quality, each defect's presence and each content attribute's agreement with the prompt
ORACLE_KEYS = ("true_quality", *(f"rate_{d}" for d in DEFECTS), *(f"align_{a}" for a in CONTENT_ATTRIBUTES))


def oracle_scores(images, prompts: list[str], calibration: Calibration) -> dict[str, np.ndarray]:
    """``{key of ORACLE_KEYS: [N] float}`` for generated ``images`` (uint8 ``[N, 3, H, W]``) of ``prompts``.

    Every prompt must name a scene in the world's grammar (``grammar.parse_content``): the truth to judge an
    image against; the world profile runs on the world's users' pairs (``data.source: world``)."""
    from negopt.core.errors import ParamsError
    from negopt.world.grammar import parse_content

    contents = [parse_content(p) for p in prompts]
    bad = [p for p, c in zip(prompts, contents, strict=True) if c is None]
    if bad:
        raise ParamsError(f"the world oracle cannot judge {len(bad)} prompt(s) that name no scene of the world, "
                          f"e.g. {bad[0][:80]!r}: the world profile needs data.source: world")
    judged = judge(np.asarray(images), calibration, contents)
    out = {"true_quality": judged["true_quality"].to_numpy(np.float64)}
    out |= {f"rate_{d}": judged[f"{d}_found"].to_numpy(np.float64) for d in DEFECTS}
    out |= {f"align_{a}": judged[f"{a}_ok"].to_numpy(np.float64) for a in CONTENT_ATTRIBUTES}
    return out


def profile_oracle(params):
    """``oracle_scores`` with the detectors the models stage calibrated, on the world profile; None on the others
    (their images have no truth to read back)."""
    if params.profile != "world":
        return None
    from functools import partial

    from negopt.world.layout import zoo_paths

    return partial(oracle_scores, calibration=Calibration.load(zoo_paths(params.paths.world_models)["detectors"]))


@dataclass(frozen=True)
class Paired:
    """A paired difference ``a - b``: its mean, standard error, z = mean / se, and n."""

    mean: float
    se: float
    z: float
    n: int


def paired(a, b) -> Paired:
    """The paired difference of per-image values ``a`` and ``b`` (same prompts, same seeds)."""
    mean, se = paired_gain(a, b)
    n = len(a)
    z = mean / se if se > 0 else (0.0 if mean == 0 else float("inf") * np.sign(mean))
    return Paired(mean, se, z, n)


#: the control negative: words users write that do nothing in this world (trained as filler)
CONTROL_NEGATIVE = "ugly, bad hands"


def negative_conditions() -> dict[str, str]:
    """Condition name -> negative prompt: ``none`` (""), ``control`` (:data:`CONTROL_NEGATIVE`) and each
    defect's canonical word under the defect's name."""
    return {"none": "", "control": CONTROL_NEGATIVE, **{d: SPECS[d].word for d in DEFECTS}}


def likely_contents(defect: str, n: int, rng: np.random.Generator) -> list[Content]:
    """``n`` random contents with the attribute value at which ``defect`` is drawn most often (3 shapes for
    blur, a pale background for washed, squares for the watermark, a dark background for grain): the
    prompts on which a user would have reason to name it."""
    attr, table = DRAW_RATES[defect]
    value = max(table, key=table.get)
    out = []
    for _ in range(n):
        c = sample_content(rng)
        if attr == "bg_group":
            group = [b for b, g in BACKGROUND_GROUP.items() if g == value]
            c = Content(c.shape, c.count, c.fg, group[int(rng.integers(len(group)))])
        else:
            c = Content(**{**c.__dict__, attr: value})
        out.append(c)
    return out
