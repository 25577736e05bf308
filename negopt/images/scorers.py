"""Image metrics: Inception Score, LAION aesthetic score, CLIP score, and per-image RL reward terms.

Images are uint8 ``[N, 3, H, W]`` tensors (any device; results come back on the CPU as float32).

- Inception Score: torch-fidelity's (``logits_unbiased``, its fixed shuffle seed), never re-derived:
  :func:`inception_score` runs its whole pipeline; :func:`inception_score_from_logits` applies its own
  formula (``isc_features_to_metric``) to logits already computed, so ``evaluate`` makes one Inception pass
  for the IS and the per-image posteriors. ``profile.inception_input_size`` picks the real 299 px ``inception-v3-compat`` or a
  registered subclass with a smaller input (75 px for the tiny profile; same weights layout).
- Aesthetic: the CLIP image embedding, L2-normalised, through the LAION MLP (scores ~1-10 with real weights).
- CLIP score: ``max(100 * cos(image, text), 0)`` (the torchmetrics convention), for evaluation. The RL
  reward term is the *unclamped* ``100 * cos``: as a training signal the clamp erases the difference between
  a bad and a worse image, and on long real prompts most tiny-profile images clamp to 0, leaving a term with
  no within-group spread at all (docs/EXPERIMENTS.md, "A reward that cannot degenerate").
- Fidelity reward term: ``KL(p(y|x) || p(y))`` from the same Inception posterior the IS uses, so that the
  batch mean of the term is log IS when ``p(y)`` is the batch marginal. The marginal is the batch mean by
  default; RL should pass a fixed marginal (e.g. from SFT samples) so one image's reward does not depend
  on the other images in its batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

from negopt.core.errors import MissingInputError

PAPER_INCEPTION = "inception-v3-compat"
_INCEPTION_CLASSES: dict[int, type[FeatureExtractorInceptionV3]] = {299: FeatureExtractorInceptionV3}


def inception_extractor(input_size: int) -> tuple[str, type[FeatureExtractorInceptionV3]]:
    """The torch-fidelity extractor name and class for an Inception input size (registered on first use).

    299 is the real ``inception-v3-compat``; any other size (>= 75, the smallest InceptionV3 accepts) is a
    subclass that only changes ``INPUT_IMAGE_SIZE``, so the same state dict serves both.
    """
    if input_size == 299:
        return PAPER_INCEPTION, FeatureExtractorInceptionV3
    if input_size < 75:
        raise ValueError(
            f"inception_input_size must be >= 75 (InceptionV3's smallest input), got {input_size}"
        )
    name = f"negopt-inception-v3-{input_size}"
    if input_size not in _INCEPTION_CLASSES:
        cls = type(f"FeatureExtractorInceptionV3_{input_size}", (FeatureExtractorInceptionV3,), {})
        cls.INPUT_IMAGE_SIZE = input_size
        _INCEPTION_CLASSES[input_size] = cls
    cls = _INCEPTION_CLASSES[input_size]
    if name not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor(name, cls)
    return name, FEATURE_EXTRACTORS_REGISTRY[name]


def check_inception_weights(path: str) -> None:
    """Fail clearly on a missing file, and refuse pickled code before torch-fidelity loads it unrestricted."""
    from pathlib import Path

    if not Path(path).is_file():
        raise MissingInputError(f"Inception weights not found at {path} (profile field `inception`)")
    torch.load(path, map_location="cpu", weights_only=True, mmap=True)


def build_inception(weights_path: str, input_size: int, device: torch.device | None = None) -> nn.Module:
    """The torch-fidelity Inception extractor returning ``logits_unbiased`` (eval mode, no grad)."""
    check_inception_weights(weights_path)
    name, cls = inception_extractor(input_size)
    model = cls(name, ["logits_unbiased"], feature_extractor_weights_path=weights_path)
    # channels_last: the convolutions' faster layout, with nearly equal logits (bench/bench_inception.py
    # in bench/RESULTS.md); on the tiny profile's CPU runs the Inception is a large share of an RL step's
    # image work
    return model.to(device or torch.device("cpu"), memory_format=torch.channels_last)


def posteriors(logits: torch.Tensor) -> torch.Tensor:
    """``softmax(logits)`` in float64, returned as float32: the class posteriors of Inception logits."""
    return logits.double().softmax(dim=1).float()


def inception_kl(probs: torch.Tensor, marginal: torch.Tensor) -> torch.Tensor:
    """Per-image ``KL(p(y|x) || p(y)) = sum_y p log(p / p(y))``; probs ``[N, C]``, marginal ``[C]`` -> ``[N]``."""
    p = probs.double()
    q = marginal.double().reshape(1, -1)
    # 0 * log 0 = 0: where p is 0 the term vanishes whatever q is.
    terms = torch.where(
        p > 0, p * (p.clamp_min(1e-300).log() - q.clamp_min(1e-300).log()), torch.zeros_like(p)
    )
    return terms.sum(dim=1).to(probs.dtype)


class _UInt8Images(torch.utils.data.Dataset):
    """A Dataset view of a uint8 ``[N, 3, H, W]`` tensor: the input torch-fidelity accepts."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]


def _check_uint8(images: torch.Tensor, who: str) -> None:
    if not (
        torch.is_tensor(images) and images.dtype == torch.uint8 and images.dim() == 4 and images.shape[1] == 3
    ):
        shape = tuple(images.shape) if torch.is_tensor(images) else type(images).__name__
        dtype = getattr(images, "dtype", None)
        raise ValueError(f"{who}: expected uint8 images [N, 3, H, W], got {shape} {dtype}")


def _require_splits(n: int, splits: int) -> None:
    """Both IS paths refuse fewer images than splits (an empty split has no marginal)."""
    if n < splits:
        raise ValueError(f"inception_score: {n} images cannot fill {splits} splits (evaluate.is_splits)")


def inception_score(
    images: torch.Tensor,
    weights_path: str,
    input_size: int,
    splits: int = 10,
    batch_size: int = 64,
    device: torch.device | None = None,
) -> tuple[float, float]:
    """Inception Score (mean, std over ``splits``) through ``torch_fidelity.calculate_metrics(isc=True)``."""
    import torch_fidelity

    _check_uint8(images, "inception_score")
    _require_splits(len(images), splits)
    check_inception_weights(weights_path)
    name, _ = inception_extractor(input_size)
    device = device or torch.device("cpu")
    out = torch_fidelity.calculate_metrics(
        input1=_UInt8Images(images.cpu()),
        isc=True,
        isc_splits=splits,
        feature_extractor=name,
        feature_extractor_weights_path=weights_path,
        batch_size=batch_size,
        cuda=device.type == "cuda",
        cache=False,
        save_cpu_ram=True,  # no DataLoader worker processes: the images are already in memory
        verbose=False,
    )
    return float(out["inception_score_mean"]), float(out["inception_score_std"])


def inception_score_from_logits(logits: torch.Tensor, splits: int = 10) -> tuple[float, float]:
    """torch-fidelity's Inception Score (mean, std over ``splits``) of ``logits_unbiased`` ``[N, C]``.

    The same function and defaults (shuffle with its seed, then ``splits`` chunks) that
    ``torch_fidelity.calculate_metrics(isc=True)`` applies after its own Inception pass.
    """
    from torch_fidelity.defaults import DEFAULTS
    from torch_fidelity.metric_isc import isc_features_to_metric

    _require_splits(len(logits), splits)
    out = isc_features_to_metric(logits.cpu(), splits, DEFAULTS["samples_shuffle"], DEFAULTS["rng_seed"])
    return float(out["inception_score_mean"]), float(out["inception_score_std"])


def clip_pixels(images: torch.Tensor, size: tuple[int, int], mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 ``[N, 3, H, W]`` -> a CLIP input: resize (bicubic, antialiased) to ``size``, then ``(x - mean) / std``.

    On square images this is open_clip's eval transform (resize the short side, centre-crop) up to its PIL
    resampling; every open_clip scorer here (CLIP, aesthetic, HPSv2) feeds its model through it.
    """
    x = images.float() / 255.0
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=tuple(size), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
    mean, std = mean.to(x.device).view(1, 3, 1, 1), std.to(x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def open_clip_input_spec(model: nn.Module) -> tuple[tuple[int, int], torch.Tensor, torch.Tensor]:
    """(size, mean, std) of an open_clip model's eval preprocessing (``visual.preprocess_cfg``; OpenAI's
    mean / std when the model carries none)."""
    cfg = getattr(model.visual, "preprocess_cfg", {})
    size = cfg.get("size", getattr(model.visual, "image_size", 224))
    size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
    mean = torch.tensor(cfg.get("mean", (0.48145466, 0.4578275, 0.40821073)))
    std = torch.tensor(cfg.get("std", (0.26862954, 0.26130258, 0.27577711)))
    return size, mean, std


class ImageScorer:
    """Aesthetic, CLIP and Inception scores on uint8 images; models load once and stay on ``device``."""

    def __init__(
        self,
        clip_model: nn.Module,
        clip_tokenizer,
        aesthetic_mlp: nn.Module,
        inception: nn.Module,
        device: torch.device | None = None,
        batch_size: int = 64,
        preference: dict[str, Any] | None = None,
    ) -> None:
        self.device = device or torch.device("cpu")
        self.clip = clip_model.to(self.device).eval()
        self.tokenizer = clip_tokenizer
        self.aesthetic_mlp = aesthetic_mlp.to(self.device).eval()
        self.inception = inception.to(self.device).eval()
        self.batch_size = batch_size
        self.clip_size, mean, std = open_clip_input_spec(self.clip)
        self.mean, self.std = mean.to(self.device), std.to(self.device)
        # human-preference scorers by name (negopt.images.preference), loaded only when evaluated or weighted
        self.preference: dict[str, Any] = dict(preference or {})

    def _batches(self, n: int) -> list[slice]:
        return [slice(i, i + self.batch_size) for i in range(0, n, self.batch_size)]

    def clip_pixels(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images -> CLIP input (:func:`clip_pixels` at this CLIP's size, mean and std)."""
        return clip_pixels(images.to(self.device), self.clip_size, self.mean, self.std)

    @torch.no_grad()
    def image_embeddings(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised CLIP image embeddings ``[N, D]`` (on ``device``)."""
        _check_uint8(images, "image_embeddings")
        parts = [
            self.clip.encode_image(self.clip_pixels(images[s])).float() for s in self._batches(len(images))
        ]
        return F.normalize(torch.cat(parts), dim=-1)

    @torch.no_grad()
    def text_embeddings(self, prompts: Sequence[str]) -> torch.Tensor:
        """L2-normalised CLIP text embeddings ``[N, D]`` (on ``device``)."""
        prompts = list(prompts)
        parts = []
        for s in self._batches(len(prompts)):
            tokens = self.tokenizer(prompts[s]).to(self.device)
            parts.append(self.clip.encode_text(tokens).float())
        return F.normalize(torch.cat(parts), dim=-1)

    @torch.no_grad()
    def aesthetic_from_embeddings(self, embeddings: torch.Tensor) -> torch.Tensor:
        """The LAION MLP on L2-normalised embeddings ``[N, D]`` -> ``[N]``."""
        emb = F.normalize(embeddings.to(self.device).float(), dim=-1)
        return self.aesthetic_mlp(emb).reshape(-1).float().cpu()

    def aesthetic(self, images: torch.Tensor) -> torch.Tensor:
        """Per-image aesthetic score ``[N]``."""
        return self.aesthetic_from_embeddings(self.image_embeddings(images))

    @staticmethod
    def clip_cosine_from_embeddings(image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        """``100 * cos`` row by row ``[N]``, unclamped (in [-100, 100]): the RL reward variant."""
        return (100.0 * F.cosine_similarity(image_emb.float(), text_emb.float(), dim=-1)).cpu()

    @classmethod
    def clip_from_embeddings(cls, image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        """``max(100 * cos, 0)`` row by row ``[N]``: the CLIP score (torchmetrics convention)."""
        return cls.clip_cosine_from_embeddings(image_emb, text_emb).clamp_min(0)

    def clip_score(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """Per-image CLIP score against its own prompt ``[N]``."""
        if len(prompts) != len(images):
            raise ValueError(f"clip_score: {len(images)} images but {len(prompts)} prompts")
        return self.clip_from_embeddings(self.image_embeddings(images), self.text_embeddings(prompts))

    @torch.no_grad()
    def inception_logits(self, images: torch.Tensor) -> torch.Tensor:
        """Inception ``logits_unbiased`` ``[N, C]`` (the IS's own features), float32 on the CPU."""
        _check_uint8(images, "inception_logits")
        return torch.cat([self.inception(images[s].to(self.device))[0].float().cpu() for s in self._batches(len(images))])

    def inception_probs(self, images: torch.Tensor) -> torch.Tensor:
        """Inception class posterior ``softmax(logits_unbiased)`` ``[N, C]``."""
        return posteriors(self.inception_logits(images))

    def reward_terms(
        self, images: torch.Tensor, prompts: Sequence[str], marginal: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Per-image reward terms from one pass of each model: ``aesthetic``, ``clip`` (the unclamped ``100 cos``)
        and ``fidelity`` (the Inception posterior's KL to ``marginal``, the batch mean if None)."""
        if len(prompts) != len(images):
            raise ValueError(f"reward_terms: {len(images)} images but {len(prompts)} prompts")
        img_emb = self.image_embeddings(images)
        probs = self.inception_probs(images)
        q = probs.mean(dim=0) if marginal is None else marginal.cpu().float()
        return {
            "aesthetic": self.aesthetic_from_embeddings(img_emb),
            "clip": self.clip_cosine_from_embeddings(img_emb, self.text_embeddings(prompts)),
            "fidelity": inception_kl(probs, q),
        }

    def preference_score(self, name: str, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """Per-image human-preference score ``[N]`` of the loaded scorer ``name`` (``hpsv2``, ``pickscore``)."""
        if name not in self.preference:
            from negopt.core.errors import UserError

            raise UserError(f"the {name} scorer is not loaded: name it in the profile (models.<profile>."
                            f"{'hpsv2_name / hpsv2' if name == 'hpsv2' else 'pickscore'}) and give reward.weights.{name} a "
                            "non-zero weight, or evaluate with a profile that names it")
        if len(prompts) != len(images):
            raise ValueError(f"{name}: {len(images)} images but {len(prompts)} prompts")
        return self.preference[name](images, list(prompts)).float().cpu()
