"""evaluate's Inception Score: torch-fidelity's own pass against the formula on the scorer's logits, in one run.

``evaluate`` needs the per-image Inception posteriors (compare's bootstrap) and the IS. The baseline runs
torch-fidelity's whole pipeline for the IS and a second Inception pass for the posteriors; ``evaluate`` makes
one pass (the scorer's) that gives both (``negopt.images.scorers.inception_score_from_logits``). This times,
per method's images, the pair of passes and the single one, and reports how far the IS moves (the scorer's
Inception runs in channels_last, whose logits differ slightly from the contiguous layout's).

Run from the repository root (needs models/tiny or the paper weights):
    python bench/bench_evaluate_is.py [--images 128] [--repeat 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.results import append  # noqa: E402
from negopt.core.params import load_params  # noqa: E402
from negopt.core.runtime import resolve_device  # noqa: E402
from negopt.images.scorers import inception_score, inception_score_from_logits  # noqa: E402
from negopt.models.loader import load_scorer  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--splits", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    params = load_params("params.yaml")
    prof, device = params.active, resolve_device(params.base.device)
    scorer = load_scorer(prof, device)
    size = prof.image_size
    # smooth images (8x8 noise upsampled), like generated ones: per-pixel noise drives the random tiny Inception's
    # logits to ~500, where a posterior underflows to 0 and torch-fidelity's IS is NaN
    low = torch.rand(args.images, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    x = (torch.nn.functional.interpolate(low, size=size, mode="bilinear") * 255).to(torch.uint8)

    def two_passes():
        value = inception_score(x, prof.inception, prof.inception_input_size, args.splits, device=device)[0]
        scorer.inception_probs(x)
        return value

    def one_pass():
        return inception_score_from_logits(scorer.inception_logits(x), args.splits)[0]

    times: dict[str, list[float]] = {"two": [], "one": []}
    values = {"two": two_passes(), "one": one_pass()}  # warm-up
    for _ in range(args.repeat):
        for name, fn in (("two", two_passes), ("one", one_pass)):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    rows = [[params.profile, str(device), prof.inception_input_size, args.images, torch.get_num_threads(),
             f"{med['two']:.3f}", f"{med['one']:.3f}", f"**{med['one'] / med['two']:.2f}x**",
             f"{values['two']:.5f} / {values['one']:.5f}"]]
    print(append(f"evaluate IS: torch-fidelity pass + posteriors vs one pass (`bench/bench_evaluate_is.py`, "
                 f"{args.repeat} rounds)",
                 ["profile", "device", "input px", "images", "threads", "two passes s (median)", "one pass s (median)",
                  "one / two", "IS two / one"], rows))


if __name__ == "__main__":
    main()
