"""The Inception scorer's memory layout: contiguous (NCHW) against channels_last, in one run.

The fidelity term and the Inception Score run the full InceptionV3 on every image (tiny profile: at 75 px,
a large share of an RL step's image work on CPU; bench/RESULTS.md), so its layout matters.
``build_inception`` returns the model in channels_last; this times both layouts on the same uint8 batch
(medians of ``--repeat`` interleaved rounds) and reports how far the logits move.

Run from the repository root (needs models/tiny or the paper weights):
    python bench/bench_inception.py [--images 32] [--repeat 7] [--threads 1]
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
from negopt.images.scorers import build_inception  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    params = load_params("params.yaml")
    prof, device = params.active, resolve_device(params.base.device)
    fast = build_inception(prof.inception, prof.inception_input_size, device)
    plain = build_inception(prof.inception, prof.inception_input_size, device).to(memory_format=torch.contiguous_format)
    size = prof.image_size
    x = torch.randint(0, 256, (args.images, 3, size, size), dtype=torch.uint8,
                      generator=torch.Generator().manual_seed(0)).to(device)
    times: dict[str, list[float]] = {"contiguous": [], "channels_last": []}
    with torch.no_grad():
        outs = {name: model(x)[0] for name, model in (("contiguous", plain), ("channels_last", fast))}  # warm-up
        for _ in range(args.repeat):
            for name, model in (("contiguous", plain), ("channels_last", fast)):
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                model(x)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    diff = (outs["contiguous"] - outs["channels_last"]).abs().max().item()
    rows = [[params.profile, str(device), prof.inception_input_size, args.images, torch.get_num_threads(),
             f"{med['contiguous']:.3f}", f"{med['channels_last']:.3f}", f"**{med['channels_last'] / med['contiguous']:.2f}x**",
             f"{diff:.1e}"]]
    block = append(f"Inception layout: contiguous vs channels_last (`bench/bench_inception.py`, {args.repeat} rounds)",
                   ["profile", "device", "input px", "images", "threads", "contiguous s (median)",
                    "channels_last s (median)", "channels_last / contiguous", "max logit diff"], rows)
    print(block)


if __name__ == "__main__":
    main()
