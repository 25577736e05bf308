"""Images from (prompt, negative prompt, seed) triples through a diffusers StableDiffusionPipeline.

The pipeline is called, not re-implemented. Each image gets its own ``torch.Generator`` seeded with its
seed, so an image depends only on its (prompt, negative, seed) and not on the batch it ran in: batched
calls equal single calls, and methods compared on the same seeds differ only by the negative prompt.

How the text reaches the text encoder is the profile's ``prompt_syntax``, applied in one place,
:func:`text_inputs`: ``literal`` as diffusers reads it (brackets are text, tokens past the window are cut), or
``a1111`` as AUTOMATIC1111 reads it (:func:`negopt.core.prompt_syntax.parse_a1111`), the weighted fragments
embedded by compel, long texts in chunks of the window (docs/MODELS.md, "Prompt syntax").
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from diffusers.utils import logging as diffusers_logging
from tqdm.auto import tqdm

from negopt.core.distinct import distinct_rows
from negopt.core.params import Profile
from negopt.core.prompt_syntax import parse_a1111, spell_embeddings

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
    3. call the pipeline with the profile's steps, guidance and size, once per group of :func:`text_inputs` (one
    group under ``literal``); 4. convert to uint8.
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
        batch = slice(start, start + batch_size)
        generators = [torch.Generator(gen_device).manual_seed(s) for s in seeds[batch]]
        images = torch.empty(len(generators), 3, size, size, dtype=torch.uint8)
        for rows, text in text_inputs(pipe, prompts[batch], negatives[batch], profile.prompt_syntax):
            result = pipe(
                **text,
                generator=[generators[r] for r in rows],
                num_inference_steps=profile.num_inference_steps,
                guidance_scale=profile.guidance_scale,
                height=size,
                width=size,
                output_type="pt",
            )
            images[rows] = to_uint8(result.images)
        out.append(images)
    return torch.cat(out)


@torch.no_grad()
def text_inputs(pipe, prompts: list[str], negatives: list[str], syntax: str = "literal",
                one_call: bool = False) -> list[tuple[list[int], dict]]:
    """The pipeline's text arguments for ``prompts`` and their ``negatives`` under ``syntax`` (``literal`` |
    ``a1111``), as ``[(rows, kwargs), ...]``: one pipeline call per group, for the listed rows in their order.

    Both syntaxes first spell each loaded textual-inversion name as its token (``spell_embeddings``).

    ``literal``: one group of every row. For SD 1.x / 2.x (one text encoder) the embeddings, each distinct string
    encoded once: a call repeats a prompt over its k samples, seeds and methods (the RL test's 32 images hold 8
    prompts), and a negative embeds as a prompt does (the same tokens, mask and encoder), so the embeddings equal
    the pipeline's own to the bit. Any other pipeline (SDXL's two encoders) gets the strings.

    ``a1111``: each distinct text parsed as A1111 reads it and its weighted fragments embedded by compel
    (``_compel_embeddings``), in as many windows as it needs; a row's prompt and negative padded to the longer of
    the two with the empty prompt's embedding (a classifier-free-guidance batch needs equal lengths). Rows are
    grouped by that length, so a row is never padded for a neighbour and an image still depends on its own
    (prompt, negative, seed) alone; ``one_call`` pads every row to the longest instead (one group, one call: the
    Python API's ``pipeline_kwargs``). SD 1.x / 2.x and SDXL (with its pooled embeddings).
    """
    names = _loaded_embeddings(pipe)
    prompts = [spell_embeddings(t, names) for t in prompts]
    negatives = [spell_embeddings(t, names) for t in negatives]
    if syntax == "a1111":
        return _a1111_inputs(pipe, prompts, negatives, one_call)
    if syntax != "literal":
        raise ValueError(f"prompt syntax {syntax!r}: use literal or a1111 (models.<profile>.prompt_syntax)")
    from diffusers import StableDiffusionPipeline

    every = list(range(len(prompts)))
    if not isinstance(pipe, StableDiffusionPipeline):
        return [(every, {"prompt": prompts, "negative_prompt": negatives})]
    texts = [*prompts, *negatives]
    rows, inverse = distinct_rows(texts)
    embeds, _ = pipe.encode_prompt([texts[r] for r in rows], pipe._execution_device, 1, False)
    inverse = inverse.to(embeds.device)
    return [(every, {"prompt_embeds": embeds[inverse[:len(prompts)]],
                     "negative_prompt_embeds": embeds[inverse[len(prompts):]]})]


def _loaded_embeddings(pipe) -> list[str]:
    """The textual-inversion tokens the pipeline's tokenizers carry (``name``, ``name_1``, ...): the added tokens
    that are not special ones."""
    out: dict[str, None] = {}
    for tok in (getattr(pipe, "tokenizer", None), getattr(pipe, "tokenizer_2", None)):
        if tok is not None:
            special = set(tok.all_special_tokens)
            out |= dict.fromkeys(t for t in tok.added_tokens_encoder if t not in special)
    return list(out)


def _compel_encoders(pipe) -> list:
    """compel's ``Compel`` per text encoder, configured as compel's own ``CompelForSD`` / ``CompelForSDXL`` configure
    them (SD: the last hidden states; SDXL: both encoders' penultimate ones, pooled from the second; never
    truncated, chunked at the window)."""
    from compel import CompelForSD, CompelForSDXL
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    if isinstance(pipe, StableDiffusionXLPipeline):
        wrapper = CompelForSDXL(pipe)
        return [(wrapper.compel_1, pipe.tokenizer), (wrapper.compel_2, pipe.tokenizer_2)]
    if isinstance(pipe, StableDiffusionPipeline):
        return [(CompelForSD(pipe).compel, pipe.tokenizer)]
    raise ValueError(f"prompt syntax a1111 supports SD 1.x / 2.x and SDXL pipelines, not {type(pipe).__name__}: "
                     "set models.<profile>.prompt_syntax: literal")


def _compel_embeddings(pipe, encoders: list, text: str) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    """One text as A1111 reads it: per text encoder ``[1, windows x 77, d]``, and the pooled embedding of the
    last one when it has one (SDXL: of the text without its syntax, first window, as A1111 pools)."""
    from diffusers.loaders import TextualInversionLoaderMixin

    fragments = parse_a1111(text)
    weights = [w for _, w in fragments]
    parts, pooled = [], None
    for compel, tokenizer in encoders:
        pieces = [f for f, _ in fragments]
        if isinstance(pipe, TextualInversionLoaderMixin):  # a multi-vector embedding's name -> name name_1 ...
            pieces = [pipe.maybe_convert_prompt(f, tokenizer) for f in pieces]
        provider = compel.conditioning_provider
        parts.append(provider.get_embeddings_for_weighted_prompt_fragments([pieces], [weights], device=compel.device))
        if compel.requires_pooled:
            pooled = provider.get_pooled_embeddings(["".join(pieces)], device=compel.device)
    return parts, pooled


def _padded(parts: list[torch.Tensor], encoders: list, length: int) -> torch.Tensor:
    """A text's per-encoder embeddings padded to ``length`` positions with each encoder's empty-prompt window
    (compel's own padding), then joined along the feature axis (SDXL's two encoders side by side)."""
    out = []
    for t, (compel, _) in zip(parts, encoders, strict=True):
        empty = compel.conditioning_provider.empty_z
        out.append(torch.cat([t, *[empty] * ((length - t.shape[1]) // empty.shape[1])], dim=1))
    return torch.cat(out, dim=-1)


def _a1111_inputs(pipe, prompts: list[str], negatives: list[str], one_call: bool) -> list[tuple[list[int], dict]]:
    """``text_inputs`` for ``a1111``: each distinct text embedded once, rows grouped by their padded length."""
    encoders = _compel_encoders(pipe)
    texts = [*prompts, *negatives]
    distinct, inverse = distinct_rows(texts)
    embedded = [_compel_embeddings(pipe, encoders, texts[r]) for r in distinct]
    n = len(prompts)
    pair = [(int(inverse[i]), int(inverse[n + i])) for i in range(n)]
    length = [max(t.shape[1] for k in ij for t in embedded[k][0]) for ij in pair]  # a row's positions
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(max(length) if one_call else length[i], []).append(i)
    out = []
    for size, rows in groups.items():
        kwargs = {"prompt_embeds": torch.cat([_padded(embedded[pair[i][0]][0], encoders, size) for i in rows]),
                  "negative_prompt_embeds": torch.cat([_padded(embedded[pair[i][1]][0], encoders, size) for i in rows])}
        if embedded[0][1] is not None:
            kwargs["pooled_prompt_embeds"] = torch.cat([embedded[pair[i][0]][1] for i in rows])
            kwargs["negative_pooled_prompt_embeds"] = torch.cat([embedded[pair[i][1]][1] for i in rows])
        out.append((rows, kwargs))
    return out


def distinct_triples(prompts: list[str], negatives: list[str], seeds: list[int]) -> tuple[list[int], torch.Tensor]:
    """(rows, inverse) of the distinct (prompt, negative, seed) triples (``distinct_rows``): an image depends on
    its triple alone, so one render serves every row that repeats it."""
    return distinct_rows(list(zip(prompts, negatives, seeds, strict=True)))
