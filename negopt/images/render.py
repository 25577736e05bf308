"""Images from (prompt, negative prompt, seed) triples through a diffusers StableDiffusionPipeline.

The pipeline is called, not re-implemented. Each image gets its own ``torch.Generator`` seeded with its
seed, so an image depends only on its (prompt, negative, seed) and not on the batch it ran in: batched
calls equal single calls, and methods compared on the same seeds differ only by the negative prompt.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from diffusers.utils import logging as diffusers_logging
from tqdm.auto import tqdm

from negopt.core.distinct import distinct_rows
from negopt.core.params import Profile

# The pipeline warns, with the whole token list, every time a prompt exceeds the text encoder's
# context (77 tokens for SD, 32 for the tiny one); truncation is expected here and floods the log.
diffusers_logging.get_logger("diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion").setLevel("ERROR")


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Float images in [0, 1] ``[N, 3, H, W]`` -> uint8 on the CPU (round half up, like PIL's conversion)."""
    return (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()


@torch.no_grad()
def generate_images(
    pipe,
    prompts: Sequence[str],
    negatives: Sequence[str],
    seeds: Sequence[int],
    profile: Profile,
    batch_size: int = 32,
    progress: bool = False,
) -> torch.Tensor:
    """Generate one image per (prompt, negative, seed); returns uint8 ``[N, 3, H, W]`` on the CPU.

    1. check the three lists line up; 2. per batch, one generator per image on the pipeline's device;
    3. call the pipeline with the profile's steps, guidance and size; 4. convert to uint8.
    An empty negative string means "no negative prompt" (the pipeline's unconditional embedding of "").
    """
    prompts, negatives, seeds = list(prompts), list(negatives), [int(s) for s in seeds]
    if not (len(prompts) == len(negatives) == len(seeds)):
        raise ValueError(
            f"generate_images: prompts ({len(prompts)}), negatives ({len(negatives)}) and seeds ({len(seeds)}) "
            "must have the same length"
        )
    if batch_size < 1:
        raise ValueError(f"generate_images: batch_size must be >= 1, got {batch_size}")
    size = profile.image_size
    if not prompts:
        return torch.empty(0, 3, size, size, dtype=torch.uint8)
    pipe.set_progress_bar_config(disable=True)  # one bar for the whole job below, not one per batch
    gen_device = pipe.device  # noise is drawn where the latents live, one generator per image
    out: list[torch.Tensor] = []
    starts = range(0, len(prompts), batch_size)
    for start in tqdm(starts, desc="generate", unit="batch", disable=not progress):
        end = start + batch_size
        generators = [torch.Generator(gen_device).manual_seed(s) for s in seeds[start:end]]
        result = pipe(
            **text_inputs(pipe, prompts[start:end], negatives[start:end]),
            generator=generators,
            num_inference_steps=profile.num_inference_steps,
            guidance_scale=profile.guidance_scale,
            height=size,
            width=size,
            output_type="pt",
        )
        out.append(to_uint8(result.images))
    return torch.cat(out)


def text_inputs(pipe, prompts: list[str], negatives: list[str]) -> dict:
    """The pipeline's text arguments for one call. For SD 1.x / 2.x (one text encoder) the embeddings, each
    distinct string encoded once: a call repeats a prompt over its k samples, seeds and methods (the RL test's 32
    images hold 8 prompts), and a negative embeds as a prompt does (the same tokens, mask and encoder), so the
    embeddings equal the pipeline's own to the bit. Any other pipeline (SDXL's two encoders) gets the strings."""
    from diffusers import StableDiffusionPipeline

    if not isinstance(pipe, StableDiffusionPipeline):
        return {"prompt": prompts, "negative_prompt": negatives}
    texts = [*prompts, *negatives]
    rows, inverse = distinct_rows(texts)
    embeds, _ = pipe.encode_prompt([texts[r] for r in rows], pipe._execution_device, 1, False)
    inverse = inverse.to(embeds.device)
    return {"prompt_embeds": embeds[inverse[:len(prompts)]], "negative_prompt_embeds": embeds[inverse[len(prompts):]]}


def distinct_triples(prompts: list[str], negatives: list[str], seeds: list[int]) -> tuple[list[int], torch.Tensor]:
    """(rows, inverse) of the distinct (prompt, negative, seed) triples (``distinct_rows``): an image depends on
    its triple alone, so one render serves every row that repeats it."""
    return distinct_rows(list(zip(prompts, negatives, seeds, strict=True)))
