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
    """Centre and scale per reward term, to z-score each term before weighting.

    The random tiny reward nets give terms on wildly different scales (aesthetic std ~5e-4,
    CLIP std ~1), so without standardisation the weights would not mean what they say. Two scales:

    - ``global``: the term's standard deviation over all images seen;
    - ``group`` (default of ``rl.reward_norm``): the pooled standard deviation *within* groups of
      ``k`` images that share a prompt and a diffusion seed and differ only in the negative,
      ``sqrt(sum_g sum_i (x_gi - mean_g)^2 / sum_g (k - 1))``. This is the variation a negative
      prompt can cause, the only part RLOO's baseline leaves in the advantages. Measured on the
      tiny profile (``bench/bench_reward_signal.py``), the global scale is dominated by what the
      prompt and seed do (CLIP's global std is 37x its within-group std) and by the Inception KL's
      heavy tail, so under it "weight 1 each" let the noisiest term drown the others; under the
      group scale each term moves the advantage by the same amount per typical within-group change.

    The mean (the centre) is always the global mean. ``update`` merges a batch with Chan's parallel
    formula, so running statistics equal the statistics of all data seen; ``fixed`` mode calls it
    once on a calibration batch.
    """

    def __init__(self, names: tuple[str, ...] = ("aesthetic", "clip", "fidelity"), eps: float = 1e-8,
                 norm: str = "global") -> None:
        if norm not in ("global", "group"):
            raise ValueError(f"rl.reward_norm: expected 'global' or 'group', got {norm!r}")
        self.names = tuple(names)
        self.eps = eps
        self.norm = norm
        self.count = 0
        self.mean = {n: 0.0 for n in self.names}
        self.m2 = {n: 0.0 for n in self.names}  # sum of squared deviations from the mean
        self.within_df = 0  # sum over groups of (group size - 1)
        self.within_ss = {n: 0.0 for n in self.names}  # sum of squared deviations from each group's mean

    def update(self, terms: dict[str, torch.Tensor], group_size: int | None = None) -> None:
        """Merge a batch; ``group_size`` k: rows ``g*k .. g*k+k-1`` share a prompt and a seed."""
        grouped = group_size is not None and group_size > 1
        sizes = {terms[name].numel() for name in self.names}
        if grouped and any(n % group_size for n in sizes):
            raise ValueError(f"{sorted(sizes)} values do not split into groups of {group_size}")
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
            if grouped:
                g = x.reshape(-1, group_size)
                self.within_ss[name] += ((g - g.mean(dim=1, keepdim=True)) ** 2).sum().item()
        if grouped and n_b:
            self.within_df += n_b - n_b // group_size
        self.count += n_b or 0

    def std(self, name: str) -> float:
        """Population standard deviation over all values (``eps`` keeps a constant term finite)."""
        if self.count == 0:
            raise RuntimeError("TermStats: no data yet; call update() with a calibration batch first")
        return math.sqrt(self.m2[name] / self.count) + self.eps

    def within_std(self, name: str) -> float:
        """Pooled within-group standard deviation (unbiased: divides by the sum of ``k - 1``)."""
        if self.within_df == 0:
            raise RuntimeError("TermStats: no grouped data; call update(terms, group_size=k) with k >= 2")
        return math.sqrt(self.within_ss[name] / self.within_df) + self.eps

    def scale(self, name: str) -> float:
        return self.within_std(name) if self.norm == "group" else self.std(name)

    def standardise(self, terms: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {n: (terms[n] - self.mean[n]) / self.scale(n) for n in self.names}

    def state_dict(self) -> dict:
        return {"names": list(self.names), "eps": self.eps, "norm": self.norm, "count": self.count,
                "mean": dict(self.mean), "m2": dict(self.m2), "within_df": self.within_df,
                "within_ss": dict(self.within_ss)}

    def load_state_dict(self, state: dict) -> None:
        self.names = tuple(state["names"])
        self.eps = float(state["eps"])
        self.norm = state["norm"]
        self.count = int(state["count"])
        self.mean = {k: float(v) for k, v in state["mean"].items()}
        self.m2 = {k: float(v) for k, v in state["m2"].items()}
        self.within_df = int(state["within_df"])
        self.within_ss = {k: float(v) for k, v in state["within_ss"].items()}


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
