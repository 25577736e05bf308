"""Throughput of the generate stage's inner loop, and its model FLOPs utilisation (MFU) on a GPU.

Runs the stage's own set-up (load_sd_pipeline in the stage's dtype, SDPA attention) and times
`generate_images` on the active profile at `generate.batch_size`. For SD 1.5 at 512 px, one image costs
~0.68 TFLOP per UNet forward (BK-SDM's count) x 2 (classifier-free guidance) x steps, plus ~2.5 TFLOP
for the VAE decode; MFU = images/s x that / the card's dense bf16 peak (H100: ~990 TFLOPS, i.e. a
bound of ~14 images/s at 50 steps). The tiny profile's FLOPs are negligible, so only images/s is shown.

Run from the repository root (needs models/tiny or the paper weights):
    python bench/bench_generate.py [--images 256] [--threads 1] [--peak-tflops 990]
"""

from __future__ import annotations

import argparse
import time

import torch

from negopt.diffusion import generate_images
from negopt.models.loader import default_dtype, load_sd_pipeline
from negopt.params import load_params
from negopt.runtime import resolve_device

UNET_TFLOP_512 = 0.68  # per forward per image at 64x64 latents (SD 1.5)
VAE_TFLOP_512 = 2.5


def tflop_per_image(steps: int, image_size: int, cfg: bool = True) -> float:
    scale = (image_size / 512) ** 2  # convolutions and most attention scale with the pixel count
    return scale * (UNET_TFLOP_512 * (2 if cfg else 1) * steps + VAE_TFLOP_512)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    ap.add_argument("--peak-tflops", type=float, default=990.0, help="dense bf16 peak of the GPU")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    params = load_params()
    profile, bs = params.active, params.generate.batch_size
    device = resolve_device(params.base.device)
    pipe = load_sd_pipeline(profile, device)
    prompts = [f"a photo of a cat number {i}, detailed" for i in range(args.images)]
    negatives = ["blurry, low quality"] * args.images
    generate_images(pipe, prompts[:bs], negatives[:bs], list(range(bs)), profile, batch_size=bs)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    generate_images(pipe, prompts, negatives, list(range(args.images)), profile, batch_size=bs)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    rate = args.images / seconds
    line = (
        f"{params.profile} profile, {device} ({default_dtype(device)}), {profile.image_size} px, "
        f"{profile.num_inference_steps} steps, batch {bs}, threads {torch.get_num_threads()}: "
        f"{args.images} images in {seconds:.2f} s = {rate:.1f} images/s"
    )
    if device.type == "cuda":
        flops = tflop_per_image(profile.num_inference_steps, profile.image_size, profile.guidance_scale > 1)
        line += f", {rate * flops:.0f} TFLOP/s = {100 * rate * flops / args.peak_tflops:.1f}% MFU"
    print(line)


if __name__ == "__main__":
    main()
