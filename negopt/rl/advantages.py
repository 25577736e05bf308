"""Rewards -> advantages: the KL penalty, RLOO's leave-one-out baseline, reward-term statistics.

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


class TermStats:
    """Mean and standard deviation per reward term, to z-score each term before weighting.

    The random tiny reward nets give terms on wildly different scales (aesthetic std ~5e-4,
    CLIP std ~1), so without standardisation the weights would not mean what they say.
    ``update`` merges a batch with Chan's parallel formula, so running statistics equal the
    statistics of all data seen; ``fixed`` mode calls it once on a calibration batch.
    """

    def __init__(self, names: tuple[str, ...] = ("aesthetic", "clip", "fidelity"), eps: float = 1e-8) -> None:
        self.names = tuple(names)
        self.eps = eps
        self.count = 0
        self.mean = {n: 0.0 for n in self.names}
        self.m2 = {n: 0.0 for n in self.names}  # sum of squared deviations from the mean

    def update(self, terms: dict[str, torch.Tensor]) -> None:
        n_b = None
        for name in self.names:
            x = terms[name].detach().double().reshape(-1)
            n_b = x.numel()
            if n_b == 0:
                return
            mean_b = x.mean().item()
            m2_b = ((x - mean_b) ** 2).sum().item()
            n = self.count + n_b
            delta = mean_b - self.mean[name]
            self.mean[name] += delta * n_b / n
            self.m2[name] += m2_b + delta**2 * self.count * n_b / n
        self.count += n_b or 0

    def std(self, name: str) -> float:
        """Population standard deviation (``eps`` keeps a constant term finite)."""
        if self.count == 0:
            raise RuntimeError("TermStats: no data yet; call update() with a calibration batch first")
        return math.sqrt(self.m2[name] / self.count) + self.eps

    def standardise(self, terms: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {n: (terms[n] - self.mean[n]) / self.std(n) for n in self.names}

    def state_dict(self) -> dict:
        return {"names": list(self.names), "eps": self.eps, "count": self.count, "mean": dict(self.mean), "m2": dict(self.m2)}

    def load_state_dict(self, state: dict) -> None:
        self.names = tuple(state["names"])
        self.eps = float(state["eps"])
        self.count = int(state["count"])
        self.mean = {k: float(v) for k, v in state["mean"].items()}
        self.m2 = {k: float(v) for k, v in state["m2"].items()}


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
