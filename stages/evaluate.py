"""Stage `evaluate`: Inception Score, aesthetic, CLIP score (and HPSv2 / PickScore when the profile names them)
per method -> metrics/eval.json, and the per-image scores with their Inception posteriors -> paths.scores
(negopt/compare/scores.py). On the world profile, also the oracle's truth of every image (true quality, each
defect's rate, alignment with the prompt: negopt/world/oracle.py::oracle_scores) beside the learned scores."""

from __future__ import annotations

import time
from pathlib import Path

from negopt.compare.evaluate import evaluate_all
from negopt.compare.manifest import read_manifest
from negopt.compare.scores import write_scores
from negopt.core.errors import run_stage
from negopt.core.io import write_json
from negopt.core.runtime import resolve_device, start_stage
from negopt.world.oracle import ORACLE_KEYS, profile_oracle


def main() -> None:
    params = start_stage()
    from negopt.models.loader import load_scorer, named_preference

    device = resolve_device(params.base.device)
    profile = params.active
    start = time.perf_counter()
    manifest = read_manifest(params.paths.images)
    scorer = load_scorer(profile, device, preference=named_preference(profile))
    oracle = profile_oracle(params)
    # a NaN / inf metric raises NonFiniteMetricError (a UserError): nothing is written for compare to crash on
    per_image: dict = {}
    results = evaluate_all(
        manifest,
        params.paths.images,
        scorer,
        params.evaluate.is_splits,
        params.evaluate.batch_size,
        per_image,
        oracle,
    )
    write_scores(params.paths.scores, manifest, per_image)
    out = Path(params.paths.metrics) / "eval.json"
    write_json(out, results)
    for method, m in results.items():
        print(
            f"{method:>12}: IS {m['inception_score']:.4f} ± {m['inception_score_std']:.4f}  "
            f"aesthetic {m['aesthetic']:.5f}  CLIP {m['clip_score']:.3f}  "
            + "".join(f"{name} {m[name]:.3f}  " for name in scorer.preference) + f"(n={m['n_images']})"
        )
        if oracle is not None:
            print(" " * 14 + "oracle: " + "  ".join(f"{k} {m[k]:.3f}" for k in ORACLE_KEYS))
    print(f"evaluate: {len(manifest)} images in {time.perf_counter() - start:.1f} s -> {out}")


if __name__ == "__main__":
    run_stage(main)
