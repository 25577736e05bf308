"""Plug-in reward functions in the ddpo-pytorch style, and the reward statistics they need.

A factory takes the loaded :class:`negopt.metrics.ImageScorer` (models load once) and returns
``fn(images, prompts, metadata) -> (rewards [N], info)`` with uint8 ``[N, 3, H, W]`` images.

The RL reward is a weighted sum of *standardised* terms::

    R = w_aesthetic * z(aesthetic) + w_clip * z(clip) + w_fidelity * z(fidelity),   z(t) = (t - mean_t) / std_t

with ``w`` = ``rl.reward.*``. The raw terms live on unrelated scales (the random tiny aesthetic MLP
varies by ~5e-4, CLIP scores by ~1), so z-scoring is what makes "weight 3 on aesthetics" mean three
times as many standard deviations. ``std_t`` is by default (``rl.reward_norm: group``) the
standard deviation of the term *across the k negatives of one prompt and seed*, the variation a
negative can cause (see ``TermStats``); ``global`` uses the standard deviation over all images.
``mean_t, std_t`` and the Inception marginal ``p(y)`` of the fidelity term ``KL(p(y|x) || p(y))``
come from a calibration batch drawn before RL starts: ``k`` SFT samples for each of
``rl.calibration_prompts`` prompts, one seed per prompt (``rl.reward_stats: fixed``); ``running``
keeps updating the statistics with every step's terms. Either way the test comparison scores SFT
and RL with one and the same final normalisation.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from negopt.rl.advantages import TermStats, weighted_reward

RewardFn = Callable[[torch.Tensor, list[str], dict], tuple[torch.Tensor, dict]]
TERMS = ("aesthetic", "clip", "fidelity")


def aesthetic_reward(scorer) -> RewardFn:
    """The LAION aesthetic score of each image (raw)."""

    def fn(images: torch.Tensor, prompts: list[str], metadata: dict) -> tuple[torch.Tensor, dict]:
        return scorer.aesthetic(images).float().cpu(), {}

    return fn


def clip_reward(scorer) -> RewardFn:
    """Prompt-image alignment, the CLIP score ``max(100 * cos, 0)`` (raw)."""

    def fn(images: torch.Tensor, prompts: list[str], metadata: dict) -> tuple[torch.Tensor, dict]:
        return scorer.clip_score(images, list(prompts)).float().cpu(), {}

    return fn


def fidelity_reward(scorer, marginal: torch.Tensor | None = None) -> RewardFn:
    """The per-image Inception KL ``KL(p(y|x) || p(y))`` (raw); ``p(y)`` is the batch mean if None."""
    from negopt.metrics import inception_kl

    def fn(images: torch.Tensor, prompts: list[str], metadata: dict) -> tuple[torch.Tensor, dict]:
        probs = scorer.inception_probs(images)
        p_y = probs.mean(0) if marginal is None else marginal.to(probs.device)
        return inception_kl(probs, p_y).float().cpu(), {}

    return fn


def weighted_sum_reward(scorer, weights: dict[str, float], stats: TermStats, marginal: torch.Tensor,
                        clip_term: str = "cosine") -> RewardFn:
    """The RL reward: ``sum_t w_t * z_t`` from one ``reward_terms`` call (shared embeddings).

    ``clip_term`` (``rl.clip_term``): ``cosine`` (unclamped ``100 cos``) or ``clamped`` (the CLIP score).
    info: ``raw`` and ``z``, each a dict term -> [N]. Per image only (the marginal and the statistics
    are fixed inputs), so slices of a batch scored on different processes give the same numbers.
    """

    def fn(images: torch.Tensor, prompts: list[str], metadata: dict) -> tuple[torch.Tensor, dict]:
        raw = {t: v.float().cpu()
               for t, v in scorer.reward_terms(images, list(prompts), marginal=marginal, clip=clip_term).items()}
        z = {t: v.float() for t, v in stats.standardise(raw).items()}
        return weighted_reward(z, weights).float(), {"raw": raw, "z": z}

    return fn


REWARD_FACTORIES: dict[str, Callable[..., RewardFn]] = {
    "aesthetic": aesthetic_reward,
    "clip": clip_reward,
    "fidelity": fidelity_reward,
    "weighted_sum": weighted_sum_reward,
}


def calibrate(probs: torch.Tensor, terms_fn: Callable[[torch.Tensor], dict[str, torch.Tensor]], group_size: int,
              norm: str = "group", floor: float = 0.0,
              weights: dict[str, float] | None = None) -> tuple[torch.Tensor, TermStats]:
    """Fix the Inception marginal and the term statistics from calibration images.

    probs: [M, C] Inception class probabilities of the calibration images, ``M / group_size``
    groups of ``group_size`` images that share a prompt and a seed; ``terms_fn(marginal)`` returns
    their raw terms given that marginal. Returns (marginal [C], statistics with scale ``norm`` and
    the ``floor`` rule of ``TermStats``). With ``weights``, a weighted term without a usable scale
    stops here (``DegenerateTermError``), before any training step.
    """
    marginal = probs.double().mean(0).float()  # [C]
    stats = TermStats(TERMS, norm=norm, floor=floor)
    stats.update(terms_fn(marginal), group_size=group_size)
    if weights is not None:
        stats.check_scales(weights)
    return marginal, stats


def score_triples(
    accelerator, pipe, profile, reward_fn: RewardFn, prompts: list[str], negatives: list[str], seeds: list[int],
    batch_size: int,
) -> dict[str, torch.Tensor]:
    """Generate one image per (prompt, negative, seed) and score it, sharded over processes.

    Items are cut into micro-batches of ``batch_size`` (one pipeline call and one scoring call
    each) and whole micro-batches are dealt to processes; results are gathered, so every process
    returns the full ``reward`` [N] and ``raw/<term>``, ``z/<term>`` [N]. Per-image generators, fixed
    reward statistics and process-independent batch shapes make the result the same for any number
    of processes.
    """
    from negopt.diffusion import generate_images
    from negopt.sharding import map_sharded

    def micro_batch(idx: list[int]) -> dict[str, torch.Tensor]:
        p = [prompts[i] for i in idx]
        images = generate_images(pipe, p, [negatives[i] for i in idx], [seeds[i] for i in idx], profile,
                                 batch_size=len(idx))
        rewards, info = reward_fn(images, p, {"seeds": [seeds[i] for i in idx]})
        out = {"reward": rewards}
        for kind in ("raw", "z"):
            out.update({f"{kind}/{t}": v for t, v in info.get(kind, {}).items()})
        return out

    def work(idx: list[int]) -> dict[str, torch.Tensor]:
        # one pipeline call and one scorer call per micro-batch: the same batches as on any process count
        parts = [micro_batch(idx[i:i + batch_size]) for i in range(0, len(idx), batch_size)]
        return {k: torch.cat([part[k] for part in parts]) for k in parts[0]}

    return map_sharded(accelerator, len(prompts), work, granularity=batch_size)
