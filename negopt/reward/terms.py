"""The reward-term registry: every image reward term RL can weight, by name, in one place.

A term is a function ``score(batch) -> raw values [N]`` (float, CPU) of one micro-batch of generated
images (:class:`TermBatch`), registered with :func:`reward_term`. Everything that knows which terms
exist reads :data:`REWARD_TERMS`: the params schema (``reward.weights.<name>`` is a registered name's weight;
an unknown name fails naming the key), the RL reward and its calibration (``negopt.reward.weighted``), the
reward statistics and their health warnings, the metrics JSON, the dvclive curves and the model card.
Adding a term (a preference model, say) is one function here, decorated, plus its weight in
params.yaml::

    @reward_term("brightness", default_weight=0.0)
    def brightness(batch: TermBatch) -> torch.Tensor:
        '''Mean pixel value in [0, 255].'''
        return batch.images.float().mean(dim=(1, 2, 3))

This module imports no torch (``params.py`` reads it at every stage start); a term's function does its
work on the tensors it is given, or loads its own model on first call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


@dataclass
class TermBatch:
    """What a term sees: one micro-batch of images with their prompts, and the run's fixed inputs.

    images: uint8 ``[N, 3, H, W]``; prompts: ``N`` strings (the image's own prompt, not the negative);
    scorer: the loaded :class:`negopt.images.scorers.ImageScorer`; marginal: ``[C]`` Inception marginal fixed by
    calibration (None: the batch mean). ``shared(fn)`` runs ``fn(batch)``
    once per batch, so terms that read one model pass (the CLIP embedding) compute it once.
    """

    images: torch.Tensor
    prompts: list[str]
    scorer: Any
    marginal: torch.Tensor | None = None
    _shared: dict = field(default_factory=dict, repr=False)

    def shared(self, fn: Callable[[TermBatch], Any]) -> Any:
        if fn not in self._shared:
            self._shared[fn] = fn(self)
        return self._shared[fn]


@dataclass(frozen=True)
class RewardTerm:
    """A registered term: its scorer and the schema default of its weight."""

    score: Callable[[TermBatch], torch.Tensor]
    default_weight: float = 1.0
    model: str = ""  # a model of its own the scorer loads only for this term (a preference model), else ""


#: name -> term, in registration order (the order of logs, metrics and the model card's table).
REWARD_TERMS: dict[str, RewardTerm] = {}


def reward_term(name: str, default_weight: float = 1.0, model: str = ""):
    """Decorator: register ``score(batch) -> [N]`` as the term ``name`` (weight ``reward.weights.<name>``).

    ``model``: the term needs a model of its own (``negopt.models.loader.load_scorer(preference=...)``);
    such a term is scored only when its weight is non-zero (:func:`scored_weights`).
    """

    def register(score: Callable[[TermBatch], torch.Tensor]) -> Callable[[TermBatch], torch.Tensor]:
        REWARD_TERMS[name] = RewardTerm(score, default_weight, model)
        return score

    return register


def default_weights() -> dict[str, float]:
    """``{name: default weight}`` of every registered term: the schema default of ``reward.weights``."""
    return {name: term.default_weight for name, term in REWARD_TERMS.items()}


def scored_weights(weights: dict[str, float]) -> dict[str, float]:
    """The terms RL scores, with their weights: every term, except one with a model of its own at weight 0.

    The built-in terms share one scorer pass and are logged even at weight 0; a preference model is a
    ~1 B-parameter forward per image on the paper profile, so at weight 0 it is not loaded or scored.
    """
    return {n: w for n, w in weights.items() if w or not REWARD_TERMS[n].model}


def models_needed(weights: dict[str, float]) -> list[str]:
    """The models the weighted terms need (``load_scorer``'s ``preference``), in registration order."""
    return list(dict.fromkeys(REWARD_TERMS[n].model for n in scored_weights(weights) if REWARD_TERMS[n].model))


def unused_models(weights: dict[str, float]) -> set[str]:
    """The registered terms' models that ``weights`` does not need: a stage neither loads nor requires them."""
    return {t.model for t in REWARD_TERMS.values() if t.model} - set(models_needed(weights))


def score_terms(batch: TermBatch, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """``{name: raw values [N]}`` (float32, CPU) of the named terms on one batch."""
    return {name: REWARD_TERMS[name].score(batch).float().cpu() for name in names}


# --- the built-in terms: the image scorer's one pass (shared CLIP embedding, one Inception posterior) ---


def _image_scorer_terms(batch: TermBatch) -> dict[str, torch.Tensor]:
    return batch.scorer.reward_terms(batch.images, batch.prompts, marginal=batch.marginal)


@reward_term("aesthetic")
def aesthetic(batch: TermBatch) -> torch.Tensor:
    """The LAION aesthetic MLP on the image's L2-normalised CLIP embedding."""
    return batch.shared(_image_scorer_terms)["aesthetic"]


@reward_term("clip")
def clip(batch: TermBatch) -> torch.Tensor:
    """Prompt-image alignment: ``100 cos`` of the image and prompt embeddings, unclamped. The CLIP *score*
    ``max(100 cos, 0)`` is evaluate's convention; as a training signal the clamp erases the difference between a
    bad and a worse image (docs/EXPERIMENTS.md, "A reward that cannot degenerate")."""
    return batch.shared(_image_scorer_terms)["clip"]


@reward_term("fidelity")
def fidelity(batch: TermBatch) -> torch.Tensor:
    """``KL(p(y|x) || p(y))`` of the Inception posterior to the calibration marginal (log IS per image)."""
    return batch.shared(_image_scorer_terms)["fidelity"]


# --- human-preference models (negopt/images/preference.py), each its own model: weight 0 unless asked for ---


@reward_term("hpsv2", default_weight=0.0, model="hpsv2")
def hpsv2(batch: TermBatch) -> torch.Tensor:
    """HPSv2: ``100 cos`` of the fine-tuned open_clip ViT-H-14's image and prompt features."""
    return batch.scorer.preference_score("hpsv2", batch.images, batch.prompts)


@reward_term("pickscore", default_weight=0.0, model="pickscore")
def pickscore(batch: TermBatch) -> torch.Tensor:
    """PickScore: ``exp(logit_scale) cos`` of the fine-tuned CLIP-H's image and prompt features."""
    return batch.scorer.preference_score("pickscore", batch.images, batch.prompts)
