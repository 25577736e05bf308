"""The reward: a weighted sum of the registered terms' standardised values, and scoring (prompt, negative,
seed) triples with it.

The terms are ``negopt.reward.terms.REWARD_TERMS`` (raw values per image); the reward is::

    R = sum_t w_t * z(t),   z(t) = (t - mean_t) / scale_t,   t over the scored terms

with ``w`` = ``reward.weights.<t>``. The raw terms live on unrelated scales, so z-scoring is what makes
"weight 3 on aesthetics" mean three times as many standard deviations. ``mean_t``, ``scale_t``
(``negopt.reward.term_stats.TermStats``: the spread across the negatives of one prompt and seed) and the
Inception marginal ``p(y)`` read by the fidelity term come from the calibration
(``negopt.reward.calibration``), fixed before RL starts, so one image's reward never depends on the others.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from negopt.reward.term_stats import TermStats
from negopt.reward.terms import TermBatch, score_terms

RewardFn = Callable[[torch.Tensor, list[str], dict], tuple[torch.Tensor, dict]]


def weighted_reward(z_terms: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    """``sum_t w_t * z_t``: the total reward from standardised terms. Returns [N]."""
    return sum(float(w) * z_terms[name] for name, w in weights.items())  # type: ignore[return-value]


def weighted_sum_reward(scorer, weights: dict[str, float], stats: TermStats, marginal: torch.Tensor) -> RewardFn:
    """The reward ``fn(images, prompts, metadata) -> (sum_t w_t * z_t [N], info)`` over ``stats.names``.

    info: ``raw`` and ``z``, each a dict term -> [N]. Per image only (the marginal and the statistics
    are fixed inputs), so slices of a batch scored on different processes give the same numbers.
    """

    def fn(images: torch.Tensor, prompts: list[str], metadata: dict) -> tuple[torch.Tensor, dict]:
        raw = score_terms(TermBatch(images, list(prompts), scorer, marginal), stats.names)
        z = {t: v.float() for t, v in stats.standardise(raw).items()}
        return weighted_reward(z, weights).float(), {"raw": raw, "z": z}

    return fn


def rollout_profile(params):
    """The profile training images render with: ``reward.rollout_inference_steps`` denoising steps when set
    (cheaper images for the training signal and its calibration), else the profile's own. Checkpoint selection,
    the test and generate render with the profile's: they judge the images users get."""
    steps = params.reward.rollout_inference_steps
    return params.active.model_copy(update={"num_inference_steps": steps}) if steps else params.active


def score_triples(
    accelerator, pipe, profile, reward_fn: RewardFn, prompts: list[str], negatives: list[str], seeds: list[int],
    batch_size: int, oracle=None,
) -> dict[str, torch.Tensor]:
    """Generate one image per (prompt, negative, seed) and score it, sharded over processes.

    A triple that repeats is rendered and scored once (``distinct_triples``) and its values copied to every
    row that asks for it: per-image generators make it the same image (the pipeline's images do not depend
    on what else is in the batch), and the reward is per image. Repeats are common: the test's SFT and RL
    negatives agree on many of the sample's prompts, and a trained policy's k samples of a prompt (one seed)
    often coincide (bench/RESULTS.md, "A repeated (prompt, negative, seed) rendered once").

    The distinct items are cut into micro-batches of ``batch_size`` (one pipeline call and one scoring call
    each) and whole micro-batches are dealt to processes; results are gathered, so every process
    returns the full ``reward`` [N] and ``raw/<term>``, ``z/<term>`` [N]. Per-image generators, fixed
    reward statistics and process-independent batch shapes make the result the same for any number
    of processes. ``oracle`` (the world profile, negopt.world.oracle.profile_oracle): each image's truth too, as
    ``oracle/<key>`` [N].
    """
    from negopt.core.sharding import map_micro_batches
    from negopt.images.render import distinct_triples, generate_images

    rows, inverse = distinct_triples(prompts, negatives, seeds)

    def micro_batch(idx: list[int]) -> dict[str, torch.Tensor]:
        p = [prompts[rows[i]] for i in idx]
        s = [seeds[rows[i]] for i in idx]
        images = generate_images(pipe, p, [negatives[rows[i]] for i in idx], s, profile, batch_size=len(idx))
        rewards, info = reward_fn(images, p, {"seeds": s})
        out = {"reward": rewards}
        for kind in ("raw", "z"):
            out.update({f"{kind}/{t}": v for t, v in info.get(kind, {}).items()})
        if oracle is not None:
            out.update({f"oracle/{k}": torch.from_numpy(v).to(rewards.device)
                        for k, v in oracle(images.cpu().numpy(), p).items()})
        return out

    out = map_micro_batches(accelerator, len(rows), micro_batch, batch_size)
    return {k: v[inverse.to(v.device)] for k, v in out.items()}

