"""Each world model checked against the world's known truth, on scenes none of them was trained on.

:func:`check_zoo` is what the models stage writes to ``metrics/models.json`` and what the world's tests and
``bench/world_feasibility.py`` assert or record:

- detectors: each defect's AUC on held-out renders (the oracle's rates are only as good as these);
- the aesthetic MLP: Spearman correlation of its score with the true quality (it was trained to predict it);
- CLIP: how often an image's own prompt beats the same prompt with another foreground colour;
- the Inception classifier: held-out scene accuracy, its mass on the scene classes, the Inception Score of
  renders;
- the diffusion pipeline (``prompts`` > 0): each defect's rate on prompts that make it likely, with no
  negative, the irrelevant control and its own word (paired over prompts and seeds: the drop in SE), and the
  content alignment of clean prompts (:func:`negative_study`, :func:`defect_studies`, :func:`defect_response`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from negopt.world.defects import DEFECTS
from negopt.world.detectors import Calibration
from negopt.world.grammar import Content
from negopt.world.oracle import judge, likely_contents, negative_conditions, paired
from negopt.world.quality import CONTENT_ATTRIBUTES
from negopt.world.scenes import sample_content

HELD_OUT_SEED = 424_242  # never a training seed: the zoo renders from models.world_build.seed


def held_out_renders(n: int = 1000, seed: int = HELD_OUT_SEED):
    from negopt.world.dataset import render_set

    return render_set(n, seed=seed, progress=False)


def detector_aucs(held) -> dict[str, float]:
    from negopt.world.detectors import auc, defect_scores

    scores = defect_scores(held.images)
    return {d: auc(scores[d], held.truth[d] > 0) for d in DEFECTS}


def inception_logits(net, images: np.ndarray, batch_size: int = 256) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([net(torch.from_numpy(images[i:i + batch_size]))[0]
                          for i in range(0, len(images), batch_size)])


def scorer_checks(paths: dict[str, Path], held) -> dict[str, float]:
    """The aesthetic MLP, CLIP and the Inception classifier on ``held`` (renders with their truth)."""
    from negopt.images.scorers import inception_score_from_logits
    from negopt.models.loader import load_aesthetic
    from negopt.world.grammar import FOREGROUND
    from negopt.world.quality import image_quality
    from negopt.world.train_clip import load_world_clip
    from negopt.world.train_scorers import (
        clip_image_embeddings,
        load_inception,
        scene_classes,
        scene_labels,
        spearman,
    )

    model, tokenizer = load_world_clip(paths["clip_config"], paths["clip_pretrained"])
    emb = clip_image_embeddings(model, held.images)
    rng = np.random.default_rng(0)
    swapped = [p.replace(f" {fg} ", f" {rng.choice([c for c in FOREGROUND if c != fg])} ")
               for p, fg in zip(held.truth["prompt"], held.truth["fg"], strict=True)]
    with torch.no_grad():
        score = load_aesthetic(paths["aesthetic"])(emb).squeeze(-1).numpy()
        own, other = (torch.nn.functional.normalize(model.encode_text(tokenizer(texts)).float(), dim=-1)
                      for texts in (list(held.truth["prompt"]), swapped))
    logits = inception_logits(load_inception(paths["inception"]), held.images)
    k = len(scene_classes())
    return {
        "aesthetic_spearman_true_quality": spearman(score, image_quality(held.truth)),
        "clip_own_prompt_beats_swapped_fg": float(((emb * own).sum(-1) > (emb * other).sum(-1)).float().mean()),
        "inception_accuracy": float((logits[:, :k].argmax(1).numpy() == scene_labels(held.truth)).mean()),
        "inception_mass_on_scene_classes": float(logits.double().softmax(1)[:, :k].sum(1).mean()),
        "inception_score_renders": inception_score_from_logits(logits, splits=10)[0],
    }


def pipeline_checks(paths: dict[str, Path], prompts: int, seed: int, guidance_scale: float,
                    num_inference_steps: int) -> dict:
    """Each defect's response to its own word against the control (:func:`defect_studies`) and the clean
    prompts' content alignment, ``prompts`` paired images per condition."""
    from negopt.world.train_diffusion import load_pipeline

    pipe = load_pipeline(paths["sd"])
    calibration = Calibration.load(paths["detectors"])
    rng = np.random.default_rng([seed, 7])
    contents = [sample_content(rng) for _ in range(prompts)]
    seeds = [int(s) for s in rng.integers(0, 2**31, size=prompts)]
    clean = negative_study(pipe, contents, seeds, calibration, {"none": ""}, guidance_scale,
                           num_inference_steps)["none"]
    response = defect_response(defect_studies(pipe, prompts, seed, calibration, guidance_scale, num_inference_steps))
    return {
        "prompts": prompts,
        "alignment_clean": {a: float(clean[f"{a}_ok"].mean()) for a in CONTENT_ATTRIBUTES},
        "defects_on_likely_prompts": {r.pop("defect"): r for r in response.to_dict(orient="records")},
    }


def check_setting(build, active) -> dict:
    """:func:`check_zoo`'s keyword arguments for a zoo trained at ``build`` (params' ``models.world_build``) and
    sampled as ``active`` (``models.world``): the models stage's check, which the world's truth tests repeat."""
    return {"prompts": build.check_prompts, "seed": build.seed + 1, "guidance_scale": active.guidance_scale,
            "num_inference_steps": active.num_inference_steps}


def check_zoo(paths: dict[str, Path], held_out: int = 1000, prompts: int = 0, seed: int = 1,
              guidance_scale: float = 6.0, num_inference_steps: int = 15) -> dict:
    """Every check of the module docstring (the pipeline's only when ``prompts`` > 0)."""
    held = held_out_renders(held_out)
    out = {"held_out_renders": held_out, "detector_auc": detector_aucs(held), **scorer_checks(paths, held)}
    if prompts:
        out["pipeline"] = pipeline_checks(paths, prompts, seed, guidance_scale, num_inference_steps)
    return out


def negative_study(pipe, contents: list[Content], seeds: list[int], calibration: Calibration,
                   conditions: dict[str, str] | None = None, guidance_scale: float = 6.0,
                   num_inference_steps: int = 15, batch_size: int = 64) -> dict[str, pd.DataFrame]:
    """Generate every prompt (``content.text()``) with every condition's negative, the same seed per prompt
    across conditions, and :func:`judge` the images: condition name -> judged frame (row i = prompt i)."""
    from negopt.world.train_diffusion import generate

    conditions = negative_conditions() if conditions is None else conditions
    prompts = [c.text() for c in contents]
    out = {}
    for name, negative in conditions.items():
        images = generate(pipe, prompts, [negative] * len(prompts), seeds, guidance_scale, num_inference_steps,
                          batch_size)
        out[name] = judge(images, calibration, contents)
    return out


def defect_studies(pipe, n: int, seed: int, calibration: Calibration, guidance_scale: float = 6.0,
                   num_inference_steps: int = 15) -> dict[str, dict[str, pd.DataFrame]]:
    """For each defect: ``n`` :func:`likely_contents` prompts, each generated with no negative, the control
    and the defect's own word (same seed per prompt): defect -> condition -> judged frame."""
    conditions = negative_conditions()
    out = {}
    for i, d in enumerate(DEFECTS):
        rng = np.random.default_rng([seed, i])
        contents = likely_contents(d, n, rng)
        seeds = [int(s) for s in rng.integers(0, 2**31, size=n)]
        chosen = {k: conditions[k] for k in ("none", "control", d)}
        out[d] = negative_study(pipe, contents, seeds, calibration, chosen, guidance_scale, num_inference_steps)
    return out


def defect_response(studies: dict[str, dict[str, pd.DataFrame]], control: str = "control") -> pd.DataFrame:
    """Per defect (``studies[d]`` holds conditions ``none``, ``control`` and ``d``): its rate with no
    negative, with the control, with its own word, the paired drop ``control - own word`` (mean, se, z) of
    the presence indicator, and how every other defect's rate moves with the own word (``moves``)."""
    rows = []
    for d, judged in studies.items():
        own, ctrl = judged[d][f"{d}_found"].astype(float), judged[control][f"{d}_found"].astype(float)
        drop = paired(ctrl, own)
        moves = {o: round(float(judged[d][f"{o}_found"].mean() - judged[control][f"{o}_found"].mean()), 3)
                 for o in DEFECTS if o != d}
        rows.append({"defect": d, "rate_none": float(judged["none"][f"{d}_found"].mean()),
                     "rate_control": float(ctrl.mean()), "rate_own_word": float(own.mean()),
                     "drop": drop.mean, "drop_se": drop.se, "drop_z": drop.z, "n": drop.n, "moves": moves})
    return pd.DataFrame(rows)
