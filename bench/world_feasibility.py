"""Feasibility of the world profile: train every model at the proposed configs, then measure them.

    OMP_NUM_THREADS=1 python bench/world_feasibility.py --out /tmp/world-zoo [--prompts 256]

Trains (or reuses) the zoo of :func:`negopt.world.zoo.build_world_zoo` at one torch thread and writes
``<out>/results.json`` with:

- wall seconds per training step (``timings``);
- detectors: AUC per defect on fresh renders, and after a VAE round trip; VAE reconstruction MSE; the
  content checker's accuracy before and after the VAE;
- the pipeline: per defect, its rate with no negative, with the control ("ugly, bad hands") and with its
  own word, over ``--prompts`` paired images (same prompts and seeds), with the paired drop's SE and z;
  content alignment of the clean prompts (no negative); the oracle's true quality per condition;
- the aesthetic MLP's Spearman correlation with true image quality on held-out renders;
- the Inception classifier's held-out accuracy and the Inception Score of renders and of generated images.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch


def measure_vae(paths, held) -> dict:
    from negopt.world.defects import DEFECTS
    from negopt.world.detectors import auc, defect_scores, read_content
    from negopt.world.train_vae import load_vae, reconstruct

    vae = load_vae(paths["vae"])
    start = time.perf_counter()
    rec = reconstruct(vae, held.images)
    seconds = time.perf_counter() - start
    before, after = defect_scores(held.images), defect_scores(rec)
    err = ((rec.astype(np.float32) - held.images.astype(np.float32)) / 255) ** 2
    content = read_content(rec)
    return {
        "mse": float(err.mean()),
        "reconstruct_images_per_s": len(held) / seconds,
        "auc_renders": {d: auc(before[d], held.truth[d] > 0) for d in DEFECTS},
        "auc_after_vae": {d: auc(after[d], held.truth[d] > 0) for d in DEFECTS},
        "checker_after_vae": {a: float((content[a].to_numpy() == held.truth[a].to_numpy()).mean())
                              for a in ("shape", "count", "fg", "bg")},
    }


def measure_pipeline(paths, n_prompts: int, seed: int, guidance: float, steps: int) -> dict:
    from negopt.world.checks import defect_response, defect_studies, negative_study
    from negopt.world.defects import DEFECTS
    from negopt.world.detectors import Calibration
    from negopt.world.oracle import negative_conditions
    from negopt.world.quality import CONTENT_ATTRIBUTES
    from negopt.world.scenes import sample_content
    from negopt.world.train_diffusion import load_pipeline

    pipe = load_pipeline(paths["sd"])
    calibration = Calibration.load(paths["detectors"])
    rng = np.random.default_rng([seed, 7])
    contents = [sample_content(rng) for _ in range(n_prompts)]
    seeds = [int(s) for s in rng.integers(0, 2**31, size=n_prompts)]
    start = time.perf_counter()
    judged = negative_study(pipe, contents, seeds, calibration, negative_conditions(), guidance, steps)
    seconds = time.perf_counter() - start
    studies = defect_studies(pipe, n_prompts, seed, calibration, guidance, steps)
    clean = judged["none"]
    return {
        "prompts": n_prompts, "guidance_scale": guidance, "num_inference_steps": steps,
        "images_per_s": n_prompts * len(judged) / seconds,
        "defects_on_likely_prompts": defect_response(studies).to_dict(orient="records"),
        "defects_on_random_prompts": defect_response({d: judged for d in DEFECTS}).to_dict(orient="records"),
        "alignment_clean": {a: float(clean[f"{a}_ok"].mean()) for a in CONTENT_ATTRIBUTES},
        "true_quality": {k: float(v["true_quality"].mean()) for k, v in judged.items()},
        "rates": {k: {d: float(v[f"{d}_found"].mean()) for d in DEFECTS} for k, v in judged.items()},
    }, judged


def measure_sweep(paths, scales: list[float], n_prompts: int, steps: int) -> dict:
    """Per guidance scale: the likely-prompt defect study (:func:`negopt.world.checks.defect_studies`) and the
    clean prompts' content alignment."""
    from negopt.world.checks import defect_response, defect_studies, negative_study
    from negopt.world.detectors import Calibration
    from negopt.world.quality import CONTENT_ATTRIBUTES
    from negopt.world.scenes import sample_content
    from negopt.world.train_diffusion import load_pipeline

    pipe = load_pipeline(paths["sd"])
    calibration = Calibration.load(paths["detectors"])
    rng = np.random.default_rng([2, 7])
    contents = [sample_content(rng) for _ in range(n_prompts)]
    seeds = [int(s) for s in rng.integers(0, 2**31, size=n_prompts)]
    out = {}
    for g in scales:
        clean = negative_study(pipe, contents, seeds, calibration, {"none": ""}, g, steps)["none"]
        response = defect_response(defect_studies(pipe, n_prompts, 2, calibration, g, steps))
        out[str(g)] = {"alignment_clean": {a: float(clean[f"{a}_ok"].mean()) for a in CONTENT_ATTRIBUTES},
                       "defects_on_likely_prompts": response.to_dict(orient="records")}
        print(g, out[str(g)], flush=True)
    return out


def measure_user_negatives(paths, n_pairs: int, guidance: float, steps: int) -> dict:
    """True quality (oracle) of the users' own negatives vs the rate-based reference negative vs none,
    paired over the same prompts and seeds: does a per-prompt negative beat the human ones here?"""
    from negopt.world.detectors import Calibration
    from negopt.world.grammar import parse_content
    from negopt.world.oracle import judge, paired
    from negopt.world.train_diffusion import generate, load_pipeline
    from negopt.world.users import generate_world_pairs, rate_negative

    pipe = load_pipeline(paths["sd"])
    calibration = Calibration.load(paths["detectors"])
    pairs = generate_world_pairs(n_pairs, seed=11)
    contents = [parse_content(p) for p in pairs["prompt"]]
    prompts = [c.text() for c in contents]
    seeds = list(range(1000, 1000 + n_pairs))
    negatives = {"none": [""] * n_pairs, "user": list(pairs["negative_prompt"]),
                 "rate_negative": [rate_negative(c) for c in contents]}
    quality = {k: judge(generate(pipe, prompts, v, seeds, guidance, steps), calibration, contents)["true_quality"]
               for k, v in negatives.items()}
    out = {f"true_quality_{k}": float(v.mean()) for k, v in quality.items()}
    for a, b in (("user", "none"), ("rate_negative", "user")):
        d = paired(quality[a], quality[b])
        out[f"{a}_minus_{b}"] = {"mean": d.mean, "se": d.se, "z": d.z, "n": d.n}
    return out


def measure_scorers(paths, held, generated: np.ndarray | None) -> dict:
    from negopt.images.scorers import inception_score_from_logits
    from negopt.world.checks import inception_logits, scorer_checks
    from negopt.world.train_scorers import load_inception

    out = scorer_checks(paths, held)
    if generated is not None:
        logits = inception_logits(load_inception(paths["inception"]), generated)
        out["inception_score_generated"] = inception_score_from_logits(logits, splits=10)[0]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="/tmp/world-zoo")
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--guidance", type=float, default=None, help="default: DiffusionConfig.guidance_scale")
    parser.add_argument("--steps", type=int, default=None, help="default: DiffusionConfig.num_inference_steps")
    parser.add_argument("--sweep", default="", help="guidance scales for an extra defect study each, e.g. 2,3,4.5")
    parser.add_argument("--sweep-prompts", type=int, default=64)
    parser.add_argument("--diffusion-steps", type=int, default=None)
    parser.add_argument("--skip-study", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)

    from negopt.world.dataset import render_set
    from negopt.world.train_diffusion import generate, load_pipeline
    from negopt.world.zoo import ZooConfig, build_world_zoo

    cfg = ZooConfig()
    if args.diffusion_steps:
        cfg.diffusion.steps = args.diffusion_steps
    args.guidance = cfg.diffusion.guidance_scale if args.guidance is None else args.guidance
    args.steps = cfg.diffusion.num_inference_steps if args.steps is None else args.steps
    paths = build_world_zoo(cfg, args.out)
    held = render_set(2000, seed=987_654, progress=False)
    results = {"timings": json.loads(paths["timings"].read_text()), "threads": torch.get_num_threads()}
    results["vae"] = measure_vae(paths, held)
    generated = None
    if not args.skip_study:
        results["pipeline"], judged = measure_pipeline(paths, args.prompts, 1, args.guidance, args.steps)
        results["user_negatives"] = measure_user_negatives(paths, args.prompts, args.guidance, args.steps)
    if args.sweep:
        results["sweep"] = measure_sweep(paths, [float(g) for g in args.sweep.split(",")], args.sweep_prompts,
                                         args.steps)
    pipe = load_pipeline(paths["sd"])
    prompts = list(held.truth["prompt"][:500])
    generated = generate(pipe, prompts, [""] * len(prompts), list(range(len(prompts))), args.guidance, args.steps)
    results["scorers"] = measure_scorers(paths, held, generated)
    Path(args.out, "results.json").write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
