"""Rewards -> advantages: the KL penalty, RLOO's leave-one-out baseline, the weighted reward.

The reward-term statistics (centre and scale per term) are ``negopt.reward.term_stats``.

All functions are pure tensor maths (no models), so they are unit-tested against hand-computed values.

Shapes: ``B`` prompts per step, ``k`` sampled negatives per prompt, ``N = B * k`` samples, stored
prompt-major (the ``k`` samples of prompt ``i`` are rows ``i*k .. i*k+k-1``).
"""

from __future__ import annotations

import math

import torch


def kl_penalised_rewards(
    rewards: torch.Tensor, logp: torch.Tensor, logp_ref: torch.Tensor, kl_coef: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``r - kl_coef * KL`` with the sequence-level k1 estimator ``KL = log pi(y|x) - log pi_ref(y|x)``.

    As in trl's RLOO, the KL enters the *reward* (before the baseline), so the leave-one-out
    baseline also absorbs it; k1 is unbiased for KL(pi || pi_ref) on samples from pi.
    rewards, logp, logp_ref: [N] (logp summed over the generated tokens). Returns (penalised [N], kl [N]).
    """
    kl = logp - logp_ref  # [N]
    return rewards - kl_coef * kl, kl


def duplicate_shares(negatives: list[str], k: int) -> torch.Tensor:
    """Per sample, the share of the *other* ``k - 1`` samples of its group that are the same string.

    ``d_i = #{j != i in group : y_j == y_i} / (k - 1)``, in [0, 1]: 0 when all k differ, 1 when all are
    one string. ``rl.diversity_coef * d`` is subtracted from the reward, a per-prompt diversity term
    against collapse onto one negative. negatives: [N] prompt-major. Returns [N].
    """
    if len(negatives) % k:
        raise ValueError(f"{len(negatives)} negatives do not split into groups of k={k}")
    out = []
    for g in range(0, len(negatives), k):
        group = negatives[g:g + k]
        out += [(group.count(y) - 1) / (k - 1) for y in group]
    return torch.tensor(out, dtype=torch.float32)


def rloo_advantages(rewards: torch.Tensor, k: int) -> torch.Tensor:
    """REINFORCE leave-one-out advantages: ``A_i = r_i - (sum_j r_j - r_i) / (k - 1)`` within a group.

    The baseline of a sample is the mean reward of the other ``k - 1`` samples of the same prompt
    (same diffusion seed), so it is independent of the sample and the gradient stays unbiased.
    rewards: [N] prompt-major, N = B * k. Returns [N].
    """
    if k < 2:
        raise ValueError(f"rl.k: RLOO needs k >= 2 samples per prompt, got {k}")
    if rewards.numel() % k:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of k={k}")
    grouped = rewards.reshape(-1, k)  # [B, k]
    baseline = (grouped.sum(dim=1, keepdim=True) - grouped) / (k - 1)  # [B, k]
    return (grouped - baseline).reshape(-1)  # [N]


def weighted_reward(z_terms: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    """``sum_t w_t * z_t``: the total reward from standardised terms. Returns [N]."""
    return sum(float(w) * z_terms[name] for name, w in weights.items())  # type: ignore[return-value]


def mean_and_se(x: torch.Tensor) -> tuple[float, float]:
    """Mean and its standard error ``std(ddof=1) / sqrt(n)``; for paired gains pass the differences."""
    x = x.detach().double().reshape(-1)
    n = x.numel()
    if n < 2:
        return float(x.mean()) if n else float("nan"), float("nan")
    return float(x.mean()), float(x.std(unbiased=True) / math.sqrt(n))
