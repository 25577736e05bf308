"""Images/s of the generation wrapper by batch size: what one pipeline call's fixed cost is worth.

The tiny profile's UNet works on 8x8 latents, so a call's per-op overhead (Python dispatch, scheduler
steps, text encoding) weighs more than its arithmetic; the rl stage renders in micro-batches of
``reward.image_batch_size`` and generate in ``generate.batch_size``. Each round renders the same
``--images`` (prompt, negative, seed) triples at every batch size, interleaved, so a burst of load hits
all alike; medians of ``--repeat`` rounds, ratios against batch 16 (an RL step's 32 images in two calls).
The images are equal at every batch size up to float reassociation (checked: max abs difference).

Run from the repository root (needs models/tiny):
    python bench/bench_image_batch.py [--images 128] [--repeat 3] [--sizes 8,16,32,64,128]
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
from negopt.images.render import generate_images  # noqa: E402
from negopt.models.loader import load_sd_pipeline  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--sizes", default="8,16,32,64,128")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    params = load_params()
    profile = params.active
    device = resolve_device(params.base.device)
    pipe = load_sd_pipeline(profile, device)
    prompts = [f"a photo of a cat number {i}, detailed, in the style of {i % 7}" for i in range(args.images)]
    negatives = [f"blurry, low quality, {i % 5} fingers" for i in range(args.images)]
    seeds = list(range(args.images))
    ref = generate_images(pipe, prompts, negatives, seeds, profile, batch_size=sizes[0])  # also the warm-up
    diff = {}
    times: dict[int, list[float]] = {b: [] for b in sizes}
    for _ in range(args.repeat):
        for b in sizes:
            t0 = time.perf_counter()
            out = generate_images(pipe, prompts, negatives, seeds, profile, batch_size=b)
            times[b].append(time.perf_counter() - t0)
            diff[b] = int((out.int() - ref.int()).abs().max())
    med = {b: statistics.median(v) for b, v in times.items()}
    base = med.get(16, med[sizes[0]])
    rows = [[params.profile, str(device), profile.image_size, profile.num_inference_steps, b, torch.get_num_threads(),
             args.images, f"{med[b]:.2f}", f"{args.images / med[b]:.1f}", f"**{med[b] / base:.2f}x**", diff[b]]
            for b in sizes]
    cols = ["profile", "device", "px", "steps", "batch", "threads", "images", "s (median)", "images/s",
            "time / batch 16", "max abs diff (uint8) vs first"]
    print(append(f"images/s by batch size (`bench/bench_image_batch.py`, {args.repeat} rounds)", cols, rows))


if __name__ == "__main__":
    main()
