"""Speed of the tiny profile: zoo build, 64x64 generation, reward scoring, Inception Score.

Targets: zoo build < 60 s on 2 cores; one 64x64 image well under a second on one core.
Run from the repository root:  python bench/bench_models.py [--threads 1] [--texts 2400]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from negopt.core.params import load_params
from negopt.images.render import generate_images
from negopt.images.scorers import inception_score
from negopt.models.loader import load_scorer, load_sd_pipeline
from negopt.models.tiny import build_tiny_zoo

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "pairs_dflip3k.jsonl"


def texts(n: int) -> list[str]:
    if SHARED.exists():
        rows = [json.loads(line) for line in SHARED.read_text().splitlines()[:n]]
        return [r["prompt"] for r in rows] + [r["negative_prompt"] for r in rows]
    return [f"a photo of thing {i}, detailed" for i in range(n)]


def timed(fn, repeat: int = 3) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--texts", type=int, default=2400)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    params = load_params("params.yaml")
    with tempfile.TemporaryDirectory() as tmp:
        zoo = Path(tmp) / "tiny"
        t = time.perf_counter()
        build_tiny_zoo(texts(args.texts), zoo, seed=0)
        print(
            f"zoo build ({2 * args.texts} texts, {args.threads} thread(s)): {time.perf_counter() - t:.1f} s"
        )
        prof = params.models.tiny.model_copy(
            update=dict(
                sd=str(zoo / "sd"),
                clip_pretrained=str(zoo / "clip/open_clip_model.safetensors"),
                clip_config=str(zoo / "clip/negopt-tiny-clip.json"),
                aesthetic=str(zoo / "aesthetic/model.safetensors"),
                inception=str(zoo / "inception/weights.pt"),
            )
        )
        cpu = torch.device("cpu")
        pipe = load_sd_pipeline(prof, cpu)
        for n in (1, 32):
            s = timed(
                lambda n=n: generate_images(
                    pipe, ["a cat"] * n, ["ugly"] * n, list(range(n)), prof, batch_size=n
                )
            )
            print(
                f"generate {n:>2} x 64x64, {prof.num_inference_steps} steps, CFG: {s:.3f} s ({n / s:.1f} img/s)"
            )
        imgs = generate_images(pipe, ["a cat"] * 64, ["ugly"] * 64, list(range(64)), prof, batch_size=32)
        scorer = load_scorer(prof, cpu)
        s = timed(lambda: scorer.reward_terms(imgs[:32], ["a cat"] * 32), repeat=2)
        print(f"reward_terms on 32 images: {s:.3f} s ({32 / s:.1f} img/s)")
        t = time.perf_counter()
        mean, std = inception_score(imgs, prof.inception, prof.inception_input_size, splits=4)
        print(
            f"inception_score on 64 images (75 px): {time.perf_counter() - t:.2f} s, IS {mean:.3f} +- {std:.3f}"
        )


if __name__ == "__main__":
    main()
