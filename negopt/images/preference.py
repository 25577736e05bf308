"""Human-preference scores of an image against its own prompt: HPSv2 and PickScore.

Both are CLIP models fine-tuned on human choices between generated images; both score by a scaled
cosine of L2-normalised image and text features ``f_i``, ``f_t`` (images uint8 ``[N, 3, H, W]``, scores
float32 ``[N]`` on the CPU):

- **HPSv2** (v2.1 weights, open_clip ``ViT-H-14`` fine-tuned on HPD v2): ``100 * cos(f_i, f_t)``. The
  ``hpsv2`` package's ``score()`` returns the plain cosine; its benchmark tables print 100x, as here.
  Pixels go through :func:`negopt.images.scorers.clip_pixels` at the model's own size, mean and std.
- **PickScore** (transformers ``CLIPModel`` CLIP-H fine-tuned on Pick-a-Pic):
  ``exp(logit_scale) * cos(f_i, f_t)``; pixels through the model's processor
  (``laion/CLIP-ViT-H-14-laion2B-s32B-b79K``'s ``CLIPImageProcessor``: resize, centre crop, normalise),
  text through its tokenizer, padded and truncated to 77 tokens (the text encoder's positions, if fewer).

The loaders (:func:`negopt.models.loader.load_hpsv2`, ``load_pickscore``) fill these classes with the
profile's weights: random tiny models of the same classes, or the real checkpoints.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from negopt.images.scorers import clip_pixels, open_clip_input_spec


def scaled_cosine(image_features: torch.Tensor, text_features: torch.Tensor, scale: float | torch.Tensor) -> torch.Tensor:
    """``scale * cos(image_i, text_i)`` row by row: ``[N, D]``, ``[N, D]`` -> ``[N]`` (float32, CPU)."""
    cos = F.cosine_similarity(image_features.float(), text_features.float(), dim=-1)
    return (torch.as_tensor(scale, dtype=torch.float32, device=cos.device) * cos).float().cpu()


def _batches(n: int, size: int) -> list[slice]:
    return [slice(i, i + size) for i in range(0, n, size)]


class HPSv2Scorer:
    """HPSv2: ``100 * cos`` of an open_clip model's image and text features."""

    SCALE = 100.0

    def __init__(self, model: nn.Module, tokenizer, device: torch.device | None = None, batch_size: int = 64) -> None:
        self.device = device or torch.device("cpu")
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.size, self.mean, self.std = open_clip_input_spec(self.model)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        prompts = list(prompts)
        out = []
        for s in _batches(len(images), self.batch_size):
            pixels = clip_pixels(images[s].to(self.device), self.size, self.mean, self.std)
            img = self.model.encode_image(pixels)
            txt = self.model.encode_text(self.tokenizer(prompts[s]).to(self.device))
            out.append(scaled_cosine(img, txt, self.SCALE))
        return torch.cat(out) if out else torch.empty(0)


def _projected(output) -> torch.Tensor:
    """``get_*_features``' result: a tensor (transformers 4) or an output whose ``pooler_output`` is projected (5)."""
    return output if torch.is_tensor(output) else output.pooler_output


class PickScoreScorer:
    """PickScore: ``exp(logit_scale) * cos`` of a transformers ``CLIPModel``'s image and text features."""

    MAX_TOKENS = 77

    def __init__(self, model: nn.Module, processor, device: torch.device | None = None, batch_size: int = 64) -> None:
        self.device = device or torch.device("cpu")
        self.model = model.to(self.device).eval()
        self.processor = processor
        self.batch_size = batch_size
        positions = model.config.text_config.max_position_embeddings
        self.max_tokens = min(self.MAX_TOKENS, positions)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        prompts = list(prompts)
        out = []
        for s in _batches(len(images), self.batch_size):
            pixels = self.processor.image_processor(images=list(images[s].cpu()), return_tensors="pt")["pixel_values"]
            text = self.processor.tokenizer(prompts[s], padding=True, truncation=True, max_length=self.max_tokens,
                                            return_tensors="pt").to(self.device)
            dtype = next(self.model.parameters()).dtype
            img = _projected(self.model.get_image_features(pixel_values=pixels.to(self.device, dtype)))
            txt = _projected(self.model.get_text_features(input_ids=text["input_ids"],
                                                          attention_mask=text["attention_mask"]))
            out.append(scaled_cosine(img, txt, self.model.logit_scale.exp()))
        return torch.cat(out) if out else torch.empty(0)
