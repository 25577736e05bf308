"""Our generation wrapper against a bare diffusers call loop, on the same inputs and seeds, in one run.

Both sides run the stage's own set-up (``load_sd_pipeline``: the stage's dtype, SDPA attention) at
``generate.batch_size``; the bare side calls ``pipe(...)`` with one seeded generator per image and
converts to uint8 itself, the wrapper is ``negopt.images.render.generate_images``. Medians of ``--repeat``
interleaved rounds, so a burst of load hits both sides alike. Target: wrapper <= 1.05x bare.

On a GPU it also prints the model FLOPs utilisation: SD 1.5 at 512 px costs ~0.68 TFLOP per UNet forward
(BK-SDM's count) x 2 (classifier-free guidance) x steps, plus ~2.5 TFLOP for the VAE decode; MFU =
images/s x that / the card's dense bf16 peak (``--peak-tflops``). The tiny profile's FLOPs are negligible.

Run from the repository root (needs models/tiny or the paper weights):
    python bench/bench_generate.py [--images 128] [--repeat 5] [--threads 0] [--peak-tflops 990]
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
from negopt.images.render import generate_images, to_uint8  # noqa: E402
from negopt.models.loader import default_dtype, load_sd_pipeline  # noqa: E402

UNET_TFLOP_512 = 0.68  # per forward per image at 64x64 latents (SD 1.5)
VAE_TFLOP_512 = 2.5


def tflop_per_image(steps: int, image_size: int, cfg: bool = True) -> float:
    scale = (image_size / 512) ** 2  # convolutions and most attention scale with the pixel count
    return scale * (UNET_TFLOP_512 * (2 if cfg else 1) * steps + VAE_TFLOP_512)


@torch.no_grad()
def bare_loop(pipe, prompts, negatives, seeds, profile, batch_size: int) -> torch.Tensor:
    out = []
    for i in range(0, len(prompts), batch_size):
        gens = [torch.Generator(pipe.device).manual_seed(s) for s in seeds[i:i + batch_size]]
        images = pipe(prompt=prompts[i:i + batch_size], negative_prompt=negatives[i:i + batch_size], generator=gens,
                      num_inference_steps=profile.num_inference_steps, guidance_scale=profile.guidance_scale,
                      height=profile.image_size, width=profile.image_size, output_type="pt").images
        out.append(to_uint8(images))
    return torch.cat(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    ap.add_argument("--peak-tflops", type=float, default=990.0, help="dense bf16 peak of the GPU")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    params = load_params()
    profile, bs = params.active, params.generate.batch_size
    device = resolve_device(params.base.device)
    pipe = load_sd_pipeline(profile, device)
    pipe.set_progress_bar_config(disable=True)
    prompts = [f"a photo of a cat number {i}, detailed" for i in range(args.images)]
    negatives = ["blurry, low quality"] * args.images
    seeds = list(range(args.images))
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def wrapper():
        return generate_images(pipe, prompts, negatives, seeds, profile, batch_size=bs)

    def bare():
        return bare_loop(pipe, prompts, negatives, seeds, profile, bs)

    assert torch.equal(wrapper(), bare()), "wrapper and bare loop must give the same images"  # also the warm-up
    times: dict[str, list[float]] = {"wrapper": [], "bare": []}
    for _ in range(args.repeat):
        for name, fn in (("wrapper", wrapper), ("bare", bare)):
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["wrapper"] / med["bare"]
    rate = args.images / med["wrapper"]
    row = [params.profile, f"{device} ({default_dtype(device)})", profile.image_size, profile.num_inference_steps, bs,
           torch.get_num_threads(), args.images, f"{med['bare']:.2f}", f"{med['wrapper']:.2f}", f"{rate:.1f}",
           f"**{ratio:.3f}x**"]
    columns = ["profile", "device", "px", "steps", "batch", "threads", "images", "bare s (median)",
               "wrapper s (median)", "wrapper images/s", "wrapper / bare"]
    if device.type == "cuda":
        flops = tflop_per_image(profile.num_inference_steps, profile.image_size, profile.guidance_scale > 1)
        columns.append("MFU")
        row.append(f"{100 * rate * flops / args.peak_tflops:.1f}%")
        columns.append("peak GPU GiB")
        row.append(f"{torch.cuda.max_memory_allocated() / 2**30:.2f}")
    print(append(f"generate: wrapper vs bare diffusers loop (`bench/bench_generate.py`, {args.repeat} rounds)",
                 columns, [row]))


if __name__ == "__main__":
    main()
