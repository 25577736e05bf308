"""Rewards -> advantages: the KL penalty and RLOO's leave-one-out baseline.

All functions are pure tensor maths (no models), so they are unit-tested against hand-computed values.

Shapes: ``B`` prompts per step, ``k`` sampled negatives per prompt, ``N = B * k`` samples, stored
prompt-major (the ``k`` samples of prompt ``i`` are rows ``i*k .. i*k+k-1``).
"""

from __future__ import annotations

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
